//! A minimal upstream resolver for the DNS benchmark: answers every A query with
//! 203.0.113.1, from one thread. Usage: dns_upstream ADDR:PORT
use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use std::net::UdpSocket;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:53".into());
    let s = UdpSocket::bind(&addr).expect("bind");
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = s.recv_from(&mut buf) else {
            continue;
        };
        let Ok(q) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let mut r = Message::new();
        r.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_recursion_available(true);
        for qq in q.queries() {
            r.add_query(qq.clone());
            r.add_answer(Record::from_rdata(
                qq.name().clone(),
                300,
                RData::A(A("203.0.113.1".parse().unwrap())),
            ));
        }
        if let Ok(b) = r.to_vec() {
            let _ = s.send_to(&b, peer);
        }
    }
}
