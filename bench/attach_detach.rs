//! Attach/detach latency of the knit CLI beside the kernel's own cost of creating and
//! deleting a veth pair, all inside a throwaway node namespace.
//!
//!   cargo run --release --example attach_detach -- [N]
//!
//! knit is timed as a user runs it (a fresh `knit attach` / `knit detach` process each
//! time, one published port); the kernel baseline is one netlink request per create /
//! delete from a warm process, which is the floor any tool pays.

use knit::model::Mac;
use knit::netlink::{Netlink, VethRequest};
use knit::netns::{self, Netns};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stats(name: &str, mut v: Vec<Duration>) -> f64 {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p50 = ms(v[v.len() / 2]);
    let p99 = ms(v[(v.len() * 99 / 100).min(v.len() - 1)]);
    println!(
        "{name:<34} n={:<5} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms",
        v.len()
    );
    p50
}

fn knit(exe: &str, node: &Netns, state: &str, args: &[&str]) -> Duration {
    let fd = node.fd().as_raw_fd();
    let mut c = Command::new(exe);
    c.arg("--state-dir")
        .arg(state)
        .args(args)
        .stdout(Stdio::null());
    // SAFETY: setns is async-signal-safe and `node` outlives the child's spawn.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t = Instant::now();
    let st = c.status().expect("run knit");
    let d = t.elapsed();
    assert!(st.success(), "knit {args:?} failed");
    d
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("../knit");
    let exe = exe
        .canonicalize()
        .expect("build knit first: cargo build --release");
    let exe = exe.to_str().unwrap().to_string();
    let tag = format!("kbench{}", std::process::id());
    let node_name = format!("{tag}-node");
    let sb_name = format!("{tag}-sb");
    netns::create_named(&node_name, knit::netlink::bring_up_loopback).unwrap();
    netns::create_named(&sb_name, knit::netlink::bring_up_loopback).unwrap();
    let state = format!("/tmp/{tag}-state");
    let cleanup = || {
        let _ = netns::delete_named(&sb_name);
        let _ = netns::delete_named(&node_name);
        let _ = std::fs::remove_dir_all(&state);
    };
    let node = Netns::open(netns::named_path(&node_name)).unwrap();
    let sb = Netns::open(netns::named_path(&sb_name)).unwrap();

    // Kernel baseline: veth create (peer straight into the sandbox) and delete, sampled in
    // turn with the knit commands so both see the same system conditions.
    let mut nl = node.run(Netlink::open).unwrap().unwrap();
    let mut nl2 = node.run(Netlink::open).unwrap().unwrap();
    let (mut create, mut delete) = (vec![], vec![]);
    let mut kernel_sample = || {
        let t = Instant::now();
        nl.create_veth(&VethRequest {
            host_name: "kbveth",
            host_mac: Mac::random(),
            peer_name: "eth0",
            peer_mac: Mac::random(),
            peer_netns: sb.fd(),
            mtu: None,
            controller: None,
        })
        .unwrap();
        create.push(t.elapsed());
        // Up, as before the delete of a real attachment (not timed).
        let i = nl.link_index("kbveth").unwrap().unwrap();
        nl.set_up(i).unwrap();
        let t = Instant::now();
        nl.delete_link("kbveth").unwrap();
        delete.push(t.elapsed());
    };

    knit(
        &exe,
        &node,
        &state,
        &["network", "create", "bench", "--subnet", "10.200.0.0/16"],
    );
    let (mut att, mut det, mut attached_delete) = (vec![], vec![], vec![]);
    // Each measured operation starts from a settled system: RCU work left by the previous
    // one (a veth delete, a deferred nft socket close) would otherwise bill the next.
    let settle = || std::thread::sleep(Duration::from_millis(40));
    for _ in 0..n {
        settle();
        kernel_sample();
        settle();
        att.push(knit(
            &exe,
            &node,
            &state,
            &["attach", "bench", &sb_name, "-p", "8080:80"],
        ));
        settle();
        det.push(knit(&exe, &node, &state, &["detach", "bench", &sb_name]));
        // The kernel's cost for the same, fully configured pair (bridge port, addresses,
        // routes, neighbours): attach with knit, then delete the host end directly.
        knit(
            &exe,
            &node,
            &state,
            &["attach", "bench", &sb_name, "-p", "8080:80"],
        );
        let host_if = node
            .run(|| Netlink::open().unwrap().links().unwrap())
            .unwrap()
            .into_iter()
            .find(|l| l.name.starts_with("kv"))
            .unwrap()
            .name;
        settle();
        let t = Instant::now();
        nl2.delete_link(&host_if).unwrap();
        attached_delete.push(t.elapsed());
        knit(&exe, &node, &state, &["detach", "bench", &sb_name]);
    }
    cleanup();

    println!("attach/detach latency, {n} runs each, inside a throwaway node namespace");
    let kc = stats("kernel: veth create (netlink)", create);
    let kd = stats("kernel: veth delete (netlink)", delete);
    let kad = stats("kernel: delete of an attached veth", attached_delete);
    let ka = stats("knit attach (process, 1 port)", att);
    let kdd = stats("knit detach (process, 1 port)", det);
    println!(
        "ratios: attach / veth create = {:.1}x, detach / veth delete = {:.2}x, detach / attached-veth delete = {:.2}x",
        ka / kc,
        kdd / kd,
        kdd / kad
    );
}
