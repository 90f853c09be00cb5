//! Closing a netfilter netlink socket right after a transaction that deleted set elements
//! makes the kernel wait for an RCU grace period (it flushes pending destroy work on socket
//! release), ≈15 ms here. Detach does not need to wait for that: a forked child keeps a
//! reference to the socket until this process exits (it waits for EOF on a pipe whose write
//! end only this process holds), so the final close happens in the child after we are gone,
//! and late enough that the kernel's worker has already done the destroy work itself.

/// Drops `resource` without letting its last close delay this process.
pub fn close_detached<T: std::os::fd::AsRawFd>(resource: T) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return; // `resource` drops the ordinary way.
    }
    // SAFETY: the child only calls async-signal-safe functions (close_range, read,
    // nanosleep, _exit) and owns every descriptor it closes.
    match unsafe { libc::fork() } {
        0 => unsafe {
            // Keep only the socket and the pipe's read end: stdio (a CNI runtime's pipe),
            // the store and the state-dir lock must not outlive this process (a held
            // shared lock would stall `knit reconcile` for the pause below).
            let mut keep = [resource.as_raw_fd() as libc::c_uint, fds[0] as libc::c_uint];
            keep.sort_unstable();
            let mut from = 0;
            for k in keep {
                if k > from {
                    libc::close_range(from, k - 1, 0);
                }
                from = k + 1;
            }
            libc::close_range(from, libc::c_uint::MAX, 0);
            let mut b = 0u8;
            while libc::read(fds[0], (&mut b as *mut u8).cast(), 1) > 0 {}
            // The release flushes the kernel's pending destroy work while holding the
            // nf_tables commit mutex, so closing at once would stall the next knit command's
            // commit for a grace period (measured: back-to-back `service rm` 12 ms each with
            // an immediate close, 4.9 ms with this pause). By the time the pause ends the
            // kernel's own worker has usually done that work, and the close is cheap.
            let pause = libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
            libc::_exit(0);
        },
        pid if pid > 0 => {
            // SAFETY: the read end is ours; the write end stays open until we exit.
            unsafe { libc::close(fds[0]) };
            // Our copy of the socket closes here; the child's keeps it alive.
            drop(resource);
        }
        _ => {
            // SAFETY: both ends are ours.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        }
    }
}

/// Starts this binary with `args`, without waiting for it: stdio on /dev/null (a CNI
/// runtime reading our stdout must not wait for it), never as a CNI plugin invocation even
/// if we are one, in its own process group. Background helpers (`store-maintenance`,
/// `nft-keeper`) start this way.
pub fn spawn_self<S: AsRef<std::ffi::OsStr>>(args: &[S]) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let _ = std::process::Command::new(exe)
        .args(args)
        .env_remove("CNI_COMMAND")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
}
