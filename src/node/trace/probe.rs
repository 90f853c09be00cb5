//! trace's probe: one real packet from inside the source namespace — a TCP SYN (a
//! non-blocking connect), a UDP datagram, or an ICMP echo request — from a port (or echo
//! identifier) no other flow uses, so the trace rules can single it and its answer out.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    Icmp,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Icmp => "icmp",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub kind: Kind,
    pub dst: IpAddr,
    /// Destination port (TCP, UDP).
    pub port: u16,
    /// Source port, or the echo identifier.
    pub tag: u16,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination answered (SYN-ACK, a datagram, an echo reply).
    Answered,
    /// Refused: a TCP reset or ICMP port unreachable.
    Refused,
    /// The kernel of the source (or an ICMP error on the way) says there is no way there.
    Unreachable(String),
    /// Nothing within the time limit.
    Silence,
}

/// A tag (source port / echo id) in the ephemeral range, different per run.
pub fn fresh_tag() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = nanos ^ (std::process::id().wrapping_mul(2_654_435_761));
    40000 + (mix % 20000) as u16
}

fn unspecified(v4: bool, port: u16) -> SocketAddr {
    if v4 {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
    }
}

fn classify(e: &io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(libc::EAGAIN) | Some(libc::ETIMEDOUT) => Outcome::Silence,
        _ => Outcome::Unreachable(e.to_string()),
    }
}

/// An open probe socket: closing a TCP one sends a FIN (or a reset, with data unread),
/// which must happen after the trace rules are gone.
pub struct Held(#[allow(dead_code)] Option<socket2::Socket>);

/// Sends the probe from the calling thread's namespace and waits up to `limit`.
pub fn send(p: &Probe, limit: Duration) -> io::Result<(Outcome, Held)> {
    match p.kind {
        Kind::Tcp => tcp(p, limit),
        Kind::Udp => udp(p, limit).map(|o| (o, Held(None))),
        Kind::Icmp => icmp(p, limit).map(|o| (o, Held(None))),
    }
}

fn tcp(p: &Probe, limit: Duration) -> io::Result<(Outcome, Held)> {
    use socket2::{Domain, Socket, Type};
    let dst = SocketAddr::new(p.dst, p.port);
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&unspecified(p.dst.is_ipv4(), p.tag).into())?;
    // Non-blocking: the wait below is ours (trace's limit stays under TCP's first
    // retransmission, 1 s, so one SYN is traced, not two).
    s.set_nonblocking(true)?;
    match s.connect(&dst.into()) {
        Ok(()) => return Ok((Outcome::Answered, Held(Some(s)))),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Ok((classify(&e), Held(None))),
    }
    let mut fd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&s),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call's duration.
    let n = unsafe { libc::poll(&mut fd, 1, limit.as_millis() as i32) };
    if n == 0 {
        return Ok((Outcome::Silence, Held(Some(s))));
    }
    let o = match s.take_error()? {
        None => Outcome::Answered,
        Some(e) => classify(&e),
    };
    Ok((o, Held(Some(s))))
}

fn udp(p: &Probe, limit: Duration) -> io::Result<Outcome> {
    let s = std::net::UdpSocket::bind(unspecified(p.dst.is_ipv4(), p.tag))?;
    s.connect(SocketAddr::new(p.dst, p.port))?;
    s.set_read_timeout(Some(limit))?;
    if let Err(e) = s.send(b"knit trace\n") {
        return Ok(classify(&e));
    }
    let mut buf = [0u8; 512];
    Ok(match s.recv(&mut buf) {
        Ok(_) => Outcome::Answered,
        Err(e) => classify(&e),
    })
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn icmp(p: &Probe, limit: Duration) -> io::Result<Outcome> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v4 = p.dst.is_ipv4();
    let (domain, proto, request, reply) = if v4 {
        (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8)
    } else {
        (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8)
    };
    let s = Socket::new(domain, Type::RAW, Some(proto))?;
    let mut pkt = vec![request, 0, 0, 0];
    pkt.extend_from_slice(&p.tag.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"knit trace probe");
    if v4 {
        // (The kernel fills in ICMPv6's checksum itself.)
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    if let Err(e) = s.send_to(&pkt, &SocketAddr::new(p.dst, 0).into()) {
        return Ok(classify(&e));
    }
    let end = Instant::now() + limit;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Outcome::Silence);
        }
        s.set_read_timeout(Some(left))?;
        let (n, _) = match s.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) => return Ok(classify(&e)),
        };
        // SAFETY: recv_from initialised the first n bytes.
        let got: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        // A raw IPv4 socket hands over the IP header too.
        let icmp = if v4 {
            let ihl = usize::from(got.first().map_or(5, |b| b & 0x0f)) * 4;
            got.get(ihl..).unwrap_or_default().to_vec()
        } else {
            got
        };
        if icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == p.tag.to_be_bytes() {
            return Ok(Outcome::Answered);
        }
        // Destination unreachable about our own echo request.
        let unreachable = if v4 { 3 } else { 1 };
        let inner_id = if v4 {
            let ihl = usize::from(icmp.get(8).map_or(5, |b| b & 0x0f)) * 4;
            icmp.get(8 + ihl + 4..8 + ihl + 6).map(|b| [b[0], b[1]])
        } else {
            icmp.get(8 + 40 + 4..8 + 40 + 6).map(|b| [b[0], b[1]])
        };
        if icmp.first() == Some(&unreachable) && inner_id == Some(p.tag.to_be_bytes()) {
            return Ok(Outcome::Unreachable(format!(
                "ICMP destination unreachable (code {})",
                icmp.get(1).copied().unwrap_or(0)
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn icmp_checksum_of_an_echo_request() {
        // type 8, code 0, id 0x1234, seq 1: a well-known sum.
        let pkt = [8, 0, 0, 0, 0x12, 0x34, 0, 1];
        let c = super::checksum(&pkt);
        let mut with = pkt;
        with[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(super::checksum(&with), 0);
    }
}
