//! A cluster network's VXLAN device on this node: created with the network, kept right
//! by every build of it (reconcile included), deleted with it, and only if it is the
//! device knit made (its recorded name and MAC).

use crate::error::{Error, Result};
use crate::model::cluster::vtep_addr;
use crate::netlink::{Netlink, VxlanRequest, checksum_offload_broken, disable_tx_checksum};
use crate::node::Node;
use crate::node::cluster::vxlan_mtu;
use crate::store::Network;
use ipnet::IpNet;

impl Node {
    /// Creates the device if missing (or checks the one there is knit's), turns off its
    /// TX checksum offload where the kernel has the VXLAN checksum trap, gives it each
    /// block's VTEP address and brings it up.
    pub(crate) fn ensure_tunnel(&mut self, net: &Network) -> Result<()> {
        let Some(c) = &net.cluster else {
            return Ok(());
        };
        let m = self.store.membership()?.ok_or_else(|| {
            Error::Conflict(format!(
                "network {:?} is a cluster network but this node is in no cluster",
                net.name
            ))
        })?;
        let mut nl = Netlink::open()?;
        let underlay_index = nl.link_index(&m.underlay_if)?.ok_or_else(|| {
            Error::Conflict(format!("the underlay link {} is gone", m.underlay_if))
        })?;
        let index = match nl.link_by_name(&c.vxlan)? {
            Some(l)
                if l.kind.as_deref() == Some("vxlan")
                    && l.mac
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(&c.vtep_mac.to_string())) =>
            {
                l.index
            }
            Some(l) => {
                return Err(Error::Conflict(format!(
                    "link {:?} exists ({}, MAC {}) and is not the VXLAN device knit made for network {:?}; knit leaves it alone",
                    c.vxlan,
                    l.kind.as_deref().unwrap_or("unknown"),
                    l.mac.as_deref().unwrap_or("none"),
                    net.name
                )));
            }
            None => {
                nl.create_vxlan(&VxlanRequest {
                    name: &c.vxlan,
                    vni: c.vni,
                    local: m.underlay.addr(),
                    underlay_index,
                    port: m.vxlan_port,
                    mac: c.vtep_mac,
                    mtu: vxlan_mtu(&m),
                })?;
                nl.link_index(&c.vxlan)?
                    .ok_or_else(|| Error::not_found("link", &c.vxlan))?
            }
        };
        if checksum_offload_broken() {
            disable_tx_checksum(&c.vxlan)?;
        }
        for s in &net.subnets {
            let host = if s.subnet.addr().is_ipv4() { 32 } else { 128 };
            let vtep = IpNet::new(vtep_addr(&s.subnet), host)
                .map_err(|_| Error::invalid("subnet", s.subnet, "no VTEP address"))?;
            nl.add_address(index, vtep)?;
        }
        nl.set_up(index)
    }

    /// Deletes the network's VXLAN device if it is knit's.
    pub(crate) fn delete_tunnel(&mut self, net: &Network) -> Result<()> {
        let Some(c) = &net.cluster else {
            return Ok(());
        };
        let mut nl = Netlink::open()?;
        if let Some(l) = nl.link_by_name(&c.vxlan)?
            && l.kind.as_deref() == Some("vxlan")
            && l.mac
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(&c.vtep_mac.to_string()))
        {
            nl.delete_link(&c.vxlan)?;
        }
        Ok(())
    }

    /// A local network for a cluster network: recorded with its cluster side before it is
    /// built (the firewall and the device need it), undone whole on failure.
    pub(crate) fn create_cluster_network_local(
        &mut self,
        spec: &crate::model::NetworkSpec,
        link: &dyn Fn(i64) -> crate::store::ClusterLink,
    ) -> Result<Network> {
        let _net_lock = crate::lock::Lock::network(&self.state_dir, &spec.name, true)?;
        let driver = crate::driver::of(spec.driver);
        let mut net = self
            .store
            .create_network(spec, "cluster", &|id| driver.default_bridge(id))?;
        let l = link(net.id);
        self.store.set_network_cluster(net.id, &l)?;
        net.cluster = Some(l);
        let mut created = false;
        if let Err(e) = self.build_network(&mut net, crate::node::BridgeUse::Fresh, &mut created) {
            let _ = self.undo_network(&net, created);
            let _ = self.delete_tunnel(&net);
            let _ = self.store.delete_network(net.id);
            return Err(e);
        }
        self.store.mark_network_ready(net.id)?;
        net.ready = true;
        Ok(net)
    }
}
