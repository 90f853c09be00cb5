//! A route compiled from eskip: its path in the form the path tree indexes, its other
//! predicates, its priority, its filters and its backend. Everything a route file says is
//! checked here once, so serving never meets a bad regexp or an unknown name.

use super::args::{self, ArgError};
use super::eskip::{self, Term};
use super::filter::{self, Filter};
use super::predicate::{self, Predicate};
use serde::Serialize;

/// One path segment of a pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Static(String),
    /// `:name`: any one segment.
    Param,
}

/// Where in the path tree a route hangs.
#[derive(Debug, Clone, PartialEq)]
pub enum PathSpec {
    /// `Path("/a/:b")`: exactly these segments.
    Exact(Vec<Seg>),
    /// `PathSubtree("/a")`, `Path("/a/*rest")`, or no path predicate (the root's subtree):
    /// these segments and anything below them.
    Subtree(Vec<Seg>),
}

/// Splits a path into its segments as the tree walks them: "/" is one empty segment and a
/// trailing slash is a last empty segment, so `Path("/a")` does not match "/a/".
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

/// The most segments a `Path` or `PathSubtree` may have.
const MAX_SEGMENTS: usize = 256;

fn path_spec(t: &Term) -> Result<PathSpec, ArgError> {
    args::count(t, 1, 1)?;
    let p = args::string(t, 0)?;
    if !p.starts_with('/') {
        return args::fail(t, format!("{p:?} does not start with '/'"));
    }
    // The path tree is walked (and dropped) recursively: its depth is bounded.
    if segments(&p).count() > MAX_SEGMENTS {
        return args::fail(t, format!("more than {MAX_SEGMENTS} path segments"));
    }
    if t.name == "PathSubtree" {
        let trimmed = p.trim_end_matches('/');
        let segs = if trimmed.is_empty() {
            vec![]
        } else {
            segments(trimmed).map(pattern_seg).collect()
        };
        return Ok(PathSpec::Subtree(segs));
    }
    let parts: Vec<&str> = segments(&p).collect();
    let mut segs = vec![];
    for (i, s) in parts.iter().enumerate() {
        if let Some(_name) = s.strip_prefix('*') {
            if i + 1 != parts.len() {
                return args::fail(t, "a '*wildcard' must be the last segment");
            }
            return Ok(PathSpec::Subtree(segs));
        }
        segs.push(pattern_seg(s));
    }
    Ok(PathSpec::Exact(segs))
}

fn pattern_seg(s: &str) -> Seg {
    if s.starts_with(':') {
        Seg::Param
    } else {
        Seg::Static(s.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Algorithm {
    RoundRobin,
    Random,
    ConsistentHash,
    PowerOfRandomNChoices,
    LeastRequests,
    WeightedRoundRobin,
}

pub use super::target::Target;

#[derive(Debug, Clone)]
pub enum Backend {
    Shunt,
    Loopback,
    Lb {
        algorithm: Algorithm,
        targets: Vec<Target>,
    },
}

#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    pub path: PathSpec,
    pub predicates: Vec<Predicate>,
    /// Among routes on the same path: the number of other predicates plus `Weight`s.
    pub priority: f64,
    pub filters: Vec<Filter>,
    pub backend: Backend,
    /// A sticky `Traffic` route's cookie, set on the responses of clients it drew in.
    pub sticky: Option<(String, String)>,
}

/// Something a route uses that knit does not implement (`check` exits 3 on these).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unsupported {
    pub route: String,
    pub kind: &'static str,
    pub name: String,
    pub line: usize,
    pub col: usize,
}

/// What is wrong with a file that parsed.
#[derive(Debug, Default)]
pub struct Problems {
    pub invalid: Vec<ArgError>,
    pub unsupported: Vec<Unsupported>,
}

/// The path predicates, handled by the tree.
pub const PATH_PREDICATES: &[&str] = &["Path", "PathSubtree", "Weight"];

/// Every predicate and filter name knit implements.
pub fn implemented() -> (Vec<&'static str>, Vec<&'static str>) {
    let mut p: Vec<&str> = PATH_PREDICATES.to_vec();
    p.extend_from_slice(predicate::NAMES);
    (p, filter::NAMES.to_vec())
}

fn algorithm(name: Option<&str>) -> Option<Algorithm> {
    Some(match name {
        None | Some("roundRobin") => Algorithm::RoundRobin,
        Some("random") => Algorithm::Random,
        Some("consistentHash") => Algorithm::ConsistentHash,
        Some("powerOfRandomNChoices") => Algorithm::PowerOfRandomNChoices,
        Some("leastRequests") => Algorithm::LeastRequests,
        Some("weightedRoundRobin") => Algorithm::WeightedRoundRobin,
        Some(_) => return None,
    })
}

/// Compiles every route; any problem in any route fails the whole set (a routes file is
/// taken whole or not at all).
pub fn compile(routes: &[eskip::Route]) -> Result<Vec<Route>, Problems> {
    let mut pr = Problems::default();
    let mut out = vec![];
    for (i, r) in routes.iter().enumerate() {
        let id = if r.id.is_empty() {
            format!("route{i}")
        } else {
            r.id.clone()
        };
        let mut unsupported = |kind, name: String, line, col| {
            pr.unsupported.push(Unsupported {
                route: id.clone(),
                kind,
                name,
                line,
                col,
            })
        };
        let mut path = None;
        let mut predicates = vec![];
        let mut priority = 0.0;
        let mut sticky = None;
        for t in &r.predicates {
            match t.name.as_str() {
                "Path" | "PathSubtree" => match path_spec(t) {
                    Ok(_) if path.is_some() => pr.invalid.push(ArgError {
                        line: t.line,
                        col: t.col,
                        message: format!("{}: a route has at most one Path or PathSubtree", t.name),
                    }),
                    Ok(p) => path = Some(p),
                    Err(e) => pr.invalid.push(e),
                },
                "Weight" => match args::count(t, 1, 1).and_then(|_| args::number(t, 0)) {
                    Ok(w) => priority += w,
                    Err(e) => pr.invalid.push(e),
                },
                _ => match Predicate::compile(t) {
                    Ok(Some(p)) => {
                        if let Predicate::Traffic {
                            sticky: Some(s), ..
                        } = &p
                        {
                            sticky = Some(s.clone());
                        }
                        priority += 1.0;
                        predicates.push(p);
                    }
                    Ok(None) => unsupported("predicate", t.name.clone(), t.line, t.col),
                    Err(e) => pr.invalid.push(e),
                },
            }
        }
        let mut filters = vec![];
        for t in &r.filters {
            match Filter::compile(t) {
                Ok(Some(f)) => filters.push(f),
                Ok(None) => unsupported("filter", t.name.clone(), t.line, t.col),
                Err(e) => pr.invalid.push(e),
            }
        }
        let (line, col) = (r.line, r.col);
        let mut targets = |urls: &[String]| -> Vec<Target> {
            urls.iter()
                .filter_map(|u| match Target::parse(u) {
                    Ok(t) => Some(t),
                    Err(why) => {
                        unsupported("backend", why, line, col);
                        None
                    }
                })
                .collect()
        };
        let backend = match &r.backend {
            eskip::Backend::Shunt => Some(Backend::Shunt),
            eskip::Backend::Loopback => Some(Backend::Loopback),
            eskip::Backend::Network { url } => Some(Backend::Lb {
                algorithm: Algorithm::RoundRobin,
                targets: targets(std::slice::from_ref(url)),
            }),
            eskip::Backend::Lb {
                algorithm: a,
                endpoints,
            } => {
                let targets = targets(endpoints);
                match algorithm(a.as_deref()) {
                    Some(algorithm) => Some(Backend::Lb { algorithm, targets }),
                    None => {
                        unsupported(
                            "load balancing algorithm",
                            a.clone().unwrap_or_default(),
                            line,
                            col,
                        );
                        None
                    }
                }
            }
            b @ (eskip::Backend::Dynamic | eskip::Backend::Forward) => {
                unsupported("backend", b.to_string(), line, col);
                None
            }
        };
        if let Some(backend) = backend {
            out.push(Route {
                id,
                path: path.unwrap_or(PathSpec::Subtree(vec![])),
                predicates,
                priority,
                filters,
                backend,
                sticky,
            });
        }
    }
    if pr.invalid.is_empty() && pr.unsupported.is_empty() {
        Ok(out)
    } else {
        Err(pr)
    }
}
