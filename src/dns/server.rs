//! The DNS server of `knit daemon`: UDP and TCP listeners on every DNS-enabled network's
//! gateway address, answers from the store's snapshot, everything else forwarded.
//!
//! Who is served: only sandboxes. A query to a network's gateway is answered only if it
//! comes from an address attached to that network and (UDP: per datagram, from
//! IP_PKTINFO) arrives on that network's bridge (`Records::admit`); anything else gets
//! REFUSED (TCP: the connection is closed) before any lookup, cache or forwarding.
//!
//! Robustness: a packet that does not parse gets FORMERR (or nothing if it has no header);
//! each TCP client is its own task with idle and read deadlines, under a cap on concurrent
//! connections per listener and a smaller one per client address, so silent or slow
//! clients cannot stop the server answering others.

use super::answer_cache::AnswerCache;
use super::metrics::{self, Metrics};
use super::records::{Answer, Records, Verdict};
pub use super::reply::{Origin, Reply};
use super::upstream;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};

/// TTL of knit's own answers: short, since sandboxes come and go.
const TTL: u32 = 5;
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Concurrent TCP connections per listener (gateway address).
const TCP_MAX_CONNECTIONS: usize = 512;
/// Concurrent TCP connections per client address, across all listeners: one sandbox
/// holding idle connections cannot take the listener's whole cap from the others.
pub const TCP_MAX_PER_CLIENT: usize = 16;

pub struct Shared {
    pub records: watch::Receiver<Arc<Records>>,
    pub forwarder: upstream::Forwarder,
    pub upstreams: watch::Receiver<Vec<SocketAddr>>,
    pub metrics: Metrics,
    pub upstream_timeout: Duration,
    pub tcp_clients: TcpClients,
}

/// Open TCP connections per client address.
#[derive(Default, Clone)]
pub struct TcpClients(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One of a client's TCP connections; released on drop.
pub struct TcpClientSlot {
    clients: TcpClients,
    ip: IpAddr,
}

impl TcpClients {
    /// A slot for one more connection from `ip`, unless it already holds `max`.
    pub fn take(&self, ip: IpAddr, max: usize) -> Option<TcpClientSlot> {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(TcpClientSlot {
            clients: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        m.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for TcpClientSlot {
    fn drop(&mut self) {
        let mut m = self
            .clients
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Counts a refusal; true if the query is served.
fn admitted(verdict: Verdict, metrics: &Metrics) -> bool {
    match verdict {
        Verdict::Serve => return true,
        Verdict::WrongLink => metrics.refuse(metrics::REFUSED_WRONG_LINK),
        Verdict::NotAttached => metrics.refuse(metrics::REFUSED_NOT_ATTACHED),
    }
    false
}

/// REFUSED for a query from a client that is not served (nothing for anything else): no
/// lookup, no forwarding, and no larger than the query.
pub fn refuse(packet: &[u8]) -> Reply {
    match Message::from_vec(packet) {
        Ok(req) if req.message_type() == MessageType::Query => {
            encode(&response_to(&req, ResponseCode::Refused), 512)
                .map(Reply::Now)
                .unwrap_or(Reply::Drop)
        }
        _ => Reply::Drop,
    }
}

fn response_to(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    for q in req.queries() {
        m.add_query(q.clone());
    }
    m
}

/// A bare header answer for packets too broken to parse: same id, QR set, the rcode.
fn header_only(packet: &[u8], code: u8) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None; // no header, or itself a response: never answer (reflection loops)
    }
    let mut h = vec![0u8; 12];
    h[..2].copy_from_slice(&packet[..2]);
    h[2] = 0x80 | (packet[2] & 0x79); // QR, keep opcode and RD
    h[3] = 0x80 | code; // RA
    Some(h)
}

fn encode(m: &Message, max: usize) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= max {
        return Some(bytes);
    }
    // Too big for the transport: the client retries over TCP.
    let mut t = m.clone();
    t.take_answers();
    t.set_truncated(true);
    t.to_vec().ok()
}

/// Decides what to do with one query packet arriving on network `net_id` from `client`.
pub fn handle(
    packet: &[u8],
    client: IpAddr,
    net_id: i64,
    records: &Records,
    max_len: usize,
    metrics: &Metrics,
) -> Reply {
    answer(packet, client, net_id, records, max_len, metrics).0
}

/// `handle`, also saying where the reply came from.
pub fn answer(
    packet: &[u8],
    client: IpAddr,
    net_id: i64,
    records: &Records,
    max_len: usize,
    metrics: &Metrics,
) -> (Reply, Origin) {
    let other = |r: Reply| (r, Origin::Other);
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            metrics.malformed.fetch_add(1, Relaxed);
            return other(
                header_only(packet, 1)
                    .map(Reply::Now)
                    .unwrap_or(Reply::Drop),
            );
        }
    };
    let max_len = if max_len == UDP {
        req.max_payload().max(512) as usize
    } else {
        max_len
    };
    if req.message_type() != MessageType::Query {
        metrics.malformed.fetch_add(1, Relaxed);
        return other(Reply::Drop);
    }
    if req.op_code() != OpCode::Query {
        let r = encode(&response_to(&req, ResponseCode::NotImp), max_len);
        return other(r.map(Reply::Now).unwrap_or(Reply::Drop));
    }
    let Some(q) = req.queries().first() else {
        let r = encode(&response_to(&req, ResponseCode::FormErr), max_len);
        return other(r.map(Reply::Now).unwrap_or(Reply::Drop));
    };
    let scope = records.scope(client, net_id);
    let qname = q.name().to_ascii();
    let answer = match q.query_type() {
        RecordType::A => records.lookup(&qname, true, &scope),
        RecordType::AAAA => records.lookup(&qname, false, &scope),
        RecordType::PTR => match q.name().parse_arpa_name() {
            Ok(net) => records.reverse_name(net, &scope),
            Err(_) => Answer::NotOurs,
        },
        // Another type for one of our names: the name exists, the data does not.
        _ => match records.lookup(&qname, true, &scope) {
            Answer::Addrs(_) => Answer::Addrs(vec![]),
            other => other,
        },
    };
    let mut resp = match answer {
        Answer::NotOurs => {
            let internal = records.network(net_id).is_some_and(|n| n.internal);
            if internal {
                // Internal networks do not reach the outside, not even by name.
                response_to(&req, ResponseCode::Refused)
            } else {
                return other(Reply::Forward);
            }
        }
        Answer::NxDomain => response_to(&req, ResponseCode::NXDomain),
        Answer::Addrs(ips) => {
            let mut m = response_to(&req, ResponseCode::NoError);
            for ip in ips {
                let rdata = match ip {
                    IpAddr::V4(a) => RData::A(A(a)),
                    IpAddr::V6(a) => RData::AAAA(AAAA(a)),
                };
                m.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
            }
            m
        }
        Answer::Ptr(name) => {
            let mut m = response_to(&req, ResponseCode::NoError);
            match Name::from_ascii(format!("{name}.")) {
                Ok(n) => {
                    m.add_answer(Record::from_rdata(
                        q.name().clone(),
                        TTL,
                        RData::PTR(PTR(n)),
                    ));
                }
                Err(_) => {
                    m.set_response_code(ResponseCode::ServFail);
                }
            }
            m
        }
    };
    resp.set_authoritative(true);
    metrics.local_answers.fetch_add(1, Relaxed);
    match encode(&resp, max_len) {
        Some(bytes) => (Reply::Now(bytes), Origin::Records),
        None => other(Reply::Drop),
    }
}

/// Forwards to the upstreams; SERVFAIL (same id and question) when none answers.
pub async fn forward(packet: &[u8], shared: &Shared) -> Vec<u8> {
    let upstreams = shared.upstreams.borrow().clone();
    shared.metrics.forwarded.fetch_add(1, Relaxed);
    let t = Instant::now();
    if let Some(r) = shared
        .forwarder
        .forward(packet, &upstreams, shared.upstream_timeout)
        .await
    {
        shared.metrics.forward_latency(t.elapsed());
        return r;
    }
    shared.metrics.forward_failures.fetch_add(1, Relaxed);
    Message::from_vec(packet)
        .ok()
        .and_then(|req| response_to(&req, ResponseCode::ServFail).to_vec().ok())
        .or_else(|| header_only(packet, 2))
        .unwrap_or_default()
}

fn count_rcode(bytes: &[u8], metrics: &Metrics) {
    if bytes.len() >= 4 {
        metrics.rcode((bytes[3] & 0x0f) as u16);
    }
}

/// `handle`'s transport limit for UDP: taken from the query's EDNS (512 without).
pub const UDP: usize = 0;

/// One UDP query that arrived on interface `ingress`: admission first, so a cached answer
/// is only ever sent to a client that is served.
pub fn datagram(
    cache: &mut AnswerCache,
    packet: &[u8],
    client: IpAddr,
    ingress: u32,
    net_id: i64,
    records: &Records,
    metrics: &Metrics,
) -> Reply {
    if admitted(records.admit(net_id, client, Some(ingress)), metrics) {
        cache.handle(packet, client, records, metrics, || {
            answer(packet, client, net_id, records, UDP, metrics)
        })
    } else {
        refuse(packet)
    }
}

pub async fn serve_udp(sock: Arc<UdpSocket>, net_id: i64, shared: Arc<Shared>) {
    let mut batch = super::udp_batch::RecvBatch::default();
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(super::udp_batch::BATCH);
    let mut cache = AnswerCache::default();
    loop {
        let Ok(n) = batch.fill(&sock).await else {
            continue;
        };
        shared.metrics.queries_udp.fetch_add(n as u64, Relaxed);
        let records = shared.records.borrow().clone();
        replies.clear();
        for (packet, src, ingress) in (0..n).filter_map(|i| batch.get(i)) {
            match datagram(
                &mut cache,
                packet,
                src.ip(),
                ingress,
                net_id,
                &records,
                &shared.metrics,
            ) {
                Reply::Now(bytes) => {
                    count_rcode(&bytes, &shared.metrics);
                    replies.push((bytes, src));
                }
                Reply::Forward => {
                    let (sock, shared, packet) = (sock.clone(), shared.clone(), packet.to_vec());
                    tokio::spawn(async move {
                        let bytes = forward(&packet, &shared).await;
                        count_rcode(&bytes, &shared.metrics);
                        let _ = sock.send_to(&bytes, src).await;
                    });
                }
                Reply::Drop => {}
            }
        }
        super::udp_batch::send_all(&sock, &replies).await;
    }
}

pub async fn serve_tcp(listener: TcpListener, net_id: i64, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(TCP_MAX_CONNECTIONS));
    loop {
        let Ok((stream, src)) = listener.accept().await else {
            continue;
        };
        // Dropping `stream` closes it at once: strangers, and connections over a cap (the
        // newest connection is refused rather than anyone starved).
        let records = shared.records.borrow().clone();
        if !admitted(records.admit(net_id, src.ip(), None), &shared.metrics) {
            continue;
        }
        let Some(client) = shared.tcp_clients.take(src.ip(), TCP_MAX_PER_CLIENT) else {
            shared.metrics.refuse(metrics::REFUSED_CLIENT_TCP_CAP);
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.metrics.refuse(metrics::REFUSED_TCP_CAP);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slots = (permit, client);
            tcp_connection(stream, src, net_id, &shared).await;
        });
    }
}

async fn tcp_connection(mut s: TcpStream, src: SocketAddr, net_id: i64, shared: &Shared) {
    loop {
        let mut len = [0u8; 2];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let n = u16::from_be_bytes(len) as usize;
        let mut packet = vec![0u8; n];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, s.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        shared.metrics.queries_tcp.fetch_add(1, Relaxed);
        let records = shared.records.borrow().clone();
        // Detached since the connection opened: no longer served.
        if !admitted(records.admit(net_id, src.ip(), None), &shared.metrics) {
            return;
        }
        let bytes = match handle(
            &packet,
            src.ip(),
            net_id,
            &records,
            u16::MAX as usize,
            &shared.metrics,
        ) {
            Reply::Now(b) => b,
            Reply::Forward => forward(&packet, shared).await,
            Reply::Drop => return,
        };
        count_rcode(&bytes, &shared.metrics);
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
        if !matches!(
            tokio::time::timeout(TCP_IDLE, s.write_all(&out)).await,
            Ok(Ok(_))
        ) {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
