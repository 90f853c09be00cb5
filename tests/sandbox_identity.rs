//! A sandbox path can come to name another namespace: `pid:PID` after the process is gone
//! and the PID reused, a container restarted at the same bind-mount path. knit records
//! each attachment's namespace identity (nsfs device and inode) and never takes the new
//! namespace for the old one.

mod common;
use common::*;
use std::process::{Command, Stdio};

/// Replaces the namespace at /run/netns/NAME with a new one, as a restarted container's
/// runtime would (outside knit).
fn replace_namespace(name: &str) {
    sh_ok(&["ip", "netns", "del", name]);
    sh_ok(&["ip", "netns", "add", name]);
}

#[test]
fn a_replaced_namespace_is_not_the_attached_one() {
    let mut w = World::new();
    w.ok(&["network", "create", "n", "--subnet", "10.47.0.0/24"]);
    let a = w.sandbox("a");
    w.ok(&["attach", "n", &a]);
    let first = w.ip_of("n", &a, 4);
    replace_namespace(&a);

    // reconcile: the new namespace at the same path gets nothing of the old attachment.
    let rep = w.json(&["reconcile"]);
    assert_eq!(
        rep["gone_removed"],
        serde_json::json!([format!("n/{a}")]),
        "{rep}"
    );
    assert!(!sh_ok(&["ip", "-n", &a, "link"]).contains("eth0"));
    assert!(w.attachments("n") == 0);

    // attach without a reconcile in between: the stale record is cleared and the new
    // namespace is attached afresh (not "already attached").
    w.ok(&["attach", "n", &a]);
    replace_namespace(&a);
    w.ok(&["attach", "n", &a]);
    assert!(sh_ok(&["ip", "-n", &a, "addr", "show", "eth0"]).contains("10.47.0."));
    let v = w.json(&["network", "inspect", "n"]);
    assert_eq!(v["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(
        w.knit_links()
            .iter()
            .filter(|l| l.starts_with("kv"))
            .count(),
        1
    );
    let _ = first;
}

#[test]
fn a_pid_sandbox_whose_process_is_gone_is_removed_not_kept() {
    let w = World::new();
    w.ok(&["network", "create", "n", "--subnet", "10.48.0.0/24"]);
    let mut child = Command::new("unshare")
        .args(["--net", "sleep", "600"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // unshare execs sleep once the namespace exists.
    eventually("the child's own namespace", || {
        std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
            != std::fs::read_link("/proc/self/ns/net").ok()
    });
    let sb = format!("pid:{pid}");
    w.ok(&["attach", "n", &sb]);
    let v = w.json(&["network", "inspect", "n"]);
    assert_eq!(
        v["attachments"][0]["netns_id"]
            .as_str()
            .map(|s| s.contains(':')),
        Some(true)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let rep = w.json(&["reconcile"]);
    assert_eq!(
        rep["gone_removed"],
        serde_json::json!([format!("n/{sb}")]),
        "{rep}"
    );
    assert!(w.attachments("n") == 0);
    assert!(w.knit_links().iter().all(|l| !l.starts_with("kv")));
}
