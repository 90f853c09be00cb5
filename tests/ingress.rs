//! `knit ingress` with real traffic: the proxy runs in the node namespace, backends are
//! HTTP servers in knit sandboxes (reached by address, `knit://sandbox/` and
//! `knit://service/`), clients send real requests. Routing, every filter, the LB
//! algorithms over 1,000 requests, hot reload (also under load), refused files, and
//! graceful shutdown; plus `knit ingress check`. Everything is removed on failure too:
//! the ingress process is killed by its guard, the namespaces by the World.

mod common;
#[path = "ingress/filters.rs"]
mod filters;
#[path = "ingress/mtls.rs"]
mod mtls;
#[path = "ingress/observe.rs"]
mod observe;
#[path = "ingress/protocols.rs"]
mod protocols;
#[path = "ingress/robust.rs"]
mod robust;
#[path = "ingress/stored.rs"]
mod stored;
#[path = "ingress/support.rs"]
mod support;
#[path = "ingress/tls.rs"]
mod tls;
#[path = "ingress/ws_h2.rs"]
mod ws_h2;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

fn knit(args: &[&str]) -> std::process::Output {
    std::process::Command::new(KNIT)
        .args(args)
        .output()
        .expect("run knit")
}

#[test]
fn check_prints_ids_and_reports_errors_and_unsupported_names() {
    let dir = std::env::temp_dir().join(format!("knit-ingress-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let good = file(
        "good.eskip",
        "// shop\nhome: Path(\"/\") -> \"http://10.0.0.1:80\";\napi: PathSubtree(\"/api\") && Method(\"GET\") -> setPath(\"/\") -> <roundRobin, \"http://a:1\", \"http://b:2\">;\n",
    );
    let o = knit(&["ingress", "check", &good]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "home\napi\n");
    let o = knit(&["--json", "ingress", "check", &good]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["routes"][1]["id"], "api");
    assert_eq!(v["routes"][1]["predicates"][1]["name"], "Method");
    assert_eq!(v["routes"][1]["predicates"][1]["args"][0]["value"], "GET");
    assert_eq!(v["routes"][1]["backend"]["type"], "lb");
    assert_eq!(v["routes"][1]["backend"]["algorithm"], "roundRobin");
    assert_eq!(v["routes"][0]["backend"]["url"], "http://10.0.0.1:80");

    let bad = file(
        "bad.eskip",
        "a: Path(\"/\") -> <shunt>;\nb: Path(\"/\") \"http://x\";\n",
    );
    let o = knit(&["ingress", "check", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!("{bad}:2:14: expected '->' (then filters or the backend), found a string")
    );
    let badarg = file(
        "badarg.eskip",
        "a: Path(\"/\") -> status(1000) -> <shunt>;\n",
    );
    let o = knit(&["ingress", "check", &badarg]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with(&format!("{badarg}:1:17: status:")));

    let unsupported = file(
        "unsupported.eskip",
        "a: Path(\"/\") && JWTPayloadAnyKV(\"k\", \"v\") -> oauthTokeninfoAnyScope(\"read\") -> \"http://x:1\";\nb: * -> <dynamic>;\n",
    );
    let o = knit(&["ingress", "check", &unsupported]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "a\nb\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(":1:17: route a: predicate JWTPayloadAnyKV is not implemented"),
        "{err}"
    );
    assert!(
        err.contains(":1:46: route a: filter oauthTokeninfoAnyScope is not implemented"),
        "{err}"
    );
    assert!(
        err.contains(":2:1: route b: backend <dynamic> is not implemented"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A lab with network n and sandboxes b0, b1 serving HTTP on 8080. The node has an
/// uplink and a default route, as a real node does: a VIP is reached by routing it out
/// before the output hook's DNAT turns it into a backend.
fn lab() -> (Lab, Vec<Backend>, String, String) {
    let mut l = Lab::new(World::new().with_outside(), &["10.61.0.0/24"]);
    let mut servers = vec![];
    for b in ["b0", "b1"] {
        let ns = l.attach(b, &[]);
        servers.push(backend(&ns, "0.0.0.0:8080", b));
    }
    let (b0, b1) = (l.ns("b0").to_string(), l.ns("b1").to_string());
    (l, servers, b0, b1)
}

#[test]
fn routes_requests_through_filters_to_sandboxes_and_services() {
    let (l, servers, b0, b1) = lab();
    let w = &l.w;
    let b1_ip = w.ip_of("n", &b1, 4);
    w.ok(&[
        "service",
        "create",
        "web",
        "--vip",
        "10.96.0.10:80",
        "--backend",
        &format!("{b1}:8080"),
    ]);
    let routes = format!(
        r#"
api: Path("/api/:id")
  -> setRequestHeader("X-Route", "api") -> appendRequestHeader("X-Multi", "two")
  -> dropRequestHeader("X-Secret") -> modPath(/^\/api/, "/v1")
  -> setResponseHeader("X-Served-By", "knit") -> appendResponseHeader("X-Extra", "1")
  -> dropResponseHeader("X-Backend-Only")
  -> "knit://sandbox/{b0}:8080";
b1: PathSubtree("/b1") -> setPath("/fixed") -> stripQuery("true") -> "http://{b1_ip}:8080";
plainq: Path("/q") -> stripQuery() -> "http://{b1_ip}:8080";
svc: Path("/svc") -> "knit://service/web";
tea: Path("/tea") -> status(418) -> inlineContent("short and stout") -> <shunt>;
moved: PathSubtree("/old") -> redirectTo(308, "https://example.org") -> <shunt>;
nothing: Path("/shunt") -> <shunt>;
special: Host(/^special\.example$/) -> inlineContent("special host") -> <shunt>;
loop: Path("/loop") -> setPath("/tea") -> <loopback>;
gone: Path("/gone") -> "http://{b1_ip}:9";
"#
    );
    let _ing = ingress(w, &routes);

    let r = get(w, "/api/7?x=1", &[("X-Multi", "one"), ("X-Secret", "s")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.who(), "b0");
    assert!(r.body.contains("GET /v1/7?x=1 HTTP/1.1"), "{}", r.body);
    assert!(r.body.contains("x-route: api"), "{}", r.body);
    assert!(
        r.body.contains("x-multi: one") && r.body.contains("x-multi: two"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("x-secret"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-for: 127.0.0.1"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-proto: http"), "{}", r.body);
    assert!(
        r.body.contains("x-forwarded-host: shop.example"),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-served-by"), Some("knit"));
    assert_eq!(r.header("x-extra"), Some("1"));
    assert_eq!(r.header("x-backend-only"), None);

    // X-Forwarded-For grows by the peer.
    let r = get(w, "/api/1", &[("X-Forwarded-For", "203.0.113.9")]);
    assert!(
        r.body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"),
        "{}",
        r.body
    );

    let r = get(w, "/b1/deep/path?a=1&b=two", &[]);
    assert_eq!(r.who(), "b1");
    assert!(r.body.contains("GET /fixed HTTP/1.1"), "{}", r.body);
    assert!(
        r.body.contains("x-query-param-a: 1") && r.body.contains("x-query-param-b: two"),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-backend-only"), Some("yes"));
    let r = get(w, "/q?drop=me", &[]);
    assert!(
        r.body.contains("GET /q HTTP/1.1") && !r.body.contains("x-query-param"),
        "{}",
        r.body
    );

    // Through the service's VIP (the node's nftables DNAT it to b1).
    let r = get(w, "/svc", &[]);
    assert_eq!((r.status, r.who()), (200, "b1"), "{r:?}");

    let r = get(w, "/tea", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = get(w, "/loop", &[]);
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout"));
    let r = get(w, "/old/page?z=9", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://example.org/old/page?z=9")
    );
    assert_eq!(get(w, "/shunt", &[]).status, 404);
    assert_eq!(get(w, "/no/route/here", &[]).status, 404);
    let r = get(w, "/", &[("Host", "special.example")]);
    assert_eq!((r.status, r.body.as_str()), (200, "special host"));
    // A backend nobody listens on: 502, and the ingress goes on.
    assert_eq!(get(w, "/gone", &[]).status, 502);
    assert_eq!(get(w, "/tea", &[]).status, 418);

    // Keep-alive to the backends: many requests, few connections.
    let before = servers[0].connections.load(Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(get(w, "/api/1", &[]).status, 200);
    }
    let used = servers[0].connections.load(Ordering::SeqCst) - before;
    assert!(used <= 2, "{used} backend connections for 50 requests");

    // Metrics count per route and status class.
    let m = in_ns(&w.node, || {
        let mut s = TcpStream::connect("127.0.0.1:9911").unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert!(
        m.contains("knit_ingress_requests_total{route=\"tea\",class=\"4xx\"} 3"),
        "{m}"
    );
    let errors = format!("knit_ingress_backend_errors_total{{endpoint=\"{b1_ip}:9\"}} 1");
    assert!(m.contains(&errors), "{m}");

    // knit://sandbox/ follows the store without a reload: detached, the route has no
    // endpoint; attached again, it is back.
    w.ok(&["detach", "n", &b0]);
    // Until the ingress re-reads the store, a request may still go to the address b0 no
    // longer has (and wait for its connect timeout): poll without failing on errors.
    let try_get = |path: &'static str| in_ns(&w.node, move || request(LISTEN, "GET", path, &[]));
    eventually_within("detach seen", Duration::from_secs(15), || {
        try_get("/api/1").is_ok_and(|r| r.status == 503)
    });
    w.ok(&["attach", "n", &b0]);
    eventually_within("attach seen", Duration::from_secs(15), || {
        try_get("/api/1").is_ok_and(|r| r.status == 200 && r.who() == "b0")
    });
}

/// Replaces the routes file as deploy tools do (write aside, rename over).
fn replace_routes(g: &Ingress, text: &str) {
    let tmp = g.routes.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &g.routes).unwrap();
}

fn wait_version(w: &World, v: &str) {
    eventually_within(
        &format!("routes version {v}"),
        Duration::from_secs(5),
        || get(w, "/version", &[]).body == v,
    );
}

fn lb_routes(version: &str, ip: &str, ports: &[u16]) -> String {
    let eps: Vec<String> = ports
        .iter()
        .map(|p| format!("\"http://{ip}:{p}\""))
        .collect();
    let eps = eps.join(", ");
    format!(
        r#"version: Path("/version") -> inlineContent("{version}") -> <shunt>;
rr: Path("/rr") -> <roundRobin, {eps}>;
rnd: Path("/random") -> <random, {eps}>;
ch: Path("/ch") -> <consistentHash, {eps}>;
p2: Path("/p2") -> <powerOfRandomNChoices, {eps}>;
lr: Path("/lr") -> <leastRequests, {eps}>;
"#
    )
}

fn client_key(i: usize) -> Vec<(String, String)> {
    vec![(
        "X-Forwarded-For".into(),
        format!("10.1.{}.{}", i / 250, i % 250),
    )]
}

#[test]
fn load_balancing_over_a_thousand_requests() {
    let mut l = Lab::new(World::new(), &["10.62.0.0/24"]);
    let ns = l.attach("b0", &[]);
    let ports = [8080u16, 8081, 8082, 8083, 8084];
    let _servers: Vec<Backend> = ports
        .iter()
        .map(|p| backend(&ns, &format!("0.0.0.0:{p}"), &format!("p{p}")))
        .collect();
    let w = &l.w;
    let ip = w.ip_of("n", &ns, 4);
    let g = ingress(w, &lb_routes("1", &ip, &ports));

    let rr = counts(&tally(w, "/rr", 1000, |_| vec![]));
    assert_eq!(
        rr.values().copied().collect::<Vec<_>>(),
        vec![200; 5],
        "{rr:?}"
    );
    let lr = counts(&tally(w, "/lr", 1000, |_| vec![]));
    assert_eq!(
        lr.values().copied().collect::<Vec<_>>(),
        vec![200; 5],
        "{lr:?}"
    );
    for path in ["/random", "/p2"] {
        let c = counts(&tally(w, path, 1000, |_| vec![]));
        assert_eq!(c.len(), 5, "{path}: {c:?}");
        assert!(
            c.values().all(|&n| (120..=280).contains(&n)),
            "{path}: {c:?}"
        );
    }

    // consistentHash: sticky per client, spread over all, and when one endpoint of five
    // goes, only its clients move.
    let first = tally(w, "/ch", 1000, client_key);
    let again = tally(w, "/ch", 1000, client_key);
    assert_eq!(first, again, "a client always reaches the same endpoint");
    let c = counts(&first);
    assert_eq!(c.len(), 5, "{c:?}");
    assert!(c.values().all(|&n| (100..=320).contains(&n)), "{c:?}");
    replace_routes(&g, &lb_routes("2", &ip, &[8080, 8081, 8083, 8084]));
    wait_version(w, "2");
    let after = tally(w, "/ch", 1000, client_key);
    let mut moved = 0;
    for (before, now) in first.iter().zip(&after) {
        assert_ne!(now, "p8082");
        if before == "p8082" {
            moved += 1;
        } else {
            assert_eq!(before, now, "a client of a surviving endpoint moved");
        }
    }
    assert_eq!(moved, c["p8082"]);
}

/// A counter's value in the metrics text (0 when absent).
fn counter(m: &str, line_start: &str) -> f64 {
    m.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn weighted_round_robin_follows_each_endpoints_recent_success() {
    let mut l = Lab::new(World::new(), &["10.63.0.0/24"]);
    let ns = l.attach("b0", &[]);
    let _servers: Vec<Backend> = [8080u16, 8081]
        .iter()
        .map(|p| backend(&ns, &format!("0.0.0.0:{p}"), &format!("p{p}")))
        .collect();
    let w = &l.w;
    let ip = w.ip_of("n", &ns, 4);
    // Port 9: nothing listens (connects are refused). No ejection: only the weights keep
    // requests off it.
    let routes = format!(
        r#"wrr: Path("/wrr") -> <weightedRoundRobin, "http://{ip}:8080", "http://{ip}:8081">;
wdead: Path("/wdead") -> <weightedRoundRobin, "http://{ip}:8080", "http://{ip}:9">;
rdead: Path("/rdead") -> <roundRobin, "http://{ip}:8081", "http://{ip}:9">;
"#
    );
    let _g = ingress_with(w, &routes, &["--eject-after", "0"]);
    // Equal weights: as round robin.
    let even = counts(&tally(w, "/wrr", 1000, |_| vec![]));
    assert_eq!(
        even.values().copied().collect::<Vec<_>>(),
        vec![500; 2],
        "{even:?}"
    );
    // A failing endpoint's weight falls to its floor: it is hardly tried again (GETs that
    // hit it go on to the other endpoint, so clients see 200s either way) ...
    let errors = format!("knit_ingress_backend_errors_total{{endpoint=\"{ip}:9\"}} ");
    let c = counts(&tally(w, "/wdead", 200, |_| vec![]));
    assert_eq!(c.get("p8080"), Some(&200), "{c:?}");
    // (Its floor weight, 0.05 against 1, still sends it about one request in twenty.)
    let weighted = counter(&metrics(w), &errors);
    assert!(
        (1.0..=25.0).contains(&weighted),
        "{weighted} tries on the dead endpoint"
    );
    // ... where round robin keeps sending it every other request.
    let c = counts(&tally(w, "/rdead", 200, |_| vec![]));
    assert_eq!(c.get("p8081"), Some(&200), "{c:?}");
    let plain = counter(&metrics(w), &errors) - weighted;
    assert!(
        (90.0..=110.0).contains(&plain),
        "{plain} tries by round robin"
    );
}

#[test]
fn reloads_under_load_without_a_failed_request_and_refuses_bad_files() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let text = |v: &str| {
        format!(
            "version: Path(\"/version\") -> inlineContent(\"{v}\") -> <shunt>;\nb: Path(\"/b\") -> \"http://{ip}:8080\";\n"
        )
    };
    let g = ingress(w, &text("1"));
    wait_version(w, "1");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, node) = (stop.clone(), ok.clone(), failed.clone(), w.node.clone());
        std::thread::spawn(move || {
            in_ns(&node, move || {
                while !stop.load(Ordering::SeqCst) {
                    match request(LISTEN, "GET", "/b", &[]) {
                        Ok(r) if r.status == 200 && r.who() == "b0" => {
                            ok.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
    };
    for v in 2..=6 {
        replace_routes(&g, &text(&v.to_string()));
        wait_version(w, &v.to_string());
    }
    // A file that does not parse, one with a bad argument, one with an unknown filter,
    // and an unreadable path: each refused whole, the last good table stays.
    for bad in [
        "version: Path(\"/version\" -> <shunt>;".to_string(),
        format!(
            "version: Path(\"/version\") -> status(42) -> <shunt>;\n{}",
            text("x")
        ),
        "version: Path(\"/version\") -> fancyFilter() -> inlineContent(\"7\") -> <shunt>;"
            .to_string(),
    ] {
        replace_routes(&g, &bad);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(get(w, "/version", &[]).body, "6");
    }
    std::fs::remove_file(&g.routes).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(w, "/version", &[]).body, "6");
    replace_routes(&g, &text("8"));
    wait_version(w, "8");
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(ok > 50, "only {ok} requests under load");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during reloads",
        ok + failed
    );
}

#[test]
fn serves_with_as_many_threads_as_asked() {
    let w = World::new();
    // One more than the cores: not what the default would give.
    let want = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    let threads = want.to_string();
    let g = ingress_with(
        &w,
        "ok: * -> inlineContent(\"ok\") -> <shunt>;",
        &["--threads", &threads],
    );
    let serving = || {
        std::fs::read_dir(format!("/proc/{}/task", g.child.id()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("knit-serve-"))
            .count()
    };
    // (The threads start right after the listener is bound and announced.)
    eventually_within("the serving threads", Duration::from_secs(3), || {
        serving() >= want
    });
    assert_eq!(serving(), want);
    assert_eq!(get(&w, "/", &[]).body, "ok");
    let o = w
        .cmd(&["ingress", "serve", "--listen", LISTEN, "--threads", "5000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--threads") && err.contains("5000"), "{err}");
}

#[test]
fn refuses_a_bad_routes_file_at_start() {
    let w = World::new();
    let routes = routes_file(
        &w,
        "a: Path(\"/\") -> <shunt>;\nb: Path(\"/\") -> <shant>;\n",
    );
    let o = w
        .cmd(&["ingress", "serve", "--listen", LISTEN, "--routes"])
        .arg(&routes)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&routes);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:18: unknown backend <shant>",
            routes.display()
        )),
        "{err}"
    );
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let mut g = ingress(w, &format!("slow: * -> \"http://{ip}:8080\";"));
    let node = w.node.clone();
    let slow = std::thread::spawn(move || in_ns(&node, || request(LISTEN, "GET", "/slow", &[])));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    // SAFETY: kill(2) on the child we spawned (its pid is ours to signal).
    assert_eq!(unsafe { libc::kill(g.child.id() as i32, libc::SIGTERM) }, 0);
    let r = slow
        .join()
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!((r.status, r.who()), (200, "b0"));
    let status = loop {
        if let Some(s) = g.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ingress still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let refused = in_ns(&w.node, || request(LISTEN, "GET", "/", &[]));
    assert!(refused.is_err(), "{refused:?}");
}

/// `knit daemon --ingress "..."`: the ingress as a service of the node daemon (beside its
/// DNS); a routes file that does not load stops the daemon at start.
#[test]
fn the_daemon_serves_the_ingress_too() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let routes = routes_file(w, &format!("all: * -> \"http://{ip}:8080\";"));
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let args = format!("--listen {LISTEN} --routes {}", routes.display());
    let mut d = w
        .cmd(&["daemon", "--resolv-conf"])
        .arg(&resolv)
        .args(["--ingress", &args])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut answer = None;
    for _ in 0..100 {
        let node = w.node.clone();
        if let Ok(r) = in_ns(&node, || request(LISTEN, "GET", "/", &[])) {
            answer = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = d.kill();
    let _ = d.wait();
    let r = answer.expect("the daemon's ingress answers");
    assert_eq!((r.status, r.who()), (200, "b0"));

    std::fs::write(&routes, "a: * -> <shant>;\n").unwrap();
    let o = w
        .cmd(&["daemon", "--resolv-conf"])
        .arg(&resolv)
        .args(["--ingress", &args])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&routes);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--ingress") && err.contains("<shant>"),
        "{err}"
    );
}
