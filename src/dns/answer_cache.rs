//! Answers already built for identical UDP queries, per listener.
//!
//! knit's own answers are a pure function of the query bytes after the 2-byte id, the
//! client's address (which decides the networks it may see) and the records snapshot
//! (`server::Origin::Records`). Clients ask the same few names over and over, so the
//! server keeps the encoded answer and, for the same query again, copies it with the new
//! id instead of decoding, looking up and encoding through hickory each time (a packet
//! cache, as PowerDNS and others keep). No DNS parsing happens here: the key is the raw
//! bytes. A new snapshot (any attach, detach or network change) empties the cache, so an
//! answer is never older than the records it came from.

use super::metrics::Metrics;
use super::records::Records;
use super::reply::{Origin, Reply};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

/// Entries kept before the cache starts over: bounds memory (under 2 MiB per listener)
/// against clients that ask endless distinct questions.
const MAX_ENTRIES: usize = 1024;
/// Longer queries (large EDNS options) and answers are sent but not kept.
const MAX_QUERY: usize = 512;
const MAX_ANSWER: usize = 1232;

#[derive(Default)]
pub struct AnswerCache {
    /// `Records::generation` of the snapshot the answers came from (not the snapshot
    /// itself: an idle listener must not keep an old snapshot alive).
    generation: u64,
    answers: HashMap<Box<[u8]>, Box<[u8]>>,
    key: Vec<u8>,
}

impl AnswerCache {
    /// The answer to a UDP query: from the cache when the same query (from the same client,
    /// against the same snapshot) was answered before, else `answer()`'s (kept if it came
    /// from the records).
    pub fn handle(
        &mut self,
        packet: &[u8],
        client: IpAddr,
        records: &Records,
        metrics: &Metrics,
        answer: impl FnOnce() -> (Reply, Origin),
    ) -> Reply {
        if self.generation != records.generation {
            self.answers.clear();
            self.generation = records.generation;
        }
        let cacheable = packet.len() > 2 && packet.len() <= MAX_QUERY;
        if cacheable {
            self.key.clear();
            match client {
                IpAddr::V4(a) => self.key.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => self.key.extend_from_slice(&a.octets()),
            }
            self.key.extend_from_slice(&packet[2..]);
            if let Some(bytes) = self.answers.get(self.key.as_slice()) {
                metrics.local_answers.fetch_add(1, Relaxed);
                let mut reply = bytes.to_vec();
                reply[..2].copy_from_slice(&packet[..2]);
                return Reply::Now(reply);
            }
        }
        let (reply, origin) = answer();
        if let (true, Origin::Records, Reply::Now(bytes)) = (cacheable, origin, &reply)
            && bytes.len() <= MAX_ANSWER
        {
            if self.answers.len() >= MAX_ENTRIES {
                self.answers.clear();
            }
            self.answers
                .insert(self.key.as_slice().into(), bytes.as_slice().into());
        }
        reply
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::server;

    /// The cache in front of the server's own answer, as `server::datagram` uses it.
    fn ask(
        c: &mut AnswerCache,
        packet: &[u8],
        client: IpAddr,
        net_id: i64,
        records: &Records,
        metrics: &Metrics,
    ) -> Reply {
        c.handle(packet, client, records, metrics, || {
            server::answer(packet, client, net_id, records, server::UDP, metrics)
        })
    }
    use crate::dns::records::{Host, NetView};
    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};
    use std::sync::Arc;

    fn records(web_ip: &str) -> Arc<Records> {
        Arc::new(Records::build(
            vec![
                NetView {
                    id: 1,
                    gateways: vec!["10.0.0.1".parse().unwrap()],
                    domain: None,
                    internal: false,
                    ..Default::default()
                },
                NetView {
                    id: 2,
                    gateways: vec!["10.0.9.1".parse().unwrap()],
                    domain: None,
                    internal: false,
                    ..Default::default()
                },
            ],
            vec![
                Host {
                    sandbox: "web".into(),
                    network_id: 1,
                    names: vec!["web".into()],
                    ips: vec![web_ip.parse().unwrap()],
                },
                Host {
                    sandbox: "client".into(),
                    network_id: 1,
                    names: vec!["client".into()],
                    ips: vec!["10.0.0.3".parse().unwrap()],
                },
            ],
        ))
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        query_type(id, name, RecordType::A)
    }

    fn query_type(id: u16, name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    fn now(r: Reply) -> Vec<u8> {
        match r {
            Reply::Now(b) => b,
            _ => panic!("expected an immediate answer"),
        }
    }

    fn addrs(bytes: &[u8]) -> Vec<String> {
        let m = Message::from_vec(bytes).unwrap();
        m.answers().iter().map(|r| r.data().to_string()).collect()
    }

    #[test]
    fn same_query_is_answered_from_the_cache_with_its_own_id() {
        let (mut c, m, r) = (
            AnswerCache::default(),
            Metrics::default(),
            records("10.0.0.2"),
        );
        let client: IpAddr = "10.0.0.3".parse().unwrap();
        let first = now(ask(&mut c, &query(1, "web."), client, 1, &r, &m));
        assert_eq!(c.len(), 1);
        let second = now(ask(&mut c, &query(2, "web."), client, 1, &r, &m));
        assert_eq!(c.len(), 1);
        assert_eq!(&second[..2], &2u16.to_be_bytes());
        assert_eq!(&first[2..], &second[2..]);
        // Exactly what the uncached path gives for that query.
        let direct = now(server::handle(
            &query(2, "web."),
            client,
            1,
            &r,
            server::UDP,
            &m,
        ));
        assert_eq!(second, direct);
        assert_eq!(m.local_answers.load(Relaxed), 3);
    }

    #[test]
    fn a_new_snapshot_empties_the_cache() {
        let (mut c, m) = (AnswerCache::default(), Metrics::default());
        let client: IpAddr = "10.0.0.3".parse().unwrap();
        let old = now(ask(
            &mut c,
            &query(1, "web."),
            client,
            1,
            &records("10.0.0.2"),
            &m,
        ));
        assert_eq!(addrs(&old), ["10.0.0.2"]);
        let new = now(ask(
            &mut c,
            &query(1, "web."),
            client,
            1,
            &records("10.0.0.7"),
            &m,
        ));
        assert_eq!(addrs(&new), ["10.0.0.7"]);
    }

    #[test]
    fn answers_are_kept_per_client_scope() {
        let (mut c, m, r) = (
            AnswerCache::default(),
            Metrics::default(),
            records("10.0.0.2"),
        );
        let inside = now(ask(
            &mut c,
            &query(1, "web."),
            "10.0.0.3".parse().unwrap(),
            1,
            &r,
            &m,
        ));
        assert_eq!(addrs(&inside), ["10.0.0.2"]);
        // A client on network 2 does not see network 1's names, cached or not.
        let outside = now(ask(
            &mut c,
            &query(1, "web."),
            "10.0.9.5".parse().unwrap(),
            2,
            &r,
            &m,
        ));
        let msg = Message::from_vec(&outside).unwrap();
        assert_eq!(msg.response_code(), ResponseCode::NXDomain);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn forwards_and_errors_are_not_kept() {
        let (mut c, m, r) = (
            AnswerCache::default(),
            Metrics::default(),
            records("10.0.0.2"),
        );
        let client: IpAddr = "10.0.0.3".parse().unwrap();
        assert!(matches!(
            ask(&mut c, &query(1, "example.com."), client, 1, &r, &m),
            Reply::Forward
        ));
        let good = query(1, "web.");
        let _ = ask(&mut c, &good[..good.len() - 3], client, 1, &r, &m);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_cache_is_bounded() {
        let (mut c, m, r) = (
            AnswerCache::default(),
            Metrics::default(),
            records("10.0.0.2"),
        );
        let client: IpAddr = "10.0.0.3".parse().unwrap();
        for t in 300..(300 + MAX_ENTRIES as u16 + 10) {
            // Distinct queries knit answers itself: other types of one of its names
            // (NOERROR, no data).
            let q = query_type(1, "web.", RecordType::from(t));
            assert!(matches!(ask(&mut c, &q, client, 1, &r, &m), Reply::Now(_)));
        }
        assert!(c.len() <= MAX_ENTRIES);
        assert!(c.len() > 0);
    }
}
