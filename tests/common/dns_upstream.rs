//! The fake upstream resolver, one copy for the DNS tests (`tests/dns.rs`,
//! `tests/dns_guard.rs`, through `common`) and the DNS benchmark (`bench/dns_upstream.rs`
//! includes this file with `#[path]`): one UDP socket on port 53, one thread.

// The benchmark uses `serve` only, the tests `Upstream`.
#![allow(dead_code)]

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What the upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Zone {
    /// Every question gets an A record with this address, TTL 300 (the benchmark's
    /// forwarded names).
    Any(Ipv4Addr),
    /// Only this absolute name (`"example.com."`) gets an A record with the address, TTL
    /// 60; every other query is answered NXDOMAIN.
    Only(&'static str, Ipv4Addr),
}

/// The tests' zone: example.com → 203.0.113.7, everything else NXDOMAIN.
pub const EXAMPLE: Zone = Zone::Only("example.com.", Ipv4Addr::new(203, 0, 113, 7));

/// The response to one datagram; None if it is not a DNS message.
pub fn answer(query: &[u8], zone: Zone) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_recursion_available(true);
    for qq in q.queries() {
        r.add_query(qq.clone());
    }
    let record = |name, ttl, ip| Record::from_rdata(name, ttl, RData::A(A(ip)));
    match zone {
        Zone::Any(ip) => {
            for qq in q.queries() {
                r.add_answer(record(qq.name().clone(), 300, ip));
            }
        }
        Zone::Only(name, ip) => match q.queries().first() {
            Some(first) if first.name().to_ascii() == name => {
                r.add_answer(record(first.name().clone(), 60, ip));
            }
            _ => {
                r.set_response_code(ResponseCode::NXDomain);
            }
        },
    }
    r.to_vec().ok()
}

/// Answers queries arriving on `sock` until `stop` is set (looked at whenever a receive
/// returns, so give the socket a read timeout to stop promptly); `asked` counts them.
pub fn serve(sock: &UdpSocket, zone: Zone, stop: &AtomicBool, asked: &AtomicUsize) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Some(response) = answer(&buf[..n], zone) else {
            continue;
        };
        asked.fetch_add(1, Ordering::SeqCst);
        let _ = sock.send_to(&response, peer);
    }
}

/// An upstream on a thread inside namespace `ns` (0.0.0.0:53) that counts what it is
/// asked; it stops when dropped (or by `stop`, which also reports a panic of its thread).
pub struct Upstream {
    asked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start(ns: &str, zone: Zone) -> Upstream {
        use std::os::fd::AsRawFd;
        let asked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
        let (tx, rx) = std::sync::mpsc::channel();
        let (a, st) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let s = UdpSocket::bind("0.0.0.0:53").expect("bind upstream");
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            tx.send(()).unwrap();
            serve(&s, zone, &st, &a);
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("upstream ready");
        Upstream {
            asked,
            stop,
            thread: Some(thread),
        }
    }

    /// Queries answered so far.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// Stops the upstream; panics if its thread did.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("upstream thread");
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
