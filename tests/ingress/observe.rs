//! What the ingress tells about its traffic: the access log (one JSON line per request)
//! and the Prometheus figures per route and per backend endpoint.

use super::common::*;
use super::lab;
use super::support::*;
use std::time::Duration;

fn has(m: &str, line: &str) {
    assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
}

#[test]
fn access_log_and_metrics_per_route_and_backend() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let log = std::env::temp_dir().join(format!("{}-access.log", w.prefix));
    let _ = std::fs::remove_file(&log);
    let routes = format!(
        r#"
api: Path("/api") -> "http://{ip}:8080";
slow: Path("/slow") -> "http://{ip}:8080";
tea: Path("/tea") -> status(418) -> inlineContent("tea") -> <shunt>;
gone: Path("/gone") -> "http://{ip}:9";
"#
    );
    let _g = ingress_with(
        w,
        &routes,
        &["--access-log", log.to_str().unwrap(), "--eject-after", "0"],
    );
    let mut api_bytes = 0;
    for _ in 0..5 {
        let r = get(w, "/api?k=v", &[("User-Agent", "knit-test/1")]);
        assert_eq!(r.status, 200);
        api_bytes = r.body.len();
    }
    for _ in 0..2 {
        assert_eq!(get(w, "/tea", &[]).status, 418);
    }
    assert_eq!(get(w, "/gone", &[]).status, 502);
    assert_eq!(get(w, "/nothing", &[]).status, 404);

    // A request in flight shows in the gauges.
    let node = w.node.clone();
    let slow = std::thread::spawn(move || in_ns(&node, || request(LISTEN, "GET", "/slow", &[])));
    std::thread::sleep(Duration::from_millis(400));
    let m = metrics(w);
    has(&m, "knit_ingress_in_flight 1");
    has(
        &m,
        &format!("knit_ingress_backend_in_flight{{endpoint=\"{ip}:8080\"}} 1"),
    );
    assert_eq!(slow.join().unwrap().unwrap().status, 200);

    let m = metrics(w);
    has(&m, "knit_ingress_in_flight 0");
    has(
        &m,
        "knit_ingress_requests_total{route=\"api\",class=\"2xx\"} 5",
    );
    has(
        &m,
        "knit_ingress_requests_total{route=\"tea\",class=\"4xx\"} 2",
    );
    has(
        &m,
        "knit_ingress_requests_total{route=\"gone\",class=\"5xx\"} 1",
    );
    has(
        &m,
        "knit_ingress_requests_total{route=\"(none)\",class=\"4xx\"} 1",
    );
    has(&m, "knit_ingress_request_seconds_count{route=\"api\"} 5");
    has(
        &m,
        "knit_ingress_request_seconds_bucket{route=\"slow\",le=\"0.25\"} 0",
    );
    has(
        &m,
        "knit_ingress_request_seconds_bucket{route=\"slow\",le=\"5\"} 1",
    );
    let ep = format!("endpoint=\"{ip}:8080\"");
    has(
        &m,
        &format!("knit_ingress_backend_requests_total{{{ep},class=\"2xx\"}} 6"),
    );
    has(
        &m,
        &format!("knit_ingress_backend_requests_total{{{ep},class=\"5xx\"}} 0"),
    );
    has(&m, &format!("knit_ingress_backend_seconds_count{{{ep}}} 6"));
    has(
        &m,
        &format!("knit_ingress_backend_errors_total{{endpoint=\"{ip}:9\"}} 1"),
    );

    // A client that goes away mid-request leaves the gauge too.
    in_ns(&w.node, || {
        let mut s = std::net::TcpStream::connect(LISTEN).unwrap();
        std::io::Write::write_all(&mut s, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    eventually_within("in flight back to 0", Duration::from_secs(3), || {
        metrics(w).lines().any(|l| l == "knit_ingress_in_flight 0")
    });

    // The access log: a line per request, with what was sent.
    let mut lines: Vec<serde_json::Value> = vec![];
    eventually_within("11 access log lines", Duration::from_secs(3), || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        lines.len() == 11
    });
    let api: Vec<&serde_json::Value> = lines.iter().filter(|v| v["route"] == "api").collect();
    assert_eq!(api.len(), 5);
    for v in &api {
        assert_eq!(v["status"], 200, "{v}");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["uri"], "/api?k=v");
        assert_eq!(v["host"], "shop.example");
        assert_eq!(v["proto"], "HTTP/1.0");
        assert_eq!(v["remote"], "127.0.0.1");
        assert_eq!(v["endpoint"], format!("{ip}:8080"));
        assert_eq!(v["user_agent"], "knit-test/1");
        assert_eq!(v["bytes"], api_bytes as u64);
        assert_eq!(v["complete"], true);
        let t = v["time"].as_str().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z'), "{t}");
    }
    let find = |route: serde_json::Value| {
        lines
            .iter()
            .find(|v| v["route"] == route)
            .unwrap_or_else(|| panic!("no line for {route}"))
            .clone()
    };
    let tea = find("tea".into());
    assert_eq!(
        (tea["status"].as_u64(), tea["bytes"].as_u64()),
        (Some(418), Some(3))
    );
    assert!(tea["endpoint"].is_null());
    assert_eq!(find("gone".into())["status"], 502);
    let unrouted: Vec<u64> = lines
        .iter()
        .filter(|v| v["route"].is_null())
        .filter_map(|v| v["status"].as_u64())
        .collect();
    assert_eq!(unrouted.len(), 2, "{lines:?}");
    assert!(unrouted.contains(&404), "{unrouted:?}");
    let slow: Vec<&serde_json::Value> = lines.iter().filter(|v| v["route"] == "slow").collect();
    assert_eq!(slow.len(), 1);
    assert!(
        slow[0]["duration_ms"].as_f64().unwrap() >= 1000.0 && slow[0]["complete"] == true,
        "{slow:?}"
    );
    // The client that went away before the answer: 499, as nginx logs it (no route: the
    // request ended while it waited).
    let gone: Vec<&serde_json::Value> = lines.iter().filter(|v| v["status"] == 499).collect();
    assert_eq!(gone.len(), 1, "{lines:?}");
    assert_eq!(gone[0]["uri"], "/slow");
    assert_eq!(gone[0]["complete"], false);
    let _ = std::fs::remove_file(&log);
}
