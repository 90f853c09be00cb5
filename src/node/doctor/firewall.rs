//! doctor's firewall reading: every nftables table in the node namespace that is not knit's
//! (iptables-nft, docker, podman, firewalld chains are nft too) is read from the ruleset
//! listing, and each base chain on a hook the packet crosses is evaluated for this flow: its
//! rules in order (the common matches: interfaces, addresses, protocol, port, conntrack
//! state), then its policy. Rules it cannot evaluate (jumps, xtables matches) are assumed not
//! to match, so a chain is reported only when it drops by policy or by an explicit rule.

use ipnet::IpNet;
use std::net::IpAddr;

/// The packet as a foreign chain sees it (a new connection).
#[derive(Debug, Clone, Default)]
pub struct Packet {
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub saddr: Option<IpAddr>,
    pub daddr: Option<IpAddr>,
    /// Protocol number (6, 17; 1/58 for a ping).
    pub proto: u8,
    pub dport: Option<u16>,
}

#[derive(Debug, Default)]
struct Chain {
    table: String,
    name: String,
    hook: Option<String>,
    policy_drop: bool,
    rules: Vec<String>,
}

fn chains(listing: &str) -> Vec<Chain> {
    let (mut table, mut out) = (String::new(), Vec::<Chain>::new());
    let mut in_chain = false;
    for line in listing.lines() {
        let l = line.trim();
        if let Some(t) = l.strip_prefix("table ") {
            table = t.trim_end_matches(" {").to_string();
            in_chain = false;
        } else if let Some(c) = l.strip_prefix("chain ") {
            out.push(Chain {
                table: table.clone(),
                name: c.trim_end_matches(" {").to_string(),
                ..Chain::default()
            });
            in_chain = true;
        } else if l.starts_with("set ") || l.starts_with("map ") || l.starts_with("flowtable ") {
            in_chain = false;
        } else if l == "}" || l.is_empty() {
            // A closing brace of a chain, set or table: rules only come inside chains.
        } else if let (true, Some(c)) = (in_chain, out.last_mut()) {
            if let Some(rest) = l.strip_prefix("type ") {
                c.hook = rest
                    .split_whitespace()
                    .skip_while(|w| *w != "hook")
                    .nth(1)
                    .map(str::to_string);
                c.policy_drop = l.contains("policy drop");
            } else {
                c.rules.push(l.to_string());
            }
        }
    }
    out
}

/// knit's tables (`inet knit`, `bridge knit`) and those of a trace running now: their
/// verdicts are knit's own step, not a foreign firewall.
fn knits(table: &str) -> bool {
    let mut w = table.split_whitespace();
    let (family, name) = (w.next().unwrap_or_default(), w.next().unwrap_or_default());
    matches!(family, "inet" | "bridge")
        && (name == crate::nft::batch::TABLE || name.starts_with(crate::nft::trace::TABLE_PREFIX))
}

/// Whether a table of this family sees the packet (`bridged`: it crosses a bridge between
/// two ports, where only bridge-family chains see it).
fn family_sees(table: &str, v4: bool, bridged: bool) -> bool {
    match table.split_whitespace().next() {
        Some("bridge") => bridged,
        Some("ip") => !bridged && v4,
        Some("ip6") => !bridged && !v4,
        Some("inet") => !bridged,
        _ => false,
    }
}

fn iface_matches(pat: &str, name: Option<&str>) -> Option<bool> {
    let name = name?;
    Some(match pat.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pat,
    })
}

fn addr_matches(pat: &str, ip: Option<IpAddr>) -> Option<bool> {
    let ip = ip?;
    if let Ok(n) = pat.parse::<IpNet>() {
        return Some(n.contains(&ip));
    }
    pat.parse::<IpAddr>().ok().map(|a| a == ip)
}

fn proto_matches(pat: &str, proto: u8) -> Option<bool> {
    let n = match pat {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" | "icmpv6" => 58,
        other => other.parse().ok()?,
    };
    Some(n == proto)
}

/// What a rule does to the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
    Return,
    /// The rule's matches do not all hold.
    NoMatch,
    /// A match or statement this reader does not evaluate (sets, maps, marks, ...).
    Unknown,
}

/// One match of a rule.
enum Key {
    Iif,
    Oif,
    /// `ip saddr` (v4) / `ip6 saddr`.
    Saddr(bool),
    Daddr(bool),
    L4proto,
    /// `tcp dport` (6), `udp dport` (17), `th dport` (any).
    Dport(Option<u8>),
    CtState,
}

fn rule_outcome(rule: &str, p: &Packet) -> Outcome {
    // A comment may hold any words: cut it off.
    let rule = rule.split(" comment \"").next().unwrap_or(rule);
    let t: Vec<&str> = rule
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '"' || c == ','))
        .filter(|w| !w.is_empty())
        .collect();
    let at = |i: usize| t.get(i).copied();
    let v4 = p.daddr.or(p.saddr).is_none_or(|a| a.is_ipv4());
    let mut i = 0;
    while let Some(w) = at(i) {
        match (w, at(i + 1)) {
            ("counter", next) => {
                i += if next == Some("packets") { 5 } else { 1 };
                continue;
            }
            ("accept", _) => return Outcome::Accept,
            ("drop", _) | ("reject", _) => return Outcome::Drop,
            ("return", _) => return Outcome::Return,
            ("jump", Some(c)) => return Outcome::Jump(c.to_string()),
            ("goto", Some(c)) => return Outcome::Goto(c.to_string()),
            _ => {}
        }
        let (key, width) = match (w, at(i + 1)) {
            ("iifname" | "oifname", _) | ("meta", Some("iifname" | "oifname")) => {
                let name = if w == "meta" {
                    at(i + 1).unwrap_or_default()
                } else {
                    w
                };
                let k = if name == "iifname" {
                    Key::Iif
                } else {
                    Key::Oif
                };
                (k, if w == "meta" { 2 } else { 1 })
            }
            ("ip", Some("saddr")) => (Key::Saddr(true), 2),
            ("ip", Some("daddr")) => (Key::Daddr(true), 2),
            ("ip6", Some("saddr")) => (Key::Saddr(false), 2),
            ("ip6", Some("daddr")) => (Key::Daddr(false), 2),
            ("meta", Some("l4proto")) | ("ip", Some("protocol")) | ("ip6", Some("nexthdr")) => {
                (Key::L4proto, 2)
            }
            ("tcp", Some("dport")) => (Key::Dport(Some(6)), 2),
            ("udp", Some("dport")) => (Key::Dport(Some(17)), 2),
            ("th", Some("dport")) => (Key::Dport(None), 2),
            ("ct", Some("state")) => (Key::CtState, 2),
            _ => return Outcome::Unknown,
        };
        i += width;
        let negate = at(i) == Some("!=");
        if negate {
            i += 1;
        }
        // One value, or a set `{ a, b }`; a named set (`@x`) is not evaluated.
        let mut values = vec![];
        if at(i) == Some("{") {
            i += 1;
            while let Some(v) = at(i) {
                i += 1;
                if v == "}" {
                    break;
                }
                values.push(v);
            }
        } else {
            match at(i) {
                Some(v) if !v.starts_with('@') => values.push(v),
                _ => return Outcome::Unknown,
            }
            i += 1;
        }
        let any = |f: &dyn Fn(&str) -> Option<bool>| -> Option<bool> {
            let mut hit = false;
            for v in &values {
                hit |= f(v)?;
            }
            Some(hit)
        };
        // A match on another family or protocol never holds, negated or not: `ip saddr !=
        // X` says nothing of an IPv6 packet, `tcp dport != 22` nothing of UDP.
        let applies = match key {
            Key::Saddr(f) | Key::Daddr(f) => f == v4,
            Key::Dport(Some(proto)) => proto == p.proto,
            Key::Dport(None) => matches!(p.proto, 6 | 17 | 132),
            _ => true,
        };
        if !applies {
            return Outcome::NoMatch;
        }
        let hit = match key {
            Key::Iif => any(&|v| iface_matches(v, p.iif.as_deref())),
            Key::Oif => any(&|v| iface_matches(v, p.oif.as_deref())),
            Key::Saddr(_) => any(&|v| addr_matches(v, p.saddr)),
            Key::Daddr(_) => any(&|v| addr_matches(v, p.daddr)),
            Key::L4proto => any(&|v| proto_matches(v, p.proto)),
            Key::CtState => Some(values.iter().any(|v| v.split(',').any(|s| s == "new"))),
            Key::Dport(_) => p.dport.and_then(|port| {
                any(&|v| {
                    let (lo, hi) = v.split_once('-').unwrap_or((v, v));
                    Some(lo.parse::<u16>().ok()? <= port && port <= hi.parse::<u16>().ok()?)
                })
            }),
        };
        match hit {
            None => return Outcome::Unknown,
            Some(h) if h == negate => return Outcome::NoMatch,
            Some(_) => {}
        }
    }
    // Matches and no verdict (e.g. a counter): on to the next rule.
    Outcome::NoMatch
}

/// What a chain does to the packet, following jumps and gotos inside its table: Some
/// (accept?, the deciding rule) or None when it runs out (back to the caller).
fn chain_verdict(
    all: &[Chain],
    c: &Chain,
    p: &Packet,
    depth: usize,
    unknown: &mut usize,
) -> Option<(bool, String)> {
    if depth > 16 {
        *unknown += 1;
        return None;
    }
    let target = |name: &str| all.iter().find(|x| x.table == c.table && x.name == name);
    for r in &c.rules {
        match rule_outcome(r, p) {
            Outcome::Accept => return Some((true, r.clone())),
            Outcome::Drop => return Some((false, r.clone())),
            Outcome::Return => return None,
            Outcome::NoMatch => {}
            Outcome::Unknown => *unknown += 1,
            Outcome::Jump(t) => match target(&t) {
                Some(t) => {
                    if let Some(v) = chain_verdict(all, t, p, depth + 1, unknown) {
                        return Some(v);
                    }
                }
                None => *unknown += 1,
            },
            // A goto does not come back: its end is the end of this chain.
            Outcome::Goto(t) => {
                return match target(&t) {
                    Some(t) => chain_verdict(all, t, p, depth + 1, unknown),
                    None => {
                        *unknown += 1;
                        None
                    }
                };
            }
        }
    }
    None
}

/// The first foreign chain on `hook` that drops this packet, described with the rule or
/// policy that drops it.
pub fn foreign_drop(listing: &str, hook: &str, bridged: bool, p: &Packet) -> Option<String> {
    let v4 = p.daddr.or(p.saddr).is_none_or(|a| a.is_ipv4());
    let all = chains(listing);
    for c in &all {
        if knits(&c.table) || c.hook.as_deref() != Some(hook) || !family_sees(&c.table, v4, bridged)
        {
            continue;
        }
        let mut unknown = 0;
        let verdict = chain_verdict(&all, c, p, 0, &mut unknown);
        // Rules it could not read may accept (or drop) the packet first: say so.
        let caveat = if unknown > 0 {
            format!(
                " ({unknown} rule(s) on the way match on sets, maps or marks doctor does not evaluate)"
            )
        } else {
            String::new()
        };
        match verdict {
            Some((false, rule)) => {
                return Some(format!(
                    "table {}, chain {} drops it (rule `{rule}`){caveat}",
                    c.table, c.name
                ));
            }
            None if c.policy_drop => {
                return Some(format!(
                    "table {}, chain {} drops it by default (policy drop) and no rule there accepts it{caveat}",
                    c.table, c.name
                ));
            }
            _ => {}
        }
    }
    None
}

/// The prefixes of set `set` in knit's inet table.
pub fn knit_set(listing: &str, set: &str) -> Vec<IpNet> {
    let mut in_knit = false;
    let mut in_set = false;
    let mut text = String::new();
    for line in listing.lines() {
        let l = line.trim();
        if let Some(t) = l.strip_prefix("table ") {
            in_knit = t.trim_end_matches(" {") == "inet knit";
        } else if in_knit && l == format!("set {set} {{") {
            in_set = true;
        } else if in_set {
            if l == "}" {
                break;
            }
            text.push_str(l);
            text.push(' ');
        }
    }
    let Some(elems) = text.split("elements = {").nth(1) else {
        return vec![];
    };
    elems
        .split([',', '}', ' '])
        .filter_map(|e| {
            e.parse::<IpNet>()
                .ok()
                .or_else(|| e.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// Whether knit's postrouting chain still has the masquerade rule of `set`.
pub fn knit_masquerades(listing: &str, set: &str) -> bool {
    listing
        .lines()
        .any(|l| l.contains(&format!("saddr @{set} ")) && l.contains("masquerade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt() -> Packet {
        Packet {
            iif: Some("kb1".into()),
            oif: Some("uplink".into()),
            saddr: "10.63.0.2".parse().ok(),
            daddr: "198.51.100.2".parse().ok(),
            proto: 6,
            dport: Some(80),
        }
    }

    // `jump ALLOW` reaches an accepting chain, `jump DOCKER-USER` one that returns.
    const FILTER: &str = "table inet knit {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\ntable ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tRULE\n\t}\n\tchain ALLOW {\n\t\tiifname \"kb1\" accept\n\t}\n\tchain DOCKER-USER {\n\t\treturn\n\t}\n}\n";

    #[test]
    fn drop_policies_of_foreign_tables_are_found_and_knits_are_not() {
        let l = FILTER.replace(
            "RULE",
            "ct state established,related counter packets 1 bytes 2 accept",
        );
        let d = foreign_drop(&l, "forward", false, &pkt()).unwrap();
        assert!(d.contains("table ip filter, chain FORWARD"), "{d}");
        assert!(
            foreign_drop(&l, "input", false, &pkt())
                .unwrap()
                .contains("INPUT")
        );
        assert!(
            foreign_drop(&l, "forward", true, &pkt()).is_none(),
            "bridged: ip tables don't see it"
        );
        let v6 = Packet {
            daddr: "2001:db8::1".parse().ok(),
            saddr: None,
            ..pkt()
        };
        assert!(
            foreign_drop(&l, "forward", false, &v6).is_none(),
            "ip tables don't see IPv6"
        );
    }

    #[test]
    fn accept_rules_for_the_flow_count_and_others_do_not() {
        for (rule, dropped) in [
            ("counter packets 0 bytes 0 accept", false),
            ("iifname \"kb1\" accept", false),
            ("iifname \"kb*\" oifname != \"docker0\" accept", false),
            ("ip saddr 10.63.0.0/24 tcp dport { 22, 80 } accept", false),
            ("ip saddr 10.64.0.0/24 accept", true),
            ("tcp dport 443 accept", true),
            ("udp dport 80 accept", true),
            ("jump DOCKER-USER", true),
            ("meta l4proto tcp ct state new accept", false),
            (
                "ip daddr 198.51.100.2 counter reject with icmp port-unreachable",
                true,
            ),
        ] {
            let l = FILTER.replace("RULE", rule);
            assert_eq!(
                foreign_drop(&l, "forward", false, &pkt()).is_some(),
                dropped,
                "{rule}"
            );
        }
        // An explicit drop rule in an accepting chain.
        let l = FILTER.replace(
            "policy drop;\n\t\tRULE",
            "policy accept;\n\t\tip daddr 198.51.100.0/24 drop",
        );
        assert!(
            foreign_drop(&l, "forward", false, &pkt())
                .unwrap()
                .contains("rule `ip daddr")
        );
    }

    /// Jumps and gotos are followed inside the table; a match of another family or
    /// protocol never holds, negated or not; set lookups are not evaluated, and the
    /// verdict says so.
    #[test]
    fn jumps_negations_and_sets() {
        let chains = "\tchain ALLOW {\n\t\tiifname \"kb1\" accept\n\t}\n\tchain PASS {\n\t\treturn\n\t}\n}\n";
        // FORWARD's rules and policy, and the chains above added to `table ip filter`
        // (the listing's last table).
        let with = |rules: &str, policy: &str| {
            let l = FILTER.replace(
                "policy drop;\n\t\tRULE",
                &format!("policy {policy};\n\t\t{rules}"),
            );
            let end = l.rfind("}\n").unwrap();
            format!("{}{chains}", &l[..end])
        };
        let dropped = |l: &str| foreign_drop(l, "forward", false, &pkt());
        assert!(
            dropped(&with("jump ALLOW", "drop")).is_none(),
            "ALLOW accepts"
        );
        assert!(dropped(&with("goto ALLOW", "drop")).is_none());
        assert!(
            dropped(&with("jump PASS", "drop")).is_some(),
            "PASS returns: the policy drops"
        );
        assert!(dropped(&with("jump PASS\n\t\tiifname \"kb1\" accept", "drop")).is_none());
        // Negations: 10.63.0.2 is in 10.63.0.0/24, not in 10.64.0.0/24.
        assert!(dropped(&with("ip saddr != 10.63.0.0/24 drop", "accept")).is_none());
        assert!(dropped(&with("ip saddr != 10.64.0.0/24 drop", "accept")).is_some());
        // Another protocol or family: no match either way.
        assert!(dropped(&with("udp dport != 53 drop", "accept")).is_none());
        assert!(dropped(&with("ip6 saddr != ::1 drop", "accept")).is_none());
        // A named set is not evaluated.
        let d = dropped(&with("ip saddr @allowed accept", "drop")).unwrap();
        assert!(d.contains("1 rule(s)"), "{d}");
    }

    #[test]
    fn knit_sets_and_masquerade_rule_are_read() {
        let l = "table inet knit {\n\tset masq4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.63.0.0/24, 10.64.0.0/24,\n\t\t\t     10.65.0.5 }\n\t}\n\tchain postrouting {\n\t\tip saddr @masq4 ip daddr != @nets4 masquerade\n\t}\n}\n";
        let s = knit_set(l, "masq4");
        assert_eq!(s.len(), 3);
        assert!(s[2].contains(&"10.65.0.5".parse::<IpAddr>().unwrap()));
        assert!(knit_set(l, "masq6").is_empty());
        assert!(knit_masquerades(l, "masq4"));
        assert!(!knit_masquerades(l, "masq6"));
    }
}
