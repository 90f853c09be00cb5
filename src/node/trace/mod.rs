//! `knit trace SRC DST[:PORT[/tcp|udp]]`: sends one real probe from SRC with nftables
//! tracing enabled for that flow only, in every namespace on its path (source, node,
//! destination sandboxes), and tells the packet's way: the hooks, tables, chains and rules
//! it crossed, in order, with verdicts, the NAT applied, the knit object behind each knit
//! rule, and where it was delivered or dropped.

mod describe;
mod passes;
mod probe;
mod ruleset;
mod session;

use crate::error::{Error, Result};
use crate::model::SandboxRef;
use crate::netns::Netns;
use crate::node::Node;
use crate::node::doctor::ends::{End, Source};
use serde::Serialize;
use session::Place;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct Hop {
    /// The netfilter hook, as the seeds' table names them (PREROUTING, FORWARD, ...).
    pub hook: String,
    pub table: String,
    pub chain: String,
    /// The rule's text (None: the chain's policy or its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub verdict: String,
    /// The knit object that made the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knit: Option<String>,
    /// NAT seen since the previous hop (the headers changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Pass {
    pub namespace: String,
    /// "probe" or "reply".
    pub direction: String,
    /// The packet as it entered this namespace's hooks.
    pub packet: String,
    /// NAT applied since the previous namespace (e.g. masquerade on the way out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<String>,
    pub hops: Vec<Hop>,
}

#[derive(Debug, Serialize)]
pub struct Trace {
    pub source: String,
    pub destination: String,
    pub probe: String,
    pub passes: Vec<Pass>,
    /// delivered, refused, dropped or unanswered.
    pub result: String,
    pub detail: String,
}

/// The node's address a host outside reaches directly (on a link they share), as seen
/// from the host's namespace (`nl`).
fn node_address_from(nl: &mut crate::netlink::Netlink) -> Result<Option<std::net::IpAddr>> {
    let mut node = crate::netlink::Netlink::open()?;
    for (_, net) in node.addresses()? {
        let ip = net.addr();
        if ip.is_loopback() || matches!(ip, std::net::IpAddr::V6(v) if v.segments()[0] == 0xfe80) {
            continue;
        }
        if nl
            .route_get(ip)?
            .is_some_and(|l| l.route.gateway.is_none() && !l.local)
        {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

impl Node {
    /// The namespace SRC names: `node`, a sandbox, or any named network namespace (an
    /// outside host of a lab).
    fn trace_source(&self, raw: &str) -> Result<(Netns, Vec<crate::store::Attachment>)> {
        if raw == "node" {
            return Ok((Netns::current()?, vec![]));
        }
        let name = match raw.parse::<std::net::IpAddr>() {
            Ok(ip) => self.owner_of(ip)?.map(|a| a.sandbox).ok_or_else(|| {
                Error::invalid(
                    "SRC",
                    raw,
                    "knit sends the probe from a namespace: name a sandbox, a network namespace or `node`",
                )
            })?,
            Err(_) => raw.to_string(),
        };
        let sref = SandboxRef::parse(&name)?;
        let atts = self.store.attachments_of_sandbox(&sref.key())?;
        let path = atts
            .first()
            .map(|a| a.netns_path.clone())
            .unwrap_or_else(|| sref.path());
        let ns = Netns::open(&path).map_err(|_| Error::not_found("network namespace", raw))?;
        Ok((ns, atts))
    }

    pub fn trace(&self, src: &str, dst_raw: &str, limit: Duration) -> Result<Trace> {
        // Termination signals wait while the trace tables exist: keep that short.
        if limit > Duration::from_secs(10) || limit.is_zero() {
            return Err(Error::invalid(
                "--timeout-ms",
                limit.as_millis(),
                "between 1 and 10000",
            ));
        }
        let (src_ns, src_atts) = self.trace_source(src)?;
        let node_ns = Netns::current()?;
        let from_node = src_ns.id()? == node_ns.id()?;
        // What DST is, resolved as doctor does (the steps it records are not needed).
        let mut scratch = super::doctor::Report::default();
        let mut dst_owned = dst_raw.to_string();
        let as_source = if from_node {
            Source::Node
        } else if src_atts.is_empty() {
            // An outside host: its address towards the node, by its own routing.
            let mut nl = crate::netlink::Netlink::open_in(&src_ns)?;
            let (host, port) = crate::node::doctor::ends::split(dst_raw)?;
            if host == "node" {
                let ip = node_address_from(&mut nl)?.ok_or_else(|| {
                    Error::invalid(
                        "DST",
                        dst_raw,
                        "the source has no route to any of the node's addresses",
                    )
                })?;
                let proto = match port {
                    Some((_, 17)) => "/udp",
                    _ => "",
                };
                dst_owned = match (ip, port) {
                    (std::net::IpAddr::V6(v6), Some((p, _))) => format!("[{v6}]:{p}{proto}"),
                    (ip, Some((p, _))) => format!("{ip}:{p}{proto}"),
                    (ip, None) => ip.to_string(),
                };
            }
            let probe_ip = crate::node::doctor::ends::split(&dst_owned)?
                .0
                .parse()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let own = nl.route_get(probe_ip)?.and_then(|l| l.prefsrc);
            Source::Outside(own.unwrap_or(probe_ip))
        } else {
            Source::Sandbox {
                key: src.to_string(),
                ns: Netns::open(src_ns.path())?,
                atts: src_atts.clone(),
            }
        };
        let dst = match self.destination(&dst_owned, &as_source, &mut scratch) {
            Ok(d) => d,
            Err(super::doctor::Halt::Failed(e)) => return Err(e),
            Err(_) => return Err(Error::invalid("DST", dst_raw, "cannot be resolved")),
        };
        let kind = match dst.port {
            Some((_, 17)) => probe::Kind::Udp,
            Some(_) => probe::Kind::Tcp,
            None => probe::Kind::Icmp,
        };
        // The places on the path, in the probe's order.
        let mut places = vec![Place {
            label: if from_node {
                "node".into()
            } else {
                src.to_string()
            },
            ns: src_ns,
            node: from_node,
        }];
        if !from_node {
            places.push(Place {
                label: "node".into(),
                ns: node_ns,
                node: true,
            });
        }
        let mut ends: Vec<(String, String)> = dst
            .backends
            .iter()
            .filter_map(|(a, _, _)| {
                a.as_ref()
                    .map(|a| (a.sandbox.clone(), a.netns_path.clone()))
            })
            .collect();
        if let End::Sandbox { att } = &dst.end {
            ends.insert(0, (att.sandbox.clone(), att.netns_path.clone()));
        }
        for (label, path) in ends {
            let Ok(ns) = Netns::open(&path) else { continue };
            let mut seen = false;
            for p in &places {
                seen |= p.ns.id()? == ns.id()?;
            }
            if !seen {
                places.push(Place {
                    label,
                    ns,
                    node: false,
                });
            }
        }
        let probe = probe::Probe {
            kind,
            dst: dst.ip,
            port: dst.port.map_or(0, |p| p.0),
            tag: probe::fresh_tag(),
        };
        // Listen first, then mark, then send: no event is missed.
        let mut listeners = vec![];
        for p in &places {
            listeners.push(
                p.ns.run(crate::nft::trace::Listener::open)?
                    .map_err(|e| Error::io("subscribe to nftables trace events", e))?,
            );
        }
        let session = session::Session::start(&places, &probe)?;
        let (outcome, held) = places[0]
            .ns
            .run(|| probe::send(&probe, limit))?
            .map_err(|e| Error::io("send the probe", e))?;
        let events = crate::nft::trace::collect(
            &mut listeners,
            // The kernel sends trace events as the packets pass: by the time the probe's
            // answer (or its time limit) is in, they are queued; a short quiet spell
            // catches the last ones.
            Duration::from_millis(100),
            Instant::now() + Duration::from_secs(2),
        );
        let mut listings = vec![];
        for i in 0..places.len() {
            listings.push(ruleset::Ruleset::parse(&session.listing(i)?));
        }
        drop(session);
        drop(held);
        let catalog = describe::Catalog {
            nets: self.store.networks()?,
            services: self.store.services()?,
            atts: self.store.all_attachments()?,
            rules: self.store.rules()?,
        };
        let labels: Vec<String> = places.iter().map(|p| p.label.clone()).collect();
        let passes = passes::build(&events, &labels, &listings, &catalog, &probe, &places);
        let (result, detail) = passes::outcome(&outcome, &passes, &dst, &labels);
        Ok(Trace {
            source: src.to_string(),
            destination: dst_raw.to_string(),
            probe: format!(
                "{} to {}{}",
                kind.name(),
                dst.ip,
                dst.port.map(|p| format!(":{}", p.0)).unwrap_or_default()
            ),
            passes,
            result,
            detail,
        })
    }
}
