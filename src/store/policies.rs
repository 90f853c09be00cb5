//! Network policy: each network's default verdict and its allow rules.

use super::Store;
use crate::error::{Error, Result};

use crate::model::policy::{Default, PortSpec, Rule, Selector};
use rusqlite::{Connection, params};

impl Store {
    fn load_rules(conn: &Connection, cond: &str, p: impl rusqlite::Params) -> Result<Vec<Rule>> {
        let sql = format!(
            "SELECT p.id, p.network_id, n.name, p.from_sel, p.to_sel, p.port, p.proto
             FROM policies p JOIN networks n ON n.id = p.network_id WHERE {cond} ORDER BY p.id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(p, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<u16>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::new();
        for (id, network_id, network, from, to, port, proto) in rows {
            let sel = |j: &str| -> Result<Selector> {
                serde_json::from_str(j)
                    .map_err(|e| Error::Conflict(format!("policy {id}: unreadable selector: {e}")))
            };
            out.push(Rule {
                id,
                network_id,
                network,
                from: sel(&from)?,
                to: sel(&to)?,
                port: match (port, proto) {
                    (Some(port), Some(p)) => Some(PortSpec {
                        port,
                        proto: super::proto_col("policies", &p)?,
                    }),
                    _ => None,
                },
            });
        }
        Ok(out)
    }

    pub fn set_network_policy(&mut self, network_id: i64, d: Default) -> Result<()> {
        self.conn.execute(
            "UPDATE networks SET policy = ?1 WHERE id = ?2",
            params![d.as_str(), network_id],
        )?;
        Ok(())
    }

    /// Records an allow rule; an identical rule is returned instead of being duplicated.
    /// The bool says whether it is new.
    pub fn add_rule(
        &mut self,
        network_id: i64,
        from: &Selector,
        to: &Selector,
        port: Option<PortSpec>,
    ) -> Result<(Rule, bool)> {
        let tx = self.write_tx()?;
        let (from_j, to_j) = (
            serde_json::to_string(from).unwrap_or_default(),
            serde_json::to_string(to).unwrap_or_default(),
        );
        let (p, proto) = (port.map(|p| p.port), port.map(|p| p.proto.as_str()));
        let existing = Self::load_rules(
            &tx,
            "p.network_id = ?1 AND p.from_sel = ?2 AND p.to_sel = ?3 AND p.port IS ?4 AND p.proto IS ?5",
            params![network_id, from_j, to_j, p, proto],
        )?;
        if let Some(r) = existing.into_iter().next() {
            return Ok((r, false));
        }
        tx.execute(
            "INSERT INTO policies (network_id, from_sel, to_sel, port, proto) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![network_id, from_j, to_j, p, proto],
        )?;
        let id = tx.last_insert_rowid();
        let rule = Self::load_rules(&tx, "p.id = ?1", [id])?
            .pop()
            .ok_or_else(|| Error::not_found("policy", id))?;
        tx.commit()?;
        Ok((rule, true))
    }

    pub fn rule(&self, id: i64) -> Result<Rule> {
        Self::load_rules(&self.conn, "p.id = ?1", [id])?
            .pop()
            .ok_or_else(|| Error::not_found("policy", id))
    }

    pub fn rules(&self) -> Result<Vec<Rule>> {
        Self::load_rules(&self.conn, "1 = 1", [])
    }

    pub fn rules_of_network(&self, network_id: i64) -> Result<Vec<Rule>> {
        Self::load_rules(&self.conn, "p.network_id = ?1", [network_id])
    }

    pub fn delete_rule(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM policies WHERE id = ?1", [id])?;
        Ok(())
    }
}
