//! Namespace-scoped sysctls under /proc/sys/net. /proc/sys/net reflects the network
//! namespace of the thread that opens the file, so these act on the node (or, inside
//! `Netns::run`, on a sandbox) and never on another namespace.

use crate::error::{IoContext, Result};
use std::path::PathBuf;

fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// Key with an interface name in it: the name may contain '.', so it is joined as one
/// path component rather than split.
pub fn iface_key(family: &str, ifname: &str, knob: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/{family}/conf"))
        .join(ifname)
        .join(knob)
}

pub fn read(key: &str) -> Option<String> {
    std::fs::read_to_string(path(key))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn read_path(p: &PathBuf) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Writes only when the value differs (writing ip_forward resets per-interface settings).
pub fn ensure_path(p: &PathBuf, value: &str) -> Result<()> {
    if read_path(p).as_deref() == Some(value) {
        return Ok(());
    }
    std::fs::write(p, value).op(|| format!("set {} = {value}", p.display()))
}

pub fn ensure(key: &str, value: &str) -> Result<()> {
    ensure_path(&path(key), value)
}

/// The node's forwarding switches for the families a network uses.
pub fn ensure_forwarding(v4: bool, v6: bool) -> Result<()> {
    if v4 {
        ensure("net.ipv4.ip_forward", "1")?;
    }
    if v6 {
        ensure("net.ipv6.conf.all.forwarding", "1")?;
    }
    Ok(())
}
