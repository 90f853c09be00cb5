//! doctor's two ends: what SRC and DST name (a sandbox, the node, a service, a published
//! `node:PORT`, or a plain address), and, for DST, the translation on the way (the DNAT of
//! a published port or a service) and what finally receives the packet.

use super::{Halt, Report, Walk};
use crate::error::Error;
use crate::model::SandboxRef;
use crate::netns::Netns;
use crate::node::Node;
use crate::store::{Attachment, Service};
use std::net::IpAddr;

/// Who sends.
pub enum Source {
    /// A sandbox and its knit attachments.
    Sandbox {
        key: String,
        ns: Netns,
        atts: Vec<Attachment>,
    },
    /// The node namespace itself.
    Node,
    /// A host outside the node (the packet arrives on the node's uplink).
    Outside(IpAddr),
}

/// What the packet is sent to before any translation.
pub enum Via {
    /// The final address itself.
    Direct,
    /// A published port of the node, DNATed to a sandbox.
    Published(crate::model::PortMapping),
    /// A service's address (VIP or node port), DNATed to one of its backends.
    Service(Service),
}

/// What receives the packet in the end.
pub enum End {
    Sandbox { att: Box<Attachment> },
    Node,
    Outside,
}

pub struct Dest {
    /// The address the source sends to.
    pub ip: IpAddr,
    pub port: Option<(u16, u8)>,
    pub via: Via,
    pub end: End,
    /// The address and port that receive the packet, after translation.
    pub final_ip: IpAddr,
    pub final_port: Option<(u16, u8)>,
    /// DST was a sandbox's name (the source would resolve it by DNS).
    pub by_name: Option<String>,
    /// Every backend of a service (sandbox attachment or bare address, port).
    pub backends: Vec<(Option<Attachment>, IpAddr, u16)>,
}

pub fn proto_name(p: u8) -> &'static str {
    if p == 17 { "udp" } else { "tcp" }
}

/// `HOST[:PORT[/tcp|udp]]` → (host, port); IPv6 as `[ADDR]:PORT`, or bare without a port.
pub(in crate::node) fn split(raw: &str) -> crate::error::Result<(&str, Option<(u16, u8)>)> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(Error::invalid("DST", raw, "expected [IPV6]:PORT")),
            },
            None => return Err(Error::invalid("DST", raw, "expected [IPV6]:PORT")),
        }
    } else if raw.matches(':').count() > 1 {
        // A bare IPv6 address: a port needs the brackets.
        (raw, None)
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    let Some(p) = port else {
        return Ok((host, None));
    };
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let n: u16 = num
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::invalid("DST", raw, "the port must be 1-65535"))?;
    let proto = match proto {
        "tcp" => 6,
        "udp" => 17,
        other => {
            return Err(Error::invalid(
                "DST",
                raw,
                format!("protocol {other:?}: expected tcp or udp"),
            ));
        }
    };
    Ok((host, Some((n, proto))))
}

/// The address of `atts` to use: one on a network shared with `near`, else the first; of
/// the family `v4` when given.
fn pick_ip(
    atts: &[Attachment],
    near: &[Attachment],
    v4: Option<bool>,
) -> Option<(Attachment, IpAddr)> {
    let fam_ok = |ip: &IpAddr| v4.is_none_or(|v| ip.is_ipv4() == v);
    let with_ip = |a: &Attachment| {
        let ips: Vec<IpAddr> = a.ips.iter().map(|i| i.addr()).filter(fam_ok).collect();
        ips.iter()
            .find(|i| i.is_ipv4())
            .or(ips.first())
            .map(|ip| (a.clone(), *ip))
    };
    atts.iter()
        .filter(|a| near.iter().any(|s| s.network_id == a.network_id))
        .chain(atts.iter())
        .find_map(with_ip)
}

impl Node {
    /// The attachment holding `ip`, if a knit sandbox has it.
    pub(in crate::node) fn owner_of(&self, ip: IpAddr) -> crate::error::Result<Option<Attachment>> {
        Ok(self
            .store
            .all_attachments()?
            .into_iter()
            .find(|a| a.ips.iter().any(|i| i.addr() == ip)))
    }

    pub(in crate::node) fn source(&self, raw: &str, r: &mut Report) -> Walk<Source> {
        if raw == "node" {
            r.pass("source", "the node namespace");
            return Ok(Source::Node);
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            match self.owner_of(ip)? {
                Some(a) => return self.source(&a.sandbox, r),
                None => {
                    r.pass("source", format!("{ip}, a host outside the node"));
                    return Ok(Source::Outside(ip));
                }
            }
        }
        let sref = SandboxRef::parse(raw)?;
        let key = sref.key();
        let atts = self.store.attachments_of_sandbox(&key)?;
        let path = atts
            .first()
            .map(|a| a.netns_path.clone())
            .unwrap_or_else(|| sref.path());
        let Ok(ns) = Netns::open(&path) else {
            if atts.is_empty() {
                // Neither knit nor the kernel knows the name: bad input, not a broken path.
                return Err(Error::not_found("sandbox or namespace", raw).into());
            }
            return Err(r.fail(
                "source",
                format!("{raw}: its network namespace {path} is gone"),
                "knit reconcile (it forgets attachments of namespaces that are gone), then attach the sandbox again",
            ));
        };
        if atts.is_empty() {
            return Err(r.fail(
                "source",
                format!("{raw} is not attached to any knit network"),
                format!("knit attach NETWORK {raw}"),
            ));
        }
        let nets: Vec<String> = atts.iter().map(|a| a.network.clone()).collect();
        r.pass("source", format!("{raw} on {}", nets.join(", ")));
        Ok(Source::Sandbox { key, ns, atts })
    }

    /// A service's backends, resolved to addresses of `v4`'s family.
    fn backends(
        &self,
        svc: &Service,
        v4: bool,
    ) -> crate::error::Result<Vec<(Option<Attachment>, IpAddr, u16)>> {
        use crate::model::service::Target;
        let mut out = vec![];
        for b in &svc.backends {
            match &b.spec.target {
                Target::Sandbox(name) => {
                    let atts = self.store.attachments_of_sandbox(name)?;
                    if let Some((a, ip)) = pick_ip(&atts, &[], Some(v4)) {
                        out.push((Some(a), ip, b.spec.port));
                    }
                }
                Target::Ip(ip) => out.push((self.owner_of(*ip)?, *ip, b.spec.port)),
            }
        }
        Ok(out)
    }

    pub(in crate::node) fn destination(
        &self,
        raw: &str,
        src: &Source,
        r: &mut Report,
    ) -> Walk<Dest> {
        let (host, port) = split(raw)?;
        let near: &[Attachment] = match src {
            Source::Sandbox { atts, .. } => atts,
            _ => &[],
        };
        let services = self.store.services()?;
        let node_local = |ip: IpAddr| crate::netlink::Netlink::open()?.is_local(ip);
        // The node, or one of its own addresses: a published port or a node port there.
        let node_ip = match host.parse::<IpAddr>() {
            Ok(ip) if self.owner_of(ip)?.is_none() && node_local(ip)? => Some(ip),
            Ok(_) => None,
            Err(_) if host == "node" => Some(self.node_address(src)?),
            Err(_) => None,
        };
        if let Some(ip) = node_ip {
            if let Some((p, proto)) = port {
                let published = self.store.all_attachments()?.into_iter().find_map(|a| {
                    let m = a.ports.iter().find(|m| {
                        m.host_port == p
                            && crate::nft::wire::proto_num(m.proto) == proto
                            && m.host_ip.is_none_or(|h| h == ip)
                            && m.container_ip.is_ipv4() == ip.is_ipv4()
                    })?;
                    Some((m.clone(), a))
                });
                if let Some((m, att)) = published {
                    r.pass(
                        "published port",
                        format!(
                            "{ip}:{p}/{} is published to {} {}:{} (DNAT)",
                            proto_name(proto),
                            att.sandbox,
                            m.container_ip,
                            m.container_port
                        ),
                    );
                    let (final_ip, fport) = (m.container_ip, m.container_port);
                    return Ok(Dest {
                        ip,
                        port,
                        via: Via::Published(m),
                        end: End::Sandbox { att: Box::new(att) },
                        final_ip,
                        final_port: Some((fport, proto)),
                        by_name: None,
                        backends: vec![],
                    });
                }
                if let Some(svc) = services.iter().find(|s| {
                    s.node_port == Some(p) && crate::nft::wire::proto_num(s.vip.proto) == proto
                }) {
                    return self.through_service(svc.clone(), ip, port, r);
                }
            }
            r.pass("destination", format!("{ip} (the node)"));
            return Ok(Dest {
                ip,
                port,
                via: Via::Direct,
                end: End::Node,
                final_ip: ip,
                final_port: port,
                by_name: None,
                backends: vec![],
            });
        }
        // A service by name or by its VIP.
        let svc = match host.parse::<IpAddr>() {
            Ok(ip) => services.iter().find(|s| {
                s.vip.ip == ip
                    && port.is_none_or(|(p, pr)| {
                        p == s.vip.port && pr == crate::nft::wire::proto_num(s.vip.proto)
                    })
            }),
            Err(_) => services.iter().find(|s| s.name == host),
        };
        let sandbox_named = host.parse::<IpAddr>().is_err()
            && !self
                .store
                .attachments_of_sandbox(&SandboxRef::parse(host)?.key())?
                .is_empty();
        if let Some(svc) = svc.filter(|_| !sandbox_named) {
            let port = port.or(Some((
                svc.vip.port,
                crate::nft::wire::proto_num(svc.vip.proto),
            )));
            return self.through_service(svc.clone(), svc.vip.ip, port, r);
        }
        // A sandbox by address or name, or an outside address.
        let (att, ip, by_name) = match host.parse::<IpAddr>() {
            Ok(ip) => (self.owner_of(ip)?, ip, None),
            Err(_) => {
                let key = SandboxRef::parse(host)?.key();
                let atts = self.store.attachments_of_sandbox(&key)?;
                let (a, ip) = pick_ip(&atts, near, None)
                    .ok_or_else(|| Error::not_found("sandbox or service", host))?;
                (Some(a), ip, Some(key))
            }
        };
        let end = match att {
            Some(att) => {
                r.pass("destination", format!("{ip} (sandbox {})", att.sandbox));
                End::Sandbox { att: Box::new(att) }
            }
            None => {
                r.pass("destination", format!("{ip} (not a knit sandbox)"));
                End::Outside
            }
        };
        Ok(Dest {
            ip,
            port,
            via: Via::Direct,
            end,
            final_ip: ip,
            final_port: port,
            by_name,
            backends: vec![],
        })
    }

    fn through_service(
        &self,
        svc: Service,
        ip: IpAddr,
        port: Option<(u16, u8)>,
        r: &mut Report,
    ) -> Walk<Dest> {
        let backends = self.backends(&svc, ip.is_ipv4())?;
        let shown = format!(
            "service {} ({}:{}/{})",
            svc.name,
            svc.vip.ip,
            svc.vip.port,
            svc.vip.proto.as_str()
        );
        let Some((att, bip, bport)) = backends.first().cloned() else {
            // No backend: knit refuses at once (doctor says so; trace shows the refusal).
            let proto = port.map_or(crate::nft::wire::proto_num(svc.vip.proto), |p| p.1);
            r.pass("service", format!("{shown}: no backends"));
            return Ok(Dest {
                ip,
                port,
                via: Via::Service(svc),
                end: End::Node,
                final_ip: ip,
                final_port: Some((port.map_or(0, |p| p.0), proto)),
                by_name: None,
                backends: vec![],
            });
        };
        let list: Vec<String> = backends
            .iter()
            .map(|(a, i, p)| match a {
                Some(a) => format!("{} {i}:{p}", a.sandbox),
                None => format!("{i}:{p}"),
            })
            .collect();
        r.pass("service", format!("{shown} → {} (DNAT)", list.join(", ")));
        let proto = port.map_or(crate::nft::wire::proto_num(svc.vip.proto), |p| p.1);
        let end = match att {
            Some(att) => End::Sandbox { att: Box::new(att) },
            None => End::Outside,
        };
        Ok(Dest {
            ip,
            port,
            via: Via::Service(svc),
            end,
            final_ip: bip,
            final_port: Some((bport, proto)),
            by_name: None,
            backends,
        })
    }

    /// The node address a source would use for `node`: its gateway on a shared network,
    /// else the node's address towards the source.
    fn node_address(&self, src: &Source) -> Walk<IpAddr> {
        if let Source::Sandbox { atts, .. } = src {
            let nets = self.store.networks()?;
            for a in atts {
                let gw = nets
                    .iter()
                    .find(|n| n.id == a.network_id)
                    .and_then(|n| n.subnets.iter().map(|s| s.gateway).find(|g| g.is_ipv4()));
                if let Some(gw) = gw {
                    return Ok(gw);
                }
            }
        }
        let mut nl = crate::netlink::Netlink::open()?;
        let probe: IpAddr = match src {
            Source::Outside(ip) => *ip,
            _ => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        };
        nl.route_get(probe)?
            .and_then(|l| l.prefsrc)
            .map(Ok)
            .unwrap_or_else(|| {
                Err(Halt::Failed(Error::not_found(
                    "address of the node",
                    "node",
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn destinations_split_into_host_and_port() {
        assert_eq!(split("web").unwrap(), ("web", None));
        assert_eq!(split("web:80").unwrap(), ("web", Some((80, 6))));
        assert_eq!(split("node:53/udp").unwrap(), ("node", Some((53, 17))));
        assert_eq!(split("fd00::1").unwrap(), ("fd00::1", None));
        assert_eq!(split("[fd00::1]").unwrap(), ("fd00::1", None));
        assert_eq!(split("[fd00::1]:443").unwrap(), ("fd00::1", Some((443, 6))));
        assert!(split("web:0").is_err());
        assert!(split("web:80/icmp").is_err());
        assert!(split("[fd00::1]443").is_err());
    }
}
