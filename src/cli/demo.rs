//! `knit demo`: the seeds' canonical lab, built by knit's own CLI inside a throwaway node
//! namespace, proven with real packets, and removed again (also on failure).
//!
//!   outside (198.51.100.2) ──uplink── node (198.51.100.1) ── bridge "lab" 10.88.0.0/24
//!                                                            ├── web    (httpd on :80, published as :8080)
//!                                                            └── client

use crate::error::{Error, IoContext, Result};
use crate::model::Mac;
use crate::netlink::{Netlink, Route, VethRequest};
use crate::netns::{self, Netns};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[path = "demo_ingress.rs"]
mod ingress_act;

/// Processes a demo started, killed if it is interrupted.
pub(super) static CHILDREN: std::sync::Mutex<Vec<libc::pid_t>> = std::sync::Mutex::new(Vec::new());

/// Set by the signal thread before it cleans up: from then on the demo's own failures
/// (a namespace vanishing under a step) are consequences of the interruption, and the
/// process must end with the signal's status, not the step's error.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Called when a demo returns: if a signal arrived, wait for the signal thread to finish
/// the cleanup and exit with 128 + signal, so the exit status says "interrupted".
pub(super) fn hold_if_interrupted<T>(result: T) -> T {
    while INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::park();
    }
    result
}

const NODE4: &str = "198.51.100.1";
const OUTSIDE4: &str = "198.51.100.2";

/// Everything the demo creates; dropping it removes all of it.
struct Lab {
    tag: String,
    state: PathBuf,
    namespaces: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.namespaces.iter().rev() {
            let _ = netns::delete_named(n);
            // knit wrote resolv.conf for the sandboxes there.
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{n}"));
        }
        let _ = std::fs::remove_dir_all(&self.state);
        say!(
            "\ncleaned up: namespaces {} and state dir {}",
            self.namespaces.join(", "),
            self.state.display()
        );
    }
}

impl Lab {
    fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.tag)
    }

    fn node(&self) -> String {
        self.name("node")
    }

    /// Runs this same binary as `knit` inside the node namespace and echoes the command.
    fn knit(&self, args: &[&str]) -> Result<String> {
        self.knit_expecting(args, 0)
    }

    /// `knit` that must exit with `code` (doctor and trace say 2 for a broken path).
    fn knit_expecting(&self, args: &[&str], code: i32) -> Result<String> {
        say!("  $ knit {}", args.join(" "));
        let exe = std::env::current_exe().op(|| "find own executable".into())?;
        let out = command_in(&self.node(), &exe)?
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .output()
            .op(|| "run knit".into())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        for l in stdout.lines() {
            say!("    {l}");
        }
        if out.status.code() != Some(code) {
            return Err(Error::Conflict(format!(
                "knit {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(stdout)
    }
}

/// A command that runs `program` inside namespace `ns` (setns in the child, like `nsenter
/// --net`).
pub(super) fn command_in(ns: &str, program: &std::path::Path) -> Result<Command> {
    let file = std::fs::File::open(netns::named_path(ns)).op(|| format!("open {ns}"))?;
    let mut cmd = Command::new(program);
    // SAFETY: setns is async-signal-safe; `file` is moved into the closure and stays open
    // until the child has entered the namespace.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

pub(super) fn check(what: &str, ok: bool, detail: &str) -> Result<()> {
    say!(
        "  [{}] {what}{}",
        if ok { "ok" } else { "FAILED" },
        if detail.is_empty() {
            String::new()
        } else {
            format!(" — {detail}")
        }
    );
    if ok {
        Ok(())
    } else {
        Err(Error::Conflict(format!("demo check failed: {what}")))
    }
}

/// A TCP server on a thread inside named namespace `ns` on `port`, handing each
/// connection (and its peer) to `reply`, until `stop` (the demos' servers).
pub(super) fn serve_in(
    ns: &str,
    port: u16,
    stop: Arc<AtomicBool>,
    reply: impl Fn(std::net::TcpStream, std::net::SocketAddr) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    let netns = Netns::open(netns::named_path(ns))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on this dedicated thread only.
        if unsafe { libc::setns(netns.fd().as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let _ = tx.send(false);
            return;
        }
        let Ok(l) = TcpListener::bind(("0.0.0.0", port)) else {
            let _ = tx.send(false);
            return;
        };
        let _ = l.set_nonblocking(true);
        let _ = tx.send(true);
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, peer)) => reply(s, peer),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(true) => Ok(handle),
        _ => Err(Error::Conflict(format!("server in {ns} did not start"))),
    }
}

/// A tiny HTTP server on a thread inside `ns`; answers with who it saw.
fn http_server(ns: &str, port: u16, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>> {
    serve_in(ns, port, stop, |mut s, peer| {
        let _ = s.set_nonblocking(false);
        let mut buf = [0u8; 512];
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = s.read(&mut buf);
        let body = format!("hello from web, you are {}\n", peer.ip());
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    })
}

/// An HTTP GET from inside `ns`; returns the body.
fn http_get(ns: &str, addr: &str) -> Result<String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| Error::invalid("address", addr, "bad socket address"))?;
    let ns = Netns::open(netns::named_path(ns))?;
    ns.run(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .op(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .op(|| "timeout".into())?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .op(|| "send".into())?;
        let mut out = String::new();
        s.read_to_string(&mut out).op(|| "read".into())?;
        Ok(out
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string())
    })?
}

/// ICMP echo from a sandbox, through `knit sandbox exec` (as a user would run it).
fn ping(from: &str, to: &str) -> bool {
    let exe = std::env::current_exe().unwrap_or_else(|_| "knit".into());
    Command::new(exe)
        .args([
            "sandbox", "exec", from, "--", "ping", "-c", "1", "-W", "1", to,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The outside host and its uplink to the node, built with knit's own netlink layer.
fn build_outside(lab: &Lab) -> Result<()> {
    let node = Netns::open(netns::named_path(&lab.node()))?;
    let outside = Netns::open(netns::named_path(&lab.name("out")))?;
    let out_fd = outside.fd();
    node.run(|| -> Result<()> {
        let mut nl = Netlink::open()?;
        nl.create_veth(&VethRequest {
            host_name: "uplink",
            host_mac: Mac::random(),
            peer_name: "wan",
            peer_mac: Mac::random(),
            peer_netns: out_fd,
            mtu: None,
            controller: None,
        })?;
        let idx = nl
            .link_index("uplink")?
            .ok_or_else(|| Error::not_found("link", "uplink"))?;
        nl.add_address(
            idx,
            format!("{NODE4}/24")
                .parse()
                .map_err(|_| Error::invalid("addr", NODE4, "bad"))?,
        )?;
        Ok(())
    })??;
    outside.run(|| -> Result<()> {
        let mut nl = Netlink::open()?;
        let idx = nl
            .link_index("wan")?
            .ok_or_else(|| Error::not_found("link", "wan"))?;
        nl.set_up(idx)?;
        nl.add_address(
            idx,
            format!("{OUTSIDE4}/24")
                .parse()
                .map_err(|_| Error::invalid("addr", OUTSIDE4, "bad"))?,
        )?;
        Ok(())
    })??;
    node.run(|| -> Result<()> {
        let mut nl = Netlink::open()?;
        nl.add_route(&Route {
            dst: "0.0.0.0/0"
                .parse()
                .map_err(|_| Error::invalid("route", "default", "bad"))?,
            gateway: Some(
                OUTSIDE4
                    .parse()
                    .map_err(|_| Error::invalid("gw", OUTSIDE4, "bad"))?,
            ),
            oif: None,
            onlink: false,
            link_scope: false,
        })
    })??;
    Ok(())
}

/// Ctrl-C, SIGTERM or SIGHUP during the demo: remove everything tagged with this run
/// (namespaces, /etc/netns entries, the state dir), then exit as interrupted. The signals
/// are blocked in every thread and taken by one waiting thread, so cleanup never runs
/// inside a signal handler.
pub(super) fn clean_up_on_signals(tag: String, state: PathBuf) {
    // SAFETY: sigset manipulation on locals; pthread_sigmask before other threads start,
    // so every thread spawned later inherits the mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: waits on the blocked set owned by this closure.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
        // Processes the demo started (etcd, daemons) go first.
        if let Ok(pids) = CHILDREN.lock() {
            for pid in pids.iter() {
                // SAFETY: a signal to a process this demo started.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
        if let Ok(dir) = std::fs::read_dir(crate::model::NETNS_DIR) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{tag}-")) {
                    let _ = netns::delete_named(&name);
                    let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&state);
        let _ = writeln!(
            std::io::stderr(),
            "\nknit demo: interrupted; removed {tag}-*"
        );
        std::process::exit(128 + sig);
    });
}

pub fn run() -> Result<i32> {
    let tag = format!("knitdemo{}", std::process::id());
    clean_up_on_signals(
        tag.clone(),
        std::env::temp_dir().join(format!("{tag}-state")),
    );
    let lab = Lab {
        state: std::env::temp_dir().join(format!("{tag}-state")),
        tag,
        namespaces: vec![],
    };
    let mut lab = lab;
    say!("knit demo: the seeds' lab — a node with an uplink to an outside host, a bridge network");
    say!("with two sandboxes, NAT, a web server published on the node and behind a service, a");
    say!("default-deny policy, and doctor and trace explaining it. Nothing outside the throwaway");
    say!("namespaces below is touched.\n");
    say!("1. the world: node and outside namespaces, joined by an uplink veth");
    for short in ["node", "out"] {
        let n = lab.name(short);
        netns::create_named(&n, crate::netlink::bring_up_loopback)?;
        lab.namespaces.push(n);
    }
    build_outside(&lab)?;
    say!("  node {NODE4} <-> outside {OUTSIDE4}");

    say!(
        "\n2. knit builds the network (each command: store transaction + netlink + one nft transaction)"
    );
    lab.knit(&[
        "network",
        "create",
        "lab",
        "--subnet",
        "10.88.0.0/24",
        "--subnet",
        "fd88::/64",
    ])?;
    let web = lab.name("web");
    let client = lab.name("client");
    lab.namespaces.push(web.clone());
    lab.namespaces.push(client.clone());
    lab.knit(&["sandbox", "add", &web])?;
    lab.knit(&["sandbox", "add", &client])?;
    lab.knit(&["attach", "lab", &web, "--publish", "8080:80"])?;
    lab.knit(&["attach", "lab", &client])?;
    lab.knit(&["network", "ls"])?;

    say!("\n3. proof, with real packets");
    let stop = Arc::new(AtomicBool::new(false));
    let server = http_server(&web, 80, stop.clone())?;
    let result = (|| -> Result<()> {
        check(
            "client pings web across the bridge (10.88.0.2)",
            ping(&client, "10.88.0.2"),
            "",
        )?;
        check(
            "web pings client over IPv6 (fd88::3)",
            ping(&web, "fd88::3"),
            "",
        )?;
        check(
            "client reaches the outside host through NAT",
            ping(&client, OUTSIDE4),
            "",
        )?;
        let body = http_get(&lab.name("out"), &format!("{NODE4}:8080"))?;
        check(
            "outside fetches http://198.51.100.1:8080 (DNAT to web:80)",
            body.contains("hello from web"),
            &body,
        )?;
        let body = http_get(&lab.node(), "127.0.0.1:8080")?;
        check(
            "the node itself fetches http://127.0.0.1:8080 (output DNAT)",
            body.contains("hello from web"),
            &body,
        )?;
        let body = http_get(&client, &format!("{NODE4}:8080"))?;
        check(
            "client fetches its own network's published port via the node (hairpin)",
            body.contains("hello from web"),
            &body,
        )?;

        say!("\n  a service: a virtual IP spread over backends, also on a node port");
        lab.knit(&[
            "service",
            "create",
            "web",
            "--vip",
            "10.96.0.80:80",
            "--backend",
            &format!("{web}:80"),
            "--node-port",
            "30080",
        ])?;
        let body = http_get(&client, "10.96.0.80:80")?;
        check(
            "client fetches http://10.96.0.80 (service VIP → web:80)",
            body.contains("hello from web"),
            &body,
        )?;
        let body = http_get(&lab.name("out"), &format!("{NODE4}:30080"))?;
        check(
            "outside fetches the node port http://198.51.100.1:30080",
            body.contains("hello from web"),
            &body,
        )?;

        ingress_act::act(&mut lab, &web)?;

        say!("\n  policy: default deny on the network, then allow what is needed");
        lab.knit(&["policy", "default", "lab", "deny"])?;
        check(
            "outside can no longer reach web through the published port",
            http_get(&lab.name("out"), &format!("{NODE4}:8080")).is_err(),
            "",
        )?;
        check(
            "client can no longer reach web through the service",
            http_get(&client, "10.96.0.80:80").is_err(),
            "",
        )?;
        lab.knit(&[
            "policy", "allow", "lab", "--from", &client, "--to", &web, "--port", "80",
        ])?;
        lab.knit(&[
            "policy",
            "allow",
            "lab",
            "--from",
            "198.51.100.0/24",
            "--to",
            &web,
        ])?;
        let body = http_get(&client, "10.96.0.80:80")?;
        check(
            "allowed: client → service → web:80",
            body.contains("hello from web"),
            &body,
        )?;
        let body = http_get(&lab.name("out"), &format!("{NODE4}:8080"))?;
        check(
            "allowed: outside (198.51.100.0/24) → published port → web:80",
            body.contains("hello from web"),
            &body,
        )?;
        check(
            "still denied: web pings client (no rule allows it)",
            !ping(&web, "10.88.0.3"),
            "",
        )?;
        lab.knit(&["policy", "ls"])?;

        say!("\n  the network explains itself: why can't web ping client?");
        let why = lab.knit_expecting(&["doctor", &web, "10.88.0.3"], 2)?;
        check(
            "doctor names the broken step (policy) and the rule that fixes it",
            why.contains("✗ policy")
                && why.contains(&format!("knit policy allow lab --from {web} --to {client}")),
            "",
        )?;
        let way = lab.knit_expecting(&["trace", &web, "10.88.0.3"], 2)?;
        check(
            "trace follows one real ping to the rule that drops it (network lab's policy)",
            way.contains("dropped: in node, FORWARD") && way.contains("policy of network lab"),
            "",
        )?;
        let ok = lab.knit(&["doctor", &client, "10.88.0.2:80"])?;
        check(
            "and the allowed path is green end to end, up to web's listener",
            ok.contains("✓ listener:") && ok.lines().all(|l| !l.starts_with('✗')),
            "",
        )?;
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    result?;

    say!("\n4. what knit built for the web sandbox");
    lab.knit(&["inspect", &web])?;

    say!("\n5. teardown mirrors setup");
    lab.knit(&["service", "rm", "web"])?;
    lab.knit(&["detach", "lab", &client])?;
    lab.knit(&["sandbox", "rm", &web])?;
    lab.knit(&["network", "rm", "lab"])?;
    say!("\nknit demo: all checks passed");
    drop(lab);
    Ok(0)
}
