//! Attaching a sandbox to a network and detaching it. Setup order: reserve in the store
//! (pending) → links, addresses, routes → one nft transaction → mark ready. Teardown
//! mirrors it: nft → links → release. A failure undoes what was done; a crash leaves a
//! pending record that detach or reconcile cleans up.

use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::model::{Driver, Mac, PublishSpec, RouteSpec, SandboxRef};
use crate::netlink::{Netlink, Route, VethRequest};
use crate::netns::Netns;
use crate::nft::Batch;
use crate::node::{Node, attach_fw};
use crate::store::{AttachRequest, AttachState, Attachment, Network, Reserved};
use crate::sysctl;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The ptp driver's gateway as sandboxes see it: link-local, answered by a static
/// neighbour entry pointing at the host-side veth.
pub const PTP_GW4: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1));
pub const PTP_GW6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));

pub struct AttachArgs<'a> {
    pub network: &'a str,
    pub sandbox: &'a SandboxRef,
    /// None: the sandbox's next free ethN (eth0, then eth1 for a second network, ...).
    pub ifname: Option<&'a str>,
    pub static_ips: &'a [IpAddr],
    pub mac: Option<Mac>,
    pub publish: &'a [PublishSpec],
    pub container_id: Option<&'a str>,
    /// Routes to install instead of the network's default route (CNI ipam.routes).
    pub routes: Option<&'a [RouteSpec]>,
    /// Extra DNS names.
    pub aliases: &'a [String],
    /// `--label k=v` (what policies select).
    pub labels: &'a crate::model::policy::Labels,
}

pub struct Attached {
    pub network: Network,
    pub attachment: Attachment,
    /// The sandbox was already attached; nothing changed.
    pub existed: bool,
}

fn mac_of(field: &'static str, s: &str) -> Result<Mac> {
    Mac::parse(field, s)
}

/// The address as configured inside the sandbox: the subnet prefix on a bridge, a host
/// prefix on ptp (everything goes through the node).
fn sandbox_addr(net: &Network, ip: &IpNet) -> IpNet {
    match net.driver {
        Driver::Bridge => *ip,
        Driver::Ptp => {
            IpNet::new(ip.addr(), if ip.addr().is_ipv4() { 32 } else { 128 }).unwrap_or(*ip)
        }
    }
}

fn unspecified(v4: bool) -> IpNet {
    let any = if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    IpNet::new(any, 0).unwrap_or_else(|_| IpNet::from(any))
}

/// Routes of a bridge attachment: the ones it asked for (gateway defaulting to the
/// subnet's of the same family), or a default route per subnet unless the network is
/// internal.
pub fn bridge_routes(net: &Network, att: &Attachment) -> Vec<RouteSpec> {
    let gw_for = |v4: bool| {
        net.subnets
            .iter()
            .find(|s| s.gateway.is_ipv4() == v4)
            .map(|s| s.gateway)
    };
    match &att.routes {
        Some(routes) => routes
            .iter()
            .map(|r| RouteSpec {
                dst: r.dst,
                gw: r.gw.or_else(|| gw_for(r.dst.addr().is_ipv4())),
            })
            .collect(),
        None if net.internal => vec![],
        None => net
            .subnets
            .iter()
            .map(|s| RouteSpec {
                dst: unspecified(s.gateway.is_ipv4()),
                gw: Some(s.gateway),
            })
            .collect(),
    }
}

/// Creates the links, addresses, routes and neighbours of one attachment. Safe to run again
/// on a partially built attachment (reconcile): existing pieces are kept or replaced.
pub fn plumb(net: &Network, att: &Attachment, ns: &Netns) -> Result<()> {
    plumb_with(net, att, ns, &mut None)
}

/// A netlink socket inside the sandbox, opened once per command (entering a namespace
/// costs a thread).
fn sandbox_netlink<'a>(ns: &Netns, slot: &'a mut Option<Netlink>) -> Result<&'a mut Netlink> {
    if slot.is_none() {
        *slot = Some(Netlink::open_in(ns)?);
    }
    slot.as_mut()
        .ok_or_else(|| Error::not_found("netlink socket in", ns.path().display()))
}

/// `plumb` with the sandbox's netlink socket of this command (opened on first use).
fn plumb_with(
    net: &Network,
    att: &Attachment,
    ns: &Netns,
    sandbox_nl: &mut Option<Netlink>,
) -> Result<()> {
    let mut nl = Netlink::open()?;
    let host_mac = mac_of("host_mac", &att.host_mac)?;
    let mac = mac_of("mac", &att.mac)?;
    let controller =
        match (&net.driver, &net.bridge) {
            (Driver::Bridge, Some(br)) => Some(nl.link_index(br)?.ok_or_else(|| {
                Error::not_found("bridge", format!("{br} (run `knit reconcile`)"))
            })?),
            _ => None,
        };
    let host_index = match nl.link_by_name(&att.host_ifname)? {
        Some(l) => {
            // The bridge may have been re-created under it (reconcile).
            if let Some(c) = controller
                && l.controller != Some(c)
            {
                nl.set_controller(l.index, c)?;
            }
            l.index
        }
        None => {
            let echoed = nl
                .create_veth(&VethRequest {
                    host_name: &att.host_ifname,
                    host_mac,
                    peer_name: &att.ifname,
                    peer_mac: mac,
                    peer_netns: ns.fd(),
                    mtu: net.mtu,
                    controller,
                })
                .map_err(|e| match e.errno() {
                    Some(libc::EEXIST) => Error::invalid(
                        "--ifname",
                        &att.ifname,
                        "an interface with this name already exists in the sandbox",
                    ),
                    _ => e,
                })?;
            match echoed {
                Some(i) => i,
                None => nl
                    .link_index(&att.host_ifname)?
                    .ok_or_else(|| Error::not_found("link", &att.host_ifname))?,
            }
        }
    };
    nl.prepare_host_port(host_index, net.driver == Driver::Bridge)?;
    nl.set_up(host_index)?;
    match net.driver {
        Driver::Bridge => {}
        Driver::Ptp => {
            for ip in &att.ips {
                let host = sandbox_addr(net, ip);
                nl.add_route(&Route {
                    dst: host,
                    gateway: None,
                    oif: Some(host_index),
                    onlink: false,
                    link_scope: true,
                })?;
                nl.add_neighbour(host_index, ip.addr(), mac)?;
            }
            if !att.ports.is_empty() {
                sysctl::ensure_path(
                    &sysctl::iface_key("ipv4", &att.host_ifname, "route_localnet"),
                    "1",
                )?;
            }
        }
    }
    let snl = sandbox_netlink(ns, sandbox_nl)?;
    let index = snl
        .link_index(&att.ifname)?
        .ok_or_else(|| Error::not_found("sandbox interface", &att.ifname))?;
    // An IPv4-only attachment has no use for IPv6 link-local chatter (DAD, MLD, RS), which
    // the bridge floods to every port: keep the interface quiet before it comes up.
    if !att.ips.iter().any(|ip| ip.addr().is_ipv6()) {
        snl.disable_link_local(index)?;
    }
    snl.set_up(index)?;
    for ip in &att.ips {
        snl.add_address(index, sandbox_addr(net, ip))?;
    }
    if net.driver == Driver::Ptp {
        for gw in net.subnets.iter().map(|s| {
            if s.subnet.addr().is_ipv4() {
                PTP_GW4
            } else {
                PTP_GW6
            }
        }) {
            snl.add_neighbour(index, gw, host_mac)?;
        }
    }
    // The first network a sandbox joins keeps its default route: a later attachment adds
    // one only for a family the sandbox has none for (and detach restores, see
    // `restore_default_routes`).
    let has_default = defaults_present(snl, Some(index))?;
    for r in sandbox_routes(net, att)? {
        let fam = usize::from(!r.dst.addr().is_ipv4());
        if r.dst.prefix_len() == 0 && has_default[fam] {
            continue;
        }
        snl.add_route(&Route {
            oif: Some(index),
            ..r
        })?;
    }
    Ok(())
}

/// Whether the sandbox has an IPv4 / IPv6 default route through a link other than
/// `except` (the attachment's own interface).
fn defaults_present(snl: &mut Netlink, except: Option<u32>) -> Result<[bool; 2]> {
    let mut found = [false; 2];
    for (i, fam) in [AddressFamily::Inet, AddressFamily::Inet6]
        .into_iter()
        .enumerate()
    {
        found[i] = snl
            .routes(fam)?
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.oif.is_some() && r.oif != except);
    }
    Ok(found)
}

/// The routes an attachment installs inside the sandbox (without the interface index).
fn sandbox_routes(net: &Network, att: &Attachment) -> Result<Vec<Route>> {
    let mut out = Vec::new();
    match net.driver {
        Driver::Bridge => {
            for r in bridge_routes(net, att) {
                out.push(Route {
                    dst: r.dst,
                    gateway: r.gw,
                    oif: None,
                    onlink: false,
                    link_scope: false,
                });
            }
        }
        Driver::Ptp => {
            for s in &net.subnets {
                let v4 = s.subnet.addr().is_ipv4();
                let gw = if v4 { PTP_GW4 } else { PTP_GW6 };
                out.push(Route {
                    dst: if net.internal {
                        s.subnet
                    } else {
                        unspecified(v4)
                    },
                    gateway: Some(gw),
                    oif: None,
                    onlink: true,
                    link_scope: false,
                });
            }
        }
    }
    Ok(out)
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
        let ns = Netns::open(args.sandbox.path())
            .map_err(|_| Error::not_found("sandbox", args.sandbox.key()))?;
        refuse_node_namespace(&ns, &args.sandbox.key())?;
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
        if !Netns::open(args.sandbox.path()).is_ok_and(|n| n.id().ok() == ns.id().ok()) {
            return Err(Error::not_found("sandbox", key));
        }
        crate::trace::phase("locks taken");
        let mut snl = None;
        let chosen;
        let ifname = match args.ifname {
            Some(i) => i,
            None => {
                chosen = self.next_ifname(args.network, &key, &ns, &mut snl)?;
                chosen.as_str()
            }
        };
        crate::trace::phase("interface name chosen");
        let path = args.sandbox.path();
        let reserved = self.store.reserve(&AttachRequest {
            network: args.network,
            sandbox: &key,
            netns_path: &path,
            ifname,
            static_ips: args.static_ips,
            mac: args.mac,
            publish: args.publish,
            container_id: args.container_id,
            routes: args.routes,
            aliases: args.aliases,
            labels: args.labels,
        })?;
        crate::trace::phase("store: reserved");
        let Reserved {
            network,
            attachment,
            existed,
        } = reserved;
        let att = match (existed, attachment.state) {
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
                return self.attach_locked(args, &ns, &network, &mut snl);
            }
            (false, _) => attachment,
        };
        self.build_attachment(network, att, &ns, &mut snl)
    }

    /// After clearing a crashed remnant: reserve again and build (locks already held).
    fn attach_locked(
        &mut self,
        args: &AttachArgs,
        ns: &Netns,
        net: &Network,
        snl: &mut Option<Netlink>,
    ) -> Result<Attached> {
        let key = args.sandbox.key();
        let ifname = match args.ifname {
            Some(i) => i.to_string(),
            None => self.next_ifname(&net.name, &key, ns, snl)?,
        };
        let path = args.sandbox.path();
        let r = self.store.reserve(&AttachRequest {
            network: args.network,
            sandbox: &key,
            netns_path: &path,
            ifname: &ifname,
            static_ips: args.static_ips,
            mac: args.mac,
            publish: args.publish,
            container_id: args.container_id,
            routes: args.routes,
            aliases: args.aliases,
            labels: args.labels,
        })?;
        if r.existed {
            return Err(Error::Conflict(format!(
                "sandbox {key:?} on network {:?}: a stale record could not be cleared",
                net.name
            )));
        }
        self.build_attachment(r.network, r.attachment, ns, snl)
    }

    /// Links, addresses and routes, then (under the kernel lock) the nft elements derived
    /// from the store and the record's `ready`. On failure, undoes exactly this attachment.
    fn build_attachment(
        &mut self,
        network: Network,
        att: Attachment,
        ns: &Netns,
        snl: &mut Option<Netlink>,
    ) -> Result<Attached> {
        let built = plumb_with(&network, &att, ns, snl).and_then(|_| {
            crate::trace::phase("links, addresses, routes");
            let _k = self.kernel_lock()?;
            self.ensure_table_intact()?;
            crate::trace::phase("nft: table checked");
            let mut b = Batch::new();
            b.attachment(&attach_fw(&network, &att), true);
            self.policy_changes_for(&mut b, &network, &att, true)?;
            self.service_changes_for(&mut b, &att.sandbox, att.id, true)?;
            crate::trace::phase("nft: batch built");
            match b.apply() {
                Ok(()) => self.store.mark_ready(att.id),
                Err(Error::Nft(_)) => {
                    // knit's table is gone or damaged: write all of it from the store,
                    // this attachment included.
                    self.store.mark_ready(att.id)?;
                    self.rebuild_firewall().inspect_err(|_| {
                        let _ = self.store.mark_pending(att.id);
                    })
                }
                Err(e) => Err(e),
            }
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
        self.policy_changes_for(&mut b, net, att, false)?;
        self.service_changes_for(&mut b, &att.sandbox, att.id, false)?;
        // Closing the nft socket after deletions waits for an RCU grace period; keep that
        // off the caller's clock.
        let applied = b.apply_then(crate::nft::socket::Socket::close_detached);
        crate::trace::phase("nft elements removed");
        if applied.is_err() && crate::nft::table_exists() {
            // The table is damaged: rebuild it from the store without this one. (If it is
            // gone altogether there is nothing to remove; `knit reconcile` rebuilds it.)
            self.rebuild_firewall_without(None, Some(att.id))?;
        }
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

/// What `sandbox rm` did.
pub struct SandboxRemoved {
    pub detached: usize,
    /// The namespace was knit's (`knit sandbox add`) and is gone; otherwise it was only
    /// detached and left in place.
    pub deleted: bool,
}

impl Node {
    /// `knit sandbox rm NAME`: detaches the sandbox from every network and deletes its
    /// namespace if knit created it. A namespace knit did not create (`ip netns add`, a
    /// runtime's) is only detached; the node's own is never touched.
    pub fn remove_sandbox(&mut self, name: &str) -> Result<SandboxRemoved> {
        let path = crate::netns::named_path(name);
        let ours = self.store.sandboxes()?.iter().any(|s| s == name);
        let atts = self.store.attachments_of_sandbox(name)?;
        let exists = crate::netns::is_netns(&path);
        if atts.is_empty() && !(ours && exists) {
            return Err(if exists {
                Error::invalid(
                    "sandbox",
                    name,
                    "was not created by knit (`knit sandbox add`) and is not attached: knit leaves it alone",
                )
            } else {
                Error::not_found("sandbox", name)
            });
        }
        if ours && exists {
            refuse_node_namespace(&Netns::open(&path)?, name)?;
        }
        let _net_locks = Lock::networks(&self.state_dir, atts.iter().map(|a| a.network.as_str()))?;
        let _sbx_lock = Lock::sandbox(&self.state_dir, name)?;
        let atts = self.store.attachments_of_sandbox(name)?;
        for a in &atts {
            let net = self.store.network(&a.network)?;
            self.remove_attachment(&net, a)?;
        }
        let deleted = ours && crate::netns::delete_named(name)?;
        if ours {
            self.store.remove_sandbox(name)?;
        }
        Ok(SandboxRemoved {
            detached: atts.len(),
            deleted,
        })
    }
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
        for r in sandbox_routes(&net, a).unwrap_or_default() {
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
fn refuse_node_namespace(ns: &Netns, key: &str) -> Result<()> {
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
