//! The filters knit implements: compiled once from their eskip terms, then run on each
//! request (in route order) and on its response (in reverse order, for the filters whose
//! request side ran), as Skipper does.

use super::args::{self, ArgError};
use super::eskip::{Arg, Term};
use super::htpasswd::Htpasswd;
use super::ratelimit::Limiter;
use super::target::Target;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use std::sync::Arc;
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
    /// `ratelimit(N, "1m"[, status])`: N requests per window for the whole route; others
    /// get 429 (or the status) with Retry-After.
    Ratelimit(Arc<Limiter>, StatusCode),
    /// `clientRatelimit(N, "1m"[, "Header,..."])`: N per window per client (the first
    /// X-Forwarded-For address, else the peer; or the named headers' values).
    ClientRatelimit(Arc<Limiter>, Vec<HeaderName>),
    /// `basicAuth("/path/htpasswd"[, "realm"])`: 401 unless the Authorization header holds
    /// a user and password of the file.
    BasicAuth(Arc<Htpasswd>, HeaderValue),
    /// `compress([level,] ["mime/type", ...])`: gzip or deflate the response when the
    /// client accepts it and the content type is listed (Skipper's defaults if none are).
    Compress(u32, Vec<String>),
    /// `corsOrigin(["https://a.example", ...])`: Access-Control-Allow-Origin is `*` with no
    /// list, else the request's Origin when it is listed.
    CorsOrigin(Vec<String>),
    /// `auditLog([N])`: one JSON line per request on stderr with the first N (1024) bytes
    /// of the request body.
    AuditLog(usize),
    /// `tee("http://host:port"[, regexp, replacement])`: a copy of the request goes there
    /// too (its path rewritten as modPath would), its answer ignored.
    Tee(String, Option<(Regex, String)>),
    /// `latency(ms | "120ms")`: the response is held back this long.
    Latency(Duration),
    /// `tlsPassClientCertificates()`: the certificates the client showed in its TLS
    /// handshake (verified against `--tls-client-ca`) go to the backend in
    /// X-Forwarded-Tls-Client-Cert: each one's DER in base64 (a PEM body without its
    /// lines), comma separated. A value the client sent itself is always removed.
    TlsPassClientCertificates,
    /// `bandwidth(kb/s)`: the response body flows at most this fast (KiB per second).
    Bandwidth(f64),
}

/// Skipper's compress() default content types.
pub const COMPRESS_TYPES: &[&str] = &[
    "text/plain",
    "text/html",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/css",
    "image/svg+xml",
    "application/octet-stream",
];

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
    "ratelimit",
    "clientRatelimit",
    "basicAuth",
    "compress",
    "corsOrigin",
    "auditLog",
    "tee",
    "latency",
    "bandwidth",
    "tlsPassClientCertificates",
];

/// The most request body bytes `auditLog` keeps.
const AUDIT_MAX: usize = 1 << 20;

/// A count argument: a whole number of at least 1.
fn positive(t: &Term, i: usize) -> Result<usize, ArgError> {
    let n = args::number(t, i)?;
    if n.fract() != 0.0 || !(1.0..=1e12).contains(&n) {
        return args::fail(t, format!("argument {}: {n} is not a count", i + 1));
    }
    Ok(n as usize)
}

fn rate_window(t: &Term) -> Result<Arc<Limiter>, ArgError> {
    let max = positive(t, 0)?;
    let window = args::duration(t, 1)?;
    if window.is_zero() {
        return args::fail(t, "a window of zero");
    }
    Ok(Arc::new(Limiter::new(max, window)))
}

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
            "ratelimit" => {
                args::count(t, 2, 3)?;
                let status = if t.args.len() == 3 {
                    args::status(t, 2)?
                } else {
                    StatusCode::TOO_MANY_REQUESTS
                };
                Filter::Ratelimit(rate_window(t)?, status)
            }
            "clientRatelimit" => {
                args::count(t, 2, 3)?;
                let headers = if t.args.len() == 3 {
                    let list = args::string(t, 2)?;
                    list.split(',')
                        .map(|h| {
                            HeaderName::from_bytes(h.trim().as_bytes())
                                .or_else(|_| args::fail(t, format!("{h:?} is not a header name")))
                        })
                        .collect::<Result<_, _>>()?
                } else {
                    vec![]
                };
                Filter::ClientRatelimit(rate_window(t)?, headers)
            }
            "basicAuth" => {
                args::count(t, 1, 2)?;
                let file = args::string(t, 0)?;
                let realm = if t.args.len() == 2 {
                    args::string(t, 1)?
                } else {
                    "Basic Realm".to_string()
                };
                let h =
                    Htpasswd::read(std::path::Path::new(&file)).or_else(|e| args::fail(t, e))?;
                let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
                    .or_else(|_| args::fail(t, format!("{realm:?} cannot be a realm")))?;
                Filter::BasicAuth(Arc::new(h), challenge)
            }
            "compress" => {
                let mut level = 6;
                let mut types = vec![];
                for (i, a) in t.args.iter().enumerate() {
                    match a {
                        Arg::Number(_) if i == 0 => {
                            let n = args::number(t, 0)?;
                            if n.fract() != 0.0 || !(0.0..=9.0).contains(&n) {
                                return args::fail(t, format!("level {n} is not 0-9"));
                            }
                            level = n as u32;
                        }
                        _ => types.push(args::string(t, i)?),
                    }
                }
                if types.is_empty() {
                    types = COMPRESS_TYPES.iter().map(|s| s.to_string()).collect();
                }
                Filter::Compress(level, types)
            }
            "corsOrigin" => Filter::CorsOrigin(
                (0..t.args.len())
                    .map(|i| args::string(t, i))
                    .collect::<Result<_, _>>()?,
            ),
            "auditLog" => {
                args::count(t, 0, 1)?;
                let n = if t.args.is_empty() {
                    1024
                } else {
                    positive(t, 0)?
                };
                // The bytes are kept in memory per request.
                if n > AUDIT_MAX {
                    return args::fail(t, format!("{n} bytes: at most {AUDIT_MAX} are kept"));
                }
                Filter::AuditLog(n)
            }
            "tee" => {
                if t.args.len() == 2 {
                    return args::fail(t, "takes 1 or 3 arguments (url[, regexp, replacement])");
                }
                args::count(t, 1, 3)?;
                let url = args::string(t, 0)?;
                let rewrite = if t.args.len() == 3 {
                    Some((args::regex(t, 1)?, args::string(t, 2)?))
                } else {
                    None
                };
                let endpoint = match Target::parse(&url) {
                    Ok(Target::Http(endpoint)) => endpoint,
                    Ok(_) => {
                        return args::fail(
                            t,
                            format!("{url:?}: tee takes an http://, https:// or h2c:// URL"),
                        );
                    }
                    Err(e) => return args::fail(t, e),
                };
                Filter::Tee(endpoint, rewrite)
            }
            "latency" => {
                args::count(t, 1, 1)?;
                let d = match t.args.first() {
                    Some(Arg::Number(ms)) if *ms >= 0.0 => {
                        match Duration::try_from_secs_f64(ms / 1000.0) {
                            Ok(d) if d <= args::MAX_DURATION => d,
                            _ => return args::fail(t, format!("{ms} ms is longer than a week")),
                        }
                    }
                    _ => args::duration(t, 0)?,
                };
                Filter::Latency(d)
            }
            "bandwidth" => {
                args::count(t, 1, 1)?;
                let kbps = args::number(t, 0)?;
                // Below a byte per second the pacing arithmetic overflows.
                if kbps.is_nan() || kbps < 0.001 {
                    return args::fail(t, format!("{kbps} kb/s is not a bandwidth"));
                }
                Filter::Bandwidth(kbps)
            }
            "tlsPassClientCertificates" => {
                args::count(t, 0, 0)?;
                Filter::TlsPassClientCertificates
            }
            _ => return Ok(None),
        }))
    }
}
