//! Attachments in the store: the reservation (addresses, MACs, host ports, in one
//! IMMEDIATE transaction), state changes, release and lookups.

use super::*;

impl Store {
    // ---- attachments --------------------------------------------------------------------

    /// Reserves addresses, a host interface name, MACs and host ports for a new attachment
    /// and records it as pending, all in one transaction. If the sandbox is already attached
    /// to the network, returns that attachment instead.
    /// `ifname` is the interface name chosen for the sandbox side; `host_ifname` makes a
    /// name for the host side (the driver's naming), tried until one is free.
    pub fn reserve(
        &mut self,
        req: &AttachRequest,
        ifname: &str,
        host_ifname: &dyn Fn() -> String,
    ) -> Result<Reserved> {
        let sandbox = req.sandbox.key();
        let netns_path = req.sandbox.path();
        let tx = self.write_tx()?;
        let net = Self::load_network(&tx, "name = ?1", req.network)?
            .ok_or_else(|| Error::not_found("network", req.network))?;
        if let Some(existing) = Self::load_attachments(
            &tx,
            "a.network_id = ?1 AND a.sandbox = ?2",
            params![net.id, sandbox],
        )?
        .into_iter()
        .next()
        {
            return Ok(Reserved {
                network: net,
                attachment: existing,
                existed: true,
            });
        }
        for ip in req.static_ips {
            if !net.subnets.iter().any(|s| s.subnet.contains(ip)) {
                let list: Vec<String> = net.subnets.iter().map(|s| s.subnet.to_string()).collect();
                return Err(Error::invalid(
                    "ip",
                    ip,
                    format!(
                        "is outside the subnets of network {:?} ({})",
                        net.name,
                        list.join(", ")
                    ),
                ));
            }
        }
        if !req.publish.is_empty() && net.internal {
            return Err(Error::invalid(
                "publish",
                net.name.clone(),
                "internal networks cannot publish ports",
            ));
        }
        let host_ifname = loop {
            let name = host_ifname();
            let taken = tx
                .query_row(
                    "SELECT 1 FROM attachments WHERE host_ifname = ?1",
                    [&name],
                    |_| Ok(()),
                )
                .optional()?;
            if taken.is_none() {
                break name;
            }
        };
        // MACs are unique on a network: a sandbox's, the host veths' (bridge ports: the
        // bridge delivers frames to a port's MAC to the node) and the bridge's own. A
        // duplicate would make one of them unreachable.
        if let Some(mac) = req.mac
            && let Some(holder) = Self::mac_holder(&tx, &net, mac)?
        {
            return Err(Error::Conflict(format!(
                "mac {mac} is already used on network {:?} by {holder}",
                net.name
            )));
        }
        // Generated ones too (2^46 of them, so this retries only in theory).
        let fresh = |tx: &Connection, other: Option<Mac>| -> Result<Mac> {
            loop {
                let m = Mac::random();
                if Some(m) != other && Self::mac_holder(tx, &net, m)?.is_none() {
                    return Ok(m);
                }
            }
        };
        let mac = match req.mac {
            Some(m) => m,
            None => fresh(&tx, None)?,
        };
        let host_mac = fresh(&tx, Some(mac))?;
        let owner = crate::lock::Owner::me();
        tx.execute(
            "INSERT INTO attachments (network_id, sandbox, netns_path, ifname, host_ifname, mac, host_mac, state, container_id, routes, aliases, labels, owner_pid, owner_start)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                net.id,
                sandbox,
                netns_path,
                ifname,
                host_ifname,
                mac.to_string(),
                host_mac.to_string(),
                req.container_id,
                req.routes.map(|r| serde_json::to_string(r).unwrap_or_default()),
                (!req.aliases.is_empty()).then(|| serde_json::to_string(req.aliases).unwrap_or_default()),
                (!req.labels.is_empty()).then(|| serde_json::to_string(req.labels).unwrap_or_default()),
                owner.pid,
                owner.start
            ],
        )?;
        let att_id = tx.last_insert_rowid();
        let mut ips = Vec::new();
        for s in &net.subnets {
            let requested = req.static_ips.iter().find(|ip| s.subnet.contains(*ip));
            let ip = match requested {
                Some(ip) => {
                    crate::model::check_host_in("ip", *ip, &s.subnet)?;
                    if *ip == s.gateway {
                        return Err(Error::invalid("ip", ip, "is the network's gateway"));
                    }
                    *ip
                }
                None => Self::next_free(&tx, &net.name, s)?,
            };
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO allocations (subnet_id, ip, attachment_id) VALUES (?1, ?2, ?3)",
                params![s.id, ip.to_string(), att_id],
            )?;
            if inserted == 0 {
                return Err(Error::Conflict(format!(
                    "ip {ip} is already in use on network {:?}",
                    net.name
                )));
            }
            // Only dynamic allocations move the round-robin cursor.
            if requested.is_none() {
                tx.execute(
                    "UPDATE subnets SET cursor = ?1 WHERE id = ?2",
                    params![ip.to_string(), s.id],
                )?;
            }
            ips.push(ip);
        }
        for spec in req.publish {
            let targets: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| match spec.host_ip {
                    Some(h) => h.is_ipv4() == ip.is_ipv4(),
                    None => true,
                })
                .collect();
            if targets.is_empty() {
                return Err(Error::invalid(
                    "publish",
                    spec.host_ip.map(|h| h.to_string()).unwrap_or_default(),
                    format!(
                        "network {:?} has no subnet of this address family",
                        net.name
                    ),
                ));
            }
            for cip in targets {
                for (hp, cp) in spec.pairs() {
                    let m = PortMapping {
                        host_ip: spec.host_ip,
                        host_port: hp,
                        container_ip: cip,
                        container_port: cp,
                        proto: spec.proto,
                    };
                    Self::claim_port(&tx, att_id, &m)?;
                }
            }
        }
        let att = Self::load_attachments(&tx, "a.id = ?1", [att_id])?
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("attachment", att_id))?;
        tx.commit()?;
        Ok(Reserved {
            network: net,
            attachment: att,
            existed: false,
        })
    }

    /// Who uses `mac` on `net` (its bridge, a sandbox or a sandbox's host veth), if anyone.
    fn mac_holder(tx: &Connection, net: &Network, mac: Mac) -> Result<Option<String>> {
        if let Some(br) = &net.bridge
            && mac == net.bridge_mac
        {
            return Ok(Some(format!("its bridge {br:?}")));
        }
        // Two indexed lookups (attachments_by_mac, attachments_by_host_mac).
        let text = mac.to_string();
        let mut row: Option<(String, String)> = None;
        for column in ["mac", "host_mac"] {
            row = tx
                .prepare_cached(&format!(
                    "SELECT sandbox, mac FROM attachments WHERE network_id = ?1 AND {column} = ?2 LIMIT 1"
                ))?
                .query_row(params![net.id, text], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if row.is_some() {
                break;
            }
        }
        Ok(row.map(|(sandbox, own)| {
            if own == mac.to_string() {
                format!("sandbox {sandbox:?}")
            } else {
                format!("the host veth of sandbox {sandbox:?}")
            }
        }))
    }

    fn next_free(tx: &Connection, network: &str, s: &Subnet) -> Result<IpAddr> {
        let cursor: Option<String> =
            tx.query_row("SELECT cursor FROM subnets WHERE id = ?1", [s.id], |r| {
                r.get(0)
            })?;
        let cursor = cursor.and_then(|c| c.parse().ok());
        let mut probe =
            tx.prepare_cached("SELECT 1 FROM allocations WHERE subnet_id = ?1 AND ip = ?2")?;
        let mut err = None;
        let mut taken = |ip: IpAddr| match probe
            .query_row(params![s.id, ip.to_string()], |_| Ok(()))
            .optional()
        {
            Ok(found) => found.is_some(),
            Err(e) => {
                err = Some(e);
                true
            }
        };
        let pool = s.pool();
        // The address after the cursor is almost always free: try a few before counting the
        // subnet's allocations (a COUNT walks all of them) to bound a longer walk.
        let mut ip = pool.next_free(cursor, &[s.gateway], QUICK_PROBES, &mut taken);
        if ip.is_none() {
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM allocations WHERE subnet_id = ?1",
                [s.id],
                |r| r.get(0),
            )?;
            ip = pool.next_free(cursor, &[s.gateway], count as u128, &mut taken);
        }
        if let Some(e) = err {
            return Err(e.into());
        }
        ip.ok_or_else(|| Error::Exhausted {
            network: network.to_string(),
            subnet: s.subnet.to_string(),
        })
    }

    fn claim_port(tx: &Connection, att_id: i64, m: &PortMapping) -> Result<()> {
        let fam = family(&m.container_ip);
        let host_ip = m.host_ip.map(|h| h.to_string());
        let clash: Option<String> = tx
            .query_row(
                "SELECT COALESCE(host_ip, '*') FROM ports WHERE proto = ?1 AND host_port = ?2 AND family = ?3
                 AND (host_ip IS NULL OR ?4 IS NULL OR host_ip = ?4) LIMIT 1",
                params![m.proto.as_str(), m.host_port, fam, host_ip],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = clash {
            return Err(Error::Conflict(format!(
                "publish {}:{}/{}: host port already published on {other}",
                host_ip.as_deref().unwrap_or("*"),
                m.host_port,
                m.proto
            )));
        }
        if let Some(svc) = services::node_port_owner(tx, m.proto, m.host_port)? {
            return Err(Error::Conflict(format!(
                "publish {}/{}: host port is the node port of service {svc:?}",
                m.host_port, m.proto
            )));
        }
        tx.execute(
            "INSERT INTO ports (attachment_id, family, host_ip, proto, host_port, container_ip, container_port)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![att_id, fam, host_ip, m.proto.as_str(), m.host_port, m.container_ip.to_string(), m.container_port],
        )?;
        Ok(())
    }

    /// Changes whenever another connection commits (SQLite's data_version): the DNS
    /// daemon polls it to notice attach/detach cheaply.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    pub fn mark_ready(&mut self, id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE attachments SET state = 'ready', owner_pid = NULL, owner_start = NULL WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Marks an attachment as being taken down by this process (detach): if the process
    /// dies or the final delete fails (a full disk), the record says so and the next detach
    /// or reconcile finishes the job, instead of a ready record without links.
    pub fn mark_removing(&mut self, id: i64) -> Result<()> {
        self.set_state(id, "removing")
    }

    /// Back to pending (an attach whose rebuild failed after marking it ready).
    pub fn mark_pending(&mut self, id: i64) -> Result<()> {
        self.set_state(id, "pending")
    }

    fn set_state(&mut self, id: i64, state: &str) -> Result<()> {
        let me = crate::lock::Owner::me();
        self.conn.execute(
            "UPDATE attachments SET state = ?2, owner_pid = ?3, owner_start = ?4 WHERE id = ?1",
            params![id, state, me.pid, me.start],
        )?;
        Ok(())
    }

    /// Releases an attachment: its addresses and ports go with it (ON DELETE CASCADE).
    pub fn release(&mut self, id: i64) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM attachments WHERE id = ?1", [id])?;
        // Its policy atoms go with it, after the kernel dropped their elements (detach
        // removes them first): a crash in between keeps both, and the next detach diffs
        // again from them.
        tx.execute(
            "DELETE FROM policy_atoms WHERE own_att = ?1 OR far_att = ?1",
            [id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces an attachment's DNS names (a runtime told them after the attach).
    pub fn set_aliases(&mut self, att_id: i64, aliases: &[String]) -> Result<()> {
        let v = (!aliases.is_empty()).then(|| serde_json::to_string(aliases).unwrap_or_default());
        self.conn.execute(
            "UPDATE attachments SET aliases = ?2 WHERE id = ?1",
            params![att_id, v],
        )?;
        Ok(())
    }

    /// Records the identity of the namespace an attachment was built in.
    pub fn set_netns_id(&mut self, att_id: i64, id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE attachments SET netns_id = ?2 WHERE id = ?1",
            params![att_id, id],
        )?;
        Ok(())
    }

    pub(super) fn load_attachments(
        conn: &Connection,
        cond: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<Attachment>> {
        let sql = format!(
            "SELECT a.id, a.network_id, n.name, a.sandbox, a.netns_path, a.ifname, a.host_ifname, a.mac, a.host_mac,
                    a.state, a.container_id, a.routes, a.aliases, a.labels, a.owner_pid, a.owner_start, a.netns_id
             FROM attachments a JOIN networks n ON n.id = a.network_id WHERE {cond} ORDER BY a.id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut atts: Vec<Attachment> = stmt
            .query_map(p, |r| {
                let state: String = r.get(9)?;
                Ok(Attachment {
                    id: r.get(0)?,
                    network_id: r.get(1)?,
                    network: r.get(2)?,
                    sandbox: r.get(3)?,
                    netns_path: r.get(4)?,
                    netns_id: r.get(16)?,
                    ifname: r.get(5)?,
                    host_ifname: r.get(6)?,
                    mac: r.get(7)?,
                    host_mac: r.get(8)?,
                    state: match state.as_str() {
                        "ready" => AttachState::Ready,
                        "removing" => AttachState::Removing,
                        "pending" => AttachState::Pending,
                        other => return Err(bad_row("attachments", "state", other)),
                    },
                    container_id: r.get(10)?,
                    routes: json_col("attachments", "routes", r.get(11)?)?,
                    aliases: json_col("attachments", "aliases", r.get(12)?)?.unwrap_or_default(),
                    labels: json_col("attachments", "labels", r.get(13)?)?.unwrap_or_default(),
                    ips: vec![],
                    ports: vec![],
                    owner: match (r.get::<_, Option<i64>>(14)?, r.get::<_, Option<i64>>(15)?) {
                        (Some(pid), Some(start)) => Some(crate::lock::Owner { pid, start }),
                        _ => None,
                    },
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut ips = conn.prepare_cached(
            "SELECT al.ip, s.cidr FROM allocations al JOIN subnets s ON s.id = al.subnet_id
             WHERE al.attachment_id = ?1 ORDER BY s.id",
        )?;
        let mut ports = conn.prepare_cached(
            "SELECT host_ip, proto, host_port, container_ip, container_port FROM ports WHERE attachment_id = ?1 ORDER BY rowid",
        )?;
        for a in &mut atts {
            a.ips = ips
                .query_map([a.id], |r| {
                    let ip: IpAddr = parse(r.get(0)?)?;
                    let net: IpNet = parse(r.get(1)?)?;
                    IpNet::new(ip, net.prefix_len()).map_err(|_| {
                        rusqlite::Error::InvalidColumnType(
                            0,
                            ip.to_string(),
                            rusqlite::types::Type::Text,
                        )
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            a.ports = ports
                .query_map([a.id], |r| {
                    let host_ip: Option<String> = r.get(0)?;
                    let proto: String = r.get(1)?;
                    Ok(PortMapping {
                        host_ip: host_ip.map(parse).transpose()?,
                        proto: proto_col("ports", &proto)?,
                        host_port: r.get(2)?,
                        container_ip: parse(r.get(3)?)?,
                        container_port: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(atts)
    }

    pub fn attachment(&self, network_id: i64, sandbox: &str) -> Result<Option<Attachment>> {
        Ok(Self::load_attachments(
            &self.conn,
            "a.network_id = ?1 AND a.sandbox = ?2",
            params![network_id, sandbox],
        )?
        .into_iter()
        .next())
    }

    pub fn attachments_of_sandbox(&self, sandbox: &str) -> Result<Vec<Attachment>> {
        Self::load_attachments(&self.conn, "a.sandbox = ?1", [sandbox])
    }

    pub fn attachments_of_network(&self, network_id: i64) -> Result<Vec<Attachment>> {
        Self::load_attachments(&self.conn, "a.network_id = ?1", [network_id])
    }

    pub fn attachments_by_container(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<Attachment>> {
        Self::load_attachments(
            &self.conn,
            "a.container_id = ?1 AND a.ifname = ?2",
            [container_id, ifname],
        )
    }

    pub fn all_attachments(&self) -> Result<Vec<Attachment>> {
        Self::load_attachments(&self.conn, "1 = 1", [])
    }
}
