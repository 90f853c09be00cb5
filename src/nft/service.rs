//! A service as nftables objects. Two layouts, both one element lookup per new
//! connection, neither growing with the number of services:
//!
//! - Maps only (services without affinity, 1 to `DATA_MAX` backends): the VIP goes in the
//!   class set of its backend count (`svc4_kN`), its backends in `ep4` keyed by
//!   `vip . proto . port . index`; one fixed rule per class picks
//!   `numgen random mod N` and DNATs through the map. Adding, changing or removing such a
//!   service changes set elements only: no chain, no rule, so the kernel does not
//!   re-validate the table's chain graph (which costs tens of milliseconds at 10k
//!   per-service chains, kube-proxy nftables mode's layout).
//! - A chain per service (client-IP affinity, or more backends): `svc4`/`svc6` map the VIP
//!   to `goto svcID`, which holds a `numgen` ladder (rule k fires one time in N-k) or, with
//!   affinity, per-backend chains that remember the client in a timeout set first.
//!
//! A service without backends is in `svc_none*`/`np_none` instead, which the filter hooks
//! answer with a TCP reset or ICMP unreachable. Node ports mirror all of this keyed by
//! `proto . port` on local addresses. Every change is a diff between the service's old and
//! new form, so one service's change touches only that service's objects.

use super::batch::{Batch, Cmd, DnatRule, Elem};
use crate::model::Proto;
use crate::model::service::Vip;
use std::net::IpAddr;

/// A service with its backends resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFw {
    pub id: i64,
    pub vip: Vip,
    pub affinity: Option<u32>,
    pub node_port: Option<u16>,
    /// (backend id, address, port), in a stable order.
    pub backends: Vec<(i64, IpAddr, u16)>,
}

fn chain(id: i64) -> String {
    format!("svc{id}")
}
fn backend_chain(id: i64, bid: i64) -> String {
    format!("svc{id}_b{bid}")
}
fn affinity_set(id: i64, bid: i64) -> String {
    format!("svc{id}_a{bid}")
}

impl ServiceFw {
    fn v4(&self) -> bool {
        self.vip.ip.is_ipv4()
    }
    fn family(&self) -> (&'static str, &'static str) {
        if self.v4() {
            ("ip", "ipv4_addr")
        } else {
            ("ip6", "ipv6_addr")
        }
    }

    /// Whether this service lives in the maps-only layout.
    fn data_path(&self) -> bool {
        self.affinity.is_none() && (1..=DATA_MAX).contains(&self.backends.len())
    }

    /// Whether this service has its own chain.
    fn chained(&self) -> bool {
        !self.backends.is_empty() && !self.data_path()
    }

    /// The set/map elements that route traffic to this service (or refuse it).
    fn elements(&self) -> Vec<(String, Elem)> {
        let (v4, n) = (self.v4(), self.backends.len());
        let f: u8 = if v4 { 4 } else { 6 };
        let (vip, proto, port) = (self.vip.ip, self.vip.proto, self.vip.port);
        let svc = |goto: Option<String>| Elem::Svc {
            ip: vip,
            proto,
            port,
            goto,
        };
        let mut out = vec![];
        if self.data_path() {
            out.push((format!("svc{f}_k{n}"), svc(None)));
            for (i, (_, ip, tport)) in self.backends.iter().enumerate() {
                out.push((
                    ep_map(false, f, proto),
                    Elem::Endpoint {
                        vip: Some(vip),
                        proto,
                        port,
                        index: i as u32,
                        ip: *ip,
                        target_port: *tport,
                    },
                ));
            }
        } else if n > 0 {
            out.push((format!("svc{f}"), svc(Some(chain(self.id)))));
        } else {
            out.push((format!("svc_none{f}"), svc(None)));
        }
        let Some(np) = self.node_port else {
            return out;
        };
        let node = |goto: Option<String>| Elem::NodePort {
            proto,
            port: np,
            goto,
        };
        if self.data_path() {
            out.push((format!("np{f}_k{n}"), node(None)));
            for (i, (_, ip, tport)) in self.backends.iter().enumerate() {
                out.push((
                    ep_map(true, f, proto),
                    Elem::Endpoint {
                        vip: None,
                        proto,
                        port: np,
                        index: i as u32,
                        ip: *ip,
                        target_port: *tport,
                    },
                ));
            }
        } else if n > 0 {
            out.push((format!("np{f}"), node(Some(chain(self.id)))));
        } else {
            out.push(("np_none".into(), node(None)));
        }
        out
    }

    /// The DNAT ladder of a service without affinity: one rule per backend.
    fn ladder(&self) -> Vec<DnatRule> {
        if self.affinity.is_some() {
            return vec![];
        }
        let n = self.backends.len() as u32;
        self.backends
            .iter()
            .enumerate()
            .map(|(i, (_, ip, port))| DnatRule {
                one_in: Some(n - i as u32).filter(|m| *m > 1),
                proto: self.vip.proto,
                ip: *ip,
                port: *port,
            })
            .collect()
    }

    /// Rules of an affinity service's chain and of its per-backend chains.
    fn rules(&self) -> (Vec<String>, Vec<(i64, Vec<String>)>) {
        let (fam, _) = self.family();
        let n = self.backends.len();
        if n == 0 || self.affinity.is_none() {
            return (vec![], vec![]);
        }
        let mut svc_rules: Vec<String> = self
            .backends
            .iter()
            .map(|(bid, _, _)| {
                format!(
                    "{fam} saddr @{} goto {}",
                    affinity_set(self.id, *bid),
                    backend_chain(self.id, *bid)
                )
            })
            .collect();
        let arms: Vec<String> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, (bid, _, _))| format!("{i} : goto {}", backend_chain(self.id, *bid)))
            .collect();
        svc_rules.push(format!(
            "numgen random mod {n} vmap {{ {} }}",
            arms.join(", ")
        ));
        let backend_rules = self
            .backends
            .iter()
            .map(|(bid, ip, port)| {
                (
                    *bid,
                    vec![
                        format!("update @{} {{ {fam} saddr }}", affinity_set(self.id, *bid)),
                        DnatRule {
                            one_in: None,
                            proto: self.vip.proto,
                            ip: *ip,
                            port: *port,
                        }
                        .text(),
                    ],
                )
            })
            .collect();
        (svc_rules, backend_rules)
    }
}

impl Batch {
    /// Moves one service from `old` to `new` (None: absent) in this batch.
    pub fn service(&mut self, old: Option<&ServiceFw>, new: Option<&ServiceFw>) -> &mut Self {
        let old_elems = old.map(ServiceFw::elements).unwrap_or_default();
        let new_elems = new.map(ServiceFw::elements).unwrap_or_default();
        for (set, e) in old_elems.iter().filter(|x| !new_elems.contains(x)) {
            self.elems(set.clone(), vec![e.clone()], false);
        }
        let old_chain = old.filter(|s| s.chained());
        let new_chain = new.filter(|s| s.chained());
        if let Some(id) = new_chain.or(old_chain).map(|s| s.id) {
            self.service_chain(id, old_chain, new_chain);
        }
        for (set, e) in new_elems.into_iter().filter(|x| !old_elems.contains(x)) {
            self.elems(set, vec![e], true);
        }
        self
    }

    /// The per-service chain layout: from `old` (None: no chain) to `new`.
    fn service_chain(&mut self, id: i64, old: Option<&ServiceFw>, new: Option<&ServiceFw>) {
        // The service chain is flushed first so nothing references a backend chain below.
        self.push(Cmd::AddChain {
            name: chain(id),
            hook: None,
        });
        self.push(Cmd::FlushChain(chain(id)));
        let (svc_rules, backend_rules) = new.map(ServiceFw::rules).unwrap_or_default();
        if let Some(o) = old.filter(|o| o.affinity.is_some()) {
            for (bid, _, _) in &o.backends {
                if backend_rules.iter().any(|(b, _)| b == bid) {
                    continue;
                }
                let (bc, set) = (backend_chain(id, *bid), affinity_set(id, *bid));
                self.push(Cmd::AddChain {
                    name: bc.clone(),
                    hook: None,
                });
                self.push(Cmd::FlushChain(bc.clone()));
                self.push(Cmd::DeleteChain(bc));
                self.push(Cmd::AddSet {
                    name: set.clone(),
                    spec: affinity_spec(o),
                });
                self.push(Cmd::DeleteSet(set));
            }
        }
        if let Some(n) = new.filter(|n| n.affinity.is_some()) {
            for (bid, rules) in &backend_rules {
                let bc = backend_chain(id, *bid);
                self.push(Cmd::AddSet {
                    name: affinity_set(id, *bid),
                    spec: affinity_spec(n),
                });
                self.push(Cmd::AddChain {
                    name: bc.clone(),
                    hook: None,
                });
                self.push(Cmd::FlushChain(bc.clone()));
                for r in rules {
                    self.push(Cmd::AddRule {
                        chain: bc.clone(),
                        rule: r.clone(),
                    });
                }
            }
        }
        for r in svc_rules {
            self.push(Cmd::AddRule {
                chain: chain(id),
                rule: r,
            });
        }
        for rule in new.map(ServiceFw::ladder).unwrap_or_default() {
            self.push(Cmd::AddDnat {
                chain: chain(id),
                rule,
            });
        }
        if new.is_none() {
            self.push(Cmd::DeleteChain(chain(id)));
        }
    }
}

/// Services with up to this many backends (and no affinity) live in maps only.
pub const DATA_MAX: usize = 16;

const PROTOS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

fn fam(f: u8) -> &'static str {
    if f == 4 { "ip" } else { "ip6" }
}

/// Endpoint map of a family and protocol (`ep4_tcp`), or of node ports (`npep4_tcp`).
fn ep_map(node_port: bool, f: u8, p: Proto) -> String {
    format!("{}ep{f}_{p}", if node_port { "np" } else { "" })
}

/// Class sets and endpoint maps of the maps-only layout (part of the base table).
pub fn data_sets() -> Vec<(String, String)> {
    let mut out = vec![];
    for (f, ty) in [(4u8, "ipv4_addr"), (6, "ipv6_addr")] {
        for n in 1..=DATA_MAX {
            out.push((
                format!("svc{f}_k{n}"),
                format!("type {ty} . inet_proto . inet_service;"),
            ));
            out.push((
                format!("np{f}_k{n}"),
                "type inet_proto . inet_service;".into(),
            ));
        }
        // One endpoint map per protocol: the value's port is typed `tcp dport` etc., and
        // nft makes the DNAT rule depend on that protocol (a `th dport` value type would
        // not, but nft 1.0.6 cannot read such a map back from the kernel).
        let fam = fam(f);
        for p in PROTOS {
            out.push((
                ep_map(false, f, p),
                format!(
                    "typeof {fam} daddr . meta l4proto . th dport . numgen random mod 2 : {fam} daddr . {p} dport;"
                ),
            ));
            out.push((
                ep_map(true, f, p),
                format!(
                    "typeof meta l4proto . th dport . numgen random mod 2 : {fam} daddr . {p} dport;"
                ),
            ));
        }
    }
    out
}

/// The fixed chains of the maps-only layout: per family and protocol, one DNAT rule per
/// backend count; `svc_data4`/`svc_data6`/`nodeports` dispatch on the protocol.
pub fn data_chains() -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    let mut nodeports = vec![
        "meta nfproto ipv4 meta l4proto . th dport vmap @np4".to_string(),
        "meta nfproto ipv6 meta l4proto . th dport vmap @np6".to_string(),
    ];
    for f in [4u8, 6] {
        let fam = fam(f);
        let nfproto = if f == 4 { "ipv4" } else { "ipv6" };
        let key = format!("{fam} daddr . meta l4proto . th dport");
        let mut dispatch = vec![];
        for p in PROTOS {
            let (vc, nc) = (format!("svc_data{f}_{p}"), format!("nodeports{f}_{p}"));
            let rules = (1..=DATA_MAX)
                .map(|n| {
                    format!(
                        "{key} @svc{f}_k{n} dnat {fam} to {key} . numgen random mod {n} map @{}",
                        ep_map(false, f, p)
                    )
                })
                .collect();
            out.push((vc.clone(), rules));
            let rules = (1..=DATA_MAX)
                .map(|n| {
                    format!(
                        "meta l4proto . th dport @np{f}_k{n} dnat {fam} to meta l4proto . th dport . numgen random mod {n} map @{}",
                        ep_map(true, f, p)
                    )
                })
                .collect();
            out.push((nc.clone(), rules));
            dispatch.push(format!("meta l4proto {p} jump {vc}"));
            nodeports.push(format!("meta nfproto {nfproto} meta l4proto {p} jump {nc}"));
        }
        out.push((format!("svc_data{f}"), dispatch));
    }
    out.push(("nodeports".into(), nodeports));
    out
}

fn affinity_spec(s: &ServiceFw) -> String {
    let (_, ty) = s.family();
    format!(
        "type {ty}; flags dynamic,timeout; timeout {}s;",
        s.affinity
            .unwrap_or(crate::model::service::DEFAULT_AFFINITY_SECS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(affinity: Option<u32>, backends: &[(i64, &str, u16)]) -> ServiceFw {
        ServiceFw {
            id: 7,
            vip: Vip::parse("10.96.0.10:80").unwrap(),
            affinity,
            node_port: Some(30080),
            backends: backends
                .iter()
                .map(|(b, ip, p)| (*b, ip.parse().unwrap(), *p))
                .collect(),
        }
    }

    fn golden(name: &str, b: &Batch) {
        crate::nft::golden(name, &b.render());
    }

    #[test]
    fn service_lifecycle() {
        let three = svc(
            None,
            &[
                (1, "10.88.0.2", 8080),
                (2, "10.88.0.3", 8080),
                (3, "10.0.9.9", 80),
            ],
        );
        golden("svc_add.nft", Batch::new().service(None, Some(&three)));
        let one = svc(None, &[(1, "10.88.0.2", 8080)]);
        golden(
            "svc_shrink.nft",
            Batch::new().service(Some(&three), Some(&one)),
        );
        let none = svc(None, &[]);
        golden(
            "svc_empty.nft",
            Batch::new().service(Some(&one), Some(&none)),
        );
        golden("svc_rm.nft", Batch::new().service(Some(&three), None));
        let mut v6 = svc(None, &[(4, "fd88::2", 80), (5, "fd88::3", 80)]);
        v6.vip = Vip::parse("[fd96::10]:53/udp").unwrap();
        golden("svc_v6.nft", Batch::new().service(None, Some(&v6)));
    }

    #[test]
    fn affinity_lifecycle() {
        let two = svc(Some(60), &[(1, "10.88.0.2", 8080), (2, "10.88.0.3", 8080)]);
        golden(
            "svc_affinity_add.nft",
            Batch::new().service(None, Some(&two)),
        );
        let one = svc(Some(60), &[(2, "10.88.0.3", 8080)]);
        golden(
            "svc_affinity_shrink.nft",
            Batch::new().service(Some(&two), Some(&one)),
        );
    }

    #[test]
    fn data_path_changes_are_elements_only() {
        let a = svc(None, &[(1, "10.88.0.2", 8080)]);
        let b = svc(None, &[(1, "10.88.0.2", 8080), (2, "10.88.0.3", 8080)]);
        for (old, new) in [(None, Some(&a)), (Some(&a), Some(&b)), (Some(&b), None)] {
            let batch = Batch {
                cmds: Batch::new().service(old, new).cmds.clone(),
            };
            assert!(
                batch
                    .cmds
                    .iter()
                    .all(|c| matches!(c, Cmd::AddElements { .. } | Cmd::RemoveElements { .. })),
                "{}",
                batch.render()
            );
            // ... and so they take the netlink fast path.
            assert!(crate::nft::wire::encode("knit", &batch.cmds).is_some());
        }
    }

    #[test]
    fn many_backends_use_a_chain_ladder() {
        let many: Vec<(i64, String, u16)> = (0..=DATA_MAX as i64)
            .map(|i| (i + 1, format!("10.88.1.{}", i + 2), 80))
            .collect();
        let refs: Vec<(i64, &str, u16)> = many
            .iter()
            .map(|(b, ip, p)| (*b, ip.as_str(), *p))
            .collect();
        let big = svc(None, &refs);
        golden("svc_ladder.nft", Batch::new().service(None, Some(&big)));
        // Shrinking into the maps-only layout removes the chain.
        let small = svc(None, &refs[..2]);
        golden(
            "svc_ladder_to_maps.nft",
            Batch::new().service(Some(&big), Some(&small)),
        );
        let b = Batch::new().service(None, Some(&big)).cmds.clone();
        assert!(
            crate::nft::wire::encode("knit", &b).is_some(),
            "ladders are netlink-encodable"
        );
    }
}
