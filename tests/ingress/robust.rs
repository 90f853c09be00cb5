//! The proxy under trouble: route timeouts (connect, response headers, pauses in the
//! body), retries on another endpoint, passive health, slowloris clients and oversized
//! heads — with real slow or broken peers while other clients are served.

use super::common::*;
use super::lab;
use super::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn timed(w: &World, path: &'static str, headers: &[(&str, &str)]) -> (Resp, Duration) {
    let started = Instant::now();
    let r = get(w, path, headers);
    (r, started.elapsed())
}

fn metric(m: &str, line_start: &str) -> Option<f64> {
    m.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn route_timeouts_retries_and_passive_health() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    // 10.61.0.250 is on the lab's network but nobody has it: a connect there hangs.
    let routes = format!(
        r#"
slow: Path("/slow") -> backendTimeout("300ms") -> "http://{ip}:8080";
patient: Path("/slow") && Header("X-Patient", "yes") -> backendTimeout("3s") -> "http://{ip}:8080";
stall: Path("/stall") -> idleTimeout("300ms") -> "http://{ip}:8080";
stallok: Path("/stall") && Header("X-Patient", "yes") -> "http://{ip}:8080";
hole: Path("/hole") -> connectTimeout("200ms") -> "http://10.61.0.250:8080";
holeretry: Path("/holeretry") -> connectTimeout("200ms") -> <roundRobin, "http://10.61.0.250:8080", "http://{ip}:8080">;
retry: PathSubtree("/r") -> <roundRobin, "http://{ip}:9", "http://{ip}:8080">;
"#
    );
    let g = ingress_with(w, &routes, &["--eject-after", "3", "--eject-ms", "1500"]);

    // backendTimeout: 504 after the route's 300 ms, not the backend's second.
    let (r, took) = timed(w, "/slow", &[]);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    let (r, took) = timed(w, "/slow", &[("X-Patient", "yes")]);
    assert_eq!((r.status, r.who()), (200, "b0"), "{r:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");

    // idleTimeout: the body pauses a second; the response is cut after 300 ms of it.
    let cut = in_ns(&w.node, || {
        raw(LISTEN, b"GET /stall HTTP/1.0\r\nHost: a\r\n\r\n").unwrap_or_default()
    });
    assert!(cut.starts_with("HTTP/1.0 200"), "{cut:?}");
    let body = cut.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(body.len(), 50, "only the first half: {cut:?}");
    let whole = get(w, "/stall", &[("X-Patient", "yes")]);
    assert_eq!(whole.body.len(), 100, "{whole:?}");

    // connectTimeout: an address nobody answers is a 504 after 200 ms ...
    let (r, took) = timed(w, "/hole", &[]);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(took < Duration::from_millis(900), "{took:?}");
    // ... and a GET goes on to the next endpoint when the connect fails.
    for _ in 0..4 {
        let (r, took) = timed(w, "/holeretry", &[]);
        assert_eq!((r.status, r.who()), (200, "b0"), "{r:?}");
        assert!(took < Duration::from_millis(900), "{took:?}");
    }

    // A POST with a body is not retried: the dead endpoint's share fails (2 of 4: round
    // robin) ...
    let statuses: Vec<String> = in_ns(&w.node, || {
        (0..4)
            .map(|_| {
                raw(
                    LISTEN,
                    b"POST /r HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
                )
                .unwrap_or_default()
                .chars()
                .skip(9)
                .take(3)
                .collect()
            })
            .collect()
    });
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, ["200", "200", "502", "502"], "{statuses:?}");
    // ... GETs are (retried on the other endpoint), and the third failure in a row takes
    // the dead endpoint out: no more tries on it.
    for _ in 0..20 {
        let r = get(w, "/r", &[]);
        assert_eq!((r.status, r.who()), (200, "b0"), "{r:?}");
    }
    let m = metrics(w);
    let dead = format!("knit_ingress_backend_errors_total{{endpoint=\"{ip}:9\"}} ");
    assert_eq!(metric(&m, &dead), Some(3.0), "{m}");
    let ejected = format!("knit_ingress_endpoint_ejected{{endpoint=\"{ip}:9\"}} 1");
    assert!(m.contains(&ejected), "{m}");
    assert!(
        metric(&m, "knit_ingress_retries_total ").is_some_and(|n| n >= 3.0),
        "{m}"
    );
    // After --eject-ms it is tried again (and fails again, retried: clients see 200s).
    std::thread::sleep(Duration::from_millis(1600));
    assert!(!metrics(w).contains(&ejected));
    for _ in 0..10 {
        assert_eq!(get(w, "/r", &[]).status, 200);
    }
    let again = metric(&metrics(w), &dead).unwrap_or(0.0);
    assert!(again > 3.0, "the endpoint was tried again: {again}");

    // A route reload that drops the dead endpoint drops all that was kept for it (its
    // figures, its failures) and for the routes that went.
    let tmp = g.routes.with_extension("tmp");
    std::fs::write(
        &tmp,
        routes
            .replace(&format!("\"http://{ip}:9\", "), "")
            .replace("hole:", "gone:"),
    )
    .unwrap();
    std::fs::rename(&tmp, &g.routes).unwrap();
    let gone = format!("{ip}:9\"");
    eventually_within(
        "the dead endpoint forgotten",
        Duration::from_secs(5),
        || {
            let m = metrics(w);
            !m.contains(&gone) && !m.contains("route=\"hole\"")
        },
    );
    assert_eq!(get(w, "/r", &[]).status, 200);
}

#[test]
fn slowloris_and_oversized_heads_are_refused_while_others_are_served() {
    let w = World::new();
    let _g = ingress_with(
        &w,
        "ok: * -> inlineContent(\"ok\") -> <shunt>;",
        &[
            "--header-read-timeout-ms",
            "1000",
            "--max-header-bytes",
            "16384",
        ],
    );
    // 200 slow clients: each sends a head one header line at a time, never finishing it.
    let slow: Vec<TcpStream> = in_ns(&w.node, || {
        (0..200)
            .map(|_| {
                let mut s = TcpStream::connect(LISTEN).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
                s
            })
            .collect()
    });
    let started = Instant::now();
    let dripping = std::thread::spawn(move || {
        let mut slow = slow;
        let mut closed = vec![None; slow.len()];
        while started.elapsed() < Duration::from_secs(4) {
            for (i, s) in slow.iter_mut().enumerate() {
                if closed[i].is_none() && s.write_all(b"X-Drip: 1\r\n").is_err() {
                    closed[i] = Some(started.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // A closed connection reads EOF (or a reset) at once.
        for (i, s) in slow.iter_mut().enumerate() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut b = [0u8; 64];
            if closed[i].is_none() && matches!(s.read(&mut b), Ok(0) | Err(_)) {
                closed[i] = Some(started.elapsed());
            }
        }
        closed
    });
    // Meanwhile others are served, each promptly.
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let (r, took) = timed(&w, "/", &[]);
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(slowest < Duration::from_millis(1000), "{slowest:?}");
    // A head over 16 KiB: 431, and the next client is served.
    let big = "b".repeat(32 * 1024);
    let r = in_ns(&w.node, move || {
        request(LISTEN, "GET", "/", &[("X-Big", big.as_str())])
    });
    assert_eq!(r.map(|r| r.status), Ok(431));
    assert_eq!(get(&w, "/", &[]).status, 200);
    let closed = dripping.join().unwrap();
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "slow connections still open after 4 s");
    let latest = closed.iter().flatten().max().copied().unwrap_or_default();
    assert!(latest < Duration::from_secs(3), "closed by {latest:?}");
}
