//! From raw trace events to the packet's way: events grouped per packet and namespace,
//! ordered along the path (the probe from the source on, then the answer back), each event
//! named by its hook, rule text and knit object, NAT read off headers that changed, and the
//! verdict on the whole: delivered, refused, dropped (where, by what) or unanswered.

use super::describe::Catalog;
use super::probe::{Kind, Outcome, Probe};
use super::ruleset::Ruleset;
use super::session::Place;
use super::{Hop, Pass};
use crate::nft::trace::{Event, Headers, Kind as EvKind, family_name};
use crate::node::doctor::ends::{Dest, End};
use std::collections::HashMap;

/// `IP:PORT`, with brackets around IPv6.
fn sock(ip: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

fn show(h: &Headers) -> String {
    match h.proto {
        6 | 17 => {
            let p = if h.proto == 6 { "tcp" } else { "udp" };
            let flags = match (h.proto, h.flags & 0x12, h.flags & 0x04) {
                (6, _, 4) => " RST",
                (6, 0x12, _) => " SYN-ACK",
                (6, 0x02, _) => " SYN",
                _ => "",
            };
            format!(
                "{p} {} → {}{flags}",
                sock(h.src, h.sport),
                sock(h.dst, h.dport)
            )
        }
        1 | 58 => {
            let what = if matches!(h.flags, 8 | 128) {
                "echo request"
            } else {
                "echo reply"
            };
            format!("icmp {} → {} {what}", h.src, h.dst)
        }
        _ => format!("{} → {}", h.src, h.dst),
    }
}

/// What changed between two views of one packet.
fn nat(before: &Headers, after: &Headers) -> Option<String> {
    let mut out = vec![];
    if (before.dst, before.dport) != (after.dst, after.dport) {
        out.push(format!(
            "destination {} → {}",
            sock(before.dst, before.dport),
            sock(after.dst, after.dport)
        ));
    }
    if (before.src, before.sport) != (after.src, after.sport) {
        out.push(format!(
            "source {} → {}",
            sock(before.src, before.sport),
            sock(after.src, after.sport)
        ));
    }
    (!out.is_empty()).then(|| out.join(", "))
}

fn is_probe(h: &Headers, p: &Probe) -> bool {
    match p.kind {
        Kind::Icmp => matches!(h.flags, 8 | 128),
        _ => h.sport == p.tag,
    }
}

fn links(place: &Place) -> HashMap<u32, String> {
    crate::netlink::Netlink::open_in(&place.ns)
        .and_then(|mut nl| nl.links())
        .map(|ls| ls.into_iter().map(|l| (l.index, l.name)).collect())
        .unwrap_or_default()
}

pub fn build(
    events: &[(usize, Event)],
    labels: &[String],
    listings: &[Ruleset],
    catalog: &Catalog,
    probe: &Probe,
    places: &[Place],
) -> Vec<Pass> {
    // One group per (namespace, packet), in the order they first showed up.
    let mut groups: Vec<(usize, u32, Vec<&Event>)> = vec![];
    // Only the probe and its answer: other packets marked for tracing (a user's own
    // trace rules, another trace running) are not part of this one.
    let ours = |h: &Headers| h.sport == probe.tag || h.dport == probe.tag;
    let foreign: std::collections::HashSet<(usize, u32)> = events
        .iter()
        .filter(|(_, e)| e.headers.is_some_and(|h| !ours(&h)))
        .map(|(i, e)| (*i, e.id))
        .collect();
    for (i, e) in events
        .iter()
        .filter(|(i, e)| !foreign.contains(&(*i, e.id)))
    {
        match groups.iter_mut().find(|g| g.0 == *i && g.1 == e.id) {
            Some(g) => g.2.push(e),
            None => groups.push((*i, e.id, vec![e])),
        }
    }
    let dir = |g: &(usize, u32, Vec<&Event>)| {
        g.2.iter()
            .find_map(|e| e.headers)
            .is_none_or(|h| is_probe(&h, probe))
    };
    // The probe along the path, then the answer back along it.
    groups.sort_by_key(|g| {
        if dir(g) {
            (0, g.0 as i64)
        } else {
            (1, -(g.0 as i64))
        }
    });
    let link_names: Vec<HashMap<u32, String>> = places.iter().map(links).collect();
    let mut passes = vec![];
    let mut last_seen: Option<Headers> = None;
    for g in &groups {
        let (place, forward) = (g.0, dir(g));
        let first = g.2.iter().find_map(|e| e.headers);
        let iif =
            g.2.iter()
                .find_map(|e| e.iif)
                .and_then(|i| link_names[place].get(&i).cloned());
        let mut packet = first.as_ref().map_or("?".into(), show);
        if let Some(i) = iif {
            packet += &format!(", in on {i}");
        }
        let pass_nat = match (forward, last_seen, first) {
            (true, Some(a), Some(b)) if is_probe(&a, probe) => nat(&a, &b),
            _ => None,
        };
        let mut hops = vec![];
        let mut hook = String::new();
        let mut seen = first;
        let mut pending: Option<String> = None;
        for e in &g.2 {
            let fam = family_name(e.family);
            if let Some(h) = listings[place].hook(fam, &e.table, &e.chain) {
                hook = h.to_uppercase();
            }
            // Carried to the next hop shown: the events that carry headers are often
            // the ones skipped below.
            if let (Some(a), Some(b)) = (seen, e.headers) {
                pending = pending.or(nat(&a, &b));
            }
            if e.headers.is_some() {
                seen = e.headers;
            }
            // The trace's own table marks the packet: not part of its way. Events that
            // only say a chain was entered, or ran out, add nothing to the jumps and
            // verdicts around them.
            let entered = e.kind == EvKind::Rule
                && e.handle.is_none()
                && e.verdict == Some(crate::nft::trace::Verdict::Continue);
            if e.table.starts_with(crate::nft::trace::TABLE_PREFIX)
                || entered
                || e.kind == EvKind::Return
            {
                continue;
            }
            let rule = match (e.kind, e.handle) {
                (EvKind::Rule, Some(h)) => {
                    listings[place].rule(fam, &e.table, &e.chain, h).cloned()
                }
                _ => None,
            };
            let v = e.verdict.as_ref().map_or("?".into(), |v| v.to_string());
            let verdict = match e.kind {
                EvKind::Policy => format!("policy {v}"),
                EvKind::Return => "return".into(),
                EvKind::Rule => v.clone(),
            };
            let knit = (e.table == "knit")
                .then(|| {
                    let comment = rule.as_ref().and_then(|r| r.1.as_deref());
                    // The kernel sends the headers once per hook: the latest stand.
                    catalog.object(&e.chain, comment, &v, seen.as_ref())
                })
                .flatten();
            hops.push(Hop {
                hook: hook.clone(),
                table: format!("{fam} {}", e.table),
                chain: e.chain.clone(),
                rule: rule.map(|r| r.0),
                verdict,
                knit,
                nat: pending.take(),
            });
        }
        last_seen = seen.or(last_seen);
        // A retransmission of the probe (or answer) takes the same way again: once is
        // enough.
        let again = passes.iter().any(|p: &Pass| {
            p.namespace == labels[place]
                && (p.direction == "probe") == forward
                && p.packet == packet
                && p.hops.len() == hops.len()
        });
        if again {
            continue;
        }
        passes.push(Pass {
            namespace: labels[place].clone(),
            direction: if forward { "probe" } else { "reply" }.into(),
            packet,
            nat: pass_nat,
            hops,
        });
    }
    // One packet can show up as two traces in one namespace (bridge hooks, then the IP
    // hooks it is handed to): one block.
    let mut merged: Vec<Pass> = vec![];
    for p in passes {
        match merged.last_mut() {
            Some(m) if m.namespace == p.namespace && m.direction == p.direction => {
                let mut hops = p.hops;
                // NAT between the two traces belongs to the first hop after it.
                if let Some(first) = hops.first_mut() {
                    first.nat = first.nat.take().or(p.nat);
                }
                m.hops.extend(hops);
            }
            _ => merged.push(p),
        }
    }
    merged
}

fn dropped(h: &Hop) -> bool {
    h.verdict == "drop" || h.verdict == "policy drop"
}

/// The verdict on the whole trace: (result, detail).
pub fn outcome(o: &Outcome, passes: &[Pass], dst: &Dest, labels: &[String]) -> (String, String) {
    let probe_passes: Vec<&Pass> = passes.iter().filter(|p| p.direction == "probe").collect();
    let last = probe_passes.last();
    let who = match &dst.end {
        End::Sandbox { att } => att.sandbox.clone(),
        End::Node => "the node".into(),
        End::Outside => dst.final_ip.to_string(),
    };
    let at = |p: &Pass, h: &Hop| {
        let what = h.rule.clone().unwrap_or_else(|| h.verdict.clone());
        let knit = h
            .knit
            .as_ref()
            .map(|k| format!(" — {k}"))
            .unwrap_or_default();
        format!(
            "in {}, {} {} {}: `{what}`{knit}",
            p.namespace, h.hook, h.table, h.chain
        )
    };
    match o {
        Outcome::Answered => {
            let reached = last.map_or(who.clone(), |p| p.namespace.clone());
            let reached = if labels.contains(&reached) && reached != labels[0] {
                reached
            } else {
                who
            };
            ("delivered".into(), format!("{reached} answered"))
        }
        Outcome::Refused => {
            // A firewall's `reject` refuses too (a reset or port unreachable of its own).
            for p in &probe_passes {
                if let Some(h) = p
                    .hops
                    .iter()
                    .find(|h| dropped(h) && h.chain != "svc_refuse")
                {
                    return ("refused".into(), format!("rejected {}", at(p, h)));
                }
            }
            let knit = passes
                .iter()
                .flat_map(|p| p.hops.iter())
                .find(|h| h.chain == "svc_refuse");
            match knit {
                Some(h) => (
                    "refused".into(),
                    format!(
                        "knit refused it: {}",
                        h.knit
                            .clone()
                            .unwrap_or_else(|| "a service without backends".into())
                    ),
                ),
                None => (
                    "refused".into(),
                    format!(
                        "{who} refused it (TCP reset / port unreachable): nothing listens on {}{}",
                        dst.final_ip,
                        dst.final_port
                            .map(|p| format!(":{}", p.0))
                            .unwrap_or_default()
                    ),
                ),
            }
        }
        Outcome::Silence | Outcome::Unreachable(_) => {
            for p in &probe_passes {
                if let Some(h) = p.hops.iter().find(|h| dropped(h)) {
                    return ("dropped".into(), at(p, h));
                }
            }
            if let Outcome::Unreachable(why) = o {
                return ("unreachable".into(), why.clone());
            }
            let seen = last.map_or("nowhere".into(), |p| match p.hops.last() {
                Some(h) => format!("{} at {} ({} {})", p.namespace, h.hook, h.table, h.chain),
                None => p.namespace.clone(),
            });
            (
                "unanswered".into(),
                format!(
                    "no answer in time; last seen in {seen}. `knit doctor` checks what nftables does not show (routes, neighbours, rp_filter, listeners)"
                ),
            )
        }
    }
}
