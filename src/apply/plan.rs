//! The diff between a topology and the store, as steps. Pure: the store's side comes in
//! as a [`Current`] snapshot (see `exec::snapshot`).
//!
//! Per object: declared and equal → nothing; declared and missing → create; declared and
//! different → change just that (a backend added or removed; a default set; an
//! attachment whose ports, labels or aliases changed is detached and attached again; a
//! service whose address changed and a network whose subnets changed are replaced);
//! created by an earlier apply of this topology but no longer declared → removed.
//! Objects this topology did not create are never changed or removed: if one differs
//! from the file, the plan is refused (a conflict) rather than touch it.
//!
//! Order: removals first, dependents before what they depend on (rules, services,
//! attachments, sandboxes, networks), then creations the other way round. Undoing a run is
//! running the inverses of its done steps backwards (see [`Step::inverse`]).

use super::{AttDecl, Kind, NetDecl, RuleDecl, Topology};
use crate::error::{Error, Result};
use crate::model::policy::{Default, Direction};
use crate::model::service::{BackendSpec, ServiceSpec};
use std::collections::BTreeSet;

/// What the store has (every object, not only the topology's) and what the topology
/// created before.
#[derive(Debug, Clone, std::default::Default)]
pub struct Current {
    pub networks: Vec<NetDecl>,
    /// Named namespaces that exist (of those the file or the record names).
    pub sandboxes: BTreeSet<String>,
    pub attachments: Vec<AttDecl>,
    pub services: Vec<ServiceSpec>,
    pub rules: Vec<RuleDecl>,
    /// The topology's ownership record: (kind, key).
    pub owned: BTreeSet<(Kind, String)>,
    /// Records whose object was removed and made again by someone else since (another
    /// identity under the same name): not the topology's any more.
    pub remade: Vec<(Kind, String)>,
}

impl Current {
    fn owns(&self, kind: Kind, key: &str) -> bool {
        self.owned.contains(&(kind, key.to_string()))
    }
}

/// One change, carrying everything needed to do it and to undo it.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateNetwork {
        net: NetDecl,
        why: Option<String>,
    },
    RemoveNetwork {
        net: NetDecl,
        why: Option<String>,
    },
    SetDefault {
        network: String,
        dir: Direction,
        from: Default,
        to: Default,
    },
    AddSandbox(String),
    RemoveSandbox(String),
    Attach {
        att: AttDecl,
        why: Option<String>,
    },
    Detach {
        att: AttDecl,
        why: Option<String>,
    },
    CreateService {
        svc: ServiceSpec,
        why: Option<String>,
    },
    RemoveService {
        svc: ServiceSpec,
        why: Option<String>,
    },
    AddBackend {
        service: String,
        backend: BackendSpec,
    },
    RemoveBackend {
        service: String,
        backend: BackendSpec,
    },
    AddRule(RuleDecl),
    RemoveRule(RuleDecl),
}

/// The steps, in order, and notes on what is used but not owned.
#[derive(Debug, Clone, std::default::Default)]
pub struct Plan {
    pub topology: String,
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

/// Plans `want` against `have`. Conflicts with objects the topology did not create are
/// errors; nothing has been changed then.
pub fn plan(want: &Topology, have: &Current) -> Result<Plan> {
    let mut p = Phases::default();
    let mut notes = vec![];
    let t = &want.name;
    let foreign = |kind: &str, name: &str, diff: &[String]| {
        Error::Conflict(format!(
            "{kind} {name:?} exists but was not created by topology {t:?}, and it differs from the file ({}); knit apply changes only what it created: rename it in the file, or remove it first",
            diff.join("; ")
        ))
    };

    // Networks.
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    for w in &want.networks {
        let name = &w.spec.name;
        let Some(h) = have.networks.iter().find(|h| h.spec.name == *name) else {
            p.create_nets.push(Step::CreateNetwork {
                net: w.clone(),
                why: None,
            });
            defaults(&mut p.create_nets, w, Default::Allow, Default::Allow);
            continue;
        };
        let diff = super::compare::net_diff(w, h);
        match (have.owns(Kind::Network, name), diff.is_empty()) {
            (true, true) => defaults(&mut p.create_nets, w, h.ingress, h.egress),
            (true, false) => {
                let why = Some(diff.join("; "));
                replaced.insert(name.clone());
                p.remove_nets.push(Step::RemoveNetwork {
                    net: h.clone(),
                    why: why.clone(),
                });
                p.create_nets.push(Step::CreateNetwork {
                    net: w.clone(),
                    why,
                });
                defaults(&mut p.create_nets, w, Default::Allow, Default::Allow);
            }
            (false, _) => {
                let mut diff = diff;
                for (dir, a, b) in [
                    ("ingress", w.ingress, h.ingress),
                    ("egress", w.egress, h.egress),
                ] {
                    if a != b {
                        diff.push(format!(
                            "{dir} default {} in the file, {} here",
                            a.as_str(),
                            b.as_str()
                        ));
                    }
                }
                if !diff.is_empty() {
                    return Err(foreign("network", name, &diff));
                }
                notes.push(format!("network {name} exists and is used as it is (not created by this topology: destroy leaves it)"));
            }
        }
    }
    for h in &have.networks {
        let name = &h.spec.name;
        let gone = !want.networks.iter().any(|w| w.spec.name == *name);
        if have.owns(Kind::Network, name) && gone {
            p.remove_nets.push(Step::RemoveNetwork {
                net: h.clone(),
                why: None,
            });
            replaced.insert(name.clone());
        }
    }
    // A network that goes away takes its attachments along: all must be the topology's.
    for h in &have.attachments {
        if replaced.contains(&h.network) && !have.owns(Kind::Attachment, &h.key()) {
            return Err(Error::Conflict(format!(
                "network {:?} was created by topology {t:?} and must be {}, but sandbox {:?} was attached to it outside the topology; detach it first",
                h.network,
                if want.networks.iter().any(|w| w.spec.name == h.network) {
                    "replaced"
                } else {
                    "removed"
                },
                h.sandbox
            )));
        }
    }

    // ... and its policy rules: a rule added by hand is not the topology's to drop.
    for h in &have.rules {
        if replaced.contains(&h.network) && !have.owns(Kind::Rule, &h.key()) {
            return Err(Error::Conflict(format!(
                "network {:?} was created by topology {t:?} and must be replaced or removed, but a policy rule on it was added outside the topology ({}); remove it first",
                h.network,
                h.spec.dir.as_str()
            )));
        }
    }

    // Sandboxes.
    for s in &want.sandboxes {
        if !have.sandboxes.contains(s) {
            p.add_sbx.push(Step::AddSandbox(s.clone()));
        } else if !have.owns(Kind::Sandbox, s) {
            notes.push(format!("sandbox {s} exists and is used as it is (not created by this topology: destroy leaves it)"));
        }
    }
    for (kind, s) in &have.owned {
        if *kind == Kind::Sandbox && !want.sandboxes.contains(s) && have.sandboxes.contains(s) {
            // Removing a sandbox detaches it from every network: all must be the
            // topology's attachments.
            if let Some(h) = have
                .attachments
                .iter()
                .find(|h| h.sandbox == *s && !have.owns(Kind::Attachment, &h.key()))
            {
                return Err(Error::Conflict(format!(
                    "sandbox {s:?} was created by topology {t:?} and must be removed, but it was attached to network {:?} outside the topology; detach it first",
                    h.network
                )));
            }
            p.remove_sbx.push(Step::RemoveSandbox(s.clone()));
        }
    }

    // Attachments.
    for w in &want.attachments {
        let h = have.attachments.iter().find(|h| h.key() == w.key());
        let Some(h) = h.filter(|_| !replaced.contains(&w.network)) else {
            let why = replaced
                .contains(&w.network)
                .then(|| "its network is replaced".to_string());
            p.attach.push(Step::Attach {
                att: w.clone(),
                why,
            });
            continue;
        };
        let diff = super::compare::att_diff(w, h);
        if diff.is_empty() {
            if !have.owns(Kind::Attachment, &w.key()) {
                notes.push(format!("{} is attached to {} already and used as it is (not by this topology: destroy leaves it)", w.sandbox, w.network));
            }
        } else if have.owns(Kind::Attachment, &w.key()) {
            // Attached again as it was where the file leaves it open: same address,
            // interface and MAC, so peers and DNS see the same sandbox.
            let mut again = w.clone();
            if again.ips.is_empty() {
                again.ips = h.ips.clone();
            }
            again.ifname = again.ifname.or_else(|| h.ifname.clone());
            again.mac = again.mac.or(h.mac);
            let why = diff.join("; ");
            p.detach.push(Step::Detach {
                att: h.clone(),
                why: Some(format!("{why}: attached again below")),
            });
            p.attach.push(Step::Attach {
                att: again,
                why: Some(why),
            });
        } else {
            return Err(foreign("attachment", &w.key(), &diff));
        }
    }
    for h in &have.attachments {
        if !have.owns(Kind::Attachment, &h.key()) {
            continue;
        }
        if !want.attachments.iter().any(|w| w.key() == h.key()) {
            p.detach.push(Step::Detach {
                att: h.clone(),
                why: None,
            });
        } else if replaced.contains(&h.network) {
            let why = Some("its network is replaced: attached again below".to_string());
            p.detach.push(Step::Detach {
                att: h.clone(),
                why,
            });
        }
    }

    // Services.
    for w in &want.services {
        let Some(h) = have.services.iter().find(|h| h.name == w.name) else {
            p.create_svcs.push(Step::CreateService {
                svc: w.clone(),
                why: None,
            });
            continue;
        };
        let same_frame = h.vip == w.vip && h.affinity == w.affinity && h.node_port == w.node_port;
        let (add, rm) = backend_diff(w, h);
        match (have.owns(Kind::Service, &w.name), same_frame, add.is_empty() && rm.is_empty()) {
            (_, true, true) if !have.owns(Kind::Service, &w.name) => notes.push(format!(
                "service {} exists and is used as it is (not created by this topology: destroy leaves it)",
                w.name
            )),
            (_, true, true) => {}
            (true, true, false) => {
                for b in rm {
                    p.remove_svcs.push(Step::RemoveBackend { service: w.name.clone(), backend: b });
                }
                for b in add {
                    p.create_svcs.push(Step::AddBackend { service: w.name.clone(), backend: b });
                }
            }
            (true, false, _) => {
                let why = Some(super::compare::svc_diff(w, h).join("; "));
                p.remove_svcs.push(Step::RemoveService { svc: h.clone(), why: why.clone() });
                p.create_svcs.push(Step::CreateService { svc: w.clone(), why });
            }
            (false, _, _) => return Err(foreign("service", &w.name, &super::compare::svc_diff(w, h))),
        }
    }
    for h in &have.services {
        if have.owns(Kind::Service, &h.name) && !want.services.iter().any(|w| w.name == h.name) {
            p.remove_svcs.push(Step::RemoveService {
                svc: h.clone(),
                why: None,
            });
        }
    }

    // Rules: a replaced network loses its rules with it, so they are added again.
    for w in &want.rules {
        let alive = have.rules.contains(w) && !replaced.contains(&w.network);
        if !alive {
            p.add_rules.push(Step::AddRule(w.clone()));
        } else if !have.owns(Kind::Rule, &w.key()) {
            notes.push(format!("a rule on {} identical to the file's exists and is used as it is (destroy leaves it)", w.network));
        }
    }
    for h in &have.rules {
        if have.owns(Kind::Rule, &h.key())
            && (!want.rules.contains(h) || replaced.contains(&h.network))
        {
            p.remove_rules.push(Step::RemoveRule(h.clone()));
        }
    }

    Ok(Plan {
        topology: want.name.clone(),
        steps: p.into_steps(),
        notes,
    })
}

/// Steps that bring a network's defaults from (`ingress`, `egress`) to the declared ones.
fn defaults(out: &mut Vec<Step>, w: &NetDecl, ingress: Default, egress: Default) {
    for (dir, from, to) in [
        (Direction::Ingress, ingress, w.ingress),
        (Direction::Egress, egress, w.egress),
    ] {
        if from != to {
            out.push(Step::SetDefault {
                network: w.spec.name.clone(),
                dir,
                from,
                to,
            });
        }
    }
}

/// Backends to add and to remove.
fn backend_diff(w: &ServiceSpec, h: &ServiceSpec) -> (Vec<BackendSpec>, Vec<BackendSpec>) {
    let add = w
        .backends
        .iter()
        .filter(|b| !h.backends.contains(b))
        .cloned()
        .collect();
    let rm = h
        .backends
        .iter()
        .filter(|b| !w.backends.contains(b))
        .cloned()
        .collect();
    (add, rm)
}

/// Steps by phase, concatenated in dependency order.
#[derive(Default)]
struct Phases {
    remove_rules: Vec<Step>,
    remove_svcs: Vec<Step>,
    detach: Vec<Step>,
    remove_sbx: Vec<Step>,
    remove_nets: Vec<Step>,
    create_nets: Vec<Step>,
    add_sbx: Vec<Step>,
    attach: Vec<Step>,
    create_svcs: Vec<Step>,
    add_rules: Vec<Step>,
}

impl Phases {
    fn into_steps(self) -> Vec<Step> {
        [
            self.remove_rules,
            self.remove_svcs,
            self.detach,
            self.remove_sbx,
            self.remove_nets,
            self.create_nets,
            self.add_sbx,
            self.attach,
            self.create_svcs,
            self.add_rules,
        ]
        .concat()
    }
}

impl Step {
    /// The step that undoes this one.
    pub fn inverse(&self) -> Step {
        match self.clone() {
            Step::CreateNetwork { net, .. } => Step::RemoveNetwork {
                net,
                why: Some("undo".into()),
            },
            Step::RemoveNetwork { net, .. } => Step::CreateNetwork {
                net,
                why: Some("undo".into()),
            },
            Step::SetDefault {
                network,
                dir,
                from,
                to,
            } => Step::SetDefault {
                network,
                dir,
                from: to,
                to: from,
            },
            Step::AddSandbox(s) => Step::RemoveSandbox(s),
            Step::RemoveSandbox(s) => Step::AddSandbox(s),
            Step::Attach { att, .. } => Step::Detach {
                att,
                why: Some("undo".into()),
            },
            Step::Detach { att, .. } => Step::Attach {
                att,
                why: Some("undo".into()),
            },
            Step::CreateService { svc, .. } => Step::RemoveService {
                svc,
                why: Some("undo".into()),
            },
            Step::RemoveService { svc, .. } => Step::CreateService {
                svc,
                why: Some("undo".into()),
            },
            Step::AddBackend { service, backend } => Step::RemoveBackend { service, backend },
            Step::RemoveBackend { service, backend } => Step::AddBackend { service, backend },
            Step::AddRule(r) => Step::RemoveRule(r),
            Step::RemoveRule(r) => Step::AddRule(r),
        }
    }

    /// The ownership record the step makes (true) or ends (false), if any.
    pub fn ownership(&self) -> Option<(Kind, String, bool)> {
        Some(match self {
            Step::CreateNetwork { net, .. } => (Kind::Network, net.spec.name.clone(), true),
            Step::RemoveNetwork { net, .. } => (Kind::Network, net.spec.name.clone(), false),
            Step::AddSandbox(s) => (Kind::Sandbox, s.clone(), true),
            Step::RemoveSandbox(s) => (Kind::Sandbox, s.clone(), false),
            Step::Attach { att, .. } => (Kind::Attachment, att.key(), true),
            Step::Detach { att, .. } => (Kind::Attachment, att.key(), false),
            Step::CreateService { svc, .. } => (Kind::Service, svc.name.clone(), true),
            Step::RemoveService { svc, .. } => (Kind::Service, svc.name.clone(), false),
            Step::AddRule(r) => (Kind::Rule, r.key(), true),
            Step::RemoveRule(r) => (Kind::Rule, r.key(), false),
            Step::SetDefault { .. } | Step::AddBackend { .. } | Step::RemoveBackend { .. } => {
                return None;
            }
        })
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
