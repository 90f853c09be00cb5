//! Network namespaces: open, enter on a dedicated thread, create and delete named ones
//! (interoperable with `ip netns`), and exec a command inside one like `ip netns exec`.
//!
//! setns() affects only the calling thread, so namespace work always happens on a short
//! scoped thread; sockets opened there stay bound to that namespace.

use crate::error::{Error, IoContext, Result};
use crate::model::NETNS_DIR;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const NSFS_MAGIC: i64 = 0x6e73_6673;

pub struct Netns {
    file: File,
    path: PathBuf,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("path", p.display(), "contains NUL"))
}

fn check(r: libc::c_int, op: impl FnOnce() -> String) -> Result<()> {
    if r < 0 {
        Err(Error::io(op(), io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// True if `path` is a network namespace handle (a bind mount of nsfs or /proc/PID/ns/net).
pub fn is_netns(path: &Path) -> bool {
    let Ok(c) = cstr(path) else { return false };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

impl Netns {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !is_netns(path) {
            return Err(Error::not_found("network namespace", path.display()));
        }
        let file = File::open(path).op(|| format!("open namespace {}", path.display()))?;
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Self> {
        let file = File::open("/proc/thread-self/ns/net").op(|| "open own namespace".into())?;
        Ok(Netns {
            file,
            path: "/proc/thread-self/ns/net".into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// (device, inode) of the namespace: two handles name the same namespace iff equal.
    pub fn id(&self) -> Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata().op(|| "stat namespace".into())?;
        Ok((m.dev(), m.ino()))
    }

    /// Moves the calling thread into this namespace for good: for a command that works on
    /// another node namespace than its own (`knit graph --node-ns`), before it starts any
    /// thread (threads started later inherit it).
    pub fn enter(&self) -> Result<()> {
        // SAFETY: the descriptor is a valid nsfs file owned by self.
        if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(Error::io(
                format!("enter network namespace {}", self.path.display()),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.file.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: fd is a valid nsfs descriptor owned by self for the scope's duration.
                let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                if r < 0 {
                    return Err(Error::io(
                        "enter network namespace",
                        io::Error::last_os_error(),
                    ));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(Error::io("namespace thread", io::Error::other("panicked"))))
        })
    }
}

/// Makes /run/netns a shared mount point, as iproute2 does, so namespaces created by
/// either tool are visible to the other and to other mount namespaces.
fn prepare_netns_dir() -> Result<()> {
    fs::create_dir_all(NETNS_DIR).op(|| format!("create {NETNS_DIR}"))?;
    let dir = cstr(Path::new(NETNS_DIR))?;
    let none = c"none";
    // SAFETY: all pointers are valid NUL-terminated strings or null where the API allows.
    unsafe {
        if libc::mount(
            none.as_ptr(),
            dir.as_ptr(),
            std::ptr::null(),
            libc::MS_SHARED | libc::MS_REC,
            std::ptr::null(),
        ) == 0
        {
            return Ok(());
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::io(
                "make /run/netns shared",
                io::Error::last_os_error(),
            ));
        }
        // Not a mount point yet: bind it onto itself, then retry.
        check(
            libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
            || "bind /run/netns".into(),
        )?;
        check(
            libc::mount(
                none.as_ptr(),
                dir.as_ptr(),
                std::ptr::null(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            ),
            || "make /run/netns shared".into(),
        )
    }
}

pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates /run/netns/NAME and runs `init` inside it (e.g. bringing `lo` up). Returns
/// false if it already existed (idempotent; `init` does not run then).
pub fn create_named(name: &str, init: impl FnOnce() -> Result<()> + Send) -> Result<bool> {
    let path = named_path(name);
    if is_netns(&path) {
        return Ok(false);
    }
    prepare_netns_dir()?;
    File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .op(|| format!("create {}", path.display()))?;
    let target = cstr(&path)?;
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // SAFETY: unshare affects only this throwaway thread.
            check(unsafe { libc::unshare(libc::CLONE_NEWNET) }, || {
                "unshare network namespace".into()
            })?;
            let src = c"/proc/thread-self/ns/net";
            // SAFETY: valid NUL-terminated paths; bind mount of our own ns handle.
            check(
                unsafe {
                    libc::mount(
                        src.as_ptr(),
                        target.as_ptr(),
                        c"none".as_ptr(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                },
                || format!("bind namespace to {}", path.display()),
            )?;
            init()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::io("namespace thread", io::Error::other("panicked"))))
    });
    if let Err(e) = result {
        let _ = delete_named(name);
        return Err(e);
    }
    Ok(true)
}

/// Removes /run/netns/NAME. Returns false if it did not exist.
pub fn delete_named(name: &str) -> Result<bool> {
    let path = named_path(name);
    if !path.exists() {
        return Ok(false);
    }
    let c = cstr(&path)?;
    // SAFETY: valid path; MNT_DETACH so a busy namespace is released when its users go.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
    fs::remove_file(&path).op(|| format!("remove {}", path.display()))?;
    Ok(true)
}

/// Replaces this process with `argv` running inside the namespace, the way `ip netns exec`
/// does: a private mount namespace, a fresh /sys for the namespace, and the files of
/// /etc/netns/NAME bind-mounted over /etc. Only returns on error.
pub fn exec_in(ns: &Netns, etc_name: Option<&str>, argv: &[String]) -> Error {
    let run = || -> Result<()> {
        // SAFETY: single-threaded CLI path; setns/unshare on the main thread before exec.
        unsafe {
            check(libc::setns(ns.file.as_raw_fd(), libc::CLONE_NEWNET), || {
                "enter namespace".into()
            })?;
            check(libc::unshare(libc::CLONE_NEWNS), || {
                "unshare mount namespace".into()
            })?;
            check(
                libc::mount(
                    c"".as_ptr(),
                    c"/".as_ptr(),
                    c"none".as_ptr(),
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ),
                || "make / a slave mount".into(),
            )?;
            // /sys shows the namespace of whoever mounted it: remount for this one.
            if libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) == 0 {
                libc::mount(
                    c"knit".as_ptr(),
                    c"/sys".as_ptr(),
                    c"sysfs".as_ptr(),
                    0,
                    std::ptr::null(),
                );
            }
        }
        if let Some(name) = etc_name {
            let dir = Path::new("/etc/netns").join(name);
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let src = cstr(&e.path())?;
                    let dst = cstr(&Path::new("/etc").join(e.file_name()))?;
                    // SAFETY: valid paths; a failed bind (missing target) is reported.
                    check(
                        unsafe {
                            libc::mount(
                                src.as_ptr(),
                                dst.as_ptr(),
                                c"none".as_ptr(),
                                libc::MS_BIND,
                                std::ptr::null(),
                            )
                        },
                        || format!("bind {} over /etc", e.path().display()),
                    )?;
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        return e;
    }
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Error::io(format!("exec {}", argv[0]), err)
}
