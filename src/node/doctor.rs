//! `knit doctor SRC DST[:PORT[/tcp|udp]]`: walks the path a packet from sandbox SRC to DST
//! takes, asking the kernel at each step (the route SRC picks, the links on the way, the
//! node's forwarding switch, every foreign firewall table's drop policy on the hooks the
//! packet crosses, a listener at the destination) and says which step breaks it, why, and
//! what fixes it. It changes nothing.

use crate::error::{Error, Result};
use crate::model::SandboxRef;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::node::Node;
use crate::store::Attachment;
use serde::Serialize;
use std::net::IpAddr;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: String,
    pub ok: bool,
    pub detail: String,
    /// For a broken step: what fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Diagnosis {
    pub source: String,
    pub destination: String,
    pub healthy: bool,
    pub steps: Vec<Step>,
}

/// Where the probe goes: an address, and the knit sandbox behind it if there is one.
struct Target {
    ip: IpAddr,
    sandbox: Option<String>,
    port: Option<(u16, u8)>,
}

fn ok(step: &str, detail: impl Into<String>) -> Step {
    Step {
        step: step.into(),
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn broken(step: &str, detail: impl Into<String>, fix: impl Into<String>) -> Step {
    Step {
        step: step.into(),
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// `DST[:PORT[/tcp|udp]]`; DST a knit sandbox or an address.
fn parse_target(node: &Node, raw: &str, src_atts: &[Attachment]) -> Result<Target> {
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
            (h.trim_matches(['[', ']']), Some(p))
        }
        _ => (raw, None),
    };
    let port = match port {
        None => None,
        Some(p) => {
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
            Some((n, proto))
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        let sandbox = node
            .store
            .all_attachments()?
            .into_iter()
            .find(|a| a.ips.iter().any(|i| i.addr() == ip))
            .map(|a| a.sandbox);
        return Ok(Target { ip, sandbox, port });
    }
    let key = SandboxRef::parse(host)?.key();
    let atts = node.store.attachments_of_sandbox(&key)?;
    // Its address on a network both share, else its first.
    let shared = atts
        .iter()
        .find(|a| src_atts.iter().any(|s| s.network_id == a.network_id))
        .or(atts.first())
        .ok_or_else(|| Error::not_found("sandbox", host))?;
    let ip = shared
        .ips
        .iter()
        .find(|i| i.addr().is_ipv4())
        .or(shared.ips.first())
        .map(|i| i.addr())
        .ok_or_else(|| Error::not_found("address of sandbox", host))?;
    Ok(Target {
        ip,
        sandbox: Some(key),
        port,
    })
}

/// `table FAMILY NAME` / `chain NAME` / hooks with `policy drop` in an nft listing, for the
/// tables that are not knit's.
fn foreign_drops(listing: &str, hook: &str) -> Vec<String> {
    let (mut table, mut chain) = (String::new(), String::new());
    let mut out = vec![];
    for line in listing.lines() {
        let l = line.trim();
        if let Some(t) = l.strip_prefix("table ") {
            table = t.trim_end_matches(" {").to_string();
        } else if let Some(c) = l.strip_prefix("chain ") {
            chain = c.trim_end_matches(" {").to_string();
        } else if l.contains(&format!("hook {hook} ")) && l.contains("policy drop") {
            let knit = table == "inet knit" || table == "bridge knit";
            if !knit {
                out.push(format!("table {table}, chain {chain}"));
            }
        }
    }
    out
}

/// Whether something in `ns` listens on `port` (`/proc/net/tcp*` or `udp*`).
fn listening(ns: &Netns, port: u16, proto: u8) -> Result<bool> {
    ns.run(move || {
        let files: &[&str] = if proto == 17 {
            &["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
        } else {
            &["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        };
        files.iter().any(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    let local_port = cols
                        .get(1)
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    // TCP: state 0A is LISTEN; UDP sockets are bound (state 07).
                    let state_ok = proto == 17 || cols.get(3) == Some(&"0A");
                    local_port == Some(port) && state_ok
                })
        })
    })
}

impl Node {
    pub fn doctor(&self, src: &str, dst: &str) -> Result<Diagnosis> {
        let src_ref = SandboxRef::parse(src)?;
        let src_atts = self.store.attachments_of_sandbox(&src_ref.key())?;
        let target = parse_target(self, dst, &src_atts)?;
        let mut steps = vec![];
        let done = |steps: Vec<Step>| {
            Ok(Diagnosis {
                source: src.into(),
                destination: dst.into(),
                healthy: steps.iter().all(|s| s.ok),
                steps,
            })
        };
        // 1. The source: attached, namespace there.
        let path = src_atts
            .first()
            .map(|a| a.netns_path.clone())
            .unwrap_or_else(|| src_ref.path());
        let Ok(ns) = Netns::open(&path) else {
            steps.push(broken(
                "source",
                format!("{src}: no network namespace at {path}"),
                format!("create it (`knit sandbox add {src}`) and attach it (`knit attach NETWORK {src}`)"),
            ));
            return done(steps);
        };
        if src_atts.is_empty() {
            steps.push(broken(
                "source",
                format!("{src} is not attached to any knit network"),
                format!("knit attach NETWORK {src}"),
            ));
            return done(steps);
        }
        let nets: Vec<String> = src_atts.iter().map(|a| a.network.clone()).collect();
        steps.push(ok("source", format!("{src} on {}", nets.join(", "))));
        steps.push(ok(
            "destination",
            match &target.sandbox {
                Some(s) => format!("{} (sandbox {s})", target.ip),
                None => format!("{} (not a knit sandbox)", target.ip),
            },
        ));
        // 2. The route the source picks.
        let mut snl = Netlink::open_in(&ns)?;
        let Some(route) = snl.route_to(target.ip)? else {
            let gw = src_atts
                .iter()
                .flat_map(|a| a.ips.iter())
                .find(|i| i.addr().is_ipv4() == target.ip.is_ipv4())
                .map(|_| "its network's gateway".to_string())
                .unwrap_or_else(|| "a gateway".into());
            steps.push(broken(
                "route in source",
                format!("Network is unreachable: {src} has no route to {}", target.ip),
                format!("give {src} a default route via {gw}: `ip -n {src} route add default via GATEWAY` (knit attach adds one unless the sandbox had another)"),
            ));
            return done(steps);
        };
        let links = snl.links()?;
        let oif = route.oif.and_then(|i| links.iter().find(|l| l.index == i));
        let via = route
            .gateway
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        let Some(oif) = oif else {
            steps.push(broken(
                "route in source",
                format!("the route to {} has no interface", target.ip),
                "knit reconcile",
            ));
            return done(steps);
        };
        steps.push(ok(
            "route in source",
            format!("{}{via} dev {}", target.ip, oif.name),
        ));
        // 3. The source's interface and its other end on the node.
        if !oif.up {
            steps.push(broken(
                "source interface",
                format!("{} in {src} is down", oif.name),
                format!("ip -n {src} link set {} up", oif.name),
            ));
            return done(steps);
        }
        let Some(att) = src_atts.iter().find(|a| a.ifname == oif.name) else {
            steps.push(ok(
                "source interface",
                format!("{} is up (not knit's interface)", oif.name),
            ));
            return done(steps);
        };
        let mut nl = Netlink::open()?;
        match nl.link_by_name(&att.host_ifname)? {
            Some(l) if l.up => steps.push(ok(
                "source interface",
                format!("{} up, node end {} up", oif.name, l.name),
            )),
            Some(l) => {
                steps.push(broken(
                    "source interface",
                    format!("the node end {} of {src}'s {} is down", l.name, oif.name),
                    format!(
                        "ip link set {} up (in the node namespace), or knit reconcile",
                        l.name
                    ),
                ));
                return done(steps);
            }
            None => {
                steps.push(broken(
                    "source interface",
                    format!(
                        "the node end {} of {src}'s {} is gone",
                        att.host_ifname, oif.name
                    ),
                    "knit reconcile",
                ));
                return done(steps);
            }
        }
        // 4. Through the node: forwarding and foreign firewalls on the forward hook.
        let dst_att = match &target.sandbox {
            Some(k) => self
                .store
                .attachments_of_sandbox(k)?
                .into_iter()
                .find(|a| a.ips.iter().any(|i| i.addr() == target.ip)),
            None => None,
        };
        let same_bridge = dst_att
            .as_ref()
            .is_some_and(|d| d.network_id == att.network_id);
        // knit isolates its networks from each other: a sandbox on another knit network is
        // reached only through a network both are on (or a published port).
        if let (Some(d), Some(k)) = (&dst_att, &target.sandbox)
            && !src_atts.iter().any(|s| s.network_id == d.network_id)
        {
            steps.push(broken(
                "isolation",
                format!("{src} and {k} share no knit network, and knit isolates networks from each other"),
                format!("attach {src} to {} (`knit attach {} {src}`), or publish the port on {k} and use the node's address", d.network, d.network),
            ));
            return done(steps);
        }
        // knit's policy, by its recorded rules.
        let nets = self.store.networks()?;
        let src_net = nets.iter().find(|n| n.id == att.network_id);
        let dst_net = dst_att
            .as_ref()
            .and_then(|d| nets.iter().find(|n| n.id == d.network_id));
        let src_ip = att
            .ips
            .iter()
            .map(|i| i.addr())
            .find(|a| a.is_ipv4() == target.ip.is_ipv4())
            .unwrap_or(target.ip);
        if let Some(src_net) = src_net {
            let flow = super::doctor_policy::Flow {
                src: att,
                src_ip,
                dst: dst_att.as_ref(),
                dst_ip: target.ip,
                port: target.port,
            };
            match super::doctor_policy::verdict(&flow, src_net, dst_net, &self.store.rules()?) {
                Ok(d) => steps.push(ok("policy", d)),
                Err((cause, fix)) => {
                    steps.push(broken("policy", cause, fix));
                    return done(steps);
                }
            }
        }
        if !same_bridge {
            let key = if target.ip.is_ipv4() {
                "net.ipv4.ip_forward"
            } else {
                "net.ipv6.conf.all.forwarding"
            };
            if crate::sysctl::read(key).as_deref() != Some("1") {
                steps.push(broken(
                    "node forwarding",
                    format!("{key} is off on the node: it does not route between networks or to the outside"),
                    format!("sysctl -w {key}=1 (knit turns it on when it creates a network; something turned it off)"),
                ));
                return done(steps);
            }
            steps.push(ok("node forwarding", format!("{key} = 1")));
            let listing = crate::nft::libnft::run("list ruleset")?;
            let drops = foreign_drops(&listing, "forward");
            if let Some(d) = drops.first() {
                steps.push(broken(
                    "firewall (forward)",
                    format!("{d} drops forwarded packets by default (policy drop), and it is not knit's table"),
                    "accept the traffic there (e.g. `iptables -I FORWARD -j ACCEPT` for knit's subnets, both directions) or set that chain's policy to accept; knit never edits tables it did not create",
                ));
                return done(steps);
            }
            steps.push(ok(
                "firewall (forward)",
                "no foreign table drops forwarded packets by default",
            ));
        }
        // 5. The destination's interface and a listener there.
        if let Some(d) = &dst_att {
            match Netns::open(&d.netns_path) {
                Err(_) => {
                    steps.push(broken(
                        "destination",
                        format!("{}'s namespace is gone", d.sandbox),
                        "knit reconcile",
                    ));
                    return done(steps);
                }
                Ok(dns) => {
                    let dst_link = Netlink::open_in(&dns)?.link_by_name(&d.ifname)?;
                    let up = dst_link.as_ref().is_some_and(|l| l.up);
                    if !up {
                        steps.push(broken(
                            "destination interface",
                            format!("{} in {} is down", d.ifname, d.sandbox),
                            format!("ip -n {} link set {} up", d.sandbox, d.ifname),
                        ));
                        return done(steps);
                    }
                    steps.push(ok("destination interface", format!("{} up", d.ifname)));
                    // Path MTU: every link on the way takes the source's full-size packets
                    // (a smaller one drops them when DF is set, as TCP's always are).
                    let src_mtu = oif.mtu.unwrap_or(1500);
                    let mut on_path: Vec<(String, Option<u32>)> = vec![];
                    for name in [
                        Some(att.host_ifname.clone()),
                        src_net.and_then(|n| n.bridge.clone()),
                        Some(d.host_ifname.clone()),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        if let Some(l) = nl.link_by_name(&name)? {
                            on_path.push((format!("{name} (node)"), l.mtu));
                        }
                    }
                    if let Some(l) = &dst_link {
                        on_path.push((format!("{} in {}", l.name, d.sandbox), l.mtu));
                    }
                    if let Some((link, mtu)) = on_path
                        .iter()
                        .filter_map(|(n, m)| m.map(|m| (n, m)))
                        .find(|(_, m)| *m < src_mtu)
                    {
                        steps.push(broken(
                            "path MTU",
                            format!("{link} has MTU {mtu}, smaller than {src}'s {src_mtu}: full-size packets with DF set (all TCP) are dropped"),
                            format!("give {link} MTU {src_mtu} again (`ip link set ... mtu {src_mtu}`), or lower it for the whole network with `knit network create --mtu`"),
                        ));
                        return done(steps);
                    }
                    steps.push(ok("path MTU", format!("{src_mtu} all the way")));
                    if let Some((port, proto)) = target.port {
                        let p = if proto == 17 { "udp" } else { "tcp" };
                        if listening(&dns, port, proto)? {
                            steps.push(ok(
                                "listener",
                                format!("something listens on {port}/{p} in {}", d.sandbox),
                            ));
                        } else {
                            steps.push(broken(
                                "listener",
                                format!("nothing listens on {port}/{p} in {}: the connection would be refused", d.sandbox),
                                format!("start the service in {} (`knit sandbox exec {} -- ss -lntu` lists listeners)", d.sandbox, d.sandbox),
                            ));
                        }
                    }
                }
            }
        }
        done(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::foreign_drops;

    #[test]
    fn foreign_drop_policies_are_found_and_knits_are_not() {
        let listing = "table inet knit {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\ntable ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";
        assert_eq!(
            foreign_drops(listing, "forward"),
            ["table ip filter, chain FORWARD"]
        );
        assert_eq!(
            foreign_drops(listing, "input"),
            ["table ip filter, chain INPUT"]
        );
        assert!(foreign_drops("table ip nat {\n}\n", "forward").is_empty());
    }
}
