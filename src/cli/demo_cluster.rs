//! `knit demo cluster`: the seeds' multi-host chapter as a lab, in throwaway namespaces:
//! a throwaway etcd, three nodes on an underlay — n1 and n2 on one L2 segment, n3 behind
//! a router — a cluster network with a sandbox on every node, proven with packets
//! (routed and VXLAN), a service with backends on all three nodes, names across nodes,
//! and a node's death noticed within its lease; then all of it is removed.
//!
//!   seg0 192.168.77.0/24: n1 .11, n2 .12 ─┐
//!                                         router (fabric, .1 on both) ── etcd
//!   seg1 192.168.78.0/24: n3 .13 ─────────┘

use super::demo::{check, command_in};
use crate::error::{Error, IoContext, Result};
use crate::model::Mac;
use crate::netlink::{Netlink, Route, VethRequest};
use crate::netns::{self, Netns};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NODES: [(&str, u8, u8); 3] = [("n1", 0, 11), ("n2", 0, 12), ("n3", 1, 13)];

/// Everything the demo creates; dropping it removes all of it.
struct Lab {
    tag: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    stop: Arc<AtomicBool>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.namespaces.iter().rev() {
            let _ = netns::delete_named(n);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{n}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        say!(
            "\ncleaned up: etcd and daemons stopped, namespaces {} and {} removed",
            self.namespaces.join(", "),
            self.dir.display()
        );
    }
}

fn ip(s: &str) -> Result<ipnet::IpNet> {
    s.parse().map_err(|_| Error::invalid("address", s, "bad"))
}

impl Lab {
    fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.tag)
    }

    fn state(&self, node: &str) -> PathBuf {
        self.dir.join(node)
    }

    /// `knit` (this binary) on `node`, echoed.
    fn knit(&self, node: &str, args: &[&str]) -> Result<String> {
        self.knit_as(node, args, true)
    }

    /// The same, silent (polling).
    fn quiet(&self, node: &str, args: &[&str]) -> Result<String> {
        self.knit_as(node, args, false)
    }

    fn knit_as(&self, node: &str, args: &[&str], echo: bool) -> Result<String> {
        if echo {
            say!("  {node}$ knit {}", args.join(" "));
        }
        let exe = std::env::current_exe().op(|| "find own executable".into())?;
        let out = command_in(&self.name(node), &exe)?
            .arg("--state-dir")
            .arg(self.state(node))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .op(|| "run knit".into())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        for l in stdout.lines().filter(|_| echo) {
            say!("      {l}");
        }
        if !out.status.success() {
            return Err(Error::Conflict(format!(
                "knit {} on {node} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(stdout)
    }

    fn spawn(
        &mut self,
        what: &str,
        ns: &str,
        program: &std::path::Path,
        args: &[&str],
    ) -> Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{what}.log")))
            .op(|| format!("create {what}.log"))?;
        let child = command_in(ns, program)?
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().op(|| "log".into())?)
            .stderr(log)
            .spawn()
            .op(|| format!("start {what}"))?;
        if let Ok(mut pids) = super::demo::CHILDREN.lock() {
            pids.push(child.id() as libc::pid_t);
        }
        self.children.push((what.to_string(), child));
        Ok(())
    }

    fn stop_child(&mut self, what: &str) {
        if let Some(i) = self.children.iter().position(|(w, _)| w == what) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The fabric: two segment bridges (fixed MACs) and routing between them.
fn build_fabric(lab: &Lab) -> Result<()> {
    let fab = Netns::open(netns::named_path(&lab.name("fab")))?;
    fab.run(|| -> Result<()> {
        crate::sysctl::ensure_forwarding(true, false)?;
        let mut nl = Netlink::open()?;
        for (seg, net) in [(0u8, "192.168.77.1/24"), (1, "192.168.78.1/24")] {
            let name = format!("seg{seg}");
            nl.create_bridge(&name, Mac([0x02, 0, 0x5e, 0, 0x77, seg]), None)?;
            let i = nl
                .link_index(&name)?
                .ok_or_else(|| Error::not_found("link", &name))?;
            nl.set_up(i)?;
            nl.add_address(i, ip(net)?)?;
        }
        Ok(())
    })?
}

/// A node's underlay: a veth into the fabric, on its segment's bridge.
fn build_node(lab: &Lab, node: &str, seg: u8, host: u8) -> Result<()> {
    let fab = Netns::open(netns::named_path(&lab.name("fab")))?;
    let ns = Netns::open(netns::named_path(&lab.name(node)))?;
    let peer = format!("ul-{node}");
    ns.run(|| -> Result<()> {
        let mut nl = Netlink::open()?;
        nl.create_veth(&VethRequest {
            host_name: "ul0",
            host_mac: Mac::random(),
            peer_name: &peer,
            peer_mac: Mac::random(),
            peer_netns: fab.fd(),
            mtu: None,
            controller: None,
        })?;
        let i = nl
            .link_index("ul0")?
            .ok_or_else(|| Error::not_found("link", "ul0"))?;
        nl.add_address(i, ip(&format!("192.168.{}.{host}/24", 77 + seg))?)?;
        nl.set_up(i)?;
        nl.add_route(&Route {
            dst: ip("0.0.0.0/0")?,
            gateway: Some(ip(&format!("192.168.{}.1/32", 77 + seg))?.addr()),
            oif: None,
            onlink: false,
            link_scope: false,
        })
    })??;
    fab.run(|| -> Result<()> {
        let mut nl = Netlink::open()?;
        let br = format!("seg{seg}");
        let b = nl
            .link_index(&br)?
            .ok_or_else(|| Error::not_found("link", &br))?;
        let p = nl
            .link_index(&peer)?
            .ok_or_else(|| Error::not_found("link", &peer))?;
        nl.set_controller(p, b)?;
        nl.set_up(p)
    })?
}

/// A TCP server in `ns` answering "NAME" and who it saw, until the lab stops.
fn server(ns: &str, port: u16, name: &str, stop: Arc<AtomicBool>) -> Result<()> {
    let name = name.to_string();
    super::demo::serve_in(ns, port, stop, move |mut s, peer| {
        let _ = write!(s, "{name} (saw {})", peer.ip());
    })
    .map(|_| ())
}

fn get(ns: &str, addr: &str) -> Result<String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| Error::invalid("address", addr, "bad socket address"))?;
    Netns::open(netns::named_path(ns))?.run(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .op(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .op(|| "timeout".into())?;
        let mut out = String::new();
        s.read_to_string(&mut out).op(|| "read".into())?;
        Ok(out)
    })?
}

fn ping(ns: &str, to: &str) -> bool {
    command_in(ns, std::path::Path::new("ping"))
        .and_then(|mut c| {
            c.args(["-c", "1", "-W", "1", to])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .op(|| "ping".into())
        })
        .map(|s| s.success())
        .unwrap_or(false)
}

fn sandbox_ip(lab: &Lab, node: &str, sandbox: &str) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(&lab.quiet(node, &["--json", "network", "inspect", "pods"])?)
            .map_err(|e| Error::Conflict(format!("network inspect: {e}")))?;
    v["attachments"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["sandbox"] == sandbox))
        .and_then(|a| a["ips"][0].as_str())
        .and_then(|s| s.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| Error::not_found("attachment", sandbox))
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > limit {
            return Err(Error::Conflict(format!(
                "demo: {what} did not happen in {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(t0.elapsed())
}

pub fn run() -> Result<i32> {
    let etcd = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("etcd"))
                .find(|f| f.is_file())
        })
        .ok_or_else(|| {
            Error::Conflict(
                "knit demo cluster needs etcd (Debian: apt-get install etcd-server)".into(),
            )
        })?;
    let tag = format!("knitcl{}", std::process::id());
    super::demo::clean_up_on_signals(
        tag.clone(),
        std::env::temp_dir().join(format!("{tag}-state")),
    );
    let mut lab = Lab {
        dir: std::env::temp_dir().join(format!("{tag}-state")),
        tag,
        namespaces: vec![],
        children: vec![],
        stop: Arc::new(AtomicBool::new(false)),
    };
    std::fs::create_dir_all(&lab.dir).op(|| "create the demo's directory".into())?;
    say!(
        "knit demo cluster: three nodes on etcd, routed and VXLAN; only throwaway namespaces are touched.\n"
    );
    say!(
        "1. the underlay: n1, n2 on segment 192.168.77.0/24, n3 behind a router on 192.168.78.0/24"
    );
    for short in ["fab", "n1", "n2", "n3"] {
        let name = lab.name(short);
        netns::create_named(&name, crate::netlink::bring_up_loopback)?;
        lab.namespaces.push(name);
    }
    build_fabric(&lab)?;
    for (node, seg, host) in NODES {
        build_node(&lab, node, seg, host)?;
    }
    let data = lab.dir.join("etcd");
    let fab = lab.name("fab");
    lab.spawn(
        "etcd",
        &fab,
        &etcd,
        &[
            "--name",
            "default",
            "--data-dir",
            data.to_str().unwrap_or("/tmp/knit-demo-etcd"),
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://192.168.77.1:2379",
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "default=http://127.0.0.1:2380",
        ],
    )?;
    let n1 = lab.name("n1");
    wait("etcd to answer", Duration::from_secs(10), || {
        Netns::open(netns::named_path(&n1))
            .and_then(|ns| ns.run(|| TcpStream::connect("192.168.77.1:2379").is_ok()))
            .unwrap_or(false)
    })?;
    say!("  etcd answers on http://192.168.77.1:2379\n");

    say!("2. knit joins the nodes and creates a cluster network");
    for (node, _, _) in NODES {
        lab.knit(
            node,
            &[
                "node",
                "join",
                "--etcd",
                "http://192.168.77.1:2379",
                "--name",
                node,
                "--underlay",
                "ul0",
                "--lease-ttl",
                "5",
            ],
        )?;
    }
    lab.knit(
        "n1",
        &[
            "network",
            "create",
            "pods",
            "--scope",
            "cluster",
            "--subnet",
            "10.77.0.0/16",
        ],
    )?;
    let exe = std::env::current_exe().op(|| "find own executable".into())?;
    for (node, _, _) in NODES {
        let state = lab.state(node);
        let ns = lab.name(node);
        lab.spawn(
            &format!("daemon-{node}"),
            &ns,
            &exe,
            &[
                "--state-dir",
                state.to_str().unwrap_or(""),
                "daemon",
                "--resolv-conf",
                "/dev/null",
            ],
        )?;
    }
    let mut sandboxes = vec![];
    for (node, _, _) in NODES {
        let s = lab.name(&format!("{node}-web"));
        lab.knit(node, &["sandbox", "add", &s])?;
        lab.namespaces.push(s.clone());
        lab.knit(node, &["attach", "pods", &s])?;
        sandboxes.push(s);
    }
    wait("every node programmed", Duration::from_secs(15), || {
        lab.quiet("n1", &["--json", "node", "ls"])
            .ok()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
            .is_some_and(|v| {
                v.as_array()
                    .is_some_and(|a| a.len() == 3 && a.iter().all(|p| p["programmed"] == true))
            })
    })?;
    lab.knit("n1", &["node", "ls"])?;

    say!("\n3. packets");
    let addrs: Vec<String> = NODES
        .iter()
        .zip(&sandboxes)
        .map(|((node, _, _), s)| sandbox_ip(&lab, node, s))
        .collect::<Result<_>>()?;
    check(
        "n1 -> n2 routed (same segment): ping",
        ping(&sandboxes[0], &addrs[1]),
        &addrs[1],
    )?;
    check(
        "n1 -> n3 over VXLAN (behind the router): ping",
        ping(&sandboxes[0], &addrs[2]),
        &addrs[2],
    )?;
    for (i, s) in sandboxes.iter().enumerate() {
        server(s, 8080, NODES[i].0, lab.stop.clone())?;
    }
    let got = get(&sandboxes[0], &format!("{}:8080", addrs[2]))?;
    check("n1 -> n3 TCP", got.starts_with("n3"), &got)?;
    check(
        "no NAT inside the cluster",
        got.contains(&addrs[0]),
        "n3 saw n1's sandbox address",
    )?;

    say!("\n4. a service with backends on all three nodes, created on n1");
    let mut args = vec!["service", "create", "web", "--vip", "10.96.77.7:80"];
    let backends: Vec<String> = sandboxes.iter().map(|s| format!("{s}:8080")).collect();
    for b in &backends {
        args.extend(["--backend", b.as_str()]);
    }
    // n1 learns of the other nodes' sandboxes within moments of their attach (through
    // etcd); the service names them, so it waits for that.
    say!("  n1$ knit {}", args.join(" "));
    wait("n1 to know every backend", Duration::from_secs(10), || {
        lab.quiet("n1", &args).is_ok()
    })?;
    lab.knit("n1", &["service", "inspect", "web"])?;
    let mut seen = std::collections::BTreeSet::new();
    let from = sandboxes[1].clone();
    wait(
        "all three backends answering from n2",
        Duration::from_secs(10),
        || {
            if let Ok(r) = get(&from, "10.96.77.7:80") {
                seen.insert(r.split(' ').next().unwrap_or("").to_string());
            }
            seen.len() == 3
        },
    )?;
    check(
        "10.96.77.7:80 from n2's sandbox reaches n1, n2 and n3",
        true,
        &format!("{seen:?}"),
    )?;

    say!("\n5. names across nodes (knit daemon's DNS on n1's gateway)");
    let resolved = Command::new(&exe)
        .args([
            "--state-dir",
            lab.state("n1").to_str().unwrap_or(""),
            "sandbox",
            "exec",
            &sandboxes[0],
            "--",
            "getent",
            "hosts",
            &sandboxes[2],
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    check(
        &format!("{} resolves on n1", sandboxes[2]),
        resolved.starts_with(&addrs[2]),
        &resolved,
    )?;

    say!("\n6. n3 dies (daemon killed, namespace gone); peers drop it within its 5 s lease");
    lab.stop_child("daemon-n3");
    let n3 = lab.name("n3");
    let _ = netns::delete_named(&n3);
    let took = wait("n3 gone from n1's peers", Duration::from_secs(10), || {
        lab.quiet("n1", &["--json", "node", "ls"])
            .ok()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
            .is_some_and(|v| v.as_array().is_some_and(|a| a.len() == 2))
    })?;
    check(
        "n3's routes gone from n1",
        took <= Duration::from_secs(7),
        &format!("after {:.1} s", took.as_secs_f64()),
    )?;
    lab.knit("n1", &["node", "ls"])?;
    Ok(0)
}
