//! A service as nftables objects, in the shape of kube-proxy's nftables mode:
//!
//! - `svc4`/`svc6` map `vip . proto . port` to `goto svcID`; `np4`/`np6` map a node port
//!   to the same chain. One element per service: lookup cost does not grow with services.
//! - `svcID` spreads new connections with `numgen random`: one rule with an anonymous map
//!   of backends, or (client-IP affinity) a vmap to per-backend chains that remember the
//!   client in a timeout set (`svcID_aB`) consulted first.
//! - A service without backends has no chain entry but an element in `svc_none*`/`np_none`,
//!   which the filter hooks answer with a TCP reset or ICMP unreachable.
//!
//! Every change is a diff between the service's old and new form, so adding, changing or
//! removing one service touches only that service's objects.

use crate::firewall::{Batch, Cmd, DnatRule, Elem};
use crate::model::Proto;
use crate::service::spec::Vip;
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

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
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

    /// The set/map elements that route traffic to this service (or refuse it).
    fn elements(&self) -> Vec<(&'static str, Elem)> {
        let live = !self.backends.is_empty();
        let goto = live.then(|| chain(self.id));
        let (map, np) = match (self.v4(), live) {
            (true, true) => ("svc4", "np4"),
            (false, true) => ("svc6", "np6"),
            (true, false) => ("svc_none4", "np_none"),
            (false, false) => ("svc_none6", "np_none"),
        };
        let mut out = vec![(
            map,
            Elem::Svc {
                ip: self.vip.ip,
                proto: self.vip.proto,
                port: self.vip.port,
                goto: goto.clone(),
            },
        )];
        if let Some(port) = self.node_port {
            out.push((
                np,
                Elem::NodePort {
                    proto: self.vip.proto,
                    port,
                    goto,
                },
            ));
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
        let proto: Proto = self.vip.proto;
        let n = self.backends.len();
        if n == 0 {
            return (vec![], vec![]);
        }
        if self.affinity.is_none() {
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
                        format!(
                            "meta l4proto {proto} dnat {fam} to {}",
                            endpoint(*ip, *port)
                        ),
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
            self.elems(*set, vec![e.clone()], false);
        }
        let Some(id) = new.or(old).map(|s| s.id) else {
            return self;
        };
        // The service chain goes first so nothing references a backend chain below.
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
        for (set, e) in new_elems.into_iter().filter(|x| !old_elems.contains(x)) {
            self.elems(set, vec![e], true);
        }
        self
    }
}

fn affinity_spec(s: &ServiceFw) -> String {
    let (_, ty) = s.family();
    format!(
        "type {ty}; flags dynamic,timeout; timeout {}s;",
        s.affinity
            .unwrap_or(crate::service::spec::DEFAULT_AFFINITY_SECS)
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
        crate::firewall::golden(name, &b.render());
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
    fn unchanged_elements_are_not_touched() {
        let a = svc(None, &[(1, "10.88.0.2", 8080)]);
        let b = svc(None, &[(1, "10.88.0.2", 8080), (2, "10.88.0.3", 8080)]);
        let batch = Batch {
            cmds: Batch::new().service(Some(&a), Some(&b)).cmds.clone(),
        };
        assert!(
            !batch
                .cmds
                .iter()
                .any(|c| matches!(c, Cmd::AddElements { .. } | Cmd::RemoveElements { .. })),
            "a backend change must only rewrite the service's own chain"
        );
    }
}
