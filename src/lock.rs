//! Coordination between knit processes on one node. Every mutating command holds a shared
//! lock on STATE/lock; `reconcile` holds it exclusively, so a pending attachment it finds
//! belongs to a process that died (kill -9 releases flocks), never to one still working.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub struct Lock(#[allow(dead_code)] File);

impl Lock {
    pub fn take(dir: &Path, exclusive: bool) -> Result<Lock> {
        Self::take_file(dir, "lock", exclusive)
    }

    /// A lock on another file in the state dir (e.g. serializing network creation).
    pub fn take_file(dir: &Path, name: &str, exclusive: bool) -> Result<Lock> {
        let path = dir.join(name);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .op(|| format!("open {}", path.display()))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: flock on a descriptor we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), op) };
            if r == 0 {
                return Ok(Lock(f));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(Error::io(format!("lock {}", path.display()), e));
            }
        }
    }
}
