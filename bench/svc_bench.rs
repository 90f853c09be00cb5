//! L4 services at scale: knit's nftables services beside kube-proxy's iptables layout,
//! each in its own throwaway node namespace, in one run.
//!
//!   cargo run --release --example svc_bench -- [SERVICES] [CONNECTS] [OPS]
//!
//! Both worlds: a knit bridge network with 4 backend sandboxes (TCP listeners on :8080)
//! and a client sandbox; SERVICES services × 4 backends. Reported: loading all services;
//! adding / removing one service with all of them present (knit: a `knit service` process
//! each time, as a user runs it; iptables: one `iptables-restore --noflush` of the
//! service's chains and its KUBE-SERVICES rule, the cheapest incremental update that
//! layout allows); connect latency from the client to the first and the last service's
//! VIP and, as the baseline, straight to a backend.

#[path = "common.rs"]
mod common;
use common::{cmd_in, enter, leave, ms, sh};
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BACKENDS: usize = 4;

/// The p-th percentile, nearest rank: the smallest value with at least p % of the
/// samples at or below it (p99 of 200 samples is the second largest).
fn pct(v: &mut [Duration], p: usize) -> f64 {
    v.sort();
    let rank = (v.len() * p).div_ceil(100).max(1);
    ms(v[rank.min(v.len()) - 1])
}

fn plain(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).stdout(Stdio::null());
    c
}

fn timed(mut c: Command, stdin: Option<&str>) -> Duration {
    let t = Instant::now();
    if let Some(input) = stdin {
        let mut child = c.stdin(Stdio::piped()).spawn().expect("spawn");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "command failed");
    } else {
        assert!(c.status().unwrap().success(), "command failed: {c:?}");
    }
    t.elapsed()
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

/// A node namespace with a knit network, 4 backends listening on :8080 and a client.
struct World {
    node: String,
    state: String,
    names: Vec<String>,
    backends: Vec<String>,
    client: String,
}

impl World {
    fn new(tag: &str, knit: &str) -> World {
        let node = format!("kbs-{tag}");
        let state = format!("/tmp/kbs-{tag}-state");
        let _ = std::fs::remove_dir_all(&state);
        sh(&["ip", "netns", "add", &node]);
        sh(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        let k = |args: &[&str]| {
            let mut a = vec!["--state-dir", &state];
            a.extend_from_slice(args);
            timed(
                {
                    let mut c = cmd_in(&node, knit, &a);
                    c.stdout(Stdio::null());
                    c
                },
                None,
            );
        };
        k(&["network", "create", "n", "--subnet", "10.70.0.0/24"]);
        let mut names = vec![node.clone()];
        let mut backends = vec![];
        for i in 0..=BACKENDS {
            let s = format!("kbs-{tag}-s{i}");
            k(&["sandbox", "add", &s]);
            k(&["attach", "n", &s, "--ip", &format!("10.70.0.{}", 10 + i)]);
            names.push(s.clone());
            if i < BACKENDS {
                in_ns(&s, || {
                    let l = TcpListener::bind("0.0.0.0:8080").unwrap();
                    std::thread::spawn(move || {
                        for c in l.incoming() {
                            drop(c);
                        }
                    });
                });
                backends.push(format!("10.70.0.{}", 10 + i));
            }
        }
        let client = names.last().unwrap().clone();
        World {
            node,
            state,
            names,
            backends,
            client,
        }
    }

    /// Connect latencies from the client to each target, interleaved round by round.
    /// Connect targets: a backend directly (baseline), the first and the last of `n` VIPs.
    fn targets(&self, n: usize) -> Vec<SocketAddr> {
        vec![
            format!("{}:8080", self.backends[0]).parse().unwrap(),
            format!("{}:80", vip(0)).parse().unwrap(),
            format!("{}:80", vip(n - 1)).parse().unwrap(),
        ]
    }

    fn connects(&self, targets: &[SocketAddr], n: usize) -> Vec<Vec<Duration>> {
        let targets = targets.to_vec();
        in_ns(&self.client, move || {
            let mut out = vec![Vec::with_capacity(n); targets.len()];
            for _ in 0..n {
                for (i, t) in targets.iter().enumerate() {
                    let start = Instant::now();
                    let s = TcpStream::connect_timeout(t, Duration::from_secs(3))
                        .unwrap_or_else(|e| panic!("connect {t}: {e}"));
                    out[i].push(start.elapsed());
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
            }
            out
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{n}"));
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn vip(i: usize) -> String {
    format!("10.96.{}.{}", i / 250, i % 250 + 1)
}

/// kube-proxy's iptables layout for service `i`: its chains, and its KUBE-SERVICES rules.
fn kube_service(i: usize, backends: &[String]) -> (Vec<String>, Vec<String>, String) {
    let svc = format!("KUBE-SVC-{i:016X}");
    let mut chains = vec![format!(":{svc} - [0:0]")];
    let mut rules = vec![format!(
        "-A {svc} ! -s 10.70.0.0/24 -d {}/32 -p tcp -m comment --comment \"default/svc{i}:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
        vip(i)
    )];
    let n = backends.len();
    for (k, b) in backends.iter().enumerate() {
        let sep = format!("KUBE-SEP-{i:012X}{k:04X}");
        chains.push(format!(":{sep} - [0:0]"));
        let prob = if k + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.11}",
                1.0 / (n - k) as f64
            )
        } else {
            String::new()
        };
        rules.push(format!(
            "-A {svc} -m comment --comment \"default/svc{i}:http -> {b}:8080\"{prob} -j {sep}"
        ));
        rules.push(format!(
            "-A {sep} -s {b}/32 -m comment --comment \"default/svc{i}:http\" -j KUBE-MARK-MASQ"
        ));
        rules.push(format!(
            "-A {sep} -p tcp -m comment --comment \"default/svc{i}:http\" -m tcp -j DNAT --to-destination {b}:8080"
        ));
    }
    let entry = format!(
        "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"default/svc{i}:http cluster IP\" -m tcp --dport 80 -j {svc}",
        vip(i)
    );
    (chains, rules, entry)
}

fn kube_full(n: usize, backends: &[String]) -> String {
    let mut chains = vec![
        ":KUBE-SERVICES - [0:0]".to_string(),
        ":KUBE-MARK-MASQ - [0:0]".into(),
        ":KUBE-POSTROUTING - [0:0]".into(),
    ];
    let mut rules = vec![
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            .to_string(),
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".into(),
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
            .into(),
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -j MASQUERADE".into(),
    ];
    let mut entries = vec![];
    for i in 0..n {
        let (c, r, e) = kube_service(i, backends);
        chains.extend(c);
        rules.extend(r);
        entries.push(e);
    }
    format!(
        "*nat\n{}\n{}\n{}\nCOMMIT\n",
        chains.join("\n"),
        rules.join("\n"),
        entries.join("\n")
    )
}

fn kube_add(i: usize, backends: &[String]) -> String {
    let (c, r, e) = kube_service(i, backends);
    format!("*nat\n{}\n{}\n{e}\nCOMMIT\n", c.join("\n"), r.join("\n"))
}

fn kube_remove(i: usize, backends: &[String]) -> String {
    let (c, _, e) = kube_service(i, backends);
    let names: Vec<&str> = c
        .iter()
        .map(|l| l[1..].split(' ').next().unwrap())
        .collect();
    let mut out = vec!["*nat".to_string(), e.replacen("-A ", "-D ", 1)];
    out.extend(names.iter().map(|n| format!("-F {n}")));
    out.extend(names.iter().map(|n| format!("-X {n}")));
    out.push("COMMIT\n".into());
    out.join("\n")
}

struct Row {
    name: &'static str,
    knit: f64,
    ipt: f64,
}

fn main() {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (n, connects, ops) = (arg(1, 10_000), arg(2, 1000), arg(3, 100));
    let exe = std::env::current_exe().unwrap();
    let knit = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("knit")
        .to_string_lossy()
        .into_owned();
    assert!(
        std::path::Path::new(&knit).exists(),
        "build the binary first: cargo build --release"
    );
    println!(
        "services: {n} x {BACKENDS} backends; {connects} connects per target; {ops} single-service changes"
    );
    let mut rows: Vec<Row> = vec![];

    // ---- knit ----------------------------------------------------------------------
    let (k_load, k_add, k_rm, k_conn);
    {
        let w = World::new("knit", &knit);
        let items: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                let b: Vec<String> = w.backends.iter().map(|b| format!("{b}:8080")).collect();
                serde_json::json!({"name": format!("s{i}"), "vip": format!("{}:80", vip(i)), "backends": b})
            })
            .collect();
        let file = format!("{}-services.json", w.state);
        std::fs::write(&file, serde_json::to_string(&items).unwrap()).unwrap();
        let back = enter(&w.node);
        k_load = timed(
            plain(
                &knit,
                &["--state-dir", &w.state, "service", "import", &file],
            ),
            None,
        );
        let _ = std::fs::remove_file(&file);
        let (mut add, mut rm) = (vec![], vec![]);
        for j in 0..ops {
            let name = format!("extra{j}");
            let v = format!("10.97.{}.{}:80", j / 250, j % 250 + 1);
            let mut args = vec![
                "--state-dir",
                &w.state,
                "service",
                "create",
                &name,
                "--vip",
                &v,
            ];
            let bs: Vec<String> = w.backends.iter().map(|b| format!("{b}:8080")).collect();
            for b in &bs {
                args.extend(["--backend", b.as_str()]);
            }
            add.push(timed(plain(&knit, &args), None));
            rm.push(timed(
                plain(&knit, &["--state-dir", &w.state, "service", "rm", &name]),
                None,
            ));
        }
        leave(back);
        for (what, v) in [("add", &add), ("rm", &rm)] {
            let mut slow: Vec<(usize, f64)> = v.iter().map(|d| ms(*d)).enumerate().collect();
            slow.sort_by(|a, b| b.1.total_cmp(&a.1));
            let top: Vec<String> = slow
                .iter()
                .take(3)
                .map(|(i, t)| format!("#{i} {t:.2} ms"))
                .collect();
            println!("knit slowest {what}: {}", top.join(", "));
        }
        k_add = (pct(&mut add, 50), pct(&mut add, 99));
        k_rm = (pct(&mut rm, 50), pct(&mut rm, 99));
        k_conn = w.connects(&w.targets(n), connects);
    }

    // ---- kube-proxy iptables layout ---------------------------------------------------
    let (i_load, i_add, i_rm, i_conn);
    {
        let w = World::new("ipt", &knit);
        let full = kube_full(n, &w.backends);
        let back = enter(&w.node);
        i_load = timed(plain("iptables-restore", &["-w"]), Some(&full));
        let (mut add, mut rm) = (vec![], vec![]);
        for j in 0..ops {
            let i = n + j;
            add.push(timed(
                plain("iptables-restore", &["-w", "--noflush"]),
                Some(&kube_add(i, &w.backends)),
            ));
            rm.push(timed(
                plain("iptables-restore", &["-w", "--noflush"]),
                Some(&kube_remove(i, &w.backends)),
            ));
        }
        leave(back);
        i_add = (pct(&mut add, 50), pct(&mut add, 99));
        i_rm = (pct(&mut rm, 50), pct(&mut rm, 99));
        i_conn = w.connects(&w.targets(n), connects);
    }

    rows.push(Row {
        name: "load all services (s)",
        knit: k_load.as_secs_f64(),
        ipt: i_load.as_secs_f64(),
    });
    rows.push(Row {
        name: "add one service p50 (ms)",
        knit: k_add.0,
        ipt: i_add.0,
    });
    rows.push(Row {
        name: "add one service p99 (ms)",
        knit: k_add.1,
        ipt: i_add.1,
    });
    rows.push(Row {
        name: "remove one service p50 (ms)",
        knit: k_rm.0,
        ipt: i_rm.0,
    });
    rows.push(Row {
        name: "remove one service p99 (ms)",
        knit: k_rm.1,
        ipt: i_rm.1,
    });
    let labels = [
        "baseline (backend IP)",
        "first service VIP",
        "last service VIP",
    ];
    let (mut kc, mut ic) = (k_conn, i_conn);
    let mut conn_rows = vec![];
    for (i, l) in labels.iter().enumerate() {
        conn_rows.push((
            *l,
            pct(&mut kc[i], 50),
            pct(&mut kc[i], 99),
            pct(&mut ic[i], 50),
            pct(&mut ic[i], 99),
        ));
    }
    println!(
        "\n{:<32} {:>12} {:>12} {:>10}",
        "", "knit", "iptables", "knit/ipt"
    );
    for r in &rows {
        println!(
            "{:<32} {:>12.3} {:>12.3} {:>10.3}",
            r.name,
            r.knit,
            r.ipt,
            r.knit / r.ipt
        );
    }
    println!("\nconnect latency (ms)             knit p50   knit p99    ipt p50    ipt p99");
    for (l, a, b, c, d) in &conn_rows {
        println!("{l:<32} {a:>9.3} {b:>10.3} {c:>10.3} {d:>10.3}");
    }
    let (kb, ib) = (conn_rows[0].2, conn_rows[0].4);
    println!(
        "\np99 vs baseline: knit first {:.2}x, last {:.2}x; iptables first {:.2}x, last {:.2}x",
        conn_rows[1].2 / kb,
        conn_rows[2].2 / kb,
        conn_rows[1].4 / ib,
        conn_rows[2].4 / ib
    );
    println!(
        "p50 vs baseline: knit first {:.2}x, last {:.2}x; iptables first {:.2}x, last {:.2}x",
        conn_rows[1].1 / conn_rows[0].1,
        conn_rows[2].1 / conn_rows[0].1,
        conn_rows[1].3 / conn_rows[0].3,
        conn_rows[2].3 / conn_rows[0].3
    );
}
