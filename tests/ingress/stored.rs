//! `knit ingress route add|rm|ls`: routes kept in the store, merged with the routes file
//! (a stored route replaces a file route of the same id), picked up by a running
//! `knit ingress serve` without a restart or a failed request, and kept across restarts.

use super::common::*;
use super::lab;
use super::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

fn body_becomes(w: &World, path: &'static str, want: &str) {
    eventually_within(
        &format!("{path} answers {want:?}"),
        Duration::from_secs(5),
        || {
            in_ns(&w.node, move || request(LISTEN, "GET", path, &[]))
                .is_ok_and(|r| r.body == want || r.who() == want)
        },
    );
}

#[test]
fn stored_routes_are_served_beside_the_file_without_a_restart() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let file = "filed: Path(\"/f\") -> inlineContent(\"file\") -> <shunt>;\napi: Path(\"/api\") -> inlineContent(\"file api\") -> <shunt>;\n";
    let g = ingress(w, file);
    assert_eq!(get(w, "/r1", &[]).status, 404);

    // Requests go on the whole time; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, node) = (stop.clone(), ok.clone(), failed.clone(), w.node.clone());
        std::thread::spawn(move || {
            in_ns(&node, move || {
                while !stop.load(Ordering::SeqCst) {
                    match request(LISTEN, "GET", "/f", &[]) {
                        Ok(r) if r.status == 200 && r.body == "file" => {
                            ok.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
    };

    let r1 =
        format!("Path(\"/r1\") -> setRequestHeader(\"X-Stored\", \"yes\") -> \"http://{ip}:8080\"");
    assert_eq!(w.ok(&["ingress", "route", "add", "r1", &r1]).trim(), "r1");
    body_becomes(w, "/r1", "b0");
    assert!(get(w, "/r1", &[]).body.contains("x-stored: yes"));
    // A stored route replaces the file's route of the same id.
    w.ok(&[
        "ingress",
        "route",
        "add",
        "api",
        "Path(\"/api\") -> inlineContent(\"store api\") -> <shunt>;",
    ]);
    body_becomes(w, "/api", "store api");

    // An existing id: 4, unless --replace.
    let again = w.run(&["ingress", "route", "add", "r1", &r1]);
    assert_eq!(again.status.code(), Some(4), "{again:?}");
    w.ok(&[
        "ingress",
        "route",
        "add",
        "--replace",
        "r1",
        "Path(\"/r1\") -> inlineContent(\"replaced\") -> <shunt>",
    ]);
    body_becomes(w, "/r1", "replaced");

    // Refused before they reach the store: a syntax error (1), a bad argument (1), an
    // unknown filter (3), two routes (1).
    for (route, code) in [
        ("Path(\"/x\" -> <shunt>", 1),
        ("Path(\"/x\") -> status(1000) -> <shunt>", 1),
        ("Path(\"/x\") -> fancy() -> <shunt>", 3),
        ("Path(\"/x\") -> <shunt>; b: * -> <shunt>", 1),
    ] {
        let o = w.run(&["ingress", "route", "add", "bad", route]);
        assert_eq!(o.status.code(), Some(code), "{route}: {o:?}");
    }

    let ls = w.ok(&["ingress", "route", "ls"]);
    assert_eq!(
        ls,
        "api: Path(\"/api\") -> inlineContent(\"store api\") -> <shunt>;\nr1: Path(\"/r1\") -> inlineContent(\"replaced\") -> <shunt>;\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&w.ok(&["--json", "ingress", "route", "ls"])).unwrap();
    assert_eq!(v[1]["id"], "r1");
    assert_eq!(
        v[1]["route"],
        "Path(\"/r1\") -> inlineContent(\"replaced\") -> <shunt>"
    );

    // Removed: the file's route is back.
    w.ok(&["ingress", "route", "rm", "api"]);
    body_becomes(w, "/api", "file api");
    assert_eq!(
        w.run(&["ingress", "route", "rm", "api"]).status.code(),
        Some(3)
    );

    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(ok > 50, "only {ok} requests");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);

    // Kept across restarts, and served without a routes file too.
    drop(g);
    let mut child = w
        .cmd(&["ingress", "serve", "--listen", LISTEN, "--reload-ms", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = [0u8; 64];
    let n = std::io::Read::read(&mut out, &mut line).unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&line[..n]).starts_with("listening on"),
        "{:?}",
        String::from_utf8_lossy(&line[..n])
    );
    assert_eq!(get(w, "/r1", &[]).body, "replaced");
    assert_eq!(get(w, "/f", &[]).status, 404);
    let _ = child.kill();
    let _ = child.wait();
}
