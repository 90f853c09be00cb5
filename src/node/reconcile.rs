//! `knit reconcile`: make the kernel match the store. Runs under the exclusive lock, so a
//! pending attachment here is the remnant of a crashed process. Re-creates bridges, links,
//! addresses and routes that were wiped; drops attachments whose sandbox is gone; reports
//! knit-named links the store does not know (never deletes them: knit deletes only what it
//! recorded); rewrites knit's nft table in one transaction.

use crate::driver::plumb;
use crate::error::Result;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::node::Node;
use crate::store::AttachState;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub networks: usize,
    pub attachments_ok: Vec<String>,
    pub pending_removed: Vec<String>,
    pub gone_removed: Vec<String>,
    /// Links with knit-style names that no record accounts for: reported, left alone.
    pub unrecorded_links: Vec<String>,
    pub errors: Vec<String>,
}

impl Node {
    pub fn reconcile(&mut self) -> Result<Report> {
        let mut rep = Report::default();
        if let Err(e) = self.index_legacy_policies() {
            rep.errors
                .push(format!("policy rules of an older knit: {e}"));
        }
        let nets = self.store.networks()?;
        rep.networks = nets.len();
        for n in &nets {
            match self.build_network(&mut n.clone(), crate::node::BridgeUse::Repair, &mut false) {
                Ok(()) if !n.ready => self.store.mark_network_ready(n.id)?,
                Ok(()) => {}
                Err(e) => rep.errors.push(format!("network {}: {e}", n.name)),
            }
        }
        for att in self.store.all_attachments()? {
            let Some(net) = nets.iter().find(|n| n.id == att.network_id) else {
                continue;
            };
            let label = format!("{}/{}", net.name, att.sandbox);
            // Under the exclusive node lock every pending record is a dead process's.
            if att.state != AttachState::Ready {
                match self.remove_attachment(net, &att) {
                    Ok(()) => rep.pending_removed.push(label),
                    Err(e) => rep.errors.push(format!("{label}: {e}")),
                }
                continue;
            }
            // A handoff's namespace is the runtime's (knit never learns it): its veth
            // is all knit has, and an attachment whose veth is gone goes too.
            if crate::model::SandboxRef::is_handoff_key(&att.sandbox) {
                let present = crate::netlink::Netlink::open()?
                    .link_index(&att.host_ifname)?
                    .is_some();
                let done = if present {
                    rep.attachments_ok.push(label);
                    continue;
                } else {
                    self.remove_attachment(net, &att)
                };
                match done {
                    Ok(()) => rep.gone_removed.push(label),
                    Err(e) => rep.errors.push(format!("{label}: {e}")),
                }
                continue;
            }
            // A path that now names another namespace (the PID reused, the container
            // restarted) is as good as gone: never plumb into someone else's namespace.
            let ns = Netns::open(&att.netns_path).and_then(|ns| {
                let now = crate::node::attach::ns_identity(Some(&ns))?;
                match &att.netns_id {
                    Some(was) if now.as_ref() != Some(was) => Err(crate::error::Error::not_found(
                        "sandbox namespace",
                        &att.netns_path,
                    )),
                    _ => Ok(ns),
                }
            });
            match ns {
                Err(_) => match self.remove_attachment(net, &att) {
                    Ok(()) => rep.gone_removed.push(label),
                    Err(e) => rep.errors.push(format!("{label}: {e}")),
                },
                Ok(ns) => match plumb(net, &att, &ns) {
                    Ok(()) => rep.attachments_ok.push(label),
                    Err(e) => rep.errors.push(format!("{label}: {e}")),
                },
            }
        }
        let known: Vec<String> = self
            .store
            .all_attachments()?
            .into_iter()
            .map(|a| a.host_ifname)
            .chain(nets.iter().filter_map(|n| n.bridge.clone()))
            .collect();
        for l in Netlink::open()?.links()? {
            if crate::driver::is_knit_link(&l.name) && !known.contains(&l.name) {
                rep.unrecorded_links.push(l.name);
            }
        }
        self.rebuild_firewall()?;
        Ok(rep)
    }
}
