//! nft commands as data: what a change to knit's tables is, before it is applied. Typed
//! so that the same batch renders as nft text (libnftables) or encodes as nf_tables
//! netlink messages (`wire`). Strings inside are knit-generated identifiers, addresses
//! and numbers; user input reaches this module only after validation.

use crate::model::{Mac, PortMapping, Proto};
use ipnet::IpNet;
use std::fmt::Write;
use std::net::{IpAddr, Ipv6Addr};

pub const TABLE: &str = "knit";
pub(super) const FAMILY: &str = "inet";
/// knit's second table, `table bridge knit` (anti-spoofing of bridge ports).
pub(super) const BRIDGE_FAMILY: &str = "bridge";

/// One nft command. Strings inside are knit-generated identifiers, addresses and numbers;
/// user input reaches this module only after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    AddTable,
    DeleteTable,
    AddSet {
        name: String,
        spec: String,
    },
    FlushSet(String),
    DeleteSet(String),
    AddChain {
        name: String,
        hook: Option<&'static str>,
    },
    FlushChain(String),
    DeleteChain(String),
    AddRule {
        chain: String,
        rule: String,
    },
    /// A service's DNAT rule, typed so the netlink fast path can encode it.
    AddDnat {
        chain: String,
        rule: DnatRule,
    },
    AddElements {
        set: String,
        elems: Vec<Elem>,
    },
    /// Deletes elements even if some are already gone (re-adding first makes the delete
    /// always valid, inside the same transaction).
    RemoveElements {
        set: String,
        elems: Vec<Elem>,
    },
    /// The command, on knit's `table bridge knit` instead of `table inet knit`.
    Bridge(Box<Cmd>),
}

/// `[numgen random mod N == 0] meta l4proto P dnat to IP:PORT`: with `one_in` the rule
/// fires for one in N new connections, otherwise always. A service chain of such rules
/// with N = k, k-1, ..., 2, then none, picks each of k backends with probability 1/k
/// (kube-proxy's statistic-probability ladder, in nft).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatRule {
    pub one_in: Option<u32>,
    pub proto: Proto,
    pub ip: IpAddr,
    pub port: u16,
}

impl DnatRule {
    pub fn text(&self) -> String {
        let pick = self
            .one_in
            .map(|n| format!("numgen random mod {n} == 0 "))
            .unwrap_or_default();
        let (fam, to) = match self.ip {
            IpAddr::V4(ip) => ("ip", format!("{ip}:{}", self.port)),
            IpAddr::V6(ip) => ("ip6", format!("[{ip}]:{}", self.port)),
        };
        format!("{pick}meta l4proto {} dnat {fam} to {to}", self.proto)
    }
}

/// A set or map element, typed so it can be rendered as nft syntax or encoded for netlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    /// An interface name (set of ifname).
    Iface(String),
    /// An interface mapped to `jump CHAIN` (verdict map).
    Jump { ifname: String, chain: String },
    /// A prefix in an interval set.
    Prefix(IpNet),
    /// A published port in one of the DNAT maps.
    Port(PortMapping),
    /// A single address (DNS server sets, policy address sets).
    Addr(IpAddr),
    /// A single port (`inet_service` sets).
    Service(u16),
    /// A service address: `vip . proto . port`, with `goto CHAIN` in the service maps.
    Svc {
        ip: IpAddr,
        proto: Proto,
        port: u16,
        goto: Option<String>,
    },
    /// A node port: `proto . port`, with `goto CHAIN` in the node port maps.
    NodePort {
        proto: Proto,
        port: u16,
        goto: Option<String>,
    },
    /// Backend `index` of a service in the endpoint maps: `vip . proto . port . index :
    /// ip . port` (`vip` None: keyed by node port, `proto . port . index`).
    Endpoint {
        vip: Option<IpAddr>,
        proto: Proto,
        port: u16,
        index: u32,
        ip: IpAddr,
        target_port: u16,
    },
    /// Anti-spoofing: `ifname . ether_addr`.
    IfaceMac { ifname: String, mac: Mac },
    /// Anti-spoofing: `ifname . ipv4_addr` or `ifname . ipv6_addr`.
    IfaceAddr { ifname: String, ip: IpAddr },
    /// Anti-spoofing: an IPv6 neighbour advertisement's target, `ifname . @th,64,128` (a raw
    /// 128-bit payload: nft 1.0.6 has no `icmpv6 taddr`, so the set is typed by the raw
    /// expression and nft shows the address as an integer; the bytes are the address's).
    IfaceNdTarget { ifname: String, ip: Ipv6Addr },
    /// Policy: `saddr . daddr`, with `. proto . port[-port]` when `l4` is given
    /// (protocol number, port range); `interval` for sets with `flags interval`.
    Pol {
        saddr: IpAddr,
        daddr: IpAddr,
        l4: Option<(u8, u16, u16)>,
        interval: bool,
    },
}

/// A protocol number as nft names it in `inet_proto` keys.
pub fn proto_name(n: u8) -> String {
    match n {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

impl Elem {
    /// The key as nft syntax.
    pub fn key_text(&self) -> String {
        match self {
            Elem::Iface(i) | Elem::Jump { ifname: i, .. } => quote(i),
            Elem::Prefix(p) => p.to_string(),
            Elem::Addr(a) => a.to_string(),
            Elem::Service(p) => p.to_string(),
            Elem::Port(p) => match p.host_ip {
                Some(h) => format!("{h} . {} . {}", p.proto, p.host_port),
                None => format!("{} . {}", p.proto, p.host_port),
            },
            Elem::Svc {
                ip, proto, port, ..
            } => format!("{ip} . {proto} . {port}"),
            Elem::NodePort { proto, port, .. } => format!("{proto} . {port}"),
            Elem::Endpoint {
                vip,
                proto,
                port,
                index,
                ..
            } => match vip {
                Some(v) => format!("{v} . {proto} . {port} . {index}"),
                None => format!("{proto} . {port} . {index}"),
            },
            Elem::IfaceMac { ifname, mac } => format!("{} . {mac}", quote(ifname)),
            Elem::IfaceAddr { ifname, ip } => format!("{} . {ip}", quote(ifname)),
            Elem::IfaceNdTarget { ifname, ip } => {
                format!("{} . 0x{:032x}", quote(ifname), u128::from(*ip))
            }
            Elem::Pol {
                saddr, daddr, l4, ..
            } => match l4 {
                None => format!("{saddr} . {daddr}"),
                Some((p, lo, hi)) if lo == hi => {
                    format!("{saddr} . {daddr} . {} . {lo}", proto_name(*p))
                }
                Some((p, lo, hi)) => format!("{saddr} . {daddr} . {} . {lo}-{hi}", proto_name(*p)),
            },
        }
    }

    /// The whole element (key and mapped value) as nft syntax.
    pub fn text(&self) -> String {
        match self {
            Elem::Iface(_)
            | Elem::Prefix(_)
            | Elem::Addr(_)
            | Elem::Service(_)
            | Elem::IfaceMac { .. }
            | Elem::IfaceAddr { .. }
            | Elem::IfaceNdTarget { .. }
            | Elem::Pol { .. } => self.key_text(),
            Elem::Jump { chain, .. } => format!("{} : jump {chain}", self.key_text()),
            Elem::Svc { goto: Some(c), .. } | Elem::NodePort { goto: Some(c), .. } => {
                format!("{} : goto {c}", self.key_text())
            }
            Elem::Svc { goto: None, .. } | Elem::NodePort { goto: None, .. } => self.key_text(),
            Elem::Endpoint {
                ip, target_port, ..
            } => format!("{} : {ip} . {target_port}", self.key_text()),
            Elem::Port(p) => format!(
                "{} : {} . {}",
                self.key_text(),
                p.container_ip,
                p.container_port
            ),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub cmds: Vec<Cmd>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push(&mut self, c: Cmd) -> &mut Self {
        self.cmds.push(c);
        self
    }

    pub(crate) fn elems(&mut self, set: impl Into<String>, elems: Vec<Elem>, add: bool) {
        if elems.is_empty() {
            return;
        }
        let set = set.into();
        self.push(if add {
            Cmd::AddElements { set, elems }
        } else {
            Cmd::RemoveElements { set, elems }
        });
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.cmds {
            render_cmd(&mut s, FAMILY, c);
        }
        s
    }
}

pub(super) fn quote(ifname: &str) -> String {
    format!("\"{ifname}\"")
}

/// One command as nft syntax, on knit's table of `family`.
fn render_cmd(s: &mut String, family: &str, c: &Cmd) {
    let t = format!("{family} {TABLE}");
    // Writing to a String cannot fail.
    let _ = match c {
        Cmd::AddTable => writeln!(s, "add table {t}"),
        Cmd::DeleteTable => writeln!(s, "delete table {t}"),
        Cmd::AddSet { name, spec } => {
            let kw = if spec.contains(':') { "map" } else { "set" };
            writeln!(s, "add {kw} {t} {name} {{ {spec} }}")
        }
        Cmd::FlushSet(name) => writeln!(s, "flush set {t} {name}"),
        Cmd::DeleteSet(name) => writeln!(s, "delete set {t} {name}"),
        Cmd::AddChain {
            name,
            hook: Some(h),
        } => writeln!(s, "add chain {t} {name} {{ {h} }}"),
        Cmd::AddChain { name, hook: None } => writeln!(s, "add chain {t} {name}"),
        Cmd::FlushChain(name) => writeln!(s, "flush chain {t} {name}"),
        Cmd::DeleteChain(name) => writeln!(s, "delete chain {t} {name}"),
        Cmd::AddRule { chain, rule } => writeln!(s, "add rule {t} {chain} {rule}"),
        Cmd::AddDnat { chain, rule } => {
            writeln!(s, "add rule {t} {chain} {}", rule.text())
        }
        Cmd::AddElements { set, elems } => {
            let e: Vec<String> = elems.iter().map(Elem::text).collect();
            writeln!(s, "add element {t} {set} {{ {} }}", e.join(", "))
        }
        Cmd::RemoveElements { set, elems } => {
            let e: Vec<String> = elems.iter().map(Elem::text).collect();
            let e = e.join(", ");
            writeln!(s, "add element {t} {set} {{ {e} }}")
                .and_then(|_| writeln!(s, "delete element {t} {set} {{ {e} }}"))
        }
        Cmd::Bridge(inner) => {
            render_cmd(s, BRIDGE_FAMILY, inner);
            Ok(())
        }
    };
}
