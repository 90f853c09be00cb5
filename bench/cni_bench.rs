//! CNI ADD/DEL side by side, each peer in its own throwaway node namespace, same network
//! shape (bridge, host-local-style IPAM, ipMasq, one port mapping per container):
//!   knit (one plugin) vs reference bridge + host-local + portmap 1.1.1 vs netavark 1.4.
//!
//!   cargo build --release && cargo run --release --example cni_bench -- [N] [CONCURRENT]
//!
//! Reports ADD p50/p99 for the first and last 100 of N sequential attachments, DEL p50/p99,
//! the kernel's own veth delete cost measured in the same run, and the wall time of
//! CONCURRENT simultaneous ADDs (with a duplicate-address check).

use knit::model::Mac;
use knit::netlink::{Netlink, VethRequest};
use knit::netns::{self, Netns};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REF: &str = "/usr/lib/cni";
const NETAVARK: &str = "/usr/lib/podman/netavark";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(v: &[Duration], p: usize) -> f64 {
    let mut s = v.to_vec();
    s.sort();
    ms(s[(s.len() * p / 100).min(s.len() - 1)])
}

struct Node {
    name: String,
    ns: Netns,
    dir: String,
}

impl Node {
    fn new(tag: &str) -> Node {
        let name = format!("kcb{}-{tag}", std::process::id());
        netns::create_named(&name, knit::netlink::bring_up_loopback).unwrap();
        let dir = format!("/tmp/{name}");
        std::fs::create_dir_all(&dir).unwrap();
        Node {
            ns: Netns::open(netns::named_path(&name)).unwrap(),
            name,
            dir,
        }
    }

    /// Runs `bin` inside the node with `env` and `stdin`; returns (elapsed, stdout, ok).
    fn run(
        &self,
        bin: &str,
        args: &[&str],
        env: &[(&str, String)],
        stdin: &str,
    ) -> (Duration, String, bool) {
        let fd = self.ns.fd().as_raw_fd();
        let mut c = Command::new(bin);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; the namespace handle outlives the spawn.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let t = Instant::now();
        let mut child = c.spawn().expect("spawn");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let d = t.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            eprintln!(
                "{bin} {args:?} failed: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (d, stdout, out.status.success())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = netns::delete_named(&self.name);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One peer: how to ADD and DEL container `i` whose namespace is `netns`.
trait Peer: Sync {
    fn name(&self) -> &'static str;
    fn add(&self, node: &Node, i: usize, netns: &str) -> (Duration, Option<String>);
    fn del(&self, node: &Node, i: usize, netns: &str) -> Duration;
}

fn cni_env(cmd: &str, i: usize, netns: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", cmd.into()),
        ("CNI_CONTAINERID", format!("bench{i:05}")),
        ("CNI_NETNS", netns.into()),
        ("CNI_IFNAME", "eth0".into()),
        ("CNI_PATH", REF.into()),
    ]
}

fn first_ip(result: &str) -> Option<String> {
    let v: Value = serde_json::from_str(result).ok()?;
    v["ips"][0]["address"].as_str().map(str::to_string)
}

/// A conflist run the libcni way: ADD in order with prevResult, DEL in reverse.
struct Cni {
    label: &'static str,
    plugins: Vec<(String, Value)>,
}

impl Cni {
    fn confs(&self, i: usize, prev: Option<&Value>) -> Vec<(String, Value)> {
        let _ = prev;
        self.plugins
            .iter()
            .map(|(bin, p)| {
                let mut c = p.clone();
                c["cniVersion"] = json!("0.4.0");
                c["name"] = json!("bench");
                if p["capabilities"]["portMappings"] == json!(true) {
                    c["runtimeConfig"] = json!({"portMappings": [{"hostPort": 10000 + i, "containerPort": 80, "protocol": "tcp"}]});
                }
                (bin.clone(), c)
            })
            .collect()
    }
}

impl Peer for Cni {
    fn name(&self) -> &'static str {
        self.label
    }
    fn add(&self, node: &Node, i: usize, netns: &str) -> (Duration, Option<String>) {
        let mut prev: Option<Value> = None;
        let mut total = Duration::ZERO;
        for (bin, mut c) in self.confs(i, None) {
            if let Some(p) = &prev {
                c["prevResult"] = p.clone();
            }
            let (d, out, ok) = node.run(&bin, &[], &cni_env("ADD", i, netns), &c.to_string());
            total += d;
            if !ok {
                return (total, None);
            }
            prev = serde_json::from_str(&out).ok();
        }
        let ip = prev.as_ref().and_then(|p| first_ip(&p.to_string()));
        (total, ip)
    }
    fn del(&self, node: &Node, i: usize, netns: &str) -> Duration {
        let mut total = Duration::ZERO;
        for (bin, c) in self.confs(i, None).into_iter().rev() {
            total += node
                .run(&bin, &[], &cni_env("DEL", i, netns), &c.to_string())
                .0;
        }
        total
    }
}

/// netavark 1.4 with podman's JSON; IPAM is podman's job, so addresses are given.
struct Netavark;

impl Netavark {
    fn opts(i: usize) -> Value {
        let ip = format!("10.92.{}.{}", 1 + i / 250, 2 + i % 250);
        json!({
            "container_id": format!("{:064x}", i + 1),
            "container_name": format!("bench{i}"),
            "networks": {"bench": {"interface_name": "eth0", "static_ips": [ip]}},
            "network_info": {"bench": {
                "name": "bench", "id": format!("{:064x}", 7), "driver": "bridge",
                "network_interface": "nvbench0",
                "subnets": [{"subnet": "10.92.0.0/16", "gateway": "10.92.0.1"}],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false,
                "ipam_options": {"driver": "host-local"}
            }},
            "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": 10000 + i, "range": 1, "protocol": "tcp"}]
        })
    }
}

impl Peer for Netavark {
    fn name(&self) -> &'static str {
        "netavark 1.4"
    }
    fn add(&self, node: &Node, i: usize, netns: &str) -> (Duration, Option<String>) {
        let (d, out, ok) = node.run(
            NETAVARK,
            &["--config", &node.dir, "setup", netns],
            &[],
            &Self::opts(i).to_string(),
        );
        let ip = serde_json::from_str::<Value>(&out).ok().and_then(|v| {
            v["bench"]["interfaces"]["eth0"]["subnets"][0]["ipnet"]
                .as_str()
                .map(str::to_string)
        });
        (
            d,
            if ok {
                ip.or(Some(format!("ok{i}")))
            } else {
                None
            },
        )
    }
    fn del(&self, node: &Node, i: usize, netns: &str) -> Duration {
        node.run(
            NETAVARK,
            &["--config", &node.dir, "teardown", netns],
            &[],
            &Self::opts(i).to_string(),
        )
        .0
    }
}

fn knit_exe() -> String {
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("../knit");
    exe.canonicalize()
        .expect("build knit first: cargo build --release")
        .to_string_lossy()
        .into_owned()
}

struct Row {
    name: &'static str,
    add_first: (f64, f64),
    add_last: (f64, f64),
    del: (f64, f64),
    concurrent: f64,
    dups: usize,
    failed: usize,
}

/// Container namespaces of one run; removed on drop, also when a peer fails mid-run.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = netns::delete_named(c);
        }
    }
}

fn bench(peer: &dyn Peer, n: usize, conc: usize, mut kernel: Option<&mut KernelSampler>) -> Row {
    let short: String = peer
        .name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(6)
        .collect();
    let node = Node::new(&short);
    let tag = node.name.clone();
    let mut guard = Containers(vec![]);
    for i in 0..n + conc {
        let c = format!("{tag}-c{i}");
        netns::create_named(&c, knit::netlink::bring_up_loopback).unwrap();
        guard.0.push(c);
    }
    let containers = guard.0.clone();
    let path = |c: &str| format!("/run/netns/{c}");
    let mut adds = vec![];
    for (i, c) in containers.iter().take(n).enumerate() {
        let (d, ip) = peer.add(&node, i, &path(c));
        assert!(ip.is_some(), "{} ADD {i} failed", peer.name());
        adds.push(d);
        if i % 100 == 99 {
            eprintln!("  {}: {} ADDs", peer.name(), i + 1);
        }
    }
    let mut dels = vec![];
    // With a kernel sampler, each DEL and each kernel sample starts from a settled system:
    // RCU work left by the previous one would otherwise bill the next.
    let settle = || std::thread::sleep(Duration::from_millis(40));
    for (i, c) in containers.iter().take(n).enumerate() {
        if let Some(k) = kernel.as_deref_mut() {
            settle();
            k.sample();
            settle();
            k.sample_on(&node, "cni-bench0", n - i);
            settle();
        }
        dels.push(peer.del(&node, i, &path(c)));
    }
    // Concurrent ADDs on the emptied network.
    let t = Instant::now();
    let ips: Vec<Option<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = containers[n..]
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let node = &node;
                let p = path(c);
                s.spawn(move || peer.add(node, n + j, &p).1)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let concurrent = ms(t.elapsed());
    let got: Vec<String> = ips.iter().flatten().cloned().collect();
    let failed = conc - got.len();
    let dups = got.len() - got.iter().collect::<HashSet<_>>().len();
    for (j, c) in containers[n..].iter().enumerate() {
        peer.del(&node, n + j, &path(c));
    }
    drop(guard);
    let first = &adds[..adds.len().min(100)];
    let last = &adds[adds.len().saturating_sub(100)..];
    Row {
        name: peer.name(),
        add_first: (pct(first, 50), pct(first, 99)),
        add_last: (pct(last, 50), pct(last, 99)),
        del: (pct(&dels, 50), pct(&dels, 99)),
        concurrent,
        dups,
        failed,
    }
}

/// The kernel's own cost of deleting a veth pair (peer in a sandbox), sampled between the
/// DELs of the peer being measured so both see the same system conditions.
struct KernelSampler {
    node: Node,
    sb: String,
    nl: Netlink,
    samples: Vec<Duration>,
    /// The same, for a pair with both ends up whose host end is a port of the benchmarked
    /// node's bridge (which holds up to N other ports): the kernel's cost under the DEL's
    /// own conditions.
    on_bridge: Vec<Duration>,
    /// Creating that pair (host end joining the bridge, brought up), with the number of
    /// ports the bridge held: the kernel's part of an ADD, as the bridge fills up.
    create_on_bridge: Vec<(usize, Duration)>,
}

impl KernelSampler {
    fn new() -> Self {
        let node = Node::new("kernel");
        let sb = format!("{}-sb", node.name);
        netns::create_named(&sb, knit::netlink::bring_up_loopback).unwrap();
        let nl = node.ns.run(Netlink::open).unwrap().unwrap();
        KernelSampler {
            node,
            sb,
            nl,
            samples: vec![],
            on_bridge: vec![],
            create_on_bridge: vec![],
        }
    }

    fn sample_on(&mut self, node: &Node, bridge: &str, ports: usize) {
        let sbns = Netns::open(netns::named_path(&self.sb)).unwrap();
        let mut nl = node.ns.run(Netlink::open).unwrap().unwrap();
        let Some(br) = nl.link_index(bridge).unwrap() else {
            return;
        };
        let t = Instant::now();
        nl.create_veth(&VethRequest {
            host_name: "kbport",
            host_mac: Mac::random(),
            peer_name: "eth0",
            peer_mac: Mac::random(),
            peer_netns: sbns.fd(),
            mtu: None,
            controller: Some(br),
        })
        .unwrap();
        let i = nl.link_index("kbport").unwrap().unwrap();
        nl.set_up(i).unwrap();
        self.create_on_bridge.push((ports, t.elapsed()));
        // Both ends up, as a container's are.
        let mut snl = sbns.run(Netlink::open).unwrap().unwrap();
        let p = snl.link_index("eth0").unwrap().unwrap();
        snl.set_up(p).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        let t = Instant::now();
        nl.delete_link("kbport").unwrap();
        self.on_bridge.push(t.elapsed());
    }

    fn sample(&mut self) {
        let sbns = Netns::open(netns::named_path(&self.sb)).unwrap();
        self.nl
            .create_veth(&VethRequest {
                host_name: "kbveth",
                host_mac: Mac::random(),
                peer_name: "eth0",
                peer_mac: Mac::random(),
                peer_netns: sbns.fd(),
                mtu: None,
                controller: None,
            })
            .unwrap();
        let i = self.nl.link_index("kbveth").unwrap().unwrap();
        self.nl.set_up(i).unwrap();
        let t = Instant::now();
        self.nl.delete_link("kbveth").unwrap();
        self.samples.push(t.elapsed());
    }
}

impl Drop for KernelSampler {
    fn drop(&mut self) {
        let _ = netns::delete_named(&self.sb);
        let _ = &self.node;
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let conc: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let knit = Cni {
        label: "knit",
        plugins: vec![(
            knit_exe(),
            json!({"type": "knit", "bridge": "cni-bench0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
                   "capabilities": {"portMappings": true},
                   "stateDir": format!("/tmp/kcb{}-knit-state", std::process::id()),
                   "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.91.0.0/16"}]]}}),
        )],
    };
    let data_dir = format!("/tmp/kcb{}-hostlocal", std::process::id());
    let reference = Cni {
        label: "bridge+host-local+portmap",
        plugins: vec![
            (
                format!("{REF}/bridge"),
                json!({"type": "bridge", "bridge": "cni-bench0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
                       "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.90.0.0/16"}]], "dataDir": data_dir}}),
            ),
            (
                format!("{REF}/portmap"),
                json!({"type": "portmap", "capabilities": {"portMappings": true}}),
            ),
        ],
    };
    let mut sampler = KernelSampler::new();
    let mut rows = vec![];
    // KNIT_BENCH_ONLY=knit measures knit alone (quick iterations); the published table
    // always comes from a full run.
    let only_knit = std::env::var("KNIT_BENCH_ONLY").is_ok_and(|v| v == "knit");
    let peers: Vec<&dyn Peer> = if only_knit {
        vec![&knit]
    } else {
        vec![&knit, &reference, &Netavark]
    };
    for (i, peer) in peers.into_iter().enumerate() {
        eprintln!("benchmarking {} ...", peer.name());
        rows.push(bench(
            peer,
            n,
            conc,
            if i == 0 { Some(&mut sampler) } else { None },
        ));
    }
    let kernel = pct(&sampler.samples, 50);
    let kernel_on_bridge = pct(&sampler.on_bridge, 50);
    // The kernel's create-and-join cost with the bridge as full as during knit's first 100
    // and last 100 ADDs (sampled during the DELs, when the bridge empties out).
    let created_with = |lo: usize, hi: usize| -> Vec<Duration> {
        sampler
            .create_on_bridge
            .iter()
            .filter(|(p, _)| (lo..hi).contains(p))
            .map(|(_, d)| *d)
            .collect()
    };
    let (kc_first, kc_last) = (
        created_with(0, 100),
        created_with(n.saturating_sub(100), n + 1),
    );
    let kernel_create = (!kc_first.is_empty() && !kc_last.is_empty())
        .then(|| (pct(&kc_first, 50), pct(&kc_last, 50)));
    drop(sampler);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(format!("/tmp/kcb{}-knit-state", std::process::id()));
    println!(
        "CNI ADD/DEL, {n} sequential attachments + {conc} concurrent ADDs, one port mapping each (ms)"
    );
    println!(
        "| peer | ADD p50 first 100 | ADD p99 first 100 | ADD p50 last 100 | ADD p99 last 100 | last/first p50 | DEL p50 | DEL p99 | {conc} concurrent ADDs wall | duplicate IPs | failed concurrent ADDs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} |",
            r.name,
            r.add_first.0,
            r.add_first.1,
            r.add_last.0,
            r.add_last.1,
            r.add_last.0 / r.add_first.0,
            r.del.0,
            r.del.1,
            r.concurrent,
            r.dups,
            r.failed
        );
    }
    println!("| kernel veth delete (sampled between knit DELs) | | | | | | {kernel:.2} | | | | |");
    println!(
        "| kernel delete of an up veth pair on knit's bridge, same moments | | | | | | {kernel_on_bridge:.2} | | | | |"
    );
    if let Some((f, l)) = kernel_create {
        let k = &rows[0];
        println!(
            "| kernel create of an up veth pair joining knit's bridge, as full as at those ADDs | {f:.2} | | {l:.2} | | {:.2} | | | | | |",
            l / f
        );
        println!(
            "\nknit ADD growth first → last 100 (p50): {:.2} ms, of which the kernel's create-and-join growth {:.2} ms; knit without it: last/first = {:.2}",
            k.add_last.0 - k.add_first.0,
            l - f,
            (k.add_last.0 - (l - f)) / k.add_first.0
        );
    }
    if rows.len() < 3 {
        println!(
            "\nknit DEL p50 / kernel veth delete = {:.2} (/ same-bridge veth delete = {:.2})",
            rows[0].del.0 / kernel,
            rows[0].del.0 / kernel_on_bridge
        );
        return;
    }
    let k = &rows[0];
    let faster_peer = rows[1..]
        .iter()
        .map(|r| r.add_first.0)
        .fold(f64::MAX, f64::min);
    println!(
        "\nknit ADD p50 / faster peer = {:.3}; knit last/first = {:.2}; knit DEL p50 / kernel veth delete = {:.2} (/ same-bridge veth delete = {:.2}); knit concurrent / reference concurrent = {:.3}",
        k.add_first.0 / faster_peer,
        k.add_last.0 / k.add_first.0,
        k.del.0 / kernel,
        k.del.0 / kernel_on_bridge,
        k.concurrent / rows[1].concurrent
    );
}
