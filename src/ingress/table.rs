//! The route table: compiled routes and the path tree over them. A lookup walks the tree
//! (most specific path first) and, at each candidate, checks the route's other predicates;
//! among routes on the same path the one with the higher priority (more predicates, plus
//! `Weight`) is tried first, and equal ones in file order.

use super::eskip::{self, ParseError};
use super::predicate::Req;
use super::route::{self, Problems, Route};
use super::tree::Tree;
use std::fmt;

pub struct Table {
    pub routes: Vec<Route>,
    tree: Tree,
}

/// Why a routes text was refused.
#[derive(Debug)]
pub enum LoadError {
    Syntax(ParseError),
    /// A route kept in the store (by its id) that does not parse.
    Stored(String, ParseError),
    Problems(Problems),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Syntax(e) => write!(f, "{e}"),
            LoadError::Stored(id, e) => write!(f, "store route {id}: {e}"),
            LoadError::Problems(p) => {
                let mut lines: Vec<String> = p.invalid.iter().map(|e| e.to_string()).collect();
                lines.extend(p.unsupported.iter().map(|u| {
                    format!(
                        "{}:{}: route {}: {} {} is not implemented by knit",
                        u.line, u.col, u.route, u.kind, u.name
                    )
                }));
                write!(f, "{}", lines.join("; "))
            }
        }
    }
}

impl Table {
    pub fn new(routes: Vec<Route>) -> Table {
        let mut order: Vec<usize> = (0..routes.len()).collect();
        // Stable: equal priorities keep file order.
        order.sort_by(|&a, &b| routes[b].priority.total_cmp(&routes[a].priority));
        let mut tree = Tree::default();
        for i in order {
            tree.insert(&routes[i].path, i);
        }
        Table { routes, tree }
    }

    /// Parses and compiles a routes text; any error refuses it whole.
    pub fn load(text: &str) -> Result<Table, LoadError> {
        let parsed = eskip::parse(text).map_err(LoadError::Syntax)?;
        let routes = route::compile(&parsed).map_err(LoadError::Problems)?;
        Ok(Table::new(routes))
    }

    /// A routes file's text and the routes kept in the store (`(id, route without its
    /// id)`) as one table: a stored route replaces a file route of the same id.
    pub fn load_merged(file: &str, stored: &[(String, String)]) -> Result<Table, LoadError> {
        let mut routes = eskip::parse(file).map_err(LoadError::Syntax)?;
        let ids: std::collections::HashSet<&str> =
            stored.iter().map(|(id, _)| id.as_str()).collect();
        routes.retain(|r| !ids.contains(r.id.as_str()));
        for (id, text) in stored {
            routes
                .push(eskip::parse_stored(id, text).map_err(|e| LoadError::Stored(id.clone(), e))?);
        }
        let compiled = route::compile(&routes).map_err(LoadError::Problems)?;
        Ok(Table::new(compiled))
    }

    /// The route for a request. `roll` draws numbers in [0, 1) for `Traffic`.
    pub fn lookup(&self, req: &Req, roll: &mut dyn FnMut() -> f64) -> Option<&Route> {
        self.routes.get(self.lookup_index(req, roll)?)
    }

    /// The same, as the route's index in `routes`.
    pub fn lookup_index(&self, req: &Req, roll: &mut dyn FnMut() -> f64) -> Option<usize> {
        self.tree.lookup(req.path, &mut |i| {
            self.routes[i]
                .predicates
                .iter()
                .all(|p| p.matches(req, &mut *roll))
        })
    }
}

#[cfg(test)]
mod tests;
