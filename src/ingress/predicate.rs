//! The predicates other than the path ones (those are the path tree's, see `tree`):
//! compiled once from their eskip terms, then evaluated against a request view.

use super::args::{self, ArgError};
use super::eskip::Term;
use ipnet::IpNet;
use regex::Regex;
use std::net::IpAddr;

/// What matching looks at, borrowed from the request (so the table does not depend on the
/// HTTP server's request type).
pub struct Req<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The Host header (or the URI's authority for HTTP/2), with its port if given.
    pub host: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The TCP peer.
    pub remote: IpAddr,
}

/// Where proxies in front name the clients they forward for.
pub const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The client as `Source`, `clientRatelimit` and `consistentHash` see it: the first
/// X-Forwarded-For address if the request came through another proxy, else the peer.
pub fn client_ip(headers: &http::HeaderMap, peer: IpAddr) -> IpAddr {
    headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

impl Req<'_> {
    /// The client as `Source` sees it (`client_ip`).
    pub fn source(&self) -> IpAddr {
        client_ip(self.headers, self.remote)
    }

    /// A cookie's value (the first one of that name).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Query parameters in order (`a=1&b` gives ("a","1"), ("b","")); not percent-decoded.
    pub fn query_params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
    }
}

#[derive(Debug, Clone)]
pub enum Predicate {
    PathRegexp(Regex),
    Host(Regex),
    Methods(Vec<http::Method>),
    Header(http::HeaderName, String),
    HeaderRegexp(http::HeaderName, Regex),
    Cookie(String, Option<Regex>),
    QueryParam(String, Option<Regex>),
    /// `Source`: X-Forwarded-For's first address, else the peer.
    Source(Vec<IpNet>),
    /// `ClientIP`: the peer only.
    ClientIp(Vec<IpNet>),
    /// A fraction of requests; with a cookie, sticky: a client that has the cookie with the
    /// value always matches, one that has it with another value never does.
    Traffic {
        chance: f64,
        sticky: Option<(String, String)>,
    },
    True,
}

/// The non-path predicates knit implements (the path ones are in `route`).
pub const NAMES: &[&str] = &[
    "PathRegexp",
    "Host",
    "Method",
    "Methods",
    "Header",
    "HeaderRegexp",
    "Cookie",
    "QueryParam",
    "Source",
    "ClientIP",
    "Traffic",
    "True",
];

fn nets(t: &Term) -> Result<Vec<IpNet>, ArgError> {
    args::count(t, 1, usize::MAX)?;
    (0..t.args.len())
        .map(|i| {
            let s = args::string(t, i)?;
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .or_else(|_| args::fail(t, format!("{s:?} is not an address or CIDR")))
        })
        .collect()
}

fn method(t: &Term, i: usize) -> Result<http::Method, ArgError> {
    let s = args::string(t, i)?;
    http::Method::from_bytes(s.to_ascii_uppercase().as_bytes())
        .or_else(|_| args::fail(t, format!("{s:?} is not an HTTP method")))
}

impl Predicate {
    /// Compiles a term; Ok(None) if knit does not implement the name.
    pub fn compile(t: &Term) -> Result<Option<Predicate>, ArgError> {
        Ok(Some(match t.name.as_str() {
            "PathRegexp" => {
                args::count(t, 1, 1)?;
                Predicate::PathRegexp(args::regex(t, 0)?)
            }
            "Host" => {
                args::count(t, 1, 1)?;
                Predicate::Host(args::regex(t, 0)?)
            }
            "Method" => {
                args::count(t, 1, 1)?;
                Predicate::Methods(vec![method(t, 0)?])
            }
            "Methods" => {
                args::count(t, 1, usize::MAX)?;
                Predicate::Methods(
                    (0..t.args.len())
                        .map(|i| method(t, i))
                        .collect::<Result<_, _>>()?,
                )
            }
            "Header" => {
                args::count(t, 2, 2)?;
                Predicate::Header(args::header_name(t, 0)?, args::string(t, 1)?)
            }
            "HeaderRegexp" => {
                args::count(t, 2, 2)?;
                Predicate::HeaderRegexp(args::header_name(t, 0)?, args::regex(t, 1)?)
            }
            "Cookie" | "QueryParam" => {
                args::count(t, 1, 2)?;
                let name = args::string(t, 0)?;
                let re = if t.args.len() == 2 {
                    Some(args::regex(t, 1)?)
                } else {
                    None
                };
                if t.name == "Cookie" {
                    Predicate::Cookie(name, re)
                } else {
                    Predicate::QueryParam(name, re)
                }
            }
            "Source" => Predicate::Source(nets(t)?),
            "ClientIP" => Predicate::ClientIp(nets(t)?),
            "Traffic" => {
                if t.args.len() == 2 {
                    return args::fail(t, "takes 1 or 3 arguments (chance[, cookie, value])");
                }
                args::count(t, 1, 3)?;
                let chance = args::number(t, 0)?;
                if !(0.0..=1.0).contains(&chance) {
                    return args::fail(t, format!("chance {chance} is not between 0 and 1"));
                }
                let sticky = if t.args.len() == 3 {
                    Some((args::string(t, 1)?, args::string(t, 2)?))
                } else {
                    None
                };
                Predicate::Traffic { chance, sticky }
            }
            "True" => {
                args::count(t, 0, 0)?;
                Predicate::True
            }
            _ => return Ok(None),
        }))
    }

    /// Whether the request matches. `roll` draws a number in [0, 1) for `Traffic`.
    pub fn matches(&self, r: &Req, roll: &mut dyn FnMut() -> f64) -> bool {
        match self {
            Predicate::PathRegexp(re) => re.is_match(r.path),
            Predicate::Host(re) => re.is_match(r.host),
            Predicate::Methods(ms) => ms.contains(r.method),
            Predicate::Header(name, v) => r.headers.get_all(name).iter().any(|h| h == v.as_str()),
            Predicate::HeaderRegexp(name, re) => r
                .headers
                .get_all(name)
                .iter()
                .any(|h| h.to_str().is_ok_and(|h| re.is_match(h))),
            Predicate::Cookie(name, re) => r
                .cookie(name)
                .is_some_and(|v| re.as_ref().is_none_or(|re| re.is_match(v))),
            Predicate::QueryParam(name, re) => r
                .query_params()
                .any(|(k, v)| k == name && re.as_ref().is_none_or(|re| re.is_match(v))),
            Predicate::Source(nets) => {
                let ip = r.source();
                nets.iter().any(|n| n.contains(&ip))
            }
            Predicate::ClientIp(nets) => nets.iter().any(|n| n.contains(&r.remote)),
            Predicate::Traffic { chance, sticky } => match sticky {
                Some((cookie, value)) => match r.cookie(cookie) {
                    Some(v) => v == value,
                    None => roll() < *chance,
                },
                None => roll() < *chance,
            },
            Predicate::True => true,
        }
    }
}
