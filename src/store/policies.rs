//! Network policy: each network's defaults, its rules, and per rule its index terms, the
//! sets it uses and its atoms (see `crate::policy`).

use super::{Attachment, Store};
use crate::error::{Error, Result};
use crate::model::policy::{Action, Default, Direction, PortRange, Rule, RuleSpec, Selector};
use crate::nft::policy::PolSet;
use rusqlite::{Connection, params};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// One allowed (or isolated) combination, as the store keeps it: what one rule
/// contributes to one kernel key (see `crate::policy`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Atom {
    pub rule_id: i64,
    pub set: PolSet,
    /// The attachment of the network's own sandbox.
    pub own_att: i64,
    /// The far side's attachment (None for a CIDR).
    pub far_att: Option<i64>,
    pub own: IpAddr,
    /// The far prefix's first address (the set masks the packet's address to its length);
    /// `own` again for isolation atoms.
    pub far: IpAddr,
    /// Protocol number and port range (None: any protocol and port).
    pub l4: Option<(u8, u16, u16)>,
}

/// Atoms that share a kernel key except for the port range: their union is what the
/// kernel holds for the key.
pub type GroupKey = (PolSet, IpAddr, IpAddr, Option<u8>);

impl Atom {
    pub fn group(&self) -> GroupKey {
        (self.set, self.own, self.far, self.l4.map(|(p, _, _)| p))
    }
}

const RULE_COLS: &str = "p.id, p.network_id, n.name, p.from_sel, p.to_sel, p.port, p.port_hi, p.proto, p.dir, p.action, p.origin";

/// A selector column: today's form, or the one schema 5 wrote (`label` with one key and
/// value, `cidr` as a bare prefix).
fn selector(id: i64, j: &str) -> Result<Selector> {
    if let Ok(s) = serde_json::from_str::<Selector>(j) {
        return Ok(s);
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "lowercase", tag = "kind", content = "value")]
    enum Legacy {
        Label { key: String, value: String },
        Cidr(ipnet::IpNet),
    }
    match serde_json::from_str::<Legacy>(j) {
        Ok(Legacy::Label { key, value }) => Ok(Selector::Labels([(key, value)].into())),
        Ok(Legacy::Cidr(net)) => Ok(Selector::Cidr {
            net,
            except: vec![],
        }),
        Err(e) => Err(Error::Conflict(format!(
            "policies.from_sel/to_sel of policy {id} holds {j:?}, which knit cannot read: {e}"
        ))),
    }
}

fn load_rules(conn: &Connection, cond: &str, p: impl rusqlite::Params) -> Result<Vec<Rule>> {
    let sql = format!(
        "SELECT {RULE_COLS} FROM policies p JOIN networks n ON n.id = p.network_id WHERE {cond} ORDER BY p.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    type Row = (
        i64,
        i64,
        String,
        String,
        String,
        Option<u16>,
        Option<u16>,
        Option<String>,
        String,
        String,
        Option<String>,
    );
    let rows = stmt
        .query_map(p, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<Row>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, network_id, network, from, to, port, port_hi, proto, dir, action, origin) in rows {
        let bad = |col: &str, v: &str| Error::from(super::bad_row("policies", col, v));
        let port = match (port, proto) {
            (Some(lo), Some(p)) => Some(PortRange {
                proto: super::proto_col("policies", &p)?,
                lo,
                hi: port_hi.unwrap_or(lo),
            }),
            _ => None,
        };
        out.push(Rule {
            id,
            network_id,
            network,
            spec: RuleSpec {
                action: match action.as_str() {
                    "allow" => Action::Allow,
                    "isolate" => Action::Isolate,
                    v => return Err(bad("action", v)),
                },
                dir: Direction::parse(&dir).map_err(|_| bad("dir", &dir))?,
                from: selector(id, &from)?,
                to: selector(id, &to)?,
                port,
                origin,
            },
        });
    }
    Ok(out)
}

fn action_str(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Isolate => "isolate",
    }
}

/// How attachments find a rule: its selectors' terms (`all` for labels that select
/// every sandbox).
fn terms(spec: &RuleSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sel in [&spec.from, &spec.to] {
        if matches!(sel, Selector::Labels(l) if l.is_empty()) {
            out.insert("all".to_string());
        }
        for (kind, t) in sel.terms() {
            out.insert(format!("{kind}:{t}"));
        }
    }
    out
}

fn index_rule(conn: &Connection, rule: &Rule, sets: &[PolSet]) -> Result<()> {
    for t in terms(&rule.spec) {
        conn.prepare_cached("INSERT INTO policy_terms (rule_id, term) VALUES (?1, ?2)")?
            .execute(params![rule.id, t])?;
    }
    for s in sets {
        conn.prepare_cached(
            "INSERT INTO policy_sets (rule_id, network_id, set_name) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![rule.id, rule.network_id, s.name()])?;
    }
    Ok(())
}

/// Schema 6: rewrites the selectors of schema 5's rules in today's form. Indexing them
/// (sets, atoms) needs the policy resolver: `Store::legacy_rules` hands them to the node.
pub(super) fn rewrite_legacy_rules(conn: &Connection) -> rusqlite::Result<()> {
    let fail = |e: Error| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    for r in load_rules(conn, "1 = 1", []).map_err(fail)? {
        conn.execute(
            "UPDATE policies SET from_sel = ?1, to_sel = ?2 WHERE id = ?3",
            params![json(&r.spec.from), json(&r.spec.to), r.id],
        )?;
    }
    Ok(())
}

fn json(s: &Selector) -> String {
    // A selector is strings and prefixes: serializing it cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

fn insert_atoms(conn: &Connection, atoms: &[Atom]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO policy_atoms (rule_id, set_name, own_att, far_att, own, far, proto, lo, hi)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for a in atoms {
        let (proto, lo, hi) = match a.l4 {
            Some((p, lo, hi)) => (Some(p), Some(lo), Some(hi)),
            None => (None, None, None),
        };
        stmt.execute(params![
            a.rule_id,
            a.set.name(),
            a.own_att,
            a.far_att,
            a.own.to_string(),
            a.far.to_string(),
            proto,
            lo,
            hi
        ])?;
    }
    Ok(())
}

fn load_atoms(conn: &Connection, cond: &str, p: impl rusqlite::Params) -> Result<Vec<Atom>> {
    let sql = format!(
        "SELECT rule_id, set_name, own_att, far_att, own, far, proto, lo, hi FROM policy_atoms WHERE {cond}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(p, |r| {
            let set: String = r.get(1)?;
            let ip = |i: usize| -> rusqlite::Result<IpAddr> {
                let s: String = r.get(i)?;
                s.parse()
                    .map_err(|_| super::bad_row("policy_atoms", "own/far", &s))
            };
            let proto: Option<u8> = r.get(6)?;
            Ok(Atom {
                rule_id: r.get(0)?,
                set: PolSet::parse(&set)
                    .ok_or_else(|| super::bad_row("policy_atoms", "set_name", &set))?,
                own_att: r.get(2)?,
                far_att: r.get(3)?,
                own: ip(4)?,
                far: ip(5)?,
                l4: match proto {
                    Some(p) => Some((p, r.get(7)?, r.get(8)?)),
                    None => None,
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

impl Store {
    /// Sets a network's default for one direction.
    pub fn set_network_default(
        &mut self,
        network_id: i64,
        dir: Direction,
        d: Default,
    ) -> Result<()> {
        let col = match dir {
            Direction::Ingress => "policy",
            Direction::Egress => "egress_policy",
        };
        self.conn.execute(
            &format!("UPDATE networks SET {col} = ?1 WHERE id = ?2"),
            params![d.as_str(), network_id],
        )?;
        Ok(())
    }

    pub fn set_egress_dns(&mut self, network_id: i64, allowed: bool) -> Result<()> {
        self.conn.execute(
            "UPDATE networks SET egress_dns = ?1 WHERE id = ?2",
            params![allowed, network_id],
        )?;
        Ok(())
    }

    /// Starts a write transaction that spans a kernel change: the caller commits once the
    /// kernel took it, or rolls back (`finish`). Reads on this store see it meanwhile.
    pub fn begin(&mut self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits (`ok`) or rolls back what `begin` started.
    pub fn finish(&mut self, ok: bool) -> Result<()> {
        self.conn
            .execute_batch(if ok { "COMMIT" } else { "ROLLBACK" })?;
        Ok(())
    }

    /// The identical rule (same network, spec and origin), if recorded.
    pub fn find_rule(&self, network_id: i64, spec: &RuleSpec) -> Result<Option<Rule>> {
        Ok(load_rules(
            &self.conn,
            "p.network_id = ?1 AND p.from_sel = ?2 AND p.to_sel = ?3 AND p.port IS ?4 AND p.port_hi IS ?5 AND p.proto IS ?6 AND p.dir = ?7 AND p.action = ?8 AND p.origin IS ?9",
            rusqlite::params_from_iter(spec_row(network_id, spec)),
        )?
        .pop())
    }

    /// Records a rule with its index terms and the sets it uses (its atoms:
    /// `insert_atoms`).
    pub fn insert_rule(
        &mut self,
        network_id: i64,
        spec: &RuleSpec,
        sets: &[PolSet],
    ) -> Result<Rule> {
        self.conn.execute(
            "INSERT INTO policies (network_id, from_sel, to_sel, port, port_hi, proto, dir, action, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params_from_iter(spec_row(network_id, spec)),
        )?;
        let id = self.conn.last_insert_rowid();
        let rule = self.rule(id)?;
        index_rule(&self.conn, &rule, sets)?;
        Ok(rule)
    }

    /// Rules recorded before schema 6 that have no index yet (see
    /// `rewrite_legacy_rules`).
    pub fn legacy_rules(&self) -> Result<Vec<Rule>> {
        load_rules(
            &self.conn,
            "p.id NOT IN (SELECT rule_id FROM policy_terms UNION SELECT rule_id FROM policy_sets)",
            [],
        )
    }

    /// Indexes one of them.
    pub fn index_legacy_rule(
        &mut self,
        rule: &Rule,
        sets: &[PolSet],
        atoms: &[Atom],
    ) -> Result<()> {
        index_rule(&self.conn, rule, sets)?;
        insert_atoms(&self.conn, atoms)
    }

    pub fn rule(&self, id: i64) -> Result<Rule> {
        load_rules(&self.conn, "p.id = ?1", [id])?
            .pop()
            .ok_or_else(|| Error::not_found("policy", id))
    }

    pub fn rules(&self) -> Result<Vec<Rule>> {
        load_rules(&self.conn, "1 = 1", [])
    }

    /// Rules imported from document `origin`.
    pub fn rules_of_origin(&self, origin: &str) -> Result<Vec<Rule>> {
        load_rules(&self.conn, "p.origin = ?1", [origin])
    }

    /// Documents rules were imported from.
    pub fn origins(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT origin FROM policies WHERE origin IS NOT NULL ORDER BY origin",
        )?;
        let v = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(v)
    }

    /// Rules that may select an attachment (one of its terms matches; callers check the
    /// selectors), whatever their network.
    pub fn candidate_rules(&self, att: &Attachment) -> Result<Vec<Rule>> {
        let mut terms = vec!["all".to_string(), format!("sandbox:{}", att.sandbox)];
        terms.extend(att.labels.iter().map(|(k, v)| format!("label:{k}={v}")));
        let marks = vec!["?"; terms.len()].join(", ");
        load_rules(
            &self.conn,
            &format!("p.id IN (SELECT rule_id FROM policy_terms WHERE term IN ({marks}))"),
            rusqlite::params_from_iter(terms),
        )
    }

    /// Deletes a rule (its terms, sets and atoms go with it).
    pub fn delete_rule(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM policies WHERE id = ?1", [id])?;
        Ok(())
    }

    /// The sets a network's rules use, sorted.
    pub fn sets_in_use(&self, network_id: i64) -> Result<Vec<PolSet>> {
        // A loose index scan: one index seek per distinct set, however many rules use
        // each (a plain DISTINCT would read every rule's rows).
        let mut stmt = self.conn.prepare_cached(
            "WITH RECURSIVE s(name) AS (
                 SELECT MIN(set_name) FROM policy_sets WHERE network_id = ?1
                 UNION ALL
                 SELECT (SELECT MIN(set_name) FROM policy_sets WHERE network_id = ?1 AND set_name > s.name)
                 FROM s WHERE s.name IS NOT NULL
             )
             SELECT name FROM s WHERE name IS NOT NULL",
        )?;
        let names = stmt
            .query_map([network_id], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut sets = names
            .iter()
            .map(|n| {
                PolSet::parse(n).ok_or_else(|| super::bad_row("policy_sets", "set_name", n).into())
            })
            .collect::<Result<Vec<PolSet>>>()?;
        sets.sort();
        Ok(sets)
    }

    pub fn insert_atoms(&mut self, atoms: &[Atom]) -> Result<()> {
        insert_atoms(&self.conn, atoms)
    }

    /// Every atom of the groups `keys`.
    pub fn atoms_of_groups(&self, keys: &BTreeSet<GroupKey>) -> Result<Vec<Atom>> {
        let mut out = vec![];
        for (set, own, far, proto) in keys {
            out.extend(load_atoms(
                &self.conn,
                "set_name = ?1 AND own = ?2 AND far = ?3 AND proto IS ?4",
                params![set.name(), own.to_string(), far.to_string(), proto],
            )?);
        }
        Ok(out)
    }

    pub fn atoms_of_rule(&self, rule_id: i64) -> Result<Vec<Atom>> {
        load_atoms(&self.conn, "rule_id = ?1", [rule_id])
    }

    /// Atoms an attachment is part of (either side).
    pub fn atoms_of_attachment(&self, att_id: i64) -> Result<Vec<Atom>> {
        load_atoms(
            &self.conn,
            "rowid IN (SELECT rowid FROM policy_atoms WHERE own_att = ?1 UNION SELECT rowid FROM policy_atoms WHERE far_att = ?1)",
            [att_id],
        )
    }

    /// Atoms whose far side is a cluster endpoint of another node (negative ids).
    pub fn delete_remote_atoms(&mut self) -> Result<()> {
        self.conn
            .execute("DELETE FROM policy_atoms WHERE far_att < 0", [])?;
        Ok(())
    }

    pub fn delete_atoms_of_attachment(&mut self, att_id: i64) -> Result<()> {
        self.conn.execute(
            "DELETE FROM policy_atoms WHERE own_att = ?1 OR far_att = ?1",
            [att_id],
        )?;
        Ok(())
    }

    /// A network's atoms (a whole-table rebuild writes them all), minus those of the
    /// attachment `leaving`.
    pub fn atoms_of_network(&self, network_id: i64, leaving: Option<i64>) -> Result<Vec<Atom>> {
        load_atoms(
            &self.conn,
            "rule_id IN (SELECT id FROM policies WHERE network_id = ?1)
             AND (?2 IS NULL OR (own_att != ?2 AND (far_att IS NULL OR far_att != ?2)))",
            params![network_id, leaving],
        )
    }
}

/// A rule's columns in `policies` order (network_id, from_sel, to_sel, port, port_hi,
/// proto, dir, action, origin): what `insert_rule` writes and `find_rule` compares.
fn spec_row(network_id: i64, spec: &RuleSpec) -> [rusqlite::types::Value; 9] {
    use rusqlite::types::Value;
    let text = |s: &str| Value::Text(s.to_string());
    let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
    let p = spec.port;
    [
        Value::Integer(network_id),
        text(&json(&spec.from)),
        text(&json(&spec.to)),
        opt(p.map(|p| Value::Integer(p.lo.into()))),
        opt(p.map(|p| Value::Integer(p.hi.into()))),
        opt(p.map(|p| text(p.proto.as_str()))),
        text(spec.dir.as_str()),
        text(action_str(spec.action)),
        opt(spec.origin.as_deref().map(text)),
    ]
}
