//! Network policy at scale: knit's policy beside Calico's iptables + ipset layout, each in
//! its own throwaway node namespace, in one run.
//!
//!   cargo build --release --bins --examples
//!   cargo run --release --example policy_bench -- [RULES...] [--connects N] [--ops N]
//!       [--layout knit|calico]
//!
//! RULES defaults to `0 1000 10000`; CONNECTS (default 2000) and OPS (default 100) may also
//! come from the environment. Needs root, `ip`, and for the Calico layout Debian's `ipset`
//! and `iptables` (`apt-get install -y ipset iptables`; the kernel needs ip_set, xt_set,
//! xt_physdev and br_netfilter).
//!
//! Each (layout, RULES) row gets a fresh world: a node namespace, a knit bridge network `n`
//! (10.77.0.0/16), a server sandbox labelled app=srv listening on TCP :8080 and a client
//! sandbox labelled role=cli. The unfiltered baseline is measured in that world before any
//! policy exists. Then RULES allow rules that do not match the client (distinct /32 sources
//! from 198.18.0.0/15) are loaded in bulk, the filter is checked to drop the client, and the
//! rule that matches the client is added last. Measured with all of that in place:
//! - adding and removing one more rule (source 198.19.A.B), OPS times each, p50/p99 of the
//!   whole change as a user or an agent makes it: knit, one `knit policy allow` and one
//!   `knit policy rm` process; Calico, what felix does for one policy: `ipset restore` (create
//!   the selector's set, add its member) and one `iptables-restore --noflush` of the delta
//!   (policy chain, its rule, the jump in the workload's chain), and for removal the reverse
//!   (`iptables-restore --noflush` deleting the jump and the chain, then `ipset destroy`);
//! - new-connection latency client -> server (connect() until established, then an RST
//!   close), CONNECTS times, and its ratio to the unfiltered baseline.
//!
//! Calico layout, in the node namespace's iptables filter table: `FORWARD -m physdev
//! --physdev-out SERVER_VETH --physdev-is-bridged -j cali-tw-srv`; `cali-tw-srv`: conntrack
//! ESTABLISHED,RELATED accept, one `-j cali-pi-polN` per policy (the matching one last),
//! DROP; `cali-pi-polN`: `-p tcp -m set --match-set cali-s-polN src --dport 8080 -j ACCEPT`
//! over a `hash:net` ipset of that policy's selector addresses. Bridged traffic reaches the
//! FORWARD hook through the bridge's own nf_call_iptables option (never the host's sysctl).
//!
//! Everything (iptables state, ipsets, knit's nft table) lives in namespaces this bench
//! creates and deletes; the host's ipsets are compared before and after.
//!
//! One coherent thing (a self-contained program: both worlds, both layouts, the report),
//! hence one file over 600 lines.

#[path = "common.rs"]
mod common;
use common::{cmd_in, enter, leave, ms, sh};
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SUBNET: &str = "10.77.0.0/16";
const SRV_IP: &str = "10.77.0.10";
const CLI_IP: &str = "10.77.0.20";
const PORT: u16 = 8080;
const PREFIX: &str = "kpb-";
const BRIDGE: &str = "kpb0";

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The p-th percentile, nearest rank: the smallest value with at least p % of the
/// samples at or below it (p99 of 200 samples is the second largest).
fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    let rank = (v.len() * p).div_ceil(100).max(1);
    v[rank.min(v.len()) - 1]
}

fn plain(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn check(c: &Command, out: &Output) {
    assert!(
        out.status.success(),
        "command failed: {c:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `c` (with `stdin` fed to it, if any) and returns its wall time and stdout.
fn timed(mut c: Command, stdin: Option<&str>) -> (Duration, String) {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let out = if let Some(input) = stdin {
        let mut child = c.stdin(Stdio::piped()).spawn().expect("spawn");
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes()).expect("write stdin");
        drop(pipe);
        child.wait_with_output().expect("wait")
    } else {
        c.output().expect("spawn")
    };
    let d = t.elapsed();
    check(&c, &out);
    (d, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(format!("/run/netns/{ns}")).expect("netns");
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .unwrap()
}

/// A node namespace with the knit network `n`, a server (app=srv, :8080) and a client
/// (role=cli).
struct World {
    node: String,
    state: String,
    knit: String,
    /// Namespaces to delete, the node last.
    names: Vec<String>,
    server: String,
    client: String,
    /// The server's host-side veth (a bridge port).
    srv_port: String,
}

impl World {
    fn new(tag: &str, knit: &str) -> World {
        let node = format!("{PREFIX}{tag}");
        let state = format!("/tmp/{PREFIX}{tag}-state");
        let _ = std::fs::remove_dir_all(&state);
        sh(&["ip", "netns", "add", &node]);
        let mut w = World {
            node: node.clone(),
            state,
            knit: knit.to_string(),
            names: vec![node.clone()],
            server: format!("{PREFIX}{tag}-srv"),
            client: format!("{PREFIX}{tag}-cli"),
            srv_port: String::new(),
        };
        sh(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        w.knit(&[
            "network", "create", "n", "--subnet", SUBNET, "--bridge", BRIDGE,
        ]);
        for (s, ip, label) in [
            (w.server.clone(), SRV_IP, "app=srv"),
            (w.client.clone(), CLI_IP, "role=cli"),
        ] {
            w.knit(&["sandbox", "add", &s]);
            w.names.insert(0, s.clone());
            let out = w.knit(&["--json", "attach", "n", &s, "--ip", ip, "--label", label]);
            if s == w.server {
                let a: serde_json::Value = serde_json::from_str(&out).expect("attach --json");
                w.srv_port = a["host_ifname"]
                    .as_str()
                    .expect("attachment has host_ifname")
                    .to_string();
            }
        }
        in_ns(&w.server, || {
            let l = TcpListener::bind(("0.0.0.0", PORT)).unwrap();
            std::thread::spawn(move || {
                for c in l.incoming() {
                    drop(c);
                }
            });
        });
        w
    }

    /// One knit process in the node (setup only: not timed), its stdout.
    fn knit(&self, args: &[&str]) -> String {
        let mut a = vec!["--state-dir", &self.state];
        a.extend_from_slice(args);
        let mut c = cmd_in(&self.node, &self.knit, &a);
        let out = c.output().expect("spawn knit");
        check(&c, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn target() -> SocketAddr {
        format!("{SRV_IP}:{PORT}").parse().unwrap()
    }

    /// `n` new-connection latencies from the client to the server.
    fn connects(&self, n: usize) -> Vec<Duration> {
        let t = Self::target();
        in_ns(&self.client, move || {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let start = Instant::now();
                let s = TcpStream::connect_timeout(&t, Duration::from_secs(3))
                    .unwrap_or_else(|e| panic!("connect {t}: {e}"));
                out.push(start.elapsed());
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
            out
        })
    }

    /// Whether the client can open a connection to the server at all (short timeout).
    fn reachable(&self) -> bool {
        let t = Self::target();
        in_ns(&self.client, move || {
            TcpStream::connect_timeout(&t, Duration::from_millis(300)).is_ok()
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{n}"));
        }
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_file(format!("{}-policy.json", self.state));
    }
}

/// The i-th non-matching source: distinct /32s of 198.18.0.0/15 (131072 of them).
fn bulk_src(i: usize) -> String {
    assert!(i < 1 << 17, "198.18.0.0/15 holds 131072 addresses");
    format!("198.{}.{}.{}", 18 + (i >> 16), (i >> 8) & 0xff, i & 0xff)
}

/// The j-th measured extra rule's source (198.19.0.0/16, kept clear of `bulk_src` below
/// 65536 rules by starting at 198.19.255.255 and counting down).
fn extra_src(j: usize) -> String {
    let k = 0xffff - (j % 0x10000);
    format!("198.19.{}.{}", k >> 8, k & 0xff)
}

struct Stats {
    load: Duration,
    add: (Duration, Duration),
    rm: (Duration, Duration),
    base: (Duration, Duration),
    conn: (Duration, Duration),
    note: String,
}

fn p50_99(v: &mut [Duration]) -> (Duration, Duration) {
    (pct(v, 50), pct(v, 99))
}

/// A NetworkPolicy-shaped document: one policy for app=srv allowing TCP 8080 from `srcs`.
fn import_doc(srcs: &[String]) -> String {
    let from: Vec<serde_json::Value> = srcs
        .iter()
        .map(|s| serde_json::json!({"ipBlock": {"cidr": format!("{s}/32")}}))
        .collect();
    serde_json::json!([{
        "metadata": {"name": "bulk"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "srv"}},
            "ingress": [{"from": from, "ports": [{"protocol": "TCP", "port": PORT}]}]
        }
    }])
    .to_string()
}

/// The id a `knit --json policy allow` printed (a number or a string).
fn rule_id(out: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("policy allow --json: {e}: {out}"));
    match &v["id"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => panic!("policy allow --json: no id: {other} in {out}"),
    }
}

fn run_knit(knit: &str, rules: usize, connects: usize, ops: usize) -> Stats {
    let w = World::new(&format!("k{rules}"), knit);
    let mut base = w.connects(connects);
    let port = PORT.to_string();
    let back = enter(&w.node);
    let k = |args: &[&str]| {
        let mut a = vec!["--state-dir", &w.state, "--json"];
        a.extend_from_slice(args);
        timed(plain(knit, &a), None)
    };
    k(&["policy", "default", "n", "deny"]);
    let srcs: Vec<String> = (0..rules).map(bulk_src).collect();
    let mut note = String::new();
    let t = Instant::now();
    if rules > 0 {
        let file = format!("{}-policy.json", w.state);
        std::fs::write(&file, import_doc(&srcs)).expect("write policy file");
        let mut c = plain(
            knit,
            &[
                "--state-dir",
                &w.state,
                "policy",
                "import",
                &file,
                "--network",
                "n",
            ],
        );
        let out = c.output().expect("spawn knit");
        let _ = std::fs::remove_file(&file);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("unrecognized subcommand"),
                "knit policy import failed: {c:?}: {}",
                err.trim()
            );
            // This knit has no `policy import` yet: one `policy allow` process per rule.
            note = "no `policy import`: loaded by `policy allow` loop".into();
            for s in &srcs {
                let cidr = format!("{s}/32");
                k(&[
                    "policy", "allow", "n", "--from", &cidr, "--to", "app=srv", "--port", &port,
                ]);
            }
        }
    }
    let load = t.elapsed();
    leave(back);
    assert!(
        !w.reachable(),
        "knit: default deny does not drop the client"
    );
    let back = enter(&w.node);
    k(&[
        "policy", "allow", "n", "--from", "role=cli", "--to", "app=srv", "--port", &port,
    ]);
    let (mut add, mut rm) = (vec![], vec![]);
    for j in 0..ops {
        let cidr = format!("{}/32", extra_src(j));
        let (d, out) = k(&[
            "policy", "allow", "n", "--from", &cidr, "--to", "app=srv", "--port", &port,
        ]);
        add.push(d);
        let id = rule_id(&out);
        rm.push(k(&["policy", "rm", &id]).0);
    }
    leave(back);
    assert!(
        w.reachable(),
        "knit: the matching rule does not let the client in"
    );
    let mut conn = w.connects(connects);
    Stats {
        load,
        add: p50_99(&mut add),
        rm: p50_99(&mut rm),
        base: p50_99(&mut base),
        conn: p50_99(&mut conn),
        note,
    }
}

/// Calico's chains for policy `name` (selector set `cali-s-NAME`, chain `cali-pi-NAME`).
fn cali_chain(name: &str) -> (String, String) {
    (
        format!(":cali-pi-{name} - [0:0]"),
        format!(
            "-A cali-pi-{name} -p tcp -m set --match-set cali-s-{name} src -m tcp --dport {PORT} -j ACCEPT"
        ),
    )
}

fn ipset_create(name: &str, members: &[&str]) -> String {
    let mut s = format!("create cali-s-{name} hash:net family inet\n");
    for m in members {
        s.push_str(&format!("add cali-s-{name} {m}/32\n"));
    }
    s
}

fn run_calico(knit: &str, rules: usize, connects: usize, ops: usize) -> Stats {
    let w = World::new(&format!("c{rules}"), knit);
    let mut base = w.connects(connects);
    // The bridge's own switch (IFLA_BR_NF_CALL_IPTABLES), not the namespace-wide sysctl.
    sh(&[
        "ip",
        "-n",
        &w.node,
        "link",
        "set",
        BRIDGE,
        "type",
        "bridge",
        "nf_call_iptables",
        "1",
    ]);
    let names: Vec<String> = (0..rules).map(|i| format!("pol{i}")).collect();
    let srcs: Vec<String> = (0..rules).map(bulk_src).collect();
    let mut sets = String::new();
    let (mut chains, mut body) = (vec![":cali-tw-srv - [0:0]".to_string()], vec![]);
    body.push(format!(
        "-A FORWARD -m physdev --physdev-out {} --physdev-is-bridged -j cali-tw-srv",
        w.srv_port
    ));
    body.push("-A cali-tw-srv -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into());
    for (n, s) in names.iter().zip(&srcs) {
        sets.push_str(&ipset_create(n, &[s]));
        let (c, r) = cali_chain(n);
        chains.push(c);
        body.push(r);
        body.push(format!("-A cali-tw-srv -j cali-pi-{n}"));
    }
    body.push("-A cali-tw-srv -j DROP".into());
    let full = format!(
        "*filter\n{}\n{}\nCOMMIT\n",
        chains.join("\n"),
        body.join("\n")
    );
    let back = enter(&w.node);
    let t = Instant::now();
    if !sets.is_empty() {
        timed(plain("ipset", &["restore"]), Some(&sets));
    }
    timed(plain("iptables-restore", &["-w", "--noflush"]), Some(&full));
    let load = t.elapsed();
    leave(back);
    assert!(
        !w.reachable(),
        "calico: cali-tw-srv does not drop the client"
    );
    let back = enter(&w.node);
    // The matching policy, last: before the final DROP (rule 1 is conntrack).
    timed(
        plain("ipset", &["restore"]),
        Some(&ipset_create("cli", &[CLI_IP])),
    );
    let (c, r) = cali_chain("cli");
    timed(
        plain("iptables-restore", &["-w", "--noflush"]),
        Some(&format!(
            "*filter\n{c}\n{r}\n-I cali-tw-srv {} -j cali-pi-cli\nCOMMIT\n",
            rules + 2
        )),
    );
    let (mut add, mut rm) = (vec![], vec![]);
    // The parts: ipset restore, iptables-restore (add); iptables-restore, ipset destroy (rm).
    let mut parts: [Vec<Duration>; 4] = Default::default();
    let mut retries = 0;
    for j in 0..ops {
        let name = format!("add{j}");
        let src = extra_src(j);
        let (c, r) = cali_chain(&name);
        let t = Instant::now();
        parts[0].push(
            timed(
                plain("ipset", &["restore"]),
                Some(&ipset_create(&name, &[&src])),
            )
            .0,
        );
        parts[1].push(
            timed(
                plain("iptables-restore", &["-w", "--noflush"]),
                Some(&format!(
                    "*filter\n{c}\n{r}\n-I cali-tw-srv 2 -j cali-pi-{name}\nCOMMIT\n"
                )),
            )
            .0,
        );
        add.push(t.elapsed());
        let t = Instant::now();
        parts[2].push(timed(
            plain("iptables-restore", &["-w", "--noflush"]),
            Some(&format!(
                "*filter\n-D cali-tw-srv -j cali-pi-{name}\n-F cali-pi-{name}\n-X cali-pi-{name}\nCOMMIT\n"
            )),
        ).0);
        let t2 = Instant::now();
        // The set may still be referenced until the kernel has released the deleted rule's
        // match; felix retries such a destroy later, here we retry at once (counted).
        let set = format!("cali-s-{name}");
        loop {
            let out = plain("ipset", &["destroy", &set])
                .stderr(Stdio::piped())
                .output()
                .expect("spawn ipset");
            if out.status.success() {
                break;
            }
            retries += 1;
            assert!(retries < 100_000, "ipset destroy {set}: {out:?}");
        }
        parts[3].push(t2.elapsed());
        rm.push(t.elapsed());
    }
    leave(back);
    assert!(
        w.reachable(),
        "calico: the matching policy does not let the client in"
    );
    let mut conn = w.connects(connects);
    Stats {
        load,
        add: p50_99(&mut add),
        rm: p50_99(&mut rm),
        base: p50_99(&mut base),
        conn: p50_99(&mut conn),
        note: format!(
            "p50s: add = ipset {:.2} + iptables {:.2}; rm = iptables {:.2} + ipset {:.2} ms{}",
            ms(pct(&mut parts[0], 50)),
            ms(pct(&mut parts[1], 50)),
            ms(pct(&mut parts[2], 50)),
            ms(pct(&mut parts[3], 50)),
            if retries > 0 {
                format!("; {retries} ipset destroy retries")
            } else {
                String::new()
            }
        ),
    }
}

/// Names of the current namespace's ipsets (read-only).
fn ipsets_here() -> Vec<String> {
    let out = Command::new("ipset")
        .args(["list", "-n"])
        .output()
        .expect("ipset (apt-get install -y ipset)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Namespaces left by an earlier, killed run of this bench (our prefix only).
fn sweep_stale() {
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(PREFIX) {
                eprintln!("removing stale namespace {n}");
                let _ = Command::new("ip").args(["netns", "del", &n]).status();
            }
        }
    }
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (mut connects, mut ops) = (env("CONNECTS", 2000), env("OPS", 100));
    let mut counts = vec![];
    let mut layouts = vec!["knit".to_string(), "calico".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let num = |what: &str, v: Option<String>| -> usize {
            v.and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what}: expected a number"))
        };
        match a.as_str() {
            "--connects" => connects = num("--connects", args.next()),
            "--ops" => ops = num("--ops", args.next()),
            "--layout" => {
                let l = args.next().unwrap_or_default();
                assert!(
                    l == "knit" || l == "calico",
                    "--layout: knit or calico, not {l:?}"
                );
                layouts = vec![l];
            }
            _ => counts.push(num("RULES", Some(a))),
        }
    }
    if counts.is_empty() {
        counts = vec![0, 1000, 10_000];
    }
    assert!(connects > 0 && ops > 0, "--connects and --ops must be > 0");
    let exe = std::env::current_exe().unwrap();
    let knit = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/PROFILE/examples/policy_bench")
        .join("knit")
        .to_string_lossy()
        .into_owned();
    assert!(
        std::path::Path::new(&knit).exists(),
        "build the binary first: cargo build --release --bins --examples"
    );
    let ipt = Command::new("iptables")
        .arg("--version")
        .output()
        .expect("iptables (apt-get install -y iptables)");
    let host_sets = ipsets_here();
    sweep_stale();
    println!(
        "rules: {counts:?}; {connects} connects per measurement; {ops} single-rule changes; {}; {}",
        if cfg!(debug_assertions) {
            "DEBUG build"
        } else {
            "release build"
        },
        String::from_utf8_lossy(&ipt.stdout).trim()
    );

    let mut rows = vec![];
    for &r in &counts {
        if layouts.iter().any(|l| l == "knit") {
            rows.push((r, "knit", run_knit(&knit, r, connects, ops)));
        }
        if layouts.iter().any(|l| l == "calico") {
            rows.push((r, "calico", run_calico(&knit, r, connects, ops)));
        }
    }

    let leaked: Vec<String> = ipsets_here()
        .into_iter()
        .filter(|s| !host_sets.contains(s))
        .collect();
    assert!(leaked.is_empty(), "ipsets leaked into the host: {leaked:?}");

    println!(
        "\n{:>6} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8}",
        "rules",
        "layout",
        "add p50",
        "add p99",
        "rm p50",
        "rm p99",
        "con p50",
        "con p99",
        "base p50",
        "base p99",
        "x p50",
        "x p99",
        "load"
    );
    println!(
        "{:>6} {:<7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8}",
        "", "", "ms", "ms", "ms", "ms", "µs", "µs", "µs", "µs", "", "", "s"
    );
    for (r, l, s) in &rows {
        println!(
            "{:>6} {:<7} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>6.2} {:>6.2} {:>8.2}{}",
            r,
            l,
            ms(s.add.0),
            ms(s.add.1),
            ms(s.rm.0),
            ms(s.rm.1),
            us(s.conn.0),
            us(s.conn.1),
            us(s.base.0),
            us(s.base.1),
            us(s.conn.0) / us(s.base.0),
            us(s.conn.1) / us(s.base.1),
            s.load.as_secs_f64(),
            if s.note.is_empty() {
                String::new()
            } else {
                format!("  ({})", s.note)
            }
        );
    }
    if let Some((r, _, s)) = rows.iter().rev().find(|(_, l, _)| *l == "knit") {
        let change = ms(s.add.1.max(s.rm.1));
        let ratio = us(s.conn.1) / us(s.base.1);
        println!(
            "\ngoals at {r} rules (knit): one change p99 {change:.2} ms (<= 5 ms: {}), connect p99 {ratio:.2}x unfiltered (<= 1.1x: {})",
            if change <= 5.0 { "met" } else { "NOT met" },
            if ratio <= 1.1 { "met" } else { "NOT met" }
        );
    }
    if cfg!(debug_assertions) {
        println!("(debug build: knit's times are not representative; use --release)");
    }
    println!("host ipsets unchanged; all {PREFIX}* namespaces removed");
}
