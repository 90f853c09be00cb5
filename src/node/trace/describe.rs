//! trace's vocabulary: a rule knit made, shown as the knit object behind it. The rule's
//! comment says what it is for (knit writes one on every fixed rule and on each network's
//! and policy chain's rules); the chain name carries the object's id (`svc7`, `pol3`,
//! `n3_out`); the packet's headers at that point pick the element of a map that matched
//! (which published port, which service, which policy rule).

use super::super::doctor::policy::{Flow, allowing_rule, rule_text};
use crate::model::policy::Direction;
use crate::nft::trace::Headers;
use crate::store::{Attachment, Network, Service};
use std::net::IpAddr;

/// What the store knows, read once per trace.
pub struct Catalog {
    pub nets: Vec<Network>,
    pub services: Vec<Service>,
    pub atts: Vec<Attachment>,
    pub rules: Vec<crate::model::policy::Rule>,
}

fn proto_num(p: crate::model::Proto) -> u8 {
    crate::nft::wire::proto_num(p)
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 | 58 => "icmp",
        _ => "ip",
    }
}

/// `prefix` followed by a number and then `rest`: the number.
fn id_after(chain: &str, prefix: &str) -> Option<(i64, String)> {
    let tail = chain.strip_prefix(prefix)?;
    let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
    let id = digits.parse().ok()?;
    Some((id, tail[digits.len()..].to_string()))
}

impl Catalog {
    fn net_name(&self, id: i64) -> String {
        self.nets
            .iter()
            .find(|n| n.id == id)
            .map_or(format!("#{id}"), |n| n.name.clone())
    }

    fn owner(&self, ip: IpAddr) -> Option<&Attachment> {
        self.atts
            .iter()
            .find(|a| a.ips.iter().any(|i| i.addr() == ip))
    }

    fn side(&self, ip: IpAddr) -> String {
        self.owner(ip).map_or(ip.to_string(), |a| a.sandbox.clone())
    }

    /// The service a packet addressed to `h.dst:h.dport` is for (its VIP or node port).
    fn service_for(&self, h: &Headers) -> Option<&Service> {
        self.services.iter().find(|s| {
            proto_num(s.vip.proto) == h.proto
                && ((s.vip.ip == h.dst && s.vip.port == h.dport) || s.node_port == Some(h.dport))
        })
    }

    fn service_text(&self, s: &Service) -> String {
        let n = s.backends.len();
        format!(
            "service {} ({}, {n} backend{})",
            s.name,
            s.vip,
            if n == 1 { "" } else { "s" }
        )
    }

    /// The published port a packet addressed to the node matched.
    fn published(&self, h: &Headers) -> Option<String> {
        self.atts.iter().find_map(|a| {
            let m = a.ports.iter().find(|m| {
                m.host_port == h.dport
                    && proto_num(m.proto) == h.proto
                    && m.host_ip.is_none_or(|ip| ip == h.dst)
                    && m.container_ip.is_ipv4() == h.dst.is_ipv4()
            })?;
            Some(format!(
                "published port {}/{} → {} {}:{}",
                m.host_port,
                proto_name(h.proto),
                a.sandbox,
                m.container_ip,
                m.container_port
            ))
        })
    }

    fn policy(&self, net_id: i64, dir: Direction, verdict: &str, h: Option<&Headers>) -> String {
        let net = self.net_name(net_id);
        let what = match dir {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        let Some(h) = h else {
            return format!("policy of network {net} ({what})");
        };
        let port = matches!(h.proto, 6 | 17).then_some((h.dport, h.proto));
        let flow = Flow {
            src: self.owner(h.src),
            src_ip: h.src,
            dst: self.owner(h.dst),
            dst_ip: h.dst,
            port,
        };
        if verdict == "return" {
            return match allowing_rule(&flow, &self.rules, net_id, dir) {
                Some(r) => format!(
                    "policy of network {net} ({what}): allowed by {}",
                    rule_text(r)
                ),
                None => format!("policy of network {net} ({what}): allowed"),
            };
        }
        if verdict == "drop" {
            let port = port
                .map(|(p, pr)| format!(" --port {p}/{}", proto_name(pr)))
                .unwrap_or_default();
            let egress = if dir == Direction::Egress {
                " --egress"
            } else {
                ""
            };
            return format!(
                "policy of network {net} ({what}): denied, no allow rule matches {} → {} (to allow: knit policy allow {net}{egress} --from {} --to {}{port})",
                self.side(h.src),
                self.side(h.dst),
                self.side(h.src),
                self.side(h.dst)
            );
        }
        format!("policy of network {net} ({what})")
    }

    /// The knit object behind an event in knit's table, if any.
    pub fn object(
        &self,
        chain: &str,
        comment: Option<&str>,
        verdict: &str,
        h: Option<&Headers>,
    ) -> Option<String> {
        if let Some((id, _)) = id_after(chain, "pol") {
            return Some(self.policy(id, Direction::Ingress, verdict, h));
        }
        if let Some((id, _)) = id_after(chain, "egr") {
            return Some(self.policy(id, Direction::Egress, verdict, h));
        }
        if let Some((id, rest)) = id_after(chain, "svc") {
            let svc = self.services.iter().find(|s| s.id == id);
            let name = svc.map_or(format!("service #{id}"), |s| self.service_text(s));
            return Some(if rest.starts_with("_b") || rest.starts_with("_a") {
                format!("{name}: a backend")
            } else {
                name
            });
        }
        if let Some((id, _)) = id_after(chain, "n") {
            let tail = comment.and_then(|c| c.split_once(": ").map(|t| t.1.to_string()));
            return Some(format!(
                "network {}: {}",
                self.net_name(id),
                tail.unwrap_or_else(|| "isolation".into())
            ));
        }
        let via_service = |h: &Headers| self.service_for(h).map(|s| self.service_text(s));
        match (chain, h) {
            ("publish", Some(h)) if verdict == "accept" => self.published(h),
            ("svc_refuse", Some(h)) => Some(format!(
                "{}: no backends, refused",
                via_service(h).unwrap_or_else(|| "a service".into())
            )),
            (c, Some(h))
                if (c == "services" || c.starts_with("svc_data") || c.starts_with("nodeports"))
                    && verdict != "continue" =>
            {
                via_service(h).or_else(|| comment.map(str::to_string))
            }
            _ => comment.map(|c| self.with_names(c)),
        }
    }

    /// "network 3: ..." in a comment, with the network's name.
    fn with_names(&self, c: &str) -> String {
        match c.strip_prefix("network ").and_then(|t| t.split_once(':')) {
            Some((id, rest)) => match id.parse::<i64>() {
                Ok(id) => format!("network {}:{rest}", self.net_name(id)),
                Err(_) => c.to_string(),
            },
            None => c.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::id_after;

    #[test]
    fn object_ids_come_out_of_chain_names() {
        assert_eq!(id_after("svc12_b3", "svc"), Some((12, "_b3".into())));
        assert_eq!(id_after("pol4", "pol"), Some((4, String::new())));
        assert_eq!(id_after("svc_refuse", "svc"), None);
        assert_eq!(id_after("nodeports", "n"), None);
        assert_eq!(id_after("n7_out", "n"), Some((7, "_out".into())));
    }
}
