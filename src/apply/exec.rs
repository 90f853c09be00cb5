//! Plans run against the node: the store snapshot a plan is made against, and each step
//! through the same `Node` operation the CLI command uses (so the same validation, locks
//! and one nft transaction per operation).
//!
//! Ownership: a step that creates records the object as the topology's before it runs
//! (a crash in between leaves a claim on something missing, which the next apply prunes,
//! never an unrecorded object that destroy would leave behind); the claim is dropped if
//! the step fails or finds the object made already by someone else. A step that removes
//! drops the record after it ran.
//!
//! Failure: every step is atomic (the `Node` operation undoes itself). When one fails,
//! the steps this run did are undone in reverse order by running their inverses, and the
//! error names the step. Should an undo step fail too, the error says so; the store is
//! consistent after every step, so running apply again converges, and destroy removes
//! what the record holds.

use super::plan::{Current, Plan, Step, plan};
use super::validate::Known;
use super::{AttDecl, Kind, NetDecl, RuleDecl, Topology};
use crate::error::{Error, Result};
use crate::model::service::ServiceSpec;
use crate::model::{Mac, NetworkSpec, PublishSpec, SandboxRef, SubnetSpec};
use crate::node::Node;
use crate::node::attach::AttachArgs;
use std::collections::BTreeSet;

/// The networks and sandboxes a file may name without declaring them.
pub fn known(node: &Node) -> Result<Known> {
    let mut k = Known::default();
    k.networks
        .extend(node.store.networks()?.into_iter().map(|n| n.name));
    k.sandboxes.extend(node.store.sandboxes()?);
    k.sandboxes
        .extend(node.store.all_attachments()?.into_iter().map(|a| a.sandbox));
    Ok(k)
}

/// What the store holds, as declarations, and what topology `want.name` owns.
pub fn snapshot(node: &Node, want: &Topology) -> Result<Current> {
    let s = &node.store;
    let mut cur = Current::default();
    for n in s.networks()? {
        cur.networks.push(NetDecl {
            spec: NetworkSpec {
                name: n.name,
                driver: n.driver,
                bridge: n.bridge,
                subnets: n
                    .subnets
                    .iter()
                    .map(|x| SubnetSpec {
                        cidr: x.subnet,
                        gateway: x.gateway,
                        range_start: x.range_start,
                        range_end: x.range_end,
                    })
                    .collect(),
                internal: n.internal,
                masquerade: n.masquerade,
                mtu: n.mtu,
                bridge_gateway: n.bridge_gateway,
                promisc: n.promisc,
                dns: n.dns,
                dns_domain: n.dns_domain,
            },
            ingress: n.policy,
            egress: n.egress,
        });
    }
    for a in s.all_attachments()? {
        let mut ports: Vec<PublishSpec> = vec![];
        for p in &a.ports {
            let spec = PublishSpec {
                host_ip: p.host_ip,
                host_ports: (p.host_port, p.host_port),
                container_ports: (p.container_port, p.container_port),
                proto: p.proto,
            };
            // One mapping per container address: the same port of a dual-stack sandbox.
            if !ports.contains(&spec) {
                ports.push(spec);
            }
        }
        cur.attachments.push(AttDecl {
            network: a.network,
            sandbox: a.sandbox,
            ips: a.ips.iter().map(|n| n.addr()).collect(),
            mac: Mac::parse("mac", &a.mac).ok(),
            ifname: Some(a.ifname),
            ports,
            labels: a.labels,
            aliases: a.aliases,
        });
    }
    for svc in s.services()? {
        cur.services.push(ServiceSpec {
            name: svc.name,
            vip: svc.vip,
            backends: svc.backends.into_iter().map(|b| b.spec).collect(),
            affinity: svc.affinity,
            node_port: svc.node_port,
        });
    }
    for r in s.rules()? {
        cur.rules.push(RuleDecl {
            network: r.network,
            spec: r.spec,
        });
    }
    for (kind, key, ident) in s.owned(&want.name)? {
        // A kind this knit does not know (a newer one wrote it) is left alone.
        let Some(k) = Kind::parse(&kind) else {
            continue;
        };
        let now = ident_of(node, k, &key)?;
        match (ident, now) {
            (Some(was), Some(now)) if was != now => cur.remade.push((k, key)),
            _ => {
                cur.owned.insert((k, key));
            }
        }
    }
    let names: BTreeSet<&String> = want
        .sandboxes
        .iter()
        .chain(
            cur.owned
                .iter()
                .filter(|(k, _)| *k == Kind::Sandbox)
                .map(|(_, s)| s),
        )
        .collect();
    for n in names {
        if crate::netns::is_netns(&crate::netns::named_path(n)) {
            cur.sandboxes.insert(n.clone());
        }
    }
    Ok(cur)
}

/// The identity of the object `key` of kind `k` as it exists now (None: it does not).
/// Row ids alone are reused (SQLite hands a deleted last id out again): networks and
/// attachments add the MAC drawn at random when they were made.
fn ident_of(node: &Node, k: Kind, key: &str) -> Result<Option<String>> {
    let s = &node.store;
    Ok(match k {
        Kind::Network => s
            .find_network(key)?
            .map(|n| format!("{}/{}", n.id, n.bridge_mac)),
        Kind::Sandbox => crate::netns::Netns::open(crate::netns::named_path(key))
            .and_then(|ns| ns.id())
            .ok()
            .map(|(dev, ino)| format!("{dev}:{ino}")),
        Kind::Attachment => match key.split_once('/') {
            Some((net, sbx)) => match s.find_network(net)? {
                Some(n) => s
                    .attachment(n.id, sbx)?
                    .map(|a| format!("{}/{}", a.id, a.mac)),
                None => None,
            },
            None => None,
        },
        Kind::Service => s
            .services()?
            .into_iter()
            .find(|x| x.name == key)
            .map(|x| x.id.to_string()),
        Kind::Rule => s
            .rules()?
            .into_iter()
            .find(|r| {
                RuleDecl {
                    network: r.network.clone(),
                    spec: r.spec.clone(),
                }
                .key()
                    == key
            })
            .map(|r| r.id.to_string()),
    })
}

/// Ownership records of objects that are gone (removed by hand since), or gone and made
/// again by someone else: forgotten, so that object is not taken for the topology's.
pub fn prune_stale(node: &mut Node, topology: &str, cur: &mut Current) -> Result<()> {
    for (k, key) in std::mem::take(&mut cur.remade) {
        node.store.disown(topology, k.as_str(), &key)?;
    }
    let stale: Vec<(Kind, String)> = cur
        .owned
        .iter()
        .filter(|(k, key)| match k {
            Kind::Network => !cur.networks.iter().any(|n| n.spec.name == *key),
            Kind::Sandbox => !cur.sandboxes.contains(key),
            Kind::Attachment => !cur.attachments.iter().any(|a| a.key() == *key),
            Kind::Service => !cur.services.iter().any(|s| s.name == *key),
            Kind::Rule => !cur.rules.iter().any(|r| r.key() == *key),
        })
        .cloned()
        .collect();
    for (k, key) in stale {
        node.store.disown(topology, k.as_str(), &key)?;
        cur.owned.remove(&(k, key));
    }
    Ok(())
}

/// Plans `want` and, unless `dry_run`, runs the plan. Holds the topology's lock
/// throughout, so two applies of one topology take turns.
pub fn apply(node: &mut Node, want: &Topology, dry_run: bool) -> Result<Plan> {
    let _lock = crate::lock::Lock::take_file(
        &node.state_dir,
        &format!("topology-{}.lock", want.name),
        true,
    )?;
    let mut cur = snapshot(node, want)?;
    if !dry_run {
        prune_stale(node, &want.name, &mut cur)?;
    }
    let p = plan(want, &cur)?;
    if !dry_run {
        run(node, &p)?;
    }
    Ok(p)
}

/// Runs the steps in order; on a failure undoes the done ones (see the module comment).
pub fn run(node: &mut Node, p: &Plan) -> Result<()> {
    let mut done: Vec<&Step> = vec![];
    for (i, step) in p.steps.iter().enumerate() {
        match do_step(node, &p.topology, step) {
            Ok(true) => done.push(step),
            Ok(false) => {}
            Err(e) => {
                let undo = undo(node, &p.topology, &done);
                return Err(Error::Step {
                    context: format!(
                        "topology {}: step {}/{} ({step}) failed; {undo}",
                        p.topology,
                        i + 1,
                        p.steps.len()
                    ),
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(())
}

/// Undoes `done` backwards; says what happened, for the error message.
fn undo(node: &mut Node, topology: &str, done: &[&Step]) -> String {
    let mut failed = vec![];
    for step in done.iter().rev() {
        let inv = step.inverse();
        if let Err(e) = do_step(node, topology, &inv) {
            failed.push(format!("{inv}: {e}"));
        }
    }
    match (done.len(), failed.is_empty()) {
        (0, _) => "nothing had been changed".into(),
        (n, true) => format!("the {n} step(s) done before it were undone"),
        (n, false) => format!(
            "undoing the {n} step(s) before it failed for {} (the store is consistent: run apply again to converge, or destroy to remove what the topology holds)",
            failed.join("; ")
        ),
    }
}

/// One step with its ownership record. Ok(false): nothing changed (the object existed
/// already, or was gone already).
fn do_step(node: &mut Node, topology: &str, step: &Step) -> Result<bool> {
    let own = step.ownership();
    if let Some((k, key, true)) = &own {
        node.store.own(topology, k.as_str(), key)?;
    }
    let r = op(node, step);
    match (&own, &r) {
        (Some((k, key, true)), Ok(false) | Err(_)) | (Some((k, key, false)), Ok(_)) => {
            node.store.disown(topology, k.as_str(), key)?;
        }
        (Some((k, key, true)), Ok(true)) => {
            if let Some(id) = ident_of(node, *k, key)? {
                node.store.set_ident(topology, k.as_str(), key, &id)?;
            }
        }
        _ => {}
    }
    r
}

/// The sandbox's resolv.conf follows its networks, as after `knit attach`; the step itself
/// is done either way, so a failure here is only worth a warning (failing the step would
/// leave a made object out of the record).
fn sync_resolv(node: &Node, sandbox: &str) {
    if let Err(e) = crate::resolv::sync(&node.store, sandbox) {
        tracing::warn!("resolv.conf of {sandbox} not updated: {e}");
    }
}

/// Whether an error says the object is not there (a removal then has nothing to do).
fn gone(r: Result<bool>) -> Result<bool> {
    match r {
        Err(Error::NotFound { .. }) => Ok(false),
        other => other,
    }
}

/// The `Node` operation of a step, as the CLI command does it.
fn op(node: &mut Node, step: &Step) -> Result<bool> {
    match step {
        Step::CreateNetwork { net, .. } => node.create_network(&net.spec).map(|_| true),
        Step::RemoveNetwork { net, .. } => gone(node.remove_network(&net.spec.name).map(|_| true)),
        Step::SetDefault {
            network, dir, to, ..
        } => node
            .set_policy_default(network, *dir, *to, None)
            .map(|_| true),
        Step::AddSandbox(s) => node.add_sandbox(s),
        Step::RemoveSandbox(s) => {
            let r = gone(node.remove_sandbox(s).map(|_| true));
            sync_resolv(node, s);
            r
        }
        Step::Attach { att, .. } => {
            let sandbox = SandboxRef::parse(&att.sandbox)?;
            let done = node.attach(&AttachArgs {
                network: &att.network,
                sandbox: &sandbox,
                ifname: att.ifname.as_deref(),
                static_ips: &att.ips,
                mac: att.mac,
                publish: &att.ports,
                container_id: None,
                routes: None,
                aliases: &att.aliases,
                labels: &att.labels,
            })?;
            sync_resolv(node, &att.sandbox);
            Ok(!done.existed)
        }
        Step::Detach { att, .. } => {
            let sandbox = SandboxRef::parse(&att.sandbox)?;
            let r = gone(node.detach(&att.network, &sandbox).map(|a| a.is_some()));
            sync_resolv(node, &att.sandbox);
            r
        }
        Step::CreateService { svc, .. } => {
            let (s, existed) = node.create_service(svc)?;
            // On a cluster node the service is the cluster's: published, or undone.
            if let Err(e) = node.publish_service(&s.name) {
                if !existed {
                    let _ = node.remove_service(&s.name);
                }
                return Err(e);
            }
            Ok(!existed)
        }
        Step::RemoveService { svc, .. } => {
            let cluster = node.withdraw_service(&svc.name)?;
            match node.remove_service(&svc.name) {
                Ok(_) => Ok(true),
                // Gone already (on a cluster node its agent saw it leave etcd).
                Err(Error::NotFound { .. }) => Ok(cluster),
                Err(e) => Err(e),
            }
        }
        Step::AddBackend { service, backend } | Step::RemoveBackend { service, backend } => {
            let add = matches!(step, Step::AddBackend { .. });
            node.change_backend(service, backend, add)?;
            if node.store.cluster_services()?.contains(service)
                && let Err(e) = node.publish_service(service)
            {
                let _ = node.change_backend(service, backend, !add);
                return Err(e);
            }
            Ok(true)
        }
        Step::AddRule(r) => node
            .add_policy(&r.network, r.spec.clone())
            .map(|(_, new)| new),
        Step::RemoveRule(r) => {
            let Some(net) = node.store.find_network(&r.network)? else {
                return Ok(false);
            };
            match node.store.find_rule(net.id, &r.spec)? {
                Some(rule) => node.remove_policy(&rule.id.to_string()).map(|_| true),
                None => Ok(false),
            }
        }
    }
}
