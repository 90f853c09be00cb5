//! doctor's policy step: whether knit's policy lets a new connection from SRC to DST
//! through, by the rules as recorded (the same selectors the set elements are built from).

use crate::model::policy::{Action, Default, Direction, Rule, Selector};
use crate::store::{Attachment, Network};
use std::net::IpAddr;

/// Whether `sel` names this side of a flow.
fn matches(sel: &Selector, att: Option<&Attachment>, ip: IpAddr) -> bool {
    match sel {
        Selector::Sandbox(name) => att.is_some_and(|a| &a.sandbox == name),
        Selector::Labels(want) => {
            att.is_some_and(|a| want.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
        }
        Selector::Cidr { net, except } => {
            net.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
        }
    }
}

/// A rule's port against the probe's (None: no port, e.g. ping).
fn port_ok(rule: &Rule, port: Option<(u16, u8)>) -> bool {
    match (&rule.spec.port, port) {
        (None, _) => true,
        (Some(r), Some((p, proto))) => {
            let number = match r.proto {
                crate::model::Proto::Tcp => 6,
                crate::model::Proto::Udp => 17,
                crate::model::Proto::Sctp => 132,
            };
            number == proto && r.lo <= p && p <= r.hi
        }
        (Some(_), None) => false,
    }
}

/// The flow as doctor sees it.
pub struct Flow<'a> {
    pub src: Option<&'a Attachment>,
    pub src_ip: IpAddr,
    pub dst: Option<&'a Attachment>,
    pub dst_ip: IpAddr,
    pub port: Option<(u16, u8)>,
}

/// Ok(description) when policy lets the flow through; Err((cause, fix)) when it does not.
pub fn verdict(
    f: &Flow,
    src_net: Option<&Network>,
    dst_net: Option<&Network>,
    rules: &[Rule],
) -> Result<String, (String, String)> {
    let allowed = |net: &Network, dir: Direction| {
        rules.iter().any(|r| {
            r.network_id == net.id
                && r.spec.dir == dir
                && r.spec.action == Action::Allow
                && matches(&r.spec.from, f.src, f.src_ip)
                && matches(&r.spec.to, f.dst, f.dst_ip)
                && port_ok(r, f.port)
        })
    };
    let isolated = |net: &Network, dir: Direction, att: Option<&Attachment>, ip: IpAddr| {
        rules.iter().any(|r| {
            r.network_id == net.id
                && r.spec.dir == dir
                && r.spec.action == Action::Isolate
                && matches(&r.spec.to, att, ip)
        })
    };
    let port = f
        .port
        .map(|(p, proto)| format!(" --port {p}/{}", if proto == 17 { "udp" } else { "tcp" }))
        .unwrap_or_default();
    let side = |a: Option<&Attachment>, ip: IpAddr| a.map_or(ip.to_string(), |a| a.sandbox.clone());
    let mut said = vec![];
    let src_name = side(f.src, f.src_ip);
    if let (Some(src_net), Some(src)) = (src_net, f.src)
        && (src_net.egress == Default::Deny
            || isolated(src_net, Direction::Egress, Some(src), f.src_ip))
    {
        if !allowed(src_net, Direction::Egress) {
            return Err((
                format!(
                    "network {} denies new connections from its sandboxes by default (egress), and no rule allows {} -> {}",
                    src_net.name,
                    src.sandbox,
                    side(f.dst, f.dst_ip)
                ),
                format!(
                    "knit policy allow {} --egress --from {} --to {}{port}",
                    src_net.name,
                    src.sandbox,
                    side(f.dst, f.dst_ip)
                ),
            ));
        }
        said.push(format!("egress allowed by a rule on {}", src_net.name));
    }
    if let (Some(net), Some(d)) = (dst_net, f.dst)
        && (net.policy == Default::Deny || isolated(net, Direction::Ingress, Some(d), f.dst_ip))
    {
        if !allowed(net, Direction::Ingress) {
            return Err((
                format!(
                    "network {} denies new connections to its sandboxes by default (ingress), and no rule allows {} -> {}",
                    net.name, src_name, d.sandbox
                ),
                format!(
                    "knit policy allow {} --from {} --to {}{port}",
                    net.name, src_name, d.sandbox
                ),
            ));
        }
        said.push(format!("ingress allowed by a rule on {}", net.name));
    }
    Ok(if said.is_empty() {
        "no policy restricts this flow".into()
    } else {
        said.join("; ")
    })
}

/// The allow rule of network `net_id` in direction `dir` that lets this flow through (the
/// one `knit trace` names when a policy chain returned).
pub fn allowing_rule<'a>(
    f: &Flow,
    rules: &'a [Rule],
    net_id: i64,
    dir: Direction,
) -> Option<&'a Rule> {
    rules.iter().find(|r| {
        r.network_id == net_id
            && r.spec.dir == dir
            && r.spec.action == Action::Allow
            && matches(&r.spec.from, f.src, f.src_ip)
            && matches(&r.spec.to, f.dst, f.dst_ip)
            && port_ok(r, f.port)
    })
}

/// A rule as `knit policy allow` would be written for it.
pub fn rule_text(r: &Rule) -> String {
    let dir = match r.spec.dir {
        Direction::Ingress => "",
        Direction::Egress => " --egress",
    };
    let port = r
        .spec
        .port
        .as_ref()
        .map(|p| format!(" --port {p}"))
        .unwrap_or_default();
    format!(
        "rule {}: knit policy allow {}{dir} --from {} --to {}{port}",
        r.id, r.network, r.spec.from, r.spec.to
    )
}
