//! The filters knit implements: compiled once from their eskip terms, then run on each
//! request (in route order) and on its response (in reverse order, for the filters whose
//! request side ran), as Skipper does.

use super::args::{self, ArgError};
use super::eskip::Term;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Filter {
    SetRequestHeader(HeaderName, HeaderValue),
    AppendRequestHeader(HeaderName, HeaderValue),
    DropRequestHeader(HeaderName),
    SetResponseHeader(HeaderName, HeaderValue),
    AppendResponseHeader(HeaderName, HeaderValue),
    DropResponseHeader(HeaderName),
    /// Replaces every match of the regexp in the path (`$1` refers to groups).
    ModPath(Regex, String),
    SetPath(String),
    /// Answers with a redirect to the URL; a URL without a path keeps the request's path
    /// and query.
    RedirectTo(StatusCode, String),
    /// Sets the response's status (on a `<shunt>` route: instead of 404).
    Status(StatusCode),
    /// Answers with this body (200, text/plain unless a content type is given).
    InlineContent(Bytes, HeaderValue),
    /// Drops the query; with "true", its parameters become `X-Query-Param-NAME` headers.
    StripQuery(bool),
    /// Skipper's `backendTimeout`: the backend's response headers must come within this
    /// (else 504).
    BackendTimeout(Duration),
    /// knit's `connectTimeout`: the TCP connect to an endpoint (else the next endpoint, for
    /// a retryable request, or 504).
    ConnectTimeout(Duration),
    /// knit's `idleTimeout`: the longest pause in the backend's response body before the
    /// response is cut off.
    IdleTimeout(Duration),
}

/// A route's timeouts, from its timeout filters (the last of each kind wins).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub header: Option<Duration>,
    pub idle: Option<Duration>,
}

impl Timeouts {
    pub fn of(filters: &[Filter]) -> Timeouts {
        let mut t = Timeouts::default();
        for f in filters {
            match f {
                Filter::BackendTimeout(d) => t.header = Some(*d),
                Filter::ConnectTimeout(d) => t.connect = Some(*d),
                Filter::IdleTimeout(d) => t.idle = Some(*d),
                _ => {}
            }
        }
        t
    }
}

/// The filters knit implements.
pub const NAMES: &[&str] = &[
    "setRequestHeader",
    "appendRequestHeader",
    "dropRequestHeader",
    "setResponseHeader",
    "appendResponseHeader",
    "dropResponseHeader",
    "modPath",
    "setPath",
    "redirectTo",
    "status",
    "inlineContent",
    "stripQuery",
    "backendTimeout",
    "connectTimeout",
    "idleTimeout",
];

impl Filter {
    /// Compiles a term; Ok(None) if knit does not implement the name.
    pub fn compile(t: &Term) -> Result<Option<Filter>, ArgError> {
        let name_value = |t: &Term| -> Result<(HeaderName, HeaderValue), ArgError> {
            args::count(t, 2, 2)?;
            Ok((args::header_name(t, 0)?, args::header_value(t, 1)?))
        };
        let name_only = |t: &Term| -> Result<HeaderName, ArgError> {
            args::count(t, 1, 1)?;
            args::header_name(t, 0)
        };
        Ok(Some(match t.name.as_str() {
            "setRequestHeader" => {
                let (n, v) = name_value(t)?;
                Filter::SetRequestHeader(n, v)
            }
            "appendRequestHeader" => {
                let (n, v) = name_value(t)?;
                Filter::AppendRequestHeader(n, v)
            }
            "dropRequestHeader" => Filter::DropRequestHeader(name_only(t)?),
            "setResponseHeader" => {
                let (n, v) = name_value(t)?;
                Filter::SetResponseHeader(n, v)
            }
            "appendResponseHeader" => {
                let (n, v) = name_value(t)?;
                Filter::AppendResponseHeader(n, v)
            }
            "dropResponseHeader" => Filter::DropResponseHeader(name_only(t)?),
            "modPath" => {
                args::count(t, 2, 2)?;
                Filter::ModPath(args::regex(t, 0)?, args::string(t, 1)?)
            }
            "setPath" => {
                args::count(t, 1, 1)?;
                let p = args::string(t, 0)?;
                if !p.starts_with('/') {
                    return args::fail(t, format!("{p:?} does not start with '/'"));
                }
                Filter::SetPath(p)
            }
            "redirectTo" => {
                args::count(t, 2, 2)?;
                let code = args::status(t, 0)?;
                if !code.is_redirection() {
                    return args::fail(t, format!("{code} is not a redirect status (3xx)"));
                }
                let url = args::string(t, 1)?;
                if http::HeaderValue::from_str(&url).is_err() {
                    return args::fail(t, format!("{url:?} cannot be a Location header"));
                }
                Filter::RedirectTo(code, url)
            }
            "status" => {
                args::count(t, 1, 1)?;
                Filter::Status(args::status(t, 0)?)
            }
            "inlineContent" => {
                args::count(t, 1, 2)?;
                let body = Bytes::from(args::string(t, 0)?);
                let ct = if t.args.len() == 2 {
                    args::header_value(t, 1)?
                } else {
                    HeaderValue::from_static("text/plain; charset=utf-8")
                };
                Filter::InlineContent(body, ct)
            }
            "stripQuery" => {
                args::count(t, 0, 1)?;
                let keep = if t.args.is_empty() {
                    false
                } else {
                    args::string(t, 0)? == "true"
                };
                Filter::StripQuery(keep)
            }
            "backendTimeout" | "connectTimeout" | "idleTimeout" => {
                args::count(t, 1, 1)?;
                let d = args::duration(t, 0)?;
                if d.is_zero() {
                    return args::fail(t, "a timeout of zero");
                }
                match t.name.as_str() {
                    "backendTimeout" => Filter::BackendTimeout(d),
                    "connectTimeout" => Filter::ConnectTimeout(d),
                    _ => Filter::IdleTimeout(d),
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// The request as the filters change it, before it goes to the backend.
pub struct Outgoing {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

/// A response a filter made itself (the backend is not called).
pub struct Served {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Runs the request side of the filters in order. Returns how many ran (a filter that
/// answers itself stops the chain) and the answer if one did.
pub fn run_request(filters: &[Filter], out: &mut Outgoing) -> (usize, Option<Served>) {
    for (i, f) in filters.iter().enumerate() {
        match f {
            Filter::SetRequestHeader(n, v) => {
                out.headers.insert(n.clone(), v.clone());
            }
            Filter::AppendRequestHeader(n, v) => {
                out.headers.append(n.clone(), v.clone());
            }
            Filter::DropRequestHeader(n) => {
                out.headers.remove(n);
            }
            Filter::ModPath(re, with) => {
                out.path = re.replace_all(&out.path, with.as_str()).into_owned();
            }
            Filter::SetPath(p) => out.path = p.clone(),
            Filter::StripQuery(keep) => {
                if let Some(q) = out.query.take()
                    && *keep
                {
                    for (k, v) in q
                        .split('&')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.split_once('=').unwrap_or((p, "")))
                    {
                        let name = HeaderName::from_bytes(format!("x-query-param-{k}").as_bytes());
                        if let (Ok(n), Ok(v)) = (name, HeaderValue::from_str(v)) {
                            out.headers.append(n, v);
                        }
                    }
                }
            }
            Filter::RedirectTo(code, url) => {
                let location = redirect_location(url, &out.path, out.query.as_deref());
                let mut headers = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    headers.insert(http::header::LOCATION, v);
                }
                let served = Served {
                    status: *code,
                    headers,
                    body: Bytes::new(),
                };
                return (i + 1, Some(served));
            }
            Filter::InlineContent(body, ct) => {
                let mut headers = HeaderMap::new();
                headers.insert(http::header::CONTENT_TYPE, ct.clone());
                let served = Served {
                    status: StatusCode::OK,
                    headers,
                    body: body.clone(),
                };
                return (i + 1, Some(served));
            }
            Filter::SetResponseHeader(..)
            | Filter::AppendResponseHeader(..)
            | Filter::DropResponseHeader(_)
            | Filter::Status(_)
            | Filter::BackendTimeout(_)
            | Filter::ConnectTimeout(_)
            | Filter::IdleTimeout(_) => {}
        }
    }
    (filters.len(), None)
}

/// Runs the response side of the first `ran` filters, last first.
pub fn run_response(
    filters: &[Filter],
    ran: usize,
    status: &mut StatusCode,
    headers: &mut HeaderMap,
) {
    for f in filters[..ran.min(filters.len())].iter().rev() {
        match f {
            Filter::SetResponseHeader(n, v) => {
                headers.insert(n.clone(), v.clone());
            }
            Filter::AppendResponseHeader(n, v) => {
                headers.append(n.clone(), v.clone());
            }
            Filter::DropResponseHeader(n) => {
                headers.remove(n);
            }
            Filter::Status(s) => *status = *s,
            _ => {}
        }
    }
}

/// redirectTo's Location: the URL's own path if it has one, else the request's path and
/// query after the URL's scheme and host.
fn redirect_location(url: &str, path: &str, query: Option<&str>) -> String {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let has_path = url[after_scheme..].contains('/');
    if has_path {
        return url.to_string();
    }
    match query {
        Some(q) => format!("{url}{path}?{q}"),
        None => format!("{url}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations() {
        assert_eq!(
            redirect_location("https://a.org", "/x", Some("q=1")),
            "https://a.org/x?q=1"
        );
        assert_eq!(
            redirect_location("https://a.org/new", "/x", None),
            "https://a.org/new"
        );
        assert_eq!(redirect_location("/local", "/x", None), "/local");
    }
}
