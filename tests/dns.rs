//! Container DNS from `knit daemon`: real queries from sandboxes, an upstream server in the
//! outside namespace, scoping, timing, restart, and clients that misbehave.

mod common;
use common::dns_client::*;
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Waits until the daemon answers on `gw` (it binds shortly after start).
fn wait_ready(ns: &str, gw: &str) {
    eventually("daemon answering", || {
        ask(ns, gw, "knit-ready-probe.", RecordType::A).is_ok()
    });
}

#[test]
fn names_aliases_ptr_aaaa_scoping_and_forwarding() {
    let mut w = World::new().with_outside();
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {OUTSIDE4}\n")).unwrap();
    let up = Upstream::start(w.outside(), dns_upstream::EXAMPLE);
    w.ok(&[
        "network",
        "create",
        "front",
        "--subnet",
        "10.81.0.0/24",
        "--subnet",
        "fd81::/64",
        "--dns-domain",
        "front.knit",
    ]);
    w.ok(&[
        "network",
        "create",
        "back",
        "--subnet",
        "10.82.0.0/24",
        "--internal",
    ]);
    let web = w.sandbox("web");
    let api = w.sandbox("api");
    let db = w.sandbox("db");
    w.ok(&["attach", "front", &web, "--alias", "www"]);
    w.ok(&["attach", "front", &api]);
    w.ok(&["attach", "back", &api]);
    let out = w.ok(&["attach", "back", &db, "--alias", "pg"]);
    assert!(
        out.contains("dns: unavailable"),
        "attach works without a daemon and says so: {out}"
    );
    let _d = start_daemon(&w, resolv.to_str().unwrap(), None);
    wait_ready(&web, "10.81.0.1");
    let web4 = w.ip_of("front", &web, 4);
    let web6 = w.ip_of("front", &web, 6);
    // By name, by alias, with the network domain, AAAA, PTR.
    assert_eq!(
        addrs(&ask(&api, "10.81.0.1", &format!("{web}."), RecordType::A).unwrap()),
        vec![web4.clone()]
    );
    assert_eq!(
        addrs(&ask(&api, "10.81.0.1", "www.", RecordType::A).unwrap()),
        vec![web4.clone()]
    );
    assert_eq!(
        addrs(&ask(&api, "10.81.0.1", "www.front.knit.", RecordType::A).unwrap()),
        vec![web4.clone()]
    );
    assert_eq!(
        addrs(&ask(&api, "10.81.0.1", "www.", RecordType::AAAA).unwrap()),
        vec![web6.clone()]
    );
    let rev = format!(
        "{}.in-addr.arpa.",
        web4.split('.').rev().collect::<Vec<_>>().join(".")
    );
    assert_eq!(
        addrs(&ask(&api, "10.81.0.1", &rev, RecordType::PTR).unwrap()),
        vec![format!("{web}.front.knit.")]
    );
    // Scoping: api (on both networks) sees db; web does not, even asking by alias.
    assert_eq!(
        addrs(&ask(&api, "10.81.0.1", "pg.", RecordType::A).unwrap()),
        vec![w.ip_of("back", &db, 4)]
    );
    let hidden = ask(&web, "10.81.0.1", "pg.", RecordType::A).unwrap();
    assert_eq!(hidden.response_code(), ResponseCode::NXDomain);
    // Forwarding to the upstream in the outside namespace; its NXDOMAIN passes through.
    assert_eq!(
        addrs(&ask(&web, "10.81.0.1", "example.com.", RecordType::A).unwrap()),
        vec!["203.0.113.7".to_string()]
    );
    assert_eq!(
        ask(&web, "10.81.0.1", "nothing.example.", RecordType::A)
            .unwrap()
            .response_code(),
        ResponseCode::NXDomain
    );
    // TCP works too.
    assert_eq!(
        addrs(&ask_tcp(&api, "10.81.0.1", "www.", RecordType::A).unwrap()),
        vec![web4]
    );
    // The internal network answers its names but never forwards.
    wait_ready(&db, "10.82.0.1");
    assert_eq!(
        addrs(&ask(&db, "10.82.0.1", &format!("{api}."), RecordType::A).unwrap()),
        vec![w.ip_of("back", &api, 4)]
    );
    assert_eq!(
        ask(&db, "10.82.0.1", "example.com.", RecordType::A)
            .unwrap()
            .response_code(),
        ResponseCode::Refused
    );
    // CLI sandboxes get a resolv.conf pointing at their gateways.
    let rc = w.ok(&["sandbox", "exec", &api, "--", "cat", "/etc/resolv.conf"]);
    assert!(
        rc.contains("nameserver 10.81.0.1")
            && rc.contains("nameserver 10.82.0.1")
            && rc.contains("search front.knit"),
        "{rc}"
    );
    w.ok(&["sandbox", "rm", &api]);
    assert!(!std::path::Path::new(&format!("/etc/netns/{api}")).exists());
    up.stop();
    let _ = std::fs::remove_file(&resolv);
    for s in [&web, &db] {
        w.ok(&["sandbox", "rm", s]);
    }
}

#[test]
fn changes_are_visible_fast_and_survive_restart() {
    let mut w = World::new();
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
    w.ok(&["network", "create", "fast", "--subnet", "10.83.0.0/24"]);
    let probe = w.sandbox("probe");
    w.ok(&["attach", "fast", &probe]);
    let d = start_daemon(&w, resolv.to_str().unwrap(), None);
    wait_ready(&probe, "10.83.0.1");
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let s = w.sandbox(&format!("n{i}"));
        let name = format!("{s}.");
        w.ok(&["attach", "fast", &s]);
        let t = Instant::now();
        while addrs(&ask(&probe, "10.83.0.1", &name, RecordType::A).unwrap()).is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "attach never became visible"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        worst = worst.max(t.elapsed());
        w.ok(&["detach", "fast", &s]);
        let t = Instant::now();
        while ask(&probe, "10.83.0.1", &name, RecordType::A)
            .unwrap()
            .response_code()
            != ResponseCode::ServFail
            && !addrs(&ask(&probe, "10.83.0.1", &name, RecordType::A).unwrap()).is_empty()
        {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "detach never became visible"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(100),
        "slowest change took {worst:?}"
    );
    // Restart: the same answers from the store.
    w.ok(&["attach", "fast", &format!("{}-n0", w.prefix)]);
    let n0 = format!("{}-n0.", w.prefix);
    eventually("n0 visible", || {
        !addrs(&ask(&probe, "10.83.0.1", &n0, RecordType::A).unwrap()).is_empty()
    });
    let before = addrs(&ask(&probe, "10.83.0.1", &n0, RecordType::A).unwrap());
    drop(d);
    let _d2 = start_daemon(&w, resolv.to_str().unwrap(), None);
    wait_ready(&probe, "10.83.0.1");
    assert_eq!(
        addrs(
            &ask(
                &probe,
                "10.83.0.1",
                &format!("{}-n0.", w.prefix),
                RecordType::A
            )
            .unwrap()
        ),
        before
    );
    let _ = std::fs::remove_file(&resolv);
    let rc = format!("/etc/netns/{probe}");
    assert!(std::path::Path::new(&rc).exists(), "knit wrote {rc}");
    w.ok(&["sandbox", "rm", &probe]);
    assert!(!std::path::Path::new(&rc).exists());
    for i in 0..5 {
        w.ok(&["sandbox", "rm", &format!("{}-n{i}", w.prefix)]);
    }
}

#[test]
fn upstream_down_gives_servfail_within_the_timeout() {
    let mut w = World::new().with_outside();
    let resolv = w.state.with_extension("resolv.conf");
    // Nothing listens on the outside host's port 53 (yet).
    std::fs::write(&resolv, format!("nameserver {OUTSIDE4}\n")).unwrap();
    w.ok(&["network", "create", "sf", "--subnet", "10.84.0.0/24"]);
    let a = w.sandbox("a");
    w.ok(&["attach", "sf", &a]);
    let _d = start_daemon(&w, resolv.to_str().unwrap(), Some("127.0.0.1:9153"));
    wait_ready(&a, "10.84.0.1");
    let metric = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} missing: {text}"))
    };
    let before = http_get(&w.node, "127.0.0.1:9153", "/metrics").expect("metrics");
    let t = Instant::now();
    let r = ask(&a, "10.84.0.1", "example.com.", RecordType::A).unwrap();
    assert_eq!(r.response_code(), ResponseCode::ServFail);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // Metrics in Prometheus text format on the node's loopback count exactly that.
    let after = http_get(&w.node, "127.0.0.1:9153", "/metrics").expect("metrics");
    assert!(after.starts_with("HTTP/1.0 200 OK"));
    for key in [
        "knit_dns_forward_failures_total ",
        "knit_dns_responses_total{rcode=\"SERVFAIL\"} ",
        "knit_dns_queries_total{proto=\"udp\"} ",
    ] {
        assert_eq!(metric(&after, key), metric(&before, key) + 1, "{key}");
    }
    let _ = std::fs::remove_file(&resolv);
    w.ok(&["sandbox", "rm", &a]);
}

#[test]
fn misbehaving_clients_do_not_stop_the_server() {
    let mut w = World::new();
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
    w.ok(&["network", "create", "rb", "--subnet", "10.85.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "rb", &a]);
    w.ok(&["attach", "rb", &b]);
    let _d = start_daemon(&w, resolv.to_str().unwrap(), None);
    wait_ready(&a, "10.85.0.1");
    let server: SocketAddr = "10.85.0.1:53".parse().unwrap();
    // 100 TCP clients that connect and send nothing, and 20 that send one byte at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut holders = vec![];
    for i in 0..120 {
        let stop = stop.clone();
        let file = std::fs::File::open(format!("/run/netns/{b}")).unwrap();
        holders.push(std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only.
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let Ok(mut s) = TcpStream::connect_timeout(&server, Duration::from_secs(1)) else {
                return;
            };
            let q = query_bytes("x.", RecordType::A);
            let mut msg = (q.len() as u16).to_be_bytes().to_vec();
            msg.extend_from_slice(&q);
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                if i >= 100 && k < msg.len() {
                    let _ = s.write_all(&msg[k..k + 1]);
                    k += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // Garbage and truncated UDP packets.
    let good = query_bytes(&format!("{a}."), RecordType::A);
    in_ns(&b, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for len in [0usize, 1, 5, 11, 12, 13, 20] {
            let _ = s.send_to(&good[..len.min(good.len())], server);
        }
        let mut x = 99u32;
        for _ in 0..500 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8
                })
                .collect();
            let _ = s.send_to(&junk, server);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // Everyone else is still served promptly, over UDP and TCP (over TCP b itself is at
    // its per-client connection cap: another sandbox asks).
    let t = Instant::now();
    assert_eq!(
        addrs(&ask(&b, "10.85.0.1", &format!("{a}."), RecordType::A).unwrap()).len(),
        1
    );
    assert_eq!(
        addrs(&ask_tcp(&a, "10.85.0.1", &format!("{b}."), RecordType::A).unwrap()).len(),
        1
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // A truncated query gets FORMERR with its id, not silence.
    let good = query_bytes(&format!("{a}."), RecordType::A);
    let formerr = in_ns(&b, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(&good[..good.len() - 4], server).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        buf[..n].to_vec()
    });
    assert_eq!(&formerr[..2], &4242u16.to_be_bytes());
    assert_eq!(formerr[3] & 0x0f, 1, "FORMERR");
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        let _ = h.join();
    }
    let _ = std::fs::remove_file(&resolv);
    for s in [&a, &b] {
        w.ok(&["sandbox", "rm", s]);
    }
}
