//! Test worlds: every test builds its own throwaway "node" namespace (knit runs inside it),
//! an optional "outside" host on an uplink, and sandboxes; Drop removes all of it, also when
//! the test fails. Traffic is real: TCP/UDP servers and clients run on threads that entered
//! the namespaces, ping runs through `ip netns exec`.

#![allow(dead_code)]

pub mod cluster;
pub mod cni;
pub mod dns_client;
pub mod dns_upstream;
pub mod lab;

#[allow(unused_imports)]
pub use dns_upstream::Upstream;
#[allow(unused_imports)]
pub use lab::Lab;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub const KNIT: &str = env!("CARGO_BIN_EXE_knit");

/// Uplink between the node and the outside host.
pub const NODE_UPLINK4: &str = "198.51.100.1";
pub const OUTSIDE4: &str = "198.51.100.2";
pub const NODE_UPLINK6: &str = "2001:db8:1::1";
pub const OUTSIDE6: &str = "2001:db8:1::2";

pub struct World {
    pub prefix: String,
    pub node: String,
    pub state: PathBuf,
    pub outside: Option<String>,
    namespaces: Vec<String>,
}

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn")
}

pub fn sh_ok(args: &[&str]) -> String {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl World {
    pub fn new() -> World {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("kt{}x{n}", std::process::id() % 100000);
        let node = format!("{prefix}-node");
        sh_ok(&["ip", "netns", "add", &node]);
        sh_ok(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        let state = std::env::temp_dir().join(format!("{prefix}-state"));
        let _ = std::fs::remove_dir_all(&state);
        World {
            prefix,
            node: node.clone(),
            state,
            outside: None,
            namespaces: vec![node],
        }
    }

    /// An "outside" host on an uplink from the node (the seeds' internet stand-in).
    pub fn with_outside(mut self) -> World {
        let out = format!("{}-out", self.prefix);
        sh_ok(&["ip", "netns", "add", &out]);
        self.namespaces.push(out.clone());
        sh_ok(&["ip", "-n", &out, "link", "set", "lo", "up"]);
        sh_ok(&[
            "ip", "-n", &self.node, "link", "add", "uplink", "type", "veth", "peer", "name", "wan",
            "netns", &out,
        ]);
        sh_ok(&[
            "ip",
            "-n",
            &self.node,
            "addr",
            "add",
            &format!("{NODE_UPLINK4}/24"),
            "dev",
            "uplink",
        ]);
        sh_ok(&[
            "ip",
            "-n",
            &self.node,
            "addr",
            "add",
            &format!("{NODE_UPLINK6}/64"),
            "dev",
            "uplink",
            "nodad",
        ]);
        sh_ok(&["ip", "-n", &self.node, "link", "set", "uplink", "up"]);
        sh_ok(&[
            "ip",
            "-n",
            &out,
            "addr",
            "add",
            &format!("{OUTSIDE4}/24"),
            "dev",
            "wan",
        ]);
        sh_ok(&[
            "ip",
            "-n",
            &out,
            "addr",
            "add",
            &format!("{OUTSIDE6}/64"),
            "dev",
            "wan",
            "nodad",
        ]);
        sh_ok(&["ip", "-n", &out, "link", "set", "wan", "up"]);
        // The node's default route points outside, as on a real host.
        sh_ok(&[
            "ip", "-n", &self.node, "route", "add", "default", "via", OUTSIDE4,
        ]);
        sh_ok(&[
            "ip", "-n", &self.node, "-6", "route", "add", "default", "via", OUTSIDE6,
        ]);
        self.outside = Some(out);
        self
    }

    pub fn outside(&self) -> &str {
        self.outside.as_deref().expect("world has no outside host")
    }

    /// A knit command run inside the node namespace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = command_in(&self.node, KNIT);
        c.arg("--state-dir").arg(&self.state).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run knit")
    }

    /// Runs knit and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "knit {:?} failed: {}{}",
            args,
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs knit and expects failure; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "knit {:?} unexpectedly succeeded: {}",
            args,
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }

    /// `knit --json ARGS` whatever its exit status: (status, the JSON it printed, or
    /// `{"stderr": ...}` when it printed none) — for commands whose status is an answer
    /// (doctor, trace).
    pub fn json_status(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.run(&a);
        let v = serde_json::from_slice(&o.stdout).unwrap_or_else(
            |_| serde_json::json!({ "stderr": String::from_utf8_lossy(&o.stderr) }),
        );
        (o.status.code().unwrap_or(-1), v)
    }

    /// Registers a namespace created outside knit for cleanup.
    pub fn track(&mut self, ns: &str) {
        self.namespaces.push(ns.to_string());
    }

    /// A sandbox created by knit; returns its full (namespaced) name.
    pub fn sandbox(&mut self, short: &str) -> String {
        let name = format!("{}-{short}", self.prefix);
        self.namespaces.push(name.clone());
        self.ok(&["sandbox", "add", &name]);
        name
    }

    /// The first address of `family` (4 or 6) that `sandbox` has on `network`.
    pub fn ip_of(&self, network: &str, sandbox: &str, family: u8) -> String {
        let v = self.json(&["network", "inspect", network]);
        let att = v["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["sandbox"] == sandbox)
            .unwrap_or_else(|| panic!("{sandbox} not attached to {network}"));
        att["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().split('/').next().unwrap().to_string())
            .find(|i| (family == 4) == i.contains('.'))
            .unwrap_or_else(|| panic!("no IPv{family} address"))
    }

    /// `ip ...` inside the node.
    pub fn node_ip(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "-n", &self.node];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&sh(&a).stdout).into_owned()
    }

    /// knit's `table inet knit` in the node as nft lists it. Panics with nft's error when
    /// the table is missing or the listing fails, so an assertion that something is NOT in
    /// the table cannot pass because the table is gone (see `nft_table_absent`).
    pub fn nft_table(&self) -> String {
        self.list_knit_table("inet")
    }

    /// knit's `table bridge knit` (anti-spoofing of bridge ports); panics like `nft_table`.
    pub fn nft_bridge_table(&self) -> String {
        self.list_knit_table("bridge")
    }

    /// Whether knit's `table inet knit` is absent from the node: true only when nft says it
    /// does not exist; a listing that fails for any other reason panics.
    pub fn nft_table_absent(&self) -> bool {
        let o = self.nft_list("inet");
        let err = String::from_utf8_lossy(&o.stderr);
        match o.status.success() {
            true => false,
            false if err.contains("No such file or directory") => true,
            false => panic!("nft list table inet knit in {}: {err}", self.node),
        }
    }

    fn nft_list(&self, family: &str) -> Output {
        sh(&[
            "ip", "netns", "exec", &self.node, "nft", "list", "table", family, "knit",
        ])
    }

    fn list_knit_table(&self, family: &str) -> String {
        let o = self.nft_list(family);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success() && out.contains(&format!("table {family} knit {{")),
            "knit's table {family} knit is missing in {} (nft exit {:?}): {}",
            self.node,
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }

    /// Links in the node whose names knit generates.
    pub fn knit_links(&self) -> Vec<String> {
        self.node_ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("kv") || n.starts_with("knbr"))
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            // knit writes /etc/netns/NAME/resolv.conf for sandboxes on DNS networks.
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
        let _ = std::fs::remove_dir_all(&self.state);
        // DNS tests give the daemon an upstream list next to the state directory.
        let _ = std::fs::remove_file(self.state.with_extension("resolv.conf"));
    }
}

/// A command that runs `program` inside namespace `ns` (like `nsenter --net`, which
/// unlike `ip netns exec` keeps the mount namespace, so runc and knit see /run/netns).
pub fn command_in(ns: &str, program: &str) -> Command {
    let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
    let fd = file.as_raw_fd();
    let mut c = Command::new(program);
    // SAFETY: setns is async-signal-safe; `file` is moved into the closure, so the
    // descriptor stays open until the child has entered the namespace.
    unsafe {
        c.pre_exec(move || {
            let _keep = &file;
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Runs `f` on a thread inside namespace `ns` (a name in /run/netns).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        f()
    })
    .join()
    .expect("ns thread")
}

pub struct Server {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a server on a thread inside `ns`: `bind` creates its socket there (the caller
/// returns once it is bound), then `step` handles traffic until the Server is dropped.
/// `step` must return within a few milliseconds (non-blocking or short timeouts).
fn serve_in<S: 'static>(
    ns: &str,
    bind: impl FnOnce() -> S + Send + 'static,
    mut step: impl FnMut(&mut S) + Send + 'static,
) -> Server {
    let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
    let (stop_tx, stop_rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        // SAFETY: setns on this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let mut sock = bind();
        ready_tx.send(()).unwrap();
        while stop_rx.try_recv().is_err() {
            step(&mut sock);
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    Server {
        stop: stop_tx,
        thread: Some(thread),
    }
}

/// A TCP server in `ns` on `addr` answering every connection with "NAME saw PEER".
pub fn tcp_server(ns: &str, addr: &str, name: &str) -> Server {
    let addr: SocketAddr = addr.parse().unwrap();
    let name = name.to_string();
    let bind = move || {
        let l = TcpListener::bind(addr).expect("bind tcp");
        l.set_nonblocking(true).unwrap();
        l
    };
    serve_in(ns, bind, move |l| match l.accept() {
        Ok((mut s, peer)) => {
            let _ = s.set_nonblocking(false);
            let _ = s.write_all(format!("{name} saw {}", peer.ip()).as_bytes());
        }
        Err(_) => std::thread::sleep(Duration::from_millis(2)),
    })
}

/// A TCP server in `ns` that greets each connection with "NAME saw PEER\n" and then
/// echoes what it receives until the client closes (for long-lived connections).
pub fn echo_server(ns: &str, addr: &str, name: &str) -> Server {
    let addr: SocketAddr = addr.parse().unwrap();
    let name = name.to_string();
    let bind = move || {
        let l = TcpListener::bind(addr).expect("bind tcp");
        l.set_nonblocking(true).unwrap();
        l
    };
    serve_in(ns, bind, move |l| match l.accept() {
        Ok((mut s, peer)) => {
            let greeting = format!("{name} saw {}\n", peer.ip());
            std::thread::spawn(move || {
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(greeting.as_bytes());
                let mut buf = [0u8; 512];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
        Err(_) => std::thread::sleep(Duration::from_millis(2)),
    })
}

/// Opens a connection from `ns` that stays open; returns it after reading the greeting.
pub fn tcp_open(ns: &str, addr: &str) -> (TcpStream, String) {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).expect("greeting");
        let greeting = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        (s, greeting)
    })
}

/// Sends `msg` on an open connection and returns what came back.
pub fn tcp_echo(s: &mut TcpStream, msg: &str) -> Result<String, String> {
    s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A UDP server in `ns` answering every datagram with "NAME saw PEER".
pub fn udp_server(ns: &str, addr: &str, name: &str) -> Server {
    let addr: SocketAddr = addr.parse().unwrap();
    let name = name.to_string();
    let bind = move || {
        let s = UdpSocket::bind(addr).expect("bind udp");
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        s
    };
    serve_in(ns, bind, move |s| {
        let mut buf = [0u8; 1500];
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{name} saw {}", peer.ip()).as_bytes(), peer);
        }
    })
}

/// Connects from `ns` to `addr`; returns what the server said, or the error.
pub fn tcp_get(ns: &str, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
}

/// An HTTP/1.0 GET of `path` from `ns` to `addr`; returns the whole response (status
/// line, headers, body), or the error.
pub fn http_get(ns: &str, addr: &str, path: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    in_ns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
}

/// Sends one datagram from `ns` to `addr`; returns the answer, or the error.
pub fn udp_get(ns: &str, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, move || {
        let bind = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let mut buf = [0u8; 1500];
        for _ in 0..3 {
            s.send_to(b"hi", addr).map_err(|e| e.to_string())?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err("no answer".into())
    })
}

pub fn ping(ns: &str, addr: &str) -> bool {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", addr])
        .output()
        .expect("ping");
    o.status.success()
}

/// An nft listing with the elements of every set and map sorted, so two listings of the
/// same state compare equal whatever order the kernel printed the elements in (hash sets
/// list in an order of their own per set instance).
pub fn sorted_elements(listing: &str) -> String {
    let mut out = String::new();
    let mut rest = listing;
    while let Some(i) = rest.find("elements = {") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "elements = {".len()..];
        let end = after.find('}').expect("closing brace");
        let mut items: Vec<String> = after[..end]
            .split(',')
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|s| !s.is_empty())
            .collect();
        items.sort();
        out.push_str(&format!("elements = {{ {} }}", items.join(", ")));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Waits until `f` holds (kernel state such as neighbour entries settles asynchronously).
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(5), f)
}

/// `eventually` with a limit of its own: daemons (containerd, dockerd) start in seconds,
/// more while the rest of the suite runs beside them.
pub fn eventually_within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// The pids of `knit nft-keeper` processes serving namespace `ns`.
pub fn keepers_in(ns: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino();
    let want = format!("net:[{ino}]");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"nft-keeper"))
                && std::fs::read_link(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|l| l.to_string_lossy() == want)
        })
        .collect()
}

/// A busybox-static root filesystem in `dir/rootfs` (applets as symlinks, `/www/index.html`
/// saying `page`), packed as `dir/rootfs.tar` for `podman import` / `docker import`.
pub fn busybox_rootfs(dir: &std::path::Path, applets: &[&str], page: &str) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "www", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is not installed");
    for a in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), format!("{page}\n")).unwrap();
    let tar = dir.join("rootfs.tar");
    sh_ok(&[
        "tar",
        "-C",
        root.to_str().unwrap(),
        "-cf",
        tar.to_str().unwrap(),
        ".",
    ]);
    tar
}

impl World {
    /// How many attachments `network` has.
    pub fn attachments(&self, network: &str) -> usize {
        self.json(&["network", "inspect", network])["attachments"]
            .as_array()
            .map_or(0, Vec::len)
    }
}
