//! Networks in the store: creation (overlap and bridge checks in one transaction), lookup,
//! readiness and adoption, removal.

use super::*;

impl Store {
    // ---- networks -----------------------------------------------------------------------

    /// Records a new network (not ready). `default_bridge` names its bridge from its id
    /// when the spec names none (the driver's naming; None: the driver has no bridge).
    pub fn create_network(
        &mut self,
        spec: &NetworkSpec,
        origin: &str,
        default_bridge: &dyn Fn(i64) -> Option<String>,
    ) -> Result<Network> {
        let tx = self.write_tx()?;
        if tx
            .query_row(
                "SELECT 1 FROM networks WHERE name = ?1",
                [&spec.name],
                |_| Ok(()),
            )
            .optional()?
            .is_some()
        {
            return Err(Error::exists("network", &spec.name));
        }
        {
            let mut stmt = tx.prepare(
                "SELECT s.cidr, n.name FROM subnets s JOIN networks n ON n.id = s.network_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((parse::<IpNet>(r.get(0)?)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (cidr, owner) = row?;
                for s in &spec.subnets {
                    if cidr.contains(&s.cidr.network()) || s.cidr.contains(&cidr.network()) {
                        return Err(Error::invalid(
                            "subnet",
                            s.cidr,
                            format!("overlaps {cidr} of network {owner:?}"),
                        ));
                    }
                }
            }
        }
        if let Some(b) = &spec.bridge
            && tx
                .query_row("SELECT 1 FROM networks WHERE bridge = ?1", [b], |_| Ok(()))
                .optional()?
                .is_some()
        {
            return Err(Error::invalid(
                "bridge",
                b,
                "is already used by another knit network",
            ));
        }
        let mac = Mac::random();
        tx.execute(
            "INSERT INTO networks (name, driver, bridge, internal, masquerade, mtu, bridge_mac, origin, bridge_gateway, promisc, dns, dns_domain, ready)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0)",
            params![
                spec.name,
                spec.driver.as_str(),
                spec.bridge,
                spec.internal,
                spec.masquerade,
                spec.mtu,
                mac.to_string(),
                origin,
                spec.bridge_gateway,
                spec.promisc,
                spec.dns,
                spec.dns_domain
            ],
        )?;
        let id = tx.last_insert_rowid();
        if spec.bridge.is_none()
            && let Some(name) = default_bridge(id)
        {
            tx.execute(
                "UPDATE networks SET bridge = ?1 WHERE id = ?2",
                params![name, id],
            )?;
        }
        for s in &spec.subnets {
            tx.execute(
                "INSERT INTO subnets (network_id, cidr, gateway, range_start, range_end) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    id,
                    s.cidr.to_string(),
                    s.gateway.to_string(),
                    s.range_start.map(|a| a.to_string()),
                    s.range_end.map(|a| a.to_string())
                ],
            )?;
        }
        let net = Self::load_network(&tx, "id = ?1", id)?
            .ok_or_else(|| Error::not_found("network", id))?;
        tx.commit()?;
        Ok(net)
    }

    pub(super) fn load_network(
        conn: &Connection,
        cond: &str,
        key: impl rusqlite::ToSql,
    ) -> Result<Option<Network>> {
        let sql = format!(
            "SELECT id, name, driver, bridge, internal, masquerade, mtu, bridge_mac, origin, bridge_gateway, promisc, dns, dns_domain, ready, policy, bridge_adopted, egress_policy, egress_dns, cluster FROM networks WHERE {cond}"
        );
        let net = conn
            .query_row(&sql, [key], |r| {
                let driver: String = r.get(2)?;
                let mac: String = r.get(7)?;
                Ok(Network {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    driver: Driver::parse(&driver)
                        .map_err(|_| bad_row("networks", "driver", &driver))?,
                    bridge: r.get(3)?,
                    subnets: vec![],
                    internal: r.get(4)?,
                    masquerade: r.get(5)?,
                    mtu: r.get(6)?,
                    bridge_mac: Mac::parse("bridge_mac", &mac)
                        .map_err(|_| bad_row("networks", "bridge_mac", &mac))?,
                    origin: r.get(8)?,
                    bridge_gateway: r.get(9)?,
                    promisc: r.get(10)?,
                    dns: r.get(11)?,
                    dns_domain: r.get(12)?,
                    ready: r.get(13)?,
                    policy: default_col("policy", r.get(14)?)?,
                    bridge_adopted: r.get(15)?,
                    egress: default_col("egress_policy", r.get(16)?)?,
                    egress_dns: r.get(17)?,
                    cluster: json_col("networks", "cluster", r.get(18)?)?,
                })
            })
            .optional()?;
        let Some(mut net) = net else { return Ok(None) };
        let mut stmt = conn.prepare_cached(
            "SELECT id, cidr, gateway, range_start, range_end FROM subnets WHERE network_id = ?1 ORDER BY id",
        )?;
        net.subnets = stmt
            .query_map([net.id], |r| {
                Ok(Subnet {
                    id: r.get(0)?,
                    subnet: parse(r.get(1)?)?,
                    gateway: parse(r.get(2)?)?,
                    range_start: r.get::<_, Option<String>>(3)?.map(parse).transpose()?,
                    range_end: r.get::<_, Option<String>>(4)?.map(parse).transpose()?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(net))
    }

    pub fn network(&self, name: &str) -> Result<Network> {
        Self::load_network(&self.conn, "name = ?1", name)?
            .ok_or_else(|| Error::not_found("network", name))
    }

    pub fn find_network(&self, name: &str) -> Result<Option<Network>> {
        Self::load_network(&self.conn, "name = ?1", name)
    }

    pub fn networks(&self) -> Result<Vec<Network>> {
        let ids: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM networks ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(n) = Self::load_network(&self.conn, "id = ?1", id)? {
                out.push(n);
            }
        }
        Ok(out)
    }

    pub fn mark_network_ready(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("UPDATE networks SET ready = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records that the network's bridge existed before (recorded before knit touches it).
    pub fn mark_bridge_adopted(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("UPDATE networks SET bridge_adopted = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn delete_network(&mut self, id: i64) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM networks WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }
}

fn default_col(column: &str, v: String) -> rusqlite::Result<PolicyDefault> {
    match v.as_str() {
        "deny" => Ok(PolicyDefault::Deny),
        "allow" => Ok(PolicyDefault::Allow),
        other => Err(bad_row("networks", column, other)),
    }
}
