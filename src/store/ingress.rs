//! Routes of `knit ingress` kept in the store: `(id, route)` where `route` is one eskip
//! route without its id. Checked by the CLI before they are written; `knit ingress
//! serve` reads them beside its routes file (a store route replaces a file route of the
//! same id) and picks up changes while it runs.

use super::Store;
use crate::error::Result;
use rusqlite::params;

impl Store {
    /// Adds a route, or replaces it when `replace`; false if it exists and not `replace`.
    pub fn put_ingress_route(&mut self, id: &str, route: &str, replace: bool) -> Result<bool> {
        let sql = if replace {
            "INSERT OR REPLACE INTO ingress_routes (id, route) VALUES (?1, ?2)"
        } else {
            "INSERT OR IGNORE INTO ingress_routes (id, route) VALUES (?1, ?2)"
        };
        Ok(self.conn.execute(sql, params![id, route])? == 1)
    }

    /// Removes a route; false if there was none.
    pub fn remove_ingress_route(&mut self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM ingress_routes WHERE id = ?1", [id])?
            == 1)
    }

    /// Every stored route as (id, route), by id.
    pub fn ingress_routes(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, route FROM ingress_routes ORDER BY id")?;
        let v = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }
}
