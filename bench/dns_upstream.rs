//! A minimal upstream resolver for the DNS benchmark: answers every A query with
//! 203.0.113.1, from one thread. Usage: dns_upstream ADDR:PORT
//! (The resolver itself is the tests' fake upstream, `tests/common/dns_upstream.rs`.)

#[path = "../tests/common/dns_upstream.rs"]
mod dns_upstream;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize};

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:53".into());
    let s = UdpSocket::bind(&addr).expect("bind");
    let zone = dns_upstream::Zone::Any(Ipv4Addr::new(203, 0, 113, 1));
    dns_upstream::serve(&s, zone, &AtomicBool::new(false), &AtomicUsize::new(0));
}
