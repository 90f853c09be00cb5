//! Helpers the benchmarks share (each is an example of its own; this file is included with
//! `#[path]`): milliseconds, shell steps that must succeed, commands and threads in a
//! namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs a setup command; it must succeed.
pub fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(st.success(), "{args:?}");
}

/// A command run inside namespace `ns` (setns in the child, like `nsenter --net`).
pub fn cmd_in(ns: &str, program: &str, args: &[&str]) -> Command {
    let file = File::open(format!("/run/netns/{ns}")).expect("netns");
    let mut c = Command::new(program);
    c.args(args);
    // SAFETY: setns is async-signal-safe; `file` lives in the closure until exec.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Moves the calling (main) thread into namespace `ns` and returns a handle to the one it
/// left. Commands spawned from a thread that is already in the node need no `pre_exec`
/// hook, so std uses posix_spawn: the timing then is the command's, not a fork of this
/// process.
pub fn enter(ns: &str) -> File {
    let back = File::open("/proc/thread-self/ns/net").expect("own netns");
    let file = File::open(format!("/run/netns/{ns}")).expect("netns");
    // SAFETY: setns on the calling thread with a descriptor we own.
    assert_eq!(
        unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
    back
}

pub fn leave(back: File) {
    // SAFETY: as in `enter`.
    assert_eq!(
        unsafe { libc::setns(back.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
}
