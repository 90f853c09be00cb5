//! A cluster lab: node namespaces (each a `World`) on underlay segments that a fabric
//! namespace bridges and routes between, a real etcd in the fabric namespace, and `knit
//! daemon` per node. Everything is removed on drop (daemons and etcd killed first).

use super::{World, command_in, sh, sh_ok};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCD_PORT: u16 = 2379;

pub struct Node {
    pub name: String,
    pub w: World,
    /// Its underlay address.
    pub ip: String,
    daemon: Option<Child>,
}

pub struct Cluster {
    pub fab: String,
    pub nodes: Vec<Node>,
    etcd: Option<Child>,
    etcd_dir: std::path::PathBuf,
    pub etcd_url: String,
}

/// Segment k's prefix: 192.168.(80+k).0/24, router .1.
fn seg_net(k: usize) -> String {
    format!("192.168.{}", 80 + k)
}

impl Cluster {
    /// Node names per segment, e.g. `&[&["a", "b"], &["c", "d"]]`.
    pub fn new(segments: &[&[&str]]) -> Cluster {
        let first = World::new();
        let fab = format!("{}-fab", first.prefix);
        sh_ok(&["ip", "netns", "add", &fab]);
        sh_ok(&["ip", "-n", &fab, "link", "set", "lo", "up"]);
        sh_ok(&[
            "ip",
            "netns",
            "exec",
            &fab,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let mut nodes = vec![];
        let mut first = Some(first);
        for (k, names) in segments.iter().enumerate() {
            let br = format!("seg{k}");
            // A fixed MAC: a bridge without one takes its lowest port's, which changes as
            // nodes are added, leaving the nodes' ARP entries for the router stale.
            let mac = format!("02:00:5e:00:80:{k:02x}");
            sh_ok(&[
                "ip", "-n", &fab, "link", "add", &br, "address", &mac, "type", "bridge",
            ]);
            sh_ok(&["ip", "-n", &fab, "link", "set", &br, "up"]);
            sh_ok(&[
                "ip",
                "-n",
                &fab,
                "addr",
                "add",
                &format!("{}.1/24", seg_net(k)),
                "dev",
                &br,
            ]);
            for (j, name) in names.iter().enumerate() {
                let w = first.take().unwrap_or_else(World::new);
                let ip = format!("{}.{}", seg_net(k), 10 + j);
                let peer = format!("ul-{name}");
                sh_ok(&[
                    "ip", "-n", &w.node, "link", "add", "ul0", "type", "veth", "peer", "name",
                    &peer, "netns", &fab,
                ]);
                sh_ok(&["ip", "-n", &fab, "link", "set", &peer, "master", &br, "up"]);
                sh_ok(&[
                    "ip",
                    "-n",
                    &w.node,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "ul0",
                ]);
                sh_ok(&["ip", "-n", &w.node, "link", "set", "ul0", "up"]);
                sh_ok(&[
                    "ip",
                    "-n",
                    &w.node,
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("{}.1", seg_net(k)),
                ]);
                nodes.push(Node {
                    name: name.to_string(),
                    w,
                    ip,
                    daemon: None,
                });
            }
        }
        let etcd_dir = std::env::temp_dir().join(format!("{fab}-etcd"));
        let _ = std::fs::remove_dir_all(&etcd_dir);
        let mut c = Cluster {
            etcd_url: format!("http://{}.1:{ETCD_PORT}", seg_net(0)),
            fab,
            nodes,
            etcd: None,
            etcd_dir,
        };
        c.start_etcd();
        c
    }

    /// Starts etcd in the fabric namespace (its data survives a stop).
    pub fn start_etcd(&mut self) {
        self.start_etcd_with(&[]);
    }

    /// The same with more etcd flags (TLS: the listen and advertise URLs may be given
    /// again, as https; the later flag wins).
    pub fn start_etcd_with(&mut self, extra: &[String]) {
        let log = std::fs::File::create(self.etcd_dir.with_extension("log")).unwrap();
        let child = command_in(&self.fab, "etcd")
            .args([
                "--name",
                "default",
                "--data-dir",
                self.etcd_dir.to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://0.0.0.0:{ETCD_PORT}"),
                "--advertise-client-urls",
                &self.etcd_url,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "default=http://127.0.0.1:2380",
            ])
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        self.etcd = Some(child);
        let addr = format!("{}.1:{ETCD_PORT}", seg_net(0));
        let t0 = Instant::now();
        loop {
            let ok = super::in_ns(&self.fab, {
                let addr = addr.clone();
                move || std::net::TcpStream::connect(addr).is_ok()
            });
            if ok {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_etcd(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// `knit node join` on `name` with `extra` flags.
    pub fn join(&self, name: &str, extra: &[&str]) -> String {
        let n = self.node(name);
        let mut args = vec![
            "node",
            "join",
            "--etcd",
            &self.etcd_url,
            "--name",
            name,
            "--underlay",
            "ul0",
        ];
        args.extend_from_slice(extra);
        n.w.ok(&args)
    }

    pub fn start_daemon(&mut self, name: &str) {
        let n = self.node_mut(name);
        let log = std::fs::File::create(n.w.state.with_extension("daemon.log")).unwrap();
        let child =
            n.w.cmd(&["daemon", "--resolv-conf", "/dev/null"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start knit daemon");
        n.daemon = Some(child);
    }

    pub fn stop_daemon(&mut self, name: &str) {
        if let Some(mut c) = self.node_mut(name).daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn daemon_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.node(name).w.state.with_extension("daemon.log"))
            .unwrap_or_default()
    }

    /// Waits until `name`'s `node ls` shows `count` nodes, every one with its blocks and
    /// programmed (call it once a cluster network exists).
    pub fn wait_programmed(&self, name: &str, count: usize, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let o = self.node(name).w.run(&["--json", "node", "ls"]);
            if o.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                let peers = v.as_array().unwrap();
                // Programmed, and every node holds its blocks already (a node whose daemon
                // has not leased them yet is trivially "programmed").
                let ready = |p: &serde_json::Value| {
                    p["programmed"] == true && p["blocks"].as_array().is_some_and(|b| !b.is_empty())
                };
                if peers.len() == count && peers.iter().all(ready) {
                    return;
                }
            }
            assert!(
                t0.elapsed() < limit,
                "{name}: cluster not programmed in {limit:?}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Node `name` as `from`'s `knit node ls` shows it (Null if it is not listed).
    pub fn peer(&self, from: &str, name: &str) -> serde_json::Value {
        let v = self.node(from).w.json(&["node", "ls"]);
        v.as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// A new sandbox on `node` attached to `network`; returns its namespace.
    pub fn sandbox(&mut self, node: &str, short: &str, network: &str) -> String {
        self.sandbox_with(node, short, network, &[])
    }

    /// The same with more `attach` arguments (labels, aliases).
    pub fn sandbox_with(
        &mut self,
        node: &str,
        short: &str,
        network: &str,
        extra: &[&str],
    ) -> String {
        let n = self.node_mut(node);
        let ns = n.w.sandbox(short);
        let mut args = vec!["attach", network, ns.as_str()];
        args.extend_from_slice(extra);
        n.w.ok(&args);
        ns
    }

    /// What the kernel of `node` holds for the cluster: knit's routes, FDB and
    /// neighbours (to compare before and after).
    pub fn programming(&self, node: &str) -> String {
        let ns = &self.node(node).w.node;
        let mut out = String::new();
        for args in [
            vec!["ip", "-n", ns, "route", "show", "proto", "75"],
            vec!["ip", "-n", ns, "-6", "route", "show", "proto", "75"],
        ] {
            out.push_str(&String::from_utf8_lossy(&sh(&args).stdout));
        }
        // FDB and neighbour entries of knit's VXLAN devices (bridges learn and forget
        // their ports' MACs on their own).
        for args in [
            vec!["bridge", "-n", ns, "fdb", "show"],
            vec!["ip", "-n", ns, "neigh", "show", "nud", "permanent"],
        ] {
            for line in String::from_utf8_lossy(&sh(&args).stdout).lines() {
                if line.contains("knvx") {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.stop_daemon(&n);
        }
        self.stop_etcd();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.fab])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.etcd_dir);
        let _ = std::fs::remove_file(self.etcd_dir.with_extension("log"));
        for n in &self.nodes {
            let _ = std::fs::remove_file(n.w.state.with_extension("daemon.log"));
        }
    }
}
