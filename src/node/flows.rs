//! `knit inspect SANDBOX --flows`: the sandbox's connections as the node's conntrack has
//! them (over netlink, not the `conntrack` binary): both tuples, the NAT applied, TCP
//! state, seconds left. The node sees every flow a sandbox has with anything outside its
//! own network (forwarded, DNATed to it, to the node itself).

use crate::conntrack::{Entry, Tuple};
use crate::error::Result;
use crate::model::SandboxRef;
use crate::node::Node;
use serde::Serialize;
use std::net::IpAddr;

#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    pub proto: String,
    /// `SRC:SPORT -> DST:DPORT` as the first packet had it.
    pub original: String,
    /// The answer's direction, after NAT.
    pub reply: String,
    /// `dnat`, `snat`, `dnat+snat` or empty.
    pub nat: String,
    /// TCP's conntrack state (ESTABLISHED, TIME_WAIT, ...); empty for other protocols.
    pub state: String,
    pub assured: bool,
    pub timeout_s: Option<u32>,
}

/// Which flows to show.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowFilter {
    pub port: Option<u16>,
    /// IANA protocol number.
    pub proto: Option<u8>,
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match (ip, port) {
        (ip, 0) => ip.to_string(),
        (IpAddr::V6(a), p) => format!("[{a}]:{p}"),
        (IpAddr::V4(a), p) => format!("{a}:{p}"),
    }
}

fn tuple(t: &Tuple) -> String {
    format!(
        "{} -> {}",
        endpoint(t.src, t.sport),
        endpoint(t.dst, t.dport)
    )
}

pub fn view(e: &Entry) -> FlowView {
    let nat = match (e.dnatted(), e.snatted()) {
        (true, true) => "dnat+snat",
        (true, false) => "dnat",
        (false, true) => "snat",
        (false, false) => "",
    };
    FlowView {
        proto: proto_name(e.orig.proto),
        original: tuple(&e.orig),
        reply: tuple(&e.reply),
        nat: nat.into(),
        state: e.info.tcp_state_name().unwrap_or_default().into(),
        assured: e.info.assured(),
        timeout_s: e.info.timeout,
    }
}

/// Whether a flow touches one of `ips` (in either direction, before or after NAT) and
/// passes the filter.
pub fn concerns(e: &Entry, ips: &[IpAddr], f: &FlowFilter) -> bool {
    let mine = [e.orig.src, e.orig.dst, e.reply.src, e.reply.dst]
        .iter()
        .any(|a| ips.contains(a));
    let port_ok = f
        .port
        .is_none_or(|p| [e.orig.sport, e.orig.dport, e.reply.sport, e.reply.dport].contains(&p));
    mine && port_ok && f.proto.is_none_or(|p| e.orig.proto == p)
}

impl Node {
    pub fn sandbox_flows(&self, sandbox: &SandboxRef, f: &FlowFilter) -> Result<Vec<FlowView>> {
        let ips: Vec<IpAddr> = self
            .store
            .attachments_of_sandbox(&sandbox.key())?
            .iter()
            .flat_map(|a| a.ips.iter().map(|i| i.addr()))
            .collect();
        if ips.is_empty() {
            return Ok(vec![]);
        }
        Ok(crate::conntrack::dump()?
            .iter()
            .filter(|e| concerns(e, &ips, f))
            .map(view)
            .collect())
    }
}
