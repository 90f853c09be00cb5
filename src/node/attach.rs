//! Attaching a sandbox to a network and detaching it, under the network's and the
//! sandbox's locks. Setup order: reserve in the store (pending, owned by this process) →
//! links, addresses, routes (the driver's) → under the kernel lock, one nft transaction →
//! mark ready. Teardown mirrors it: mark removing → links → nft → release. A failure
//! undoes what was done; a crash leaves a pending or removing record that the next
//! attach/detach or reconcile finishes.

use crate::driver::{defaults_present, plumb_with, sandbox_netlink};
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::model::SandboxRef;
use crate::netlink::{Netlink, Route};
use crate::netns::Netns;
use crate::nft::Batch;
use crate::node::Node;
use crate::node::network::{Applied, Leaving, attach_fw};
use crate::store::{AttachState, Attachment, Network, Reserved};
use std::net::IpAddr;

/// The ptp driver's gateway as sandboxes see it: link-local, answered by a static
/// neighbour entry pointing at the host-side veth.
/// The request type (shared with the CLI, CNI and the store).
pub use crate::model::AttachRequest as AttachArgs;

pub struct Attached {
    pub network: Network,
    pub attachment: Attachment,
    /// The sandbox was already attached; nothing changed.
    pub existed: bool,
}

impl Node {
    /// Attaches a sandbox. Serialized with every other change to the same sandbox (and
    /// with the network's creation and removal); commands on other sandboxes run alongside.
    pub fn attach(&mut self, args: &AttachArgs) -> Result<Attached> {
        for a in args.aliases {
            crate::model::validate_dns_name("--alias", a)?;
        }
        if let Some(i) = args.ifname {
            crate::model::validate_ifname("--ifname", i)?;
        }
        // A handoff has no namespace of knit's to enter: the runtime moves the link.
        let handoff = match args.sandbox {
            SandboxRef::Handoff { ifname, .. } => Some(ifname.as_str()),
            _ => None,
        };
        let ns = match handoff {
            Some(_) => None,
            None => {
                let ns = Netns::open(args.sandbox.path())
                    .map_err(|_| Error::not_found("sandbox", args.sandbox.key()))?;
                refuse_node_namespace(&ns, &args.sandbox.key())?;
                Some(ns)
            }
        };
        crate::trace::phase("sandbox namespace checked");
        // An interrupted creation is finished first, under the network's own lock.
        if let Some(mut n) = self.store.find_network(args.network)?
            && !n.ready
        {
            self.finish_network(&mut n)?;
        }
        let key = args.sandbox.key();
        let _net_lock = Lock::network(&self.state_dir, args.network, false)?;
        let _sbx_lock = Lock::sandbox(&self.state_dir, &key)?;
        // `sandbox rm` may have deleted it while we waited for the lock.
        if let Some(ns) = &ns
            && !Netns::open(args.sandbox.path()).is_ok_and(|n| n.id().ok() == ns.id().ok())
        {
            return Err(Error::not_found("sandbox", key));
        }
        crate::trace::phase("locks taken");
        let mut snl = None;
        let chosen;
        let ifname = match (args.ifname.or(handoff), &ns) {
            (Some(i), _) => i,
            (None, Some(ns)) => {
                chosen = self.next_ifname(args.network, &key, ns, &mut snl)?;
                chosen.as_str()
            }
            (None, None) => return Err(Error::invalid("--ifname", "", "a handoff names its link")),
        };
        crate::trace::phase("interface name chosen");
        let reserved = self
            .store
            .reserve(args, ifname, &crate::driver::host_veth_name)?;
        crate::trace::phase("store: reserved");
        let Reserved {
            network,
            attachment,
            existed,
        } = reserved;
        let ns_id = ns_identity(ns.as_ref())?;
        let att = match (existed, attachment.state) {
            // The path now names another namespace (a PID reused, a container restarted
            // at the same path): the record is a dead namespace's. Clear it (its veth went
            // with that namespace) and attach afresh.
            (true, AttachState::Ready)
                if attachment.netns_id.is_some()
                    && ns_id.is_some()
                    && attachment.netns_id != ns_id =>
            {
                self.remove_attachment(&network, &attachment)?;
                return self.attach_locked(args, ns.as_ref(), ifname, &network, &mut snl);
            }
            (true, AttachState::Ready) => {
                same_request(&attachment, args)?;
                return Ok(Attached {
                    network,
                    attachment,
                    existed: true,
                });
            }
            (true, AttachState::Pending | AttachState::Removing) => {
                if let Some(o) = attachment.owner.filter(|o| o.alive()) {
                    // Cannot happen while its owner holds the sandbox lock; never take
                    // over a record a live process is working on.
                    return Err(Error::Conflict(format!(
                        "sandbox {key:?} on network {:?} is being changed by process {}",
                        args.network, o.pid
                    )));
                }
                // A crashed attach or detach left this behind: clear its remnants first.
                self.remove_attachment(&network, &attachment)?;
                return self.attach_locked(args, ns.as_ref(), ifname, &network, &mut snl);
            }
            (false, _) => attachment,
        };
        if let Some(id) = &ns_id {
            self.store.set_netns_id(att.id, id)?;
        }
        self.build_attachment(network, att, ns.as_ref(), &mut snl)
    }

    /// After clearing a crashed remnant: reserve again and build (locks already held).
    fn attach_locked(
        &mut self,
        args: &AttachArgs,
        ns: Option<&Netns>,
        ifname: &str,
        net: &Network,
        snl: &mut Option<Netlink>,
    ) -> Result<Attached> {
        let key = args.sandbox.key();
        let r = self
            .store
            .reserve(args, ifname, &crate::driver::host_veth_name)?;
        if r.existed {
            return Err(Error::Conflict(format!(
                "sandbox {key:?} on network {:?}: a stale record could not be cleared",
                net.name
            )));
        }
        if let Some(id) = ns_identity(ns)? {
            self.store.set_netns_id(r.attachment.id, &id)?;
        }
        self.build_attachment(r.network, r.attachment, ns, snl)
    }

    /// Links, addresses and routes, then (under the kernel lock) the nft elements derived
    /// from the store and the record's `ready`. On failure, undoes exactly this attachment.
    fn build_attachment(
        &mut self,
        network: Network,
        att: Attachment,
        ns: Option<&Netns>,
        snl: &mut Option<Netlink>,
    ) -> Result<Attached> {
        let built = plumb_with(&network, &att, ns, snl).and_then(|_| {
            crate::trace::phase("links, addresses, routes");
            let _k = self.kernel_lock()?;
            self.ensure_table_intact()?;
            crate::trace::phase("nft: table checked");
            let mut b = Batch::new();
            let mut policy = Batch::new();
            b.attachment(&attach_fw(&network, &att), true);
            self.policy_changes_for(&mut b, &mut policy, &network, &att, true)?;
            self.service_changes_for(&mut b, &att.sandbox, att.id, true)?;
            crate::trace::phase("nft: batch built");
            let mut all = b.clone();
            all.cmds.extend(policy.cmds);
            // A rebuild writes what the kernel should hold without this pending
            // attachment (but with its policy atoms, recorded already): its own elements
            // go in again on the rebuilt table.
            if self.apply_or_rebuild(&all, Leaving::default())? == Applied::Rebuilt {
                b.apply()?;
            }
            self.store.mark_ready(att.id)
        });
        if let Err(e) = built {
            let _ = self.remove_attachment(&network, &att);
            return Err(e);
        }
        crate::trace::phase("nft elements added, store: ready");
        crate::conntrack::clear_published(&att);
        let mut attachment = att;
        attachment.state = AttachState::Ready;
        attachment.owner = None;
        Ok(Attached {
            network,
            attachment,
            existed: false,
        })
    }

    /// eth0, eth1, ...: the first name no other attachment of this sandbox uses and no
    /// interface in the sandbox has (an existing attachment to this network keeps its
    /// name).
    fn next_ifname(
        &self,
        network: &str,
        sandbox: &str,
        ns: &Netns,
        snl: &mut Option<Netlink>,
    ) -> Result<String> {
        let atts = self.store.attachments_of_sandbox(sandbox)?;
        if let Some(a) = atts.iter().find(|a| a.network == network) {
            return Ok(a.ifname.clone());
        }
        let present: Vec<String> = sandbox_netlink(ns, snl)?
            .links()?
            .into_iter()
            .map(|l| l.name)
            .collect();
        (0..4096)
            .map(|i| format!("eth{i}"))
            .find(|n| !atts.iter().any(|a| &a.ifname == n) && !present.contains(n))
            .ok_or_else(|| Error::Conflict(format!("sandbox {sandbox:?} has no free ethN name")))
    }

    /// Removes an attachment's nft elements and links (the kernel removes the peer, its
    /// addresses and routes with it). Idempotent. Only the host veth knit created (its
    /// recorded name and MAC) is deleted.
    pub fn unplumb(&mut self, net: &Network, att: &Attachment) -> Result<()> {
        self.unplumb_then(net, att, |_| Ok(()))
    }

    /// The same; `then` runs under the kernel lock right after the nft change (a detach
    /// releases the record there, so no other command's diff sees it in between).
    fn unplumb_then(
        &mut self,
        net: &Network,
        att: &Attachment,
        then: impl FnOnce(&mut Node) -> Result<()>,
    ) -> Result<()> {
        // The link goes first: deleting it waits for RCU callbacks to drain (rcu_barrier),
        // and doing it before the nft deletion keeps the element frees out of that wait.
        // In between, DNAT to the vanished address just finds no host.
        delete_owned_veth(att)?;
        crate::trace::phase("host veth deleted");
        restore_default_routes(&self.store, att);
        let done = self.unplumb_firewall(net, att, then);
        // Flows that still point at the address would keep reaching it (or a successor
        // with the same address): after the nft change, and outside the kernel lock (a
        // conntrack dump walks the kernel's whole hash).
        crate::conntrack::forget_attachment(att);
        done
    }

    fn unplumb_firewall(
        &mut self,
        net: &Network,
        att: &Attachment,
        then: impl FnOnce(&mut Node) -> Result<()>,
    ) -> Result<()> {
        let _k = self.kernel_lock()?;
        let mut b = Batch::new();
        b.attachment(&attach_fw(net, att), false);
        let mut policy = Batch::new();
        self.policy_changes_for(&mut b, &mut policy, net, att, false)?;
        b.cmds.extend(policy.cmds);
        self.service_changes_for(&mut b, &att.sandbox, att.id, false)?;
        self.apply_or_rebuild(
            &b,
            Leaving {
                attachment: Some(att.id),
                ..Leaving::default()
            },
        )?;
        crate::trace::phase("nft elements removed");
        then(self)
    }

    /// Detaches; Ok(None) if the sandbox was not attached (detach is idempotent).
    pub fn detach(&mut self, network: &str, sandbox: &SandboxRef) -> Result<Option<Attachment>> {
        let key = sandbox.key();
        let _net_lock = Lock::network(&self.state_dir, network, false)?;
        let _sbx_lock = Lock::sandbox(&self.state_dir, &key)?;
        let net = self.store.network(network)?;
        let Some(att) = self.store.attachment(net.id, &key)? else {
            return Ok(None);
        };
        crate::trace::phase("store: found");
        self.remove_attachment(&net, &att)?;
        Ok(Some(att))
    }

    /// Detaches one recorded attachment, taking the locks (CNI DEL and GC, `sandbox rm`).
    pub fn detach_attachment(&mut self, net: &Network, att: &Attachment) -> Result<()> {
        let _net_lock = Lock::network(&self.state_dir, &net.name, false)?;
        let _sbx_lock = Lock::sandbox(&self.state_dir, &att.sandbox)?;
        // Re-read under the locks: another command may have changed it meanwhile.
        match self.store.attachment(net.id, &att.sandbox)? {
            Some(a) if a.id == att.id => self.remove_attachment(net, &a),
            _ => Ok(()),
        }
    }

    /// The teardown itself (callers hold the locks, or the exclusive node lock). The record
    /// is marked pending first, so a failure part-way (a full disk, kill -9) leaves a
    /// record the next detach or reconcile finishes, never a ready one without links.
    pub(crate) fn remove_attachment(&mut self, net: &Network, att: &Attachment) -> Result<()> {
        if att.state == AttachState::Ready {
            self.store.mark_removing(att.id)?;
        }
        self.unplumb_then(net, att, |n| n.store.release(att.id))?;
        crate::trace::phase("store: released");
        Ok(())
    }
}

/// A namespace's identity as the store records it (`DEV:INODE`).
pub fn ns_identity(ns: Option<&Netns>) -> Result<Option<String>> {
    ns.map(|n| n.id().map(|(dev, ino)| format!("{dev}:{ino}")))
        .transpose()
}

/// Deletes the attachment's host veth if it is the one knit created (its recorded MAC). If
/// it is not in this namespace while the sandbox still has the attachment's interface,
/// this command runs in the wrong node namespace: refuse rather than drop the record of a
/// live link.
fn delete_owned_veth(att: &Attachment) -> Result<()> {
    let mut nl = Netlink::open()?;
    match nl.link_by_name(&att.host_ifname)? {
        Some(l)
            if l.mac
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(&att.host_mac)) =>
        {
            nl.delete_link(&att.host_ifname)?;
        }
        Some(_) => {} // someone else's link under this name: not knit's to delete
        None => {
            let inside = Netns::open(&att.netns_path)
                .and_then(|ns| Netlink::open_in(&ns)?.link_by_name(&att.ifname))
                .ok()
                .flatten();
            if inside.is_some_and(|l| {
                l.mac
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(&att.mac))
            }) {
                return Err(Error::Conflict(format!(
                    "the host end {} of {}'s {} is not in this network namespace, but the sandbox still has {}: run knit in the node namespace that holds it",
                    att.host_ifname, att.sandbox, att.network, att.ifname
                )));
            }
        }
    }
    Ok(())
}

/// After an attachment's link is gone, gives the sandbox back a default route for each
/// family it lost one for, from its other attachments in the order they were made.
/// Best effort: the sandbox may be gone, or the other networks internal.
fn restore_default_routes(store: &crate::store::Store, gone: &Attachment) {
    let Ok(ns) = Netns::open(&gone.netns_path) else {
        return;
    };
    let Ok(mut snl) = Netlink::open_in(&ns) else {
        return;
    };
    let Ok(mut have) = defaults_present(&mut snl, None) else {
        return;
    };
    let Ok(others) = store.attachments_of_sandbox(&gone.sandbox) else {
        return;
    };
    for a in others
        .iter()
        .filter(|a| a.id != gone.id && a.state == AttachState::Ready)
    {
        let (Ok(net), Ok(Some(index))) = (store.network(&a.network), snl.link_index(&a.ifname))
        else {
            continue;
        };
        for r in crate::driver::for_network(&net).sandbox_routes(&net, a) {
            let fam = usize::from(!r.dst.addr().is_ipv4());
            if r.dst.prefix_len() == 0
                && !have[fam]
                && snl
                    .add_route(&Route {
                        oif: Some(index),
                        ..r
                    })
                    .is_ok()
            {
                have[fam] = true;
            }
        }
    }
}

/// The node's own namespace (knit runs in it) and the host's initial one are never
/// sandboxes: attaching would replace their routes and detaching would leave none.
pub(super) fn refuse_node_namespace(ns: &Netns, key: &str) -> Result<()> {
    let id = ns.id()?;
    let node = Netns::current()?.id()?;
    let init = Netns::open("/proc/1/ns/net").and_then(|n| n.id()).ok();
    if id == node || Some(id) == init {
        return Err(Error::invalid(
            "sandbox",
            key,
            "is the node's own network namespace (where knit runs), not a sandbox",
        ));
    }
    Ok(())
}

/// A repeated attach must ask for what the attachment already has; a different
/// `--publish`, `--label`, `--alias`, `--ip`, `--mac` or `--ifname` is refused rather
/// than silently dropped.
fn same_request(att: &Attachment, args: &AttachArgs) -> Result<()> {
    let refuse = |field: &'static str, asked: String, has: String| {
        Err(Error::invalid(
            field,
            asked,
            format!(
                "{} is already attached to {} with {field} {has}; detach it first to change that",
                att.sandbox, att.network
            ),
        ))
    };
    let mut want: Vec<String> = Vec::new();
    for p in args.publish {
        for (hp, cp) in p.pairs() {
            want.push(port_text(p.host_ip, hp, cp, p.proto));
        }
    }
    let mut have: Vec<String> = att
        .ports
        .iter()
        .map(|p| port_text(p.host_ip, p.host_port, p.container_port, p.proto))
        .collect();
    for v in [&mut want, &mut have] {
        v.sort();
        v.dedup();
    }
    if want != have {
        return refuse("--publish", or_none(&want), or_none(&have));
    }
    if args.labels != &att.labels {
        let show = |l: &crate::model::policy::Labels| {
            let v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
            v
        };
        return refuse(
            "--label",
            or_none(&show(args.labels)),
            or_none(&show(&att.labels)),
        );
    }
    let mut a1: Vec<&String> = args.aliases.iter().collect();
    let mut a2: Vec<&String> = att.aliases.iter().collect();
    a1.sort();
    a1.dedup();
    a2.sort();
    a2.dedup();
    if a1 != a2 {
        let s = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
        return refuse(
            "--alias",
            s(&a1),
            if a2.is_empty() { "none".into() } else { s(&a2) },
        );
    }
    let ips: Vec<IpAddr> = att.ips.iter().map(|n| n.addr()).collect();
    if let Some(ip) = args.static_ips.iter().find(|ip| !ips.contains(ip)) {
        let have: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        return refuse("--ip", ip.to_string(), have.join(","));
    }
    if let Some(m) = args.mac
        && !m.to_string().eq_ignore_ascii_case(&att.mac)
    {
        return refuse("--mac", m.to_string(), att.mac.clone());
    }
    if let Some(i) = args.ifname
        && i != att.ifname
    {
        return refuse("--ifname", i.to_string(), att.ifname.clone());
    }
    Ok(())
}

/// `[HOSTIP:]HOSTPORT:CPORT/proto`, as `--publish` is written.
fn port_text(host: Option<IpAddr>, hp: u16, cp: u16, proto: crate::model::Proto) -> String {
    match host {
        Some(IpAddr::V6(h)) => format!("[{h}]:{hp}:{cp}/{proto}"),
        Some(h) => format!("{h}:{hp}:{cp}/{proto}"),
        None => format!("{hp}:{cp}/{proto}"),
    }
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}
