//! The filters beyond headers and paths, each with real requests: rate limits (per route,
//! per client, per header), basicAuth with each hash form, compress (gzip, deflate),
//! corsOrigin, auditLog, tee, latency and bandwidth.

use super::common::*;
use super::lab;
use super::support::*;
use std::io::Read;
use std::time::{Duration, Instant};

/// A raw HTTP/1.0 exchange from the node namespace: (head, body bytes).
fn exchange(w: &World, req: String) -> (String, Vec<u8>) {
    let out = in_ns(&w.node, move || raw_bytes(LISTEN, req.as_bytes())).expect("exchange");
    let at = out
        .windows(4)
        .position(|x| x == b"\r\n\r\n")
        .expect("a head");
    (
        String::from_utf8_lossy(&out[..at]).to_ascii_lowercase(),
        out[at + 4..].to_vec(),
    )
}

fn status(w: &World, path: &'static str, headers: &[(&str, &str)]) -> u16 {
    get(w, path, headers).status
}

#[test]
fn rate_limits_auth_cors_and_timing_filters() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let dir = std::env::temp_dir().join(format!("{}-htpasswd", w.prefix));
    let bc = bcrypt::hash("pw-bc", 4).unwrap();
    // sha: "secret" ({SHA}); md5: "secret" (openssl passwd -apr1 -salt abcdefgh secret).
    std::fs::write(
        &dir,
        format!(
            "sha:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\nmd5:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\nbc:{bc}\n"
        ),
    )
    .unwrap();
    let routes = format!(
        r#"
rl: Path("/rl") -> ratelimit(3, "2s") -> inlineContent("ok") -> <shunt>;
crl: Path("/crl") -> clientRatelimit(2, "1m") -> inlineContent("ok") -> <shunt>;
crlh: Path("/crlh") -> clientRatelimit(1, "1m", "Authorization") -> inlineContent("ok") -> <shunt>;
auth: Path("/auth") -> basicAuth("{}", "knit zone") -> "http://{ip}:8080";
cors: Path("/cors") -> corsOrigin("https://a.example", "https://b.example") -> inlineContent("x") -> <shunt>;
corsall: Path("/corsall") -> corsOrigin() -> inlineContent("x") -> <shunt>;
lat: Path("/lat") -> latency("300ms") -> inlineContent("x") -> <shunt>;
latn: Path("/latn") -> latency(200) -> inlineContent("x") -> <shunt>;
bw: Path("/bw") -> bandwidth(10) -> inlineContent("{}") -> <shunt>;
"#,
        dir.display(),
        "z".repeat(10 * 1024)
    );
    let _g = ingress(w, &routes);

    // ratelimit: 3 per 2 s for everyone, then 429 with Retry-After; allowed again after.
    for _ in 0..3 {
        assert_eq!(status(w, "/rl", &[]), 200);
    }
    let r = get(w, "/rl", &[("X-Forwarded-For", "10.9.9.9")]);
    assert_eq!(r.status, 429, "{r:?}");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(status(w, "/rl", &[]), 200);

    // clientRatelimit: per X-Forwarded-For client ...
    let a = [("X-Forwarded-For", "10.1.1.1")];
    let b = [("X-Forwarded-For", "10.2.2.2")];
    assert_eq!(status(w, "/crl", &a), 200);
    assert_eq!(status(w, "/crl", &a), 200);
    assert_eq!(status(w, "/crl", &a), 429);
    assert_eq!(status(w, "/crl", &b), 200);
    // ... or per header value.
    assert_eq!(status(w, "/crlh", &[("Authorization", "Bearer one")]), 200);
    assert_eq!(status(w, "/crlh", &[("Authorization", "Bearer one")]), 429);
    assert_eq!(status(w, "/crlh", &[("Authorization", "Bearer two")]), 200);

    // basicAuth: 401 with the realm unless a user of the file with its password.
    let r = get(w, "/auth", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"knit zone\"")
    );
    use base64::Engine;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    for (u, p) in [("sha", "secret"), ("md5", "secret"), ("bc", "pw-bc")] {
        let h = basic(u, p);
        let r = get(w, "/auth", &[("Authorization", h.as_str())]);
        assert_eq!((r.status, r.who()), (200, "b0"), "{u}: {r:?}");
        let h = basic(u, "wrong");
        assert_eq!(status(w, "/auth", &[("Authorization", h.as_str())]), 401);
    }

    // corsOrigin: a listed Origin is echoed, another gets nothing; no list: "*".
    let r = get(w, "/cors", &[("Origin", "https://b.example")]);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    let r = get(w, "/cors", &[("Origin", "https://evil.example")]);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = get(w, "/corsall", &[("Origin", "https://any.example")]);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // latency: held back; bandwidth: 10 KiB at 10 KiB/s takes about a second.
    for (path, least) in [("/lat", 300), ("/latn", 200)] {
        let started = Instant::now();
        assert_eq!(status(w, path, &[]), 200);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(least) && took < Duration::from_millis(least + 1500),
            "{path}: {took:?}"
        );
    }
    let started = Instant::now();
    let r = get(w, "/bw", &[]);
    let took = started.elapsed();
    assert_eq!(r.body.len(), 10 * 1024);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let _ = std::fs::remove_file(&dir);
}

#[test]
fn compress_audit_log_and_tee() {
    let (l, servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let b0ns = l.ns("b0").to_string();
    let shadow = backend(&b0ns, "0.0.0.0:8081", "shadow");
    let routes = format!(
        r#"
gz: Path("/gz") -> compress() -> "http://{ip}:8080";
json: Path("/json") -> compress(9, "application/json") -> "http://{ip}:8080";
audit: Path("/audit") -> auditLog(5) -> "http://{ip}:8080";
tee: Path("/tee") -> tee("http://{ip}:8081") -> "http://{ip}:8080";
teedead: Path("/teedead") -> tee("http://{ip}:9") -> "http://{ip}:8080";
teepath: Path("/teepath") -> tee("http://{ip}:8081", "^/teepath", "/copied") -> "http://{ip}:8080";
"#
    );
    let g = ingress(w, &routes);

    // gzip, deflate, or nothing, by Accept-Encoding.
    let req = |path: &str, ae: &str| {
        format!("GET {path} HTTP/1.0\r\nHost: a\r\nAccept-Encoding: {ae}\r\n\r\n")
    };
    let (head, body) = exchange(w, req("/gz", "gzip, deflate"));
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.starts_with("b0\nGET /gz HTTP/1.1"), "{text}");
    let (head, body) = exchange(w, req("/gz", "deflate"));
    assert!(head.contains("content-encoding: deflate"), "{head}");
    let mut text = String::new();
    flate2::read::ZlibDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.starts_with("b0\nGET /gz"), "{text}");
    let (head, body) = exchange(w, req("/gz", "br"));
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(body.starts_with(b"b0\n"));
    // text/plain is not in this route's list.
    let (head, _) = exchange(w, req("/json", "gzip"));
    assert!(!head.contains("content-encoding"), "{head}");

    // auditLog: a JSON line with the route, the request and the body's first 5 bytes.
    let (head, _) = exchange(
        w,
        "POST /audit?x=1 HTTP/1.0\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world".into(),
    );
    assert!(head.starts_with("http/1.0 200"), "{head}");
    let log = g.routes.with_extension("log");
    eventually_within("audit line", Duration::from_secs(3), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| {
                v["audit"] == "audit"
                    && v["method"] == "POST"
                    && v["path"] == "/audit"
                    && v["query"] == "x=1"
                    && v["status"] == 200
                    && v["requestBody"] == "hello"
            })
    });
    assert!(
        servers[0]
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.ends_with("\nhello world")),
        "the backend got the whole body"
    );

    // tee: the copy (with its body) reaches the shadow; the client sees the real backend.
    let (head, body) = exchange(
        w,
        "POST /tee HTTP/1.0\r\nHost: a\r\nContent-Length: 4\r\n\r\nping".into(),
    );
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(body.starts_with(b"b0\n"));
    eventually_within("the shadow copy", Duration::from_secs(3), || {
        shadow
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r == "POST /tee HTTP/1.1\nping")
    });
    // The copy's path rewritten (Skipper's three-argument form); the original's is not.
    let r = get(w, "/teepath?q=1", &[]);
    assert!(r.body.starts_with("b0\nGET /teepath?q=1 "), "{r:?}");
    eventually_within("the rewritten copy", Duration::from_secs(3), || {
        shadow
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r == "GET /copied?q=1 HTTP/1.1\n")
    });
    // A dead shadow does not hurt the request.
    let r = get(w, "/teedead", &[]);
    assert_eq!((r.status, r.who()), (200, "b0"));
}
