//! This node's cluster membership (`knit node join`) and the cluster side of its
//! networks.

use super::Store;
use crate::error::{Error, Result};
use crate::model::Mac;
use crate::model::cluster::Backend;
use ipnet::IpNet;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// This node in its cluster, as `knit node join` recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub name: String,
    pub etcd: Vec<String>,
    /// TLS to etcd (None: plain http).
    pub etcd_tls: Option<crate::model::cluster::TlsFiles>,
    /// The underlay address with its on-link prefix, and its link.
    pub underlay: IpNet,
    pub underlay_if: String,
    pub backend: Backend,
    pub vni: u32,
    pub vxlan_port: u16,
    pub lease_ttl: i64,
    /// The etcd lease the node's keys live under (renewed by `knit daemon`).
    pub lease_id: i64,
    /// MTU of the underlay link.
    pub mtu: u32,
}

/// A network's cluster side on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLink {
    /// The cluster-wide subnets (the network's own subnets are this node's blocks).
    pub subnets: Vec<IpNet>,
    pub vni: u32,
    /// This node's VXLAN device for the network and its MAC (the VTEP MAC peers use).
    pub vxlan: String,
    pub vtep_mac: Mac,
}

impl Membership {
    pub fn access(&self) -> crate::model::cluster::EtcdAccess {
        crate::model::cluster::EtcdAccess {
            endpoints: self.etcd.clone(),
            tls: self.etcd_tls.clone(),
        }
    }
}

impl Store {
    pub fn membership(&self) -> Result<Option<Membership>> {
        let row = self
            .conn
            .query_row(
                "SELECT name, etcd, underlay, underlay_if, backend, vni, vxlan_port, lease_ttl, lease_id, mtu, etcd_tls FROM cluster_join WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, u32>(5)?,
                        r.get::<_, u16>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, u32>(9)?,
                        r.get::<_, Option<String>>(10)?,
                    ))
                },
            )
            .optional()?;
        let Some((name, etcd, underlay, underlay_if, backend, vni, port, ttl, lease, mtu, tls)) =
            row
        else {
            return Ok(None);
        };
        let bad = |col: &str, v: &str| Error::from(super::bad_row("cluster_join", col, v));
        Ok(Some(Membership {
            name,
            etcd: serde_json::from_str(&etcd).map_err(|_| bad("etcd", &etcd))?,
            etcd_tls: super::json_col("cluster_join", "etcd_tls", tls)?,
            underlay: underlay.parse().map_err(|_| bad("underlay", &underlay))?,
            underlay_if,
            backend: Backend::parse(&backend).map_err(|_| bad("backend", &backend))?,
            vni,
            vxlan_port: port,
            lease_ttl: ttl,
            lease_id: lease,
            mtu,
        }))
    }

    pub fn set_membership(&mut self, m: &Membership) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO cluster_join (id, name, etcd, underlay, underlay_if, backend, vni, vxlan_port, lease_ttl, lease_id, mtu, etcd_tls)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                m.name,
                serde_json::to_string(&m.etcd).unwrap_or_default(),
                m.underlay.to_string(),
                m.underlay_if,
                m.backend.as_str(),
                m.vni,
                m.vxlan_port,
                m.lease_ttl,
                m.lease_id,
                m.mtu,
                m.etcd_tls
                    .as_ref()
                    .map(|t| serde_json::to_string(t).unwrap_or_default())
            ],
        )?;
        Ok(())
    }

    /// The peers' underlay addresses VXLAN is accepted from (what the firewall holds).
    pub fn cluster_peers(&self) -> Result<Vec<std::net::IpAddr>> {
        let v: Option<String> = self
            .conn
            .query_row("SELECT peers FROM cluster_join WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(v) = v else { return Ok(vec![]) };
        serde_json::from_str(&v).map_err(|_| super::bad_row("cluster_join", "peers", &v).into())
    }

    pub fn set_cluster_peers(&mut self, peers: &[std::net::IpAddr]) -> Result<()> {
        self.conn.execute(
            "UPDATE cluster_join SET peers = ?1 WHERE id = 1",
            [serde_json::to_string(peers).unwrap_or_default()],
        )?;
        Ok(())
    }

    pub fn set_lease(&mut self, lease: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE cluster_join SET lease_id = ?1 WHERE id = 1",
            [lease],
        )?;
        Ok(())
    }

    pub fn clear_membership(&mut self) -> Result<()> {
        self.conn.execute("DELETE FROM cluster_join", [])?;
        Ok(())
    }

    pub fn set_network_cluster(&mut self, network_id: i64, link: &ClusterLink) -> Result<()> {
        self.conn.execute(
            "UPDATE networks SET cluster = ?1 WHERE id = ?2",
            params![serde_json::to_string(link).unwrap_or_default(), network_id],
        )?;
        Ok(())
    }

    /// Services this node mirrors from the cluster (or published to it).
    pub fn cluster_services(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM cluster_services ORDER BY name")?;
        let v = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(v)
    }

    pub fn set_cluster_service(&mut self, name: &str, on: bool) -> Result<()> {
        if on {
            self.conn.execute(
                "INSERT OR IGNORE INTO cluster_services (name) VALUES (?1)",
                [name],
            )?;
        } else {
            self.conn
                .execute("DELETE FROM cluster_services WHERE name = ?1", [name])?;
        }
        Ok(())
    }
}
