//! `knit demo`'s ingress act: two versions of the web sandbox behind one host name with a
//! 90/10 `Traffic` split, a path rewrite, a rate limit hit with packets from the outside
//! host, and a backend killed and routed around — `knit ingress serve` in the node
//! namespace, configured with eskip routes naming the sandboxes (`knit://sandbox/`).

use super::{CHILDREN, Lab, check, command_in, serve_in};
use crate::error::{Error, IoContext, Result};
use crate::netns::{self, Netns};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const LISTEN: &str = "198.51.100.1:8000";

/// A web server on port 81 (the demo's own has 80) of `ns`, answering "web VERSION: REQUEST LINE".
fn versioned(
    ns: &str,
    version: &'static str,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    serve_in(ns, 81, stop, move |mut s, _peer| {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut head = vec![];
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&head);
        let line = text.lines().next().unwrap_or("");
        let body = format!("web {version}: {line}\n");
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    })
}

/// A GET with a Host header from inside `ns`: (status, body).
fn get(ns: &str, path: &str) -> Result<(u16, String)> {
    let addr: SocketAddr = LISTEN
        .parse()
        .map_err(|_| Error::invalid("address", LISTEN, "bad socket address"))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: shop.example\r\n\r\n");
    let ns = Netns::open(netns::named_path(ns))?;
    ns.run(move || -> Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .op(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .op(|| "timeout".into())?;
        s.write_all(req.as_bytes()).op(|| "send".into())?;
        let mut out = String::new();
        s.read_to_string(&mut out).op(|| "read".into())?;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((status, body.trim().to_string()))
    })?
}

/// The ingress process; killed when dropped.
struct Ingress(Child);

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn act(lab: &mut Lab, web: &str) -> Result<()> {
    say!("\n  ingress: an HTTP router (Skipper's route language) in front of the sandboxes");
    let web2 = lab.name("web2");
    lab.namespaces.push(web2.clone());
    lab.knit(&["sandbox", "add", &web2])?;
    lab.knit(&["attach", "lab", &web2])?;
    let routes = lab.state.join("routes.eskip");
    let text = format!(
        r#"// v2 gets a tenth of the traffic; /api is rewritten and spread over both
v2:      Host(/^shop\.example$/) && Traffic(.1) -> setResponseHeader("X-Version", "v2")
           -> "knit://sandbox/{web2}:81";
v1:      Host(/^shop\.example$/) -> "knit://sandbox/{web}:81";
api:     Host(/^shop\.example$/) && PathSubtree("/api") -> modPath(/^\/api/, "")
           -> <roundRobin, "knit://sandbox/{web}:81", "knit://sandbox/{web2}:81">;
limited: Host(/^shop\.example$/) && Path("/limited") -> ratelimit(3, "1m")
           -> "knit://sandbox/{web}:81";
"#
    );
    std::fs::write(&routes, &text).op(|| format!("write {}", routes.display()))?;
    for l in text.lines() {
        say!("    {l}");
    }
    let file = routes.display().to_string();
    lab.knit(&["ingress", "check", &file])?;

    let (stop1, stop2) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let s1 = versioned(web, "v1", stop1.clone())?;
    let mut s2 = Some(versioned(&web2, "v2", stop2.clone())?);
    say!("  $ knit ingress serve --listen {LISTEN} --routes {file} --eject-after 1");
    let exe = std::env::current_exe().op(|| "find own executable".into())?;
    let mut child = command_in(&lab.node(), &exe)?
        .arg("--state-dir")
        .arg(&lab.state)
        .args(["ingress", "serve", "--listen", LISTEN, "--routes", &file])
        .args(["--eject-after", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .op(|| "start knit ingress serve".into())?;
    if let Ok(mut pids) = CHILDREN.lock() {
        pids.push(child.id() as libc::pid_t);
    }
    let mut first = [0u8; 128];
    let n = child
        .stdout
        .take()
        .map_or(0, |mut o| o.read(&mut first).unwrap_or(0));
    let ingress = Ingress(child);
    let out = lab.name("out");
    let result = (|| -> Result<()> {
        check(
            "the ingress listens on the node",
            first[..n].starts_with(b"listening on"),
            String::from_utf8_lossy(&first[..n]).trim(),
        )?;
        let mut v2 = 0;
        for _ in 0..200 {
            let (status, body) = get(&out, "/")?;
            if status != 200 {
                return check("outside → ingress → web", false, &body);
            }
            v2 += usize::from(body.starts_with("web v2"));
        }
        check(
            "200 requests from outside to shop.example: about a tenth reach v2",
            (6..=40).contains(&v2),
            &format!("v1 {}, v2 {v2}", 200 - v2),
        )?;
        let (_, body) = get(&out, "/api/items?id=7")?;
        check(
            "/api/items is rewritten to /items",
            body.contains(": GET /items?id=7 "),
            &body,
        )?;
        let statuses: Vec<u16> = (0..5)
            .map(|_| get(&out, "/limited").map(|r| r.0))
            .collect::<Result<_>>()?;
        check(
            "ratelimit(3, \"1m\"): the 4th and 5th requests get 429",
            statuses == [200, 200, 200, 429, 429],
            &format!("{statuses:?}"),
        )?;
        say!("  killing web v2's server");
        stop2.store(true, Ordering::Relaxed);
        if let Some(s) = s2.take() {
            let _ = s.join();
        }
        let mut v1 = 0;
        for _ in 0..20 {
            let (status, body) = get(&out, "/api/x")?;
            v1 += usize::from(status == 200 && body.starts_with("web v1"));
        }
        check(
            "/api goes on: 20 of 20 answered by v1 (retried on connect failure, v2 ejected)",
            v1 == 20,
            &format!("{v1} of 20"),
        )
    })();
    drop(ingress);
    stop1.store(true, Ordering::Relaxed);
    stop2.store(true, Ordering::Relaxed);
    let _ = s1.join();
    if let Some(s) = s2 {
        let _ = s.join();
    }
    result?;
    lab.knit(&["sandbox", "rm", &web2])?;
    Ok(())
}
