//! Randomized soak: several workers at once run random CLI and CNI operations (networks,
//! attach/detach with published ports and labels, services and backends, policies, CNI
//! ADD/DEL/GC, reconcile, kill -9 of some commands) on a node that also holds foreign
//! links, a foreign bridge and a foreign nft table. After every round: store and kernel agree, no duplicate
//! IP or MAC, no knit link without a record, no foreign object changed, and two fixed
//! sandboxes still reach each other.
//!
//! KNIT_SOAK_SECS (default 60) bounds it; KNIT_SOAK_SEED replays a run (the seed is
//! printed first).

mod common;
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const WORKERS: usize = 4;
const ROUND: Duration = Duration::from_secs(6);

/// xorshift64*: small, deterministic per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &'a [&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

/// Failures a correct knit may give under random input: named conflicts and refusals.
/// Anything else (a raw errno from a race, "database is locked", a panic) is a bug.
fn acceptable(o: &Output) -> bool {
    if o.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    let text = format!("{err}{out}");
    if o.status.code() == Some(101) || text.contains("panicked") {
        return false;
    }
    let races = [
        "os error 17",
        "os error 2)",
        "database is locked",
        "table or set is missing",
        "element batch rejected",
    ];
    !races.iter().any(|r| text.contains(r))
}

struct Soak<'a> {
    w: &'a World,
    sandboxes: Vec<String>,
    cni_ns: Vec<String>,
    failures: std::sync::Mutex<Vec<String>>,
    ops: AtomicUsize,
    succeeded: AtomicUsize,
}

impl Soak<'_> {
    fn knit(&self, args: &[&str]) -> Output {
        self.w.run(args)
    }

    fn cni(&self, cmd: &str, i: usize) -> Output {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "cnet", "type": "knit", "bridge": "cni-soak0",
            "isGateway": true, "ipMasq": true,
            "runtimeConfig": {"portMappings": [{"hostPort": 9100 + i, "containerPort": 80, "protocol": "udp"}]},
            "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                     "ranges": [[{"subnet": "10.93.0.0/24"}]]}
        });
        self.plugin(
            cmd,
            &format!("soak{i}"),
            &format!("/run/netns/{}", self.cni_ns[i]),
            &conf,
        )
    }

    fn cni_gc(&self, keep: &[usize]) -> Output {
        let valid: Vec<serde_json::Value> = keep
            .iter()
            .map(|i| json!({"containerID": format!("soak{i}"), "ifname": "eth0"}))
            .collect();
        let conf = json!({
            "cniVersion": "1.1.0", "name": "cnet", "type": "knit", "bridge": "cni-soak0",
            "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.93.0.0/24"}]]},
            "cni.dev/valid-attachments": valid
        });
        self.plugin("GC", "", "", &conf)
    }

    /// The knit binary as a CNI plugin in the node (an empty id or netns is not passed).
    fn plugin(&self, cmd: &str, cid: &str, netns: &str, conf: &serde_json::Value) -> Output {
        let mut c = command_in(&self.w.node, KNIT);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("KNIT_STATE_DIR", &self.w.state)
            .env("CNI_COMMAND", cmd)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !cid.is_empty() {
            c.env("CNI_CONTAINERID", cid)
                .env("CNI_NETNS", netns)
                .env("CNI_IFNAME", "eth0");
        }
        let mut child = c.spawn().unwrap();
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes());
        child.wait_with_output().unwrap()
    }

    fn op(&self, rng: &mut Rng) {
        let nets = ["n0", "n1", "n2"];
        let net = rng.pick(&nets);
        let s = &self.sandboxes[rng.below(self.sandboxes.len() as u64) as usize];
        let (what, o): (String, Output) = match rng.below(22) {
            0 => {
                let i = &net[1..];
                let subnet = format!("10.9{i}.0.0/24");
                (
                    format!("create {net}"),
                    self.knit(&["network", "create", net, "--subnet", &subnet]),
                )
            }
            1 => (format!("rm {net}"), self.knit(&["network", "rm", net])),
            2..=5 => {
                let port = format!("{}:80", 9000 + rng.below(8));
                let label = format!("app={}", rng.pick(&["web", "db"]));
                let mut args = vec!["attach", net, s.as_str(), "--label", &label];
                if rng.below(2) == 0 {
                    args.extend(["--publish", &port]);
                }
                (format!("attach {net} {s}"), self.knit(&args))
            }
            6..=8 => (format!("detach {net} {s}"), self.knit(&["detach", net, s])),
            9 => {
                let i = rng.below(self.cni_ns.len() as u64) as usize;
                (format!("cni ADD {i}"), self.cni("ADD", i))
            }
            10 => {
                let i = rng.below(self.cni_ns.len() as u64) as usize;
                (format!("cni DEL {i}"), self.cni("DEL", i))
            }
            11 => (
                "svc create".into(),
                self.knit(&["service", "create", "svc", "--vip", "10.96.0.7:80"]),
            ),
            12 => ("svc rm".into(), self.knit(&["service", "rm", "svc"])),
            13 | 14 => {
                let verb = rng.pick(&["add", "rm"]);
                let target = format!("{s}:80");
                (
                    format!("backend {verb} {s}"),
                    self.knit(&["service", "backend", verb, "svc", &target]),
                )
            }
            15 => {
                let d = rng.pick(&["allow", "deny"]);
                (
                    format!("policy {net} {d}"),
                    self.knit(&["policy", "default", net, d]),
                )
            }
            16 => (
                format!("policy allow {net}"),
                self.knit(&[
                    "policy", "allow", net, "--from", "app=web", "--to", "app=db", "--port", "80",
                ]),
            ),
            17 => ("reconcile".into(), self.knit(&["reconcile"])),
            18 => {
                // CNI GC keeping a random subset of the containers.
                let keep: Vec<usize> = (0..self.cni_ns.len())
                    .filter(|_| rng.below(2) == 0)
                    .collect();
                (format!("cni GC keep {keep:?}"), self.cni_gc(&keep))
            }
            19 => {
                let id = (1 + rng.below(12)).to_string();
                (format!("policy rm {id}"), self.knit(&["policy", "rm", &id]))
            }
            _ => {
                // kill -9 an attach at a random moment.
                let mut child = self
                    .w
                    .cmd(&["attach", net, s])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_micros(rng.below(8000)));
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        };
        self.ops.fetch_add(1, Ordering::Relaxed);
        if o.status.success() {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else if std::env::var_os("KNIT_SOAK_VERBOSE").is_some() {
            eprintln!(
                "soak: {what}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        if !acceptable(&o) {
            self.failures.lock().unwrap().push(format!(
                "{what}: exit {:?}: {}{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            ));
        }
    }
}

/// Elements sorted within each set, so equal state lists equal.
fn normalized_table(w: &World) -> String {
    sorted_elements(&w.nft_table())
}

fn foreign_state(w: &World) -> String {
    let links = w.node_ip(&["-o", "link", "show"]);
    let mut keep: Vec<String> = links
        .lines()
        .filter(|l| {
            l.contains("fveth")
                || l.contains("fbr0")
                || l.contains("uplink")
                || l.contains("kv0123456789")
        })
        .map(|l| {
            // Drop counters and the index: keep name, flags, MAC.
            let name = l.split(": ").nth(1).unwrap_or("").to_string();
            let mac = l
                .split("link/ether ")
                .nth(1)
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string();
            format!("{name} {mac}")
        })
        .collect();
    keep.sort();
    let addrs = w.node_ip(&["-o", "-4", "addr", "show", "dev", "fbr0"]);
    // Rules and policies, not the counters traffic moves.
    let table: String = sh_ok(&[
        "ip", "netns", "exec", &w.node, "nft", "list", "table", "inet", "foreign",
    ])
    .lines()
    .map(|l| match l.find("counter packets") {
        Some(i) => format!("{}counter {}", &l[..i], l.rsplit(' ').next().unwrap_or("")),
        None => l.to_string(),
    })
    .collect::<Vec<_>>()
    .join("\n");
    format!("{}\n{addrs}\n{table}", keep.join("\n"))
}

fn check_round(w: &World, a: &str, b_ip: &str, foreign: &str, round: usize) {
    // Crash debris (kill -9) is reconcile's to clean; after that, a second reconcile must
    // find the kernel exactly as the store describes it.
    w.ok(&["reconcile"]);
    let before = normalized_table(w);
    let rep = w.json(&["reconcile"]);
    assert!(
        rep["pending_removed"].as_array().unwrap().is_empty(),
        "round {round}: pending records without a running command: {rep}"
    );
    assert_eq!(
        before,
        normalized_table(w),
        "round {round}: the kernel differed from the store"
    );
    let nets = w.json(&["network", "ls"]);
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    let mut recorded: HashSet<String> = HashSet::new();
    for n in nets.as_array().unwrap() {
        if let Some(br) = n["bridge"].as_str() {
            recorded.insert(br.to_string());
        }
        let v = w.json(&["network", "inspect", n["name"].as_str().unwrap()]);
        for att in v["attachments"].as_array().unwrap() {
            assert_eq!(att["state"], "ready", "round {round}: {att}");
            recorded.insert(att["host_ifname"].as_str().unwrap().to_string());
            assert!(
                macs.insert(att["mac"].as_str().unwrap().to_string()),
                "round {round}: duplicate MAC {att}"
            );
            for ip in att["ips"].as_array().unwrap() {
                assert!(
                    ips.insert(ip.as_str().unwrap().to_string()),
                    "round {round}: duplicate IP {ip}"
                );
            }
        }
    }
    let live: HashSet<String> = w.knit_links().into_iter().collect();
    let leaked: Vec<&String> = live
        .iter()
        .filter(|l| !recorded.contains(*l) && *l != "kv0123456789")
        .collect();
    assert!(leaked.is_empty(), "round {round}: leaked links {leaked:?}");
    assert_eq!(
        foreign_state(w),
        foreign,
        "round {round}: a foreign object changed"
    );
    assert!(
        ping(a, b_ip),
        "round {round}: fixed sandboxes lost each other"
    );
}

#[test]
fn random_concurrent_operations_keep_every_invariant() {
    let secs: u64 = std::env::var("KNIT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("KNIT_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("soak: seed {seed} ({secs} s); replay with KNIT_SOAK_SEED={seed}");
    let mut w = World::new().with_outside();
    // Foreign objects knit must never touch.
    for args in [
        vec![
            "link", "add", "fveth0", "type", "veth", "peer", "name", "fveth1",
        ],
        vec!["link", "add", "fbr0", "type", "bridge"],
        vec!["addr", "add", "192.0.2.1/24", "dev", "fbr0"],
        vec!["link", "set", "fbr0", "up"],
    ] {
        let mut a = vec!["ip", "-n", w.node.as_str()];
        a.extend(args);
        sh_ok(&a);
    }
    sh_ok(&[
        "ip",
        "netns",
        "exec",
        &w.node,
        "nft",
        "add table inet foreign; add chain inet foreign fchain { type filter hook forward priority 10; policy accept; }; add rule inet foreign fchain counter accept",
    ]);
    // Two fixed sandboxes on a network the workers never touch.
    w.ok(&["network", "create", "base", "--subnet", "10.99.0.0/24"]);
    // A foreign link that looks like one of knit's (a blank store would refuse to start
    // next to it, so it comes after the first command).
    sh_ok(&[
        "ip",
        "-n",
        &w.node,
        "link",
        "add",
        "kv0123456789",
        "type",
        "veth",
        "peer",
        "name",
        "fveth2",
    ]);
    let foreign = foreign_state(&w);
    let a = w.sandbox("fa");
    let b = w.sandbox("fb");
    w.ok(&["attach", "base", &a]);
    w.ok(&["attach", "base", &b]);
    let b_ip = w.ip_of("base", &b, 4);
    let sandboxes: Vec<String> = (0..6).map(|i| w.sandbox(&format!("s{i}"))).collect();
    let cni_ns: Vec<String> = (0..3)
        .map(|i| {
            let n = format!("{}-c{i}", w.prefix);
            sh_ok(&["ip", "netns", "add", &n]);
            n
        })
        .collect();
    for n in &cni_ns {
        w.track(n);
    }
    let soak = Soak {
        w: &w,
        sandboxes,
        cni_ns,
        failures: std::sync::Mutex::new(vec![]),
        ops: AtomicUsize::new(0),
        succeeded: AtomicUsize::new(0),
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut round = 0;
    while Instant::now() < deadline {
        round += 1;
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            for i in 0..WORKERS {
                let soak = &soak;
                let stop = &stop;
                let mut rng = Rng(seed ^ ((round as u64) << 32) ^ ((i as u64 + 1) * 0x9e37_79b9));
                sc.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        soak.op(&mut rng);
                    }
                });
            }
            std::thread::sleep(ROUND.min(deadline.saturating_duration_since(Instant::now())));
            stop.store(true, Ordering::Relaxed);
        });
        let failures = soak.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "seed {seed}, round {round}: {} command(s) failed with a race or crash:\n{}",
            failures.len(),
            failures.join("\n")
        );
        check_round(&w, &a, &b_ip, &foreign, round);
    }
    let (ops, ok) = (
        soak.ops.load(Ordering::Relaxed),
        soak.succeeded.load(Ordering::Relaxed),
    );
    eprintln!(
        "soak: seed {seed}: {round} rounds, {ops} operations ({ok} succeeded), every invariant held"
    );
    assert!(
        ok * 4 > ops,
        "too few operations succeeded to mean anything: {ok} of {ops}"
    );
}
