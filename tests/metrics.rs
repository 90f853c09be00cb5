//! The daemon's Prometheus endpoint: the data plane (networks, attachments, published
//! ports, services, policy drops), build info, only `GET /metrics`, and a bind failure
//! that stops the daemon instead of leaving it without metrics.

mod common;
use common::dns_client::*;
use common::*;
use std::process::Stdio;

fn metric(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} missing: {text}"))
}

#[test]
fn data_plane_metrics_and_only_get_metrics() {
    let mut w = World::new();
    w.ok(&["network", "create", "m", "--subnet", "10.49.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "m", &a, "-p", "8080:80"]);
    w.ok(&["attach", "m", &b]);
    w.ok(&[
        "service",
        "create",
        "web",
        "--vip",
        "10.96.0.49:80",
        "--backend",
        &format!("{a}:80"),
    ]);
    w.ok(&["policy", "default", "m", "deny"]);
    let _d = start_daemon(&w, "/dev/null", Some("127.0.0.1:9154"));
    let get = |path: &str| {
        let mut last = Err(String::new());
        for _ in 0..50 {
            last = http_get(&w.node, "127.0.0.1:9154", path);
            if last.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        last.unwrap()
    };
    let before = get("/metrics");
    assert!(before.starts_with("HTTP/1.0 200 OK"), "{before}");
    assert_eq!(
        metric(&before, "knit_networks{driver=\"bridge\",origin=\"cli\"}"),
        1
    );
    assert_eq!(metric(&before, "knit_attachments{network=\"m\"}"), 2);
    assert_eq!(metric(&before, "knit_published_ports{network=\"m\"}"), 1);
    assert_eq!(metric(&before, "knit_services"), 1);
    assert_eq!(metric(&before, "knit_service_backends{service=\"web\"}"), 1);
    assert!(before.contains("knit_build_info{version=\""), "{before}");
    // Commands run before the scrape, counted by the daemon from their log.
    assert_eq!(
        metric(&before, "knit_command_seconds_count{command=\"attach\"}"),
        2
    );
    assert_eq!(
        metric(
            &before,
            "knit_command_seconds_count{command=\"network create\"}"
        ),
        1
    );
    assert!(
        before.contains("knit_dns_forward_seconds_bucket{le=\"0.0025\"}"),
        "{before}"
    );
    // A connection the default deny drops moves the counter.
    let key = "knit_policy_dropped_packets_total{network=\"m\",direction=\"ingress\"}";
    let ip_a = w.ip_of("m", &a, 4);
    let _srv = tcp_server(&a, "0.0.0.0:80", "a");
    assert!(tcp_get(&b, &format!("{ip_a}:80")).is_err());
    w.ok(&["detach", "m", &b]);
    let after = get("/metrics");
    assert!(metric(&after, key) > metric(&before, key), "{after}");
    assert_eq!(
        metric(&after, "knit_command_seconds_count{command=\"attach\"}"),
        2
    );
    assert_eq!(
        metric(&after, "knit_command_seconds_count{command=\"detach\"}"),
        1
    );

    let other = get("/");
    assert!(other.starts_with("HTTP/1.0 404"), "{other}");
    let post = in_ns(&w.node.clone(), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9154").unwrap();
        s.write_all(b"POST /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert!(post.starts_with("HTTP/1.0 405"), "{post}");
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_daemon() {
    let w = World::new();
    // Port taken in the node namespace.
    let _holder = tcp_server(&w.node, "127.0.0.1:9155", "holder");
    let out = w
        .cmd(&[
            "daemon",
            "--resolv-conf",
            "/dev/null",
            "--metrics",
            "127.0.0.1:9155",
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics") && err.contains("127.0.0.1:9155"),
        "{err}"
    );
}

/// The daemon logs through `tracing`: JSON lines with `--log-format json`, levels from
/// RUST_LOG.
#[test]
fn daemon_logs_json_lines_and_honours_rust_log() {
    let w = World::new();
    let run = |fmt: &str, level: &str| -> String {
        let mut child = w
            .cmd(&["--log-format", fmt, "daemon", "--resolv-conf", "/dev/null"])
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let json = run("json", "info");
    let line = json
        .lines()
        .find(|l| l.contains("serving DNS"))
        .unwrap_or_else(|| panic!("{json}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert!(v["timestamp"].is_string());
    assert!(
        run("text", "warn")
            .lines()
            .all(|l| !l.contains("serving DNS"))
    );
}
