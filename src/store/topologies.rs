//! What each declarative topology (`knit apply FILE`, keyed by the file's `name:`)
//! created. knit owns only what it created: a later apply removes owned objects the file
//! no longer declares, `knit destroy` removes owned objects, and anything else the file
//! merely refers to (a network that existed before) is left alone.
//!
//! Keys: a network, sandbox or service by its name; an attachment as `NETWORK/SANDBOX`
//! (names never hold a `/`); a policy rule by its network and spec as JSON (rule ids
//! change when a rule is re-added, the spec does not).
//!
//! Names can be reused: each record also holds the identity of the object the topology
//! made (its row id; a namespace's device and inode), written once the object exists.
//! An object of the same name with another identity was made by someone else since, and
//! is not the topology's.

use super::Store;
use crate::error::Result;
use rusqlite::params;

impl Store {
    /// Records that `topology` created (or is about to create) an object. Idempotent.
    pub fn own(&mut self, topology: &str, kind: &str, key: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO topology_objects (topology, kind, key) VALUES (?1, ?2, ?3)",
            params![topology, kind, key],
        )?;
        Ok(())
    }

    /// Forgets an object of `topology` (it was removed, or turned out to exist already).
    pub fn disown(&mut self, topology: &str, kind: &str, key: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM topology_objects WHERE topology = ?1 AND kind = ?2 AND key = ?3",
            params![topology, kind, key],
        )?;
        Ok(())
    }

    /// The identity of an object `topology` created (see the module comment).
    pub fn set_ident(&mut self, topology: &str, kind: &str, key: &str, ident: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE topology_objects SET ident = ?4 WHERE topology = ?1 AND kind = ?2 AND key = ?3",
            params![topology, kind, key, ident],
        )?;
        Ok(())
    }

    /// Every object `topology` owns, as (kind, key, identity if known), in a stable order.
    pub fn owned(&self, topology: &str) -> Result<Vec<(String, String, Option<String>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, key, ident FROM topology_objects WHERE topology = ?1 ORDER BY kind, key",
        )?;
        let v = stmt
            .query_map([topology], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }
}
