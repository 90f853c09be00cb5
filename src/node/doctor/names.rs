//! doctor's DNS step: when DST is a sandbox's name and the source's network has knit's DNS,
//! the source asks knit's resolver for the name, from inside its namespace, as its programs
//! would; no answer and a wrong answer are told apart (no daemon, a daemon that is silent,
//! a name the asker may not see).

use super::{Report, Walk};
use crate::netns::Netns;
use crate::node::Node;
use crate::store::{Attachment, Network};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

enum Reply {
    Addrs(Vec<IpAddr>),
    NotFound(ResponseCode),
    Silent(String),
}

fn ask(ns: &Netns, server: IpAddr, name: &str, v4: bool) -> crate::error::Result<Reply> {
    let mut m = Message::new();
    m.set_id(0x6b6e).set_recursion_desired(true);
    let qname = match Name::from_ascii(name) {
        Ok(n) => n,
        Err(e) => return Ok(Reply::Silent(format!("{name:?} is not a DNS name: {e}"))),
    };
    let t = if v4 { RecordType::A } else { RecordType::AAAA };
    m.add_query(Query::query(qname, t));
    let Ok(q) = m.to_vec() else {
        return Ok(Reply::Silent("cannot encode the query".into()));
    };
    ns.run(move || {
        let bind: SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let go = || -> std::io::Result<Vec<u8>> {
            let s = UdpSocket::bind(bind)?;
            s.connect((server, 53))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.send(&q)?;
            let mut buf = vec![0u8; 4096];
            let n = s.recv(&mut buf)?;
            buf.truncate(n);
            Ok(buf)
        };
        match go() {
            Err(e) => Reply::Silent(e.to_string()),
            Ok(b) => match Message::from_vec(&b) {
                Err(e) => Reply::Silent(format!("a malformed answer: {e}")),
                Ok(m) => {
                    let addrs: Vec<IpAddr> = m
                        .answers()
                        .iter()
                        .filter_map(|r| match r.data() {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                            _ => None,
                        })
                        .collect();
                    if addrs.is_empty() {
                        Reply::NotFound(m.response_code())
                    } else {
                        Reply::Addrs(addrs)
                    }
                }
            },
        }
    })
}

/// The sandbox that would ask.
pub struct Asker<'a> {
    pub ns: &'a Netns,
    pub name: &'a str,
    pub atts: &'a [Attachment],
}

impl Node {
    pub(super) fn dns_step(
        &self,
        asker: &Asker,
        nets: &[Network],
        name: &str,
        target: &Attachment,
        v4: bool,
        r: &mut Report,
    ) -> Walk {
        let (ns, src, atts) = (asker.ns, asker.name, asker.atts);
        let Some((net, server)) = atts.iter().find_map(|a| {
            let n = nets
                .iter()
                .find(|n| n.id == a.network_id && n.serves_dns())?;
            let gw = n
                .subnets
                .iter()
                .map(|s| s.gateway)
                .find(|g| g.is_ipv4() == v4)?;
            Some((n, gw))
        }) else {
            // The source's networks have no knit DNS: it resolves names some other way.
            return Ok(());
        };
        match ask(ns, server, name, v4)? {
            Reply::Addrs(a) => {
                let shown: Vec<String> = a.iter().map(|i| i.to_string()).collect();
                if !a
                    .iter()
                    .any(|ip| target.ips.iter().any(|t| t.addr() == *ip))
                {
                    let has: Vec<String> =
                        target.ips.iter().map(|i| i.addr().to_string()).collect();
                    return Err(r.fail(
                        "dns",
                        format!("knit DNS answers {name} with {}, but {name} has {}: the answer is stale", shown.join(", "), has.join(", ")),
                        "restart `knit daemon` (it rereads the store), then `knit reconcile`",
                    ));
                }
                r.pass(
                    "dns",
                    format!(
                        "{src} resolves {name} to {} (knit DNS at {server})",
                        shown.join(", ")
                    ),
                );
                Ok(())
            }
            Reply::NotFound(code) => {
                if !atts.iter().any(|s| s.network_id == target.network_id) {
                    let theirs: Vec<String> = self
                        .store
                        .attachments_of_sandbox(&target.sandbox)?
                        .into_iter()
                        .map(|a| a.network)
                        .collect();
                    return Err(r.fail(
                        "dns",
                        format!("knit DNS answers {code} for {name}: it tells a sandbox only the names on its own networks, and {name} ({}) shares none with {src}", theirs.join(", ")),
                        format!("knit attach {} {src}", theirs.first().map_or("NETWORK", |s| s.as_str())),
                    ));
                }
                Err(r.fail(
                    "dns",
                    format!(
                        "knit DNS at {server} answers {code} for {name}, a sandbox on {}",
                        net.name
                    ),
                    "restart `knit daemon` (it rereads the store), then `knit reconcile`",
                ))
            }
            Reply::Silent(why) => {
                if !crate::lock::daemon_running(&self.state_dir) {
                    return Err(r.fail(
                        "dns",
                        format!("no knit daemon runs: nothing answers DNS for {net} at {server}:53 ({why}), so {src} cannot resolve {name}", net = net.name),
                        "start it: `knit daemon` (or `systemctl start knit-daemon`)",
                    ));
                }
                Err(r.fail(
                    "dns",
                    format!("knit daemon runs but did not answer {src}'s query at {server}:53 ({why})"),
                    "look at its log (`journalctl -u knit-daemon`, or its stderr); a firewall in the node's input hook may drop port 53",
                ))
            }
        }
    }
}
