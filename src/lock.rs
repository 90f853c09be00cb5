//! Coordination between knit processes on one node, with flock(2) (kill -9 releases it, so
//! a crashed command never leaves a lock behind).
//!
//! - STATE/lock: every mutating command holds it shared; `reconcile` holds it exclusively,
//!   so a pending record reconcile finds belongs to a process that died.
//! - Object locks serialize commands on one object and let commands on different objects
//!   run in parallel: a network (shared by attach/detach, exclusive by create/rm), a
//!   sandbox (exclusive by attach/detach/rm). They live in STATE/locks/, striped by a hash
//!   of the object's name so the number of files stays bounded.
//! - STATE/nft.lock ("the kernel lock"): held exclusively from reading the store state a
//!   firewall diff is computed from, through applying the diff, to recording the result.
//!   Diffs are therefore never computed against a state another command is changing. The
//!   kernel serializes nf_tables commits anyway, so this costs no parallelism.
//!
//! Order (to rule out deadlocks): STATE/lock, network locks (sorted), the sandbox lock, the
//! kernel lock.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub struct Lock(#[allow(dead_code)] File);

/// Object locks per kind; a collision only serializes two unrelated objects.
const STRIPES: u64 = 256;

impl Lock {
    pub fn take(dir: &Path, exclusive: bool) -> Result<Lock> {
        Self::take_file(dir, "lock", exclusive)
    }

    /// A lock on another file in the state dir.
    pub fn take_file(dir: &Path, name: &str, exclusive: bool) -> Result<Lock> {
        let path = dir.join(name);
        let f = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            // A read-only state directory (inspection, the DNS daemon): flock works on a
            // descriptor opened for reading.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)) => {
                File::open(&path).op(|| format!("open {}", path.display()))?
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        flock(&f, exclusive).map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
        Ok(Lock(f))
    }

    /// The kernel lock (see the module comment). Re-entrant within a thread: a change that
    /// falls back to a whole-table rebuild takes it again without waiting for itself.
    pub fn kernel(dir: &Path) -> Result<KernelGuard> {
        KERNEL.with(|k| {
            let mut k = k.borrow_mut();
            if k.0 == 0 {
                k.1 = Some(Self::take_file(dir, "nft.lock", true)?);
            }
            k.0 += 1;
            Ok(KernelGuard(()))
        })
    }

    /// The lock of one network.
    pub fn network(dir: &Path, name: &str, exclusive: bool) -> Result<Lock> {
        Self::object(dir, "net", stripe(name), exclusive)
    }

    /// Shared locks on several networks (sorted and deduplicated by stripe, so two names
    /// on one stripe do not make a process wait for itself).
    pub fn networks<'a>(dir: &Path, names: impl Iterator<Item = &'a str>) -> Result<Vec<Lock>> {
        let mut stripes: Vec<u64> = names.map(stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|s| Self::object(dir, "net", s, false))
            .collect()
    }

    /// The lock of one sandbox (by its store key).
    pub fn sandbox(dir: &Path, key: &str) -> Result<Lock> {
        Self::object(dir, "sbx", stripe(key), true)
    }

    fn object(dir: &Path, kind: &str, stripe: u64, exclusive: bool) -> Result<Lock> {
        let locks = dir.join("locks");
        if let Err(e) = std::fs::create_dir(&locks)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(Error::io(format!("create {}", locks.display()), e));
        }
        Self::take_file(&locks, &format!("{kind}-{stripe:02x}"), exclusive)
    }
}

thread_local! {
    /// How many guards of the kernel lock this thread holds, and the lock itself.
    static KERNEL: std::cell::RefCell<(usize, Option<Lock>)> =
        const { std::cell::RefCell::new((0, None)) };
}

/// Holds the kernel lock; the last guard of a thread to go releases it.
pub struct KernelGuard(());

impl Drop for KernelGuard {
    fn drop(&mut self) {
        KERNEL.with(|k| {
            let mut k = k.borrow_mut();
            k.0 = k.0.saturating_sub(1);
            if k.0 == 0 {
                k.1 = None;
            }
        });
    }
}

fn flock(f: &File, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// FNV-1a of the name, reduced to a stripe.
fn stripe(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % STRIPES
}

/// Identifies a live process across pid reuse: its pid and start time (clock ticks since
/// boot, field 22 of /proc/PID/stat). Pending records carry their owner's, so no other
/// command mistakes a record being built for crash debris.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: i64,
    pub start: i64,
}

impl Owner {
    pub fn me() -> Owner {
        let pid = i64::from(std::process::id());
        Owner {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether this process is still running (same pid and same start time).
    pub fn alive(&self) -> bool {
        self.pid > 0 && start_time(self.pid) == Some(self.start)
    }
}

fn start_time(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The file `knit daemon` holds an exclusive lock on while it serves a state dir.
pub const DAEMON_LOCK: &str = "daemon.lock";

/// Is a daemon serving this state dir? (It holds an exclusive lock on DAEMON_LOCK.)
pub fn daemon_running(state_dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(state_dir.join(DAEMON_LOCK)) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; released when `f` drops.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_me_is_alive_and_a_dead_pid_is_not() {
        let me = Owner::me();
        assert!(me.start > 0);
        assert!(me.alive());
        let reused = Owner {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!reused.alive(), "another start time is another process");
        assert!(!Owner { pid: 0, start: 0 }.alive());
    }

    #[test]
    fn the_kernel_lock_is_reentrant_in_a_thread() {
        let dir = std::env::temp_dir().join(format!("knit-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Lock::kernel(&dir).unwrap();
        let b = Lock::kernel(&dir).unwrap(); // would deadlock if not re-entrant
        drop(a);
        drop(b);
        // Released: another open file description can take it at once.
        let f = File::open(dir.join("nft.lock")).unwrap();
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stripes_are_stable_and_bounded() {
        assert_eq!(stripe("net1"), stripe("net1"));
        assert!((0..1000).all(|i| stripe(&format!("s{i}")) < STRIPES));
    }
}
