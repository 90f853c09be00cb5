//! Services and their backends. A service row and all its backends are written in one
//! transaction; uniqueness of (vip, proto, port) and of node ports is enforced by the
//! schema as well as checked here for a readable error.

use super::{Store, parse};
use crate::error::{Error, Result};
use crate::model::Proto;
use crate::model::service::{BackendSpec, ServiceSpec, Target, Vip};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub id: i64,
    #[serde(flatten)]
    pub spec: BackendSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub id: i64,
    pub name: String,
    pub vip: Vip,
    pub affinity: Option<u32>,
    pub node_port: Option<u16>,
    pub backends: Vec<Backend>,
}

impl Service {
    pub fn same_as(&self, spec: &ServiceSpec) -> bool {
        let mut mine: Vec<&BackendSpec> = self.backends.iter().map(|b| &b.spec).collect();
        let mut theirs: Vec<&BackendSpec> = spec.backends.iter().collect();
        mine.sort();
        theirs.sort();
        self.vip == spec.vip
            && self.affinity == spec.affinity
            && self.node_port == spec.node_port
            && mine == theirs
    }
}

/// The service whose node port is `proto`/`port`, if any.
pub(super) fn node_port_owner(
    conn: &Connection,
    proto: Proto,
    port: u16,
) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT name FROM services WHERE proto = ?1 AND node_port = ?2",
            params![proto.as_str(), port],
            |r| r.get(0),
        )
        .optional()?)
}

fn check_backend(conn: &Connection, b: &BackendSpec) -> Result<()> {
    if let Target::Sandbox(name) = &b.target {
        let known: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM attachments WHERE sandbox = ?1
                 UNION SELECT 1 FROM sandboxes WHERE name = ?1
                 UNION SELECT 1 FROM remote_endpoints WHERE sandbox = ?1 LIMIT 1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_none() {
            return Err(Error::invalid(
                "backend",
                b,
                format!(
                    "no sandbox named {name:?} is known to knit (here or, on a cluster node, on another node)"
                ),
            ));
        }
    }
    Ok(())
}

fn insert_backend(conn: &Connection, service_id: i64, b: &BackendSpec) -> Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO backends (service_id, kind, target, port) VALUES (?1, ?2, ?3, ?4)",
        params![service_id, b.kind(), b.target_text(), b.port],
    )?;
    Ok(n == 1)
}

impl Store {
    fn load_services(
        conn: &Connection,
        cond: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<Service>> {
        let sql = format!(
            "SELECT id, name, vip, port, proto, affinity, node_port FROM services WHERE {cond} ORDER BY id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut out: Vec<Service> = stmt
            .query_map(p, |r| {
                let proto: String = r.get(4)?;
                Ok(Service {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    vip: Vip {
                        ip: parse(r.get(2)?)?,
                        port: r.get(3)?,
                        proto: super::proto_col("services", &proto)?,
                    },
                    affinity: r.get(5)?,
                    node_port: r.get(6)?,
                    backends: vec![],
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut bstmt = conn.prepare_cached(
            "SELECT id, kind, target, port FROM backends WHERE service_id = ?1 ORDER BY id",
        )?;
        for s in &mut out {
            s.backends = bstmt
                .query_map([s.id], |r| {
                    let kind: String = r.get(1)?;
                    let target: String = r.get(2)?;
                    Ok(Backend {
                        id: r.get(0)?,
                        spec: BackendSpec {
                            target: if kind == "ip" {
                                Target::Ip(parse::<IpAddr>(target)?)
                            } else {
                                Target::Sandbox(target)
                            },
                            port: r.get(3)?,
                        },
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(out)
    }

    /// Records a service. Returns it and whether an identical one already existed (create
    /// is idempotent); a different service of that name is an error.
    pub fn create_service(&mut self, spec: &ServiceSpec) -> Result<(Service, bool)> {
        let tx = self.write_tx()?;
        if let Some(existing) = Self::load_services(&tx, "name = ?1", [&spec.name])?.pop() {
            if existing.same_as(spec) {
                return Ok((existing, true));
            }
            return Err(Error::exists("service", &spec.name));
        }
        let vip = spec.vip;
        if let Some(other) = Self::load_services(
            &tx,
            "vip = ?1 AND proto = ?2 AND port = ?3",
            params![vip.ip.to_string(), vip.proto.as_str(), vip.port],
        )?
        .pop()
        {
            return Err(Error::Conflict(format!(
                "vip {vip}: already the address of service {:?}",
                other.name
            )));
        }
        for (cidr, net) in tx
            .prepare("SELECT s.cidr, n.name FROM subnets s JOIN networks n ON n.id = s.network_id")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?
        {
            if cidr
                .parse::<ipnet::IpNet>()
                .is_ok_and(|c| c.contains(&vip.ip))
            {
                return Err(Error::invalid(
                    "vip",
                    vip,
                    format!(
                        "inside subnet {cidr} of network {net:?}; pick an address outside knit's networks"
                    ),
                ));
            }
        }
        if let Some(np) = spec.node_port {
            if let Some(other) = node_port_owner(&tx, vip.proto, np)? {
                return Err(Error::Conflict(format!(
                    "node port {np}/{}: already the node port of service {other:?}",
                    vip.proto
                )));
            }
            let published: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM ports WHERE proto = ?1 AND host_port = ?2 LIMIT 1",
                    params![vip.proto.as_str(), np],
                    |r| r.get(0),
                )
                .optional()?;
            if published.is_some() {
                return Err(Error::Conflict(format!(
                    "node port {np}/{}: a sandbox publishes this host port",
                    vip.proto
                )));
            }
        }
        for b in &spec.backends {
            check_backend(&tx, b)?;
        }
        tx.execute(
            "INSERT INTO services (name, vip, port, proto, affinity, node_port) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                spec.name,
                vip.ip.to_string(),
                vip.port,
                vip.proto.as_str(),
                spec.affinity,
                spec.node_port
            ],
        )?;
        let id = tx.last_insert_rowid();
        for b in &spec.backends {
            insert_backend(&tx, id, b)?;
        }
        let svc = one_service(&tx, "id = ?1", id, &spec.name)?;
        tx.commit()?;
        Ok((svc, false))
    }

    pub fn service(&self, name: &str) -> Result<Service> {
        one_service(&self.conn, "name = ?1", name, name)
    }

    pub fn services(&self) -> Result<Vec<Service>> {
        Self::load_services(&self.conn, "1 = 1", [])
    }

    /// Services with `sandbox` among their backends.
    pub fn services_of_sandbox(&self, sandbox: &str) -> Result<Vec<Service>> {
        Self::load_services(
            &self.conn,
            "id IN (SELECT service_id FROM backends WHERE kind = 'sandbox' AND target = ?1)",
            [sandbox],
        )
    }

    pub fn delete_service(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM services WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Adds (`add`) or removes one backend; returns the service before and after.
    pub fn change_backend(
        &mut self,
        name: &str,
        b: &BackendSpec,
        add: bool,
    ) -> Result<(Service, Service)> {
        let tx = self.write_tx()?;
        let before = one_service(&tx, "name = ?1", name, name)?;
        if add {
            crate::model::service::check_family(&before.vip, b)?;
            check_backend(&tx, b)?;
            insert_backend(&tx, before.id, b)?;
        } else {
            delete_backend_row(&tx, before.id, b)?;
        }
        let after = one_service(&tx, "id = ?1", before.id, name)?;
        tx.commit()?;
        Ok((before, after))
    }

    /// Undoes `change_backend` whose firewall change failed.
    pub fn undo_backend_change(
        &mut self,
        service_id: i64,
        b: &BackendSpec,
        added: bool,
    ) -> Result<()> {
        if added {
            delete_backend_row(&self.conn, service_id, b)
        } else {
            insert_backend(&self.conn, service_id, b).map(|_| ())
        }
    }
}

/// The one service matching `cond`; `name` is what the user called it, for the error.
fn one_service(
    conn: &Connection,
    cond: &str,
    key: impl rusqlite::ToSql,
    name: &str,
) -> Result<Service> {
    Store::load_services(conn, cond, [key])?
        .pop()
        .ok_or_else(|| Error::not_found("service", name))
}

fn delete_backend_row(conn: &Connection, service_id: i64, b: &BackendSpec) -> Result<()> {
    conn.execute(
        "DELETE FROM backends WHERE service_id = ?1 AND kind = ?2 AND target = ?3 AND port = ?4",
        params![service_id, b.kind(), b.target_text(), b.port],
    )?;
    Ok(())
}
