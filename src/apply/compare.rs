//! How a declared object differs from the stored one, in words the plan shows ("ports
//! 8080:80/tcp → 8080:80/tcp, 9090:90/tcp"), and the text of each kind of object.
//! Fields a file may leave out (addresses, MAC, interface name, bridge name) are compared
//! only when the file sets them.

use super::{AttDecl, NetDecl, RuleDecl};
use crate::model::PublishSpec;
use crate::model::policy::Labels;
use crate::model::service::ServiceSpec;

/// `[HOSTIP:]HOSTPORT[-END]:CPORT[-END]/proto`, as `--publish` takes it.
pub fn publish_text(p: &PublishSpec) -> String {
    let range = |(a, b): (u16, u16)| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    let host = match p.host_ip {
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    format!(
        "{host}{}:{}/{}",
        range(p.host_ports),
        range(p.container_ports),
        p.proto
    )
}

/// Every (host IP, host port, container port, proto) a list of specs publishes: equal
/// sets publish the same, however they are written (`8080-8081:80-81` or two lines).
fn port_set(ports: &[PublishSpec]) -> Vec<String> {
    let mut v: Vec<String> = ports
        .iter()
        .flat_map(|p| {
            p.pairs().into_iter().map(move |(h, c)| {
                let one = PublishSpec {
                    host_ports: (h, h),
                    container_ports: (c, c),
                    ..p.clone()
                };
                publish_text(&one)
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

pub fn labels_text(l: &Labels) -> String {
    let v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.join(",")
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

/// A network's settings in one line.
pub fn net_text(n: &NetDecl) -> String {
    let s = &n.spec;
    let subnets: Vec<String> = s.subnets.iter().map(|x| x.cidr.to_string()).collect();
    let mut out = format!("{} {}", s.driver.as_str(), subnets.join(", "));
    for (on, word) in [
        (s.internal, "internal"),
        (!s.masquerade && !s.internal, "no masquerade"),
        (!s.dns, "no dns"),
    ] {
        if on {
            out.push_str(&format!(", {word}"));
        }
    }
    if let Some(m) = s.mtu {
        out.push_str(&format!(", mtu {m}"));
    }
    out
}

/// How declared network `w` differs from stored `h` (not the policy defaults, which
/// change in place).
pub fn net_diff(w: &NetDecl, h: &NetDecl) -> Vec<String> {
    let (a, b) = (&w.spec, &h.spec);
    let mut out = vec![];
    let subnets = |s: &crate::model::NetworkSpec| {
        let v: Vec<String> = s
            .subnets
            .iter()
            .map(|x| format!("{} gw {}", x.cidr, x.gateway))
            .collect();
        sorted(&v)
    };
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name} {x} in the file, {y} here"));
        }
    };
    field("driver", a.driver.as_str().into(), b.driver.as_str().into());
    field("subnets", list(&subnets(a)), list(&subnets(b)));
    if a.bridge.is_some() {
        field(
            "bridge",
            format!("{:?}", a.bridge),
            format!("{:?}", b.bridge),
        );
    }
    field("internal", a.internal.to_string(), b.internal.to_string());
    field(
        "masquerade",
        a.masquerade.to_string(),
        b.masquerade.to_string(),
    );
    field("mtu", format!("{:?}", a.mtu), format!("{:?}", b.mtu));
    field("dns", a.dns.to_string(), b.dns.to_string());
    field(
        "dns_domain",
        format!("{:?}", a.dns_domain),
        format!("{:?}", b.dns_domain),
    );
    field(
        "gateway on the bridge",
        a.bridge_gateway.to_string(),
        b.bridge_gateway.to_string(),
    );
    field("promiscuous", a.promisc.to_string(), b.promisc.to_string());
    out
}

/// An attachment's settings in one line.
pub fn att_text(a: &AttDecl) -> String {
    let mut parts = vec![];
    if !a.ports.is_empty() {
        parts.push(format!("ports {}", port_set(&a.ports).join(", ")));
    }
    if !a.labels.is_empty() {
        parts.push(format!("labels {}", labels_text(&a.labels)));
    }
    if !a.aliases.is_empty() {
        parts.push(format!("aliases {}", a.aliases.join(", ")));
    }
    if !a.ips.is_empty() {
        let ips: Vec<String> = a.ips.iter().map(|i| i.to_string()).collect();
        parts.push(format!("ips {}", ips.join(", ")));
    }
    parts.join("; ")
}

/// How declared attachment `w` differs from stored `h`.
pub fn att_diff(w: &AttDecl, h: &AttDecl) -> Vec<String> {
    let mut out = vec![];
    let (wp, hp) = (port_set(&w.ports), port_set(&h.ports));
    if wp != hp {
        out.push(format!("ports {} → {}", list(&hp), list(&wp)));
    }
    if w.labels != h.labels {
        let show = |l: &Labels| {
            if l.is_empty() {
                "none".into()
            } else {
                labels_text(l)
            }
        };
        out.push(format!("labels {} → {}", show(&h.labels), show(&w.labels)));
    }
    let (wa, ha) = (sorted(&w.aliases), sorted(&h.aliases));
    if wa != ha {
        out.push(format!("aliases {} → {}", list(&ha), list(&wa)));
    }
    let missing: Vec<String> = w
        .ips
        .iter()
        .filter(|ip| !h.ips.contains(ip))
        .map(|ip| ip.to_string())
        .collect();
    if !missing.is_empty() {
        let has: Vec<String> = h.ips.iter().map(|i| i.to_string()).collect();
        out.push(format!("ips {} → {}", list(&has), missing.join(", ")));
    }
    if let Some(m) = w.mac.filter(|m| Some(*m) != h.mac) {
        let has = h.mac.map_or("none".into(), |m| m.to_string());
        out.push(format!("mac {has} → {m}"));
    }
    if let Some(i) = w.ifname.as_ref().filter(|i| Some(*i) != h.ifname.as_ref()) {
        out.push(format!(
            "ifname {} → {i}",
            h.ifname.as_deref().unwrap_or("none")
        ));
    }
    out
}

pub fn svc_text(s: &ServiceSpec) -> String {
    let b: Vec<String> = s.backends.iter().map(|b| b.to_string()).collect();
    let mut out = format!("{} → {}", s.vip, list(&b));
    if let Some(np) = s.node_port {
        out.push_str(&format!(", node port {np}"));
    }
    if let Some(a) = s.affinity {
        out.push_str(&format!(", client-ip affinity {a}s"));
    }
    out
}

/// How declared service `w` differs from stored `h` (beyond its backends).
pub fn svc_diff(w: &ServiceSpec, h: &ServiceSpec) -> Vec<String> {
    let mut out = vec![];
    if w.vip != h.vip {
        out.push(format!("vip {} → {}", h.vip, w.vip));
    }
    if w.affinity != h.affinity {
        out.push(format!("affinity {:?} → {:?}", h.affinity, w.affinity));
    }
    if w.node_port != h.node_port {
        out.push(format!("node port {:?} → {:?}", h.node_port, w.node_port));
    }
    let mut wb = w.backends.clone();
    let mut hb = h.backends.clone();
    wb.sort();
    hb.sort();
    if wb != hb {
        let t = |v: &[crate::model::service::BackendSpec]| {
            list(&v.iter().map(|b| b.to_string()).collect::<Vec<_>>())
        };
        out.push(format!("backends {} → {}", t(&hb), t(&wb)));
    }
    out
}

pub fn rule_text(r: &RuleDecl) -> String {
    let s = &r.spec;
    format!(
        "{} {} allows {} → {}{}",
        r.network,
        s.dir.as_str(),
        s.from,
        s.to,
        s.port.map(|p| format!(" port {p}")).unwrap_or_default()
    )
}
