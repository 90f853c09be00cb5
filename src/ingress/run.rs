//! The filters' work on one request: the request side in route order (a filter may
//! answer itself: redirect, inline content, a refused rate limit or login), the response
//! side in reverse order for the filters whose request side ran, as Skipper does; and
//! what the proxy does around the backend call for them (compression, bandwidth, latency,
//! audit, shadow traffic).

use super::filter::Filter;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The request as the filters change it, before it goes to the backend.
pub struct Outgoing {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The TCP peer.
    pub remote: IpAddr,
    /// The user a `basicAuth` let in.
    pub user: Option<String>,
    /// The client's scheme (X-Forwarded-Proto): "http" or "https".
    pub proto: &'static str,
    /// The certificates the client showed in its TLS handshake (already verified).
    pub client_certs: Option<ClientCerts>,
}

/// A TLS client's certificate chain (DER), leaf first.
pub type ClientCerts = std::sync::Arc<[Bytes]>;

/// Where `tlsPassClientCertificates` puts the client's certificates.
pub const X_FORWARDED_TLS_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-tls-client-cert");

/// The header value for a chain: each certificate's DER in base64, comma separated.
fn certs_value(certs: &[Bytes]) -> Option<HeaderValue> {
    use base64::Engine;
    if certs.is_empty() {
        return None;
    }
    let text: Vec<String> = certs
        .iter()
        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
        .collect();
    HeaderValue::from_str(&text.join(",")).ok()
}

fn refused(status: StatusCode, wait: Duration) -> Served {
    let mut headers = HeaderMap::new();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    Served {
        status,
        headers,
        body: Bytes::from_static(b"rate limited\n"),
    }
}

/// A response a filter made itself (the backend is not called).
pub struct Served {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Runs the request side of the filters in order. Returns how many ran (a filter that
/// answers itself stops the chain) and the answer if one did.
pub async fn run_request(filters: &[Filter], out: &mut Outgoing) -> (usize, Option<Served>) {
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
            Filter::Ratelimit(l, status) => {
                if let Err(wait) = l.check("", Instant::now()) {
                    return (i + 1, Some(refused(*status, wait)));
                }
            }
            Filter::ClientRatelimit(l, names) => {
                let key = if names.is_empty() {
                    super::predicate::client_ip(&out.headers, out.remote).to_string()
                } else {
                    names
                        .iter()
                        .map(|n| {
                            out.headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                        })
                        .collect::<Vec<_>>()
                        .join("\u{0}")
                };
                if let Err(wait) = l.check(&key, Instant::now()) {
                    return (i + 1, Some(refused(StatusCode::TOO_MANY_REQUESTS, wait)));
                }
            }
            Filter::BasicAuth(h, challenge) => {
                let auth = out
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match h.check_header(auth).await {
                    Some(user) => out.user = Some(user),
                    None => {
                        let mut headers = HeaderMap::new();
                        headers.insert(http::header::WWW_AUTHENTICATE, challenge.clone());
                        let served = Served {
                            status: StatusCode::UNAUTHORIZED,
                            headers,
                            body: Bytes::from_static(b"unauthorized\n"),
                        };
                        return (i + 1, Some(served));
                    }
                }
            }
            Filter::TlsPassClientCertificates => {
                // Only what the handshake proved is passed on, never the client's own say.
                out.headers.remove(X_FORWARDED_TLS_CLIENT_CERT);
                if let Some(v) = out.client_certs.as_deref().and_then(certs_value) {
                    out.headers.insert(X_FORWARDED_TLS_CLIENT_CERT, v);
                }
            }
            Filter::SetResponseHeader(..)
            | Filter::AppendResponseHeader(..)
            | Filter::DropResponseHeader(_)
            | Filter::Status(_)
            | Filter::BackendTimeout(_)
            | Filter::ConnectTimeout(_)
            | Filter::IdleTimeout(_)
            | Filter::Compress(..)
            | Filter::CorsOrigin(_)
            | Filter::AuditLog(_)
            | Filter::Tee(..)
            | Filter::Latency(_)
            | Filter::Bandwidth(_) => {}
        }
    }
    (filters.len(), None)
}

/// Runs the response side of the first `ran` filters, last first. `origin`: the
/// request's Origin header.
pub fn run_response(
    filters: &[Filter],
    ran: usize,
    status: &mut StatusCode,
    headers: &mut HeaderMap,
    origin: Option<&HeaderValue>,
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
            Filter::CorsOrigin(allowed) => {
                if allowed.is_empty() {
                    headers.insert(
                        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                        HeaderValue::from_static("*"),
                    );
                } else if let Some(o) = origin
                    && allowed.iter().any(|a| a.as_bytes() == o.as_bytes())
                {
                    headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
                }
            }
            _ => {}
        }
    }
}

/// What the filters that ran ask of the proxy around the backend call.
#[derive(Debug, Default)]
pub struct Effects {
    /// compress(): level and content types.
    pub compress: Option<(u32, Vec<String>)>,
    pub latency: Duration,
    /// bandwidth(): bytes per second (the lowest asked).
    pub bandwidth: Option<f64>,
    /// auditLog(): how many body bytes to log.
    pub audit: Option<usize>,
    /// tee(): where copies go, and how their path is rewritten.
    pub tee: Vec<(String, Option<(regex::Regex, String)>)>,
}

impl Effects {
    /// From `(filters, how many ran)` of each route the request went through.
    pub fn of<'a>(chain: impl Iterator<Item = (&'a [Filter], usize)>) -> Effects {
        let mut e = Effects::default();
        for (filters, ran) in chain {
            for f in &filters[..ran.min(filters.len())] {
                match f {
                    Filter::Compress(level, types) => e.compress = Some((*level, types.clone())),
                    Filter::Latency(d) => e.latency += *d,
                    Filter::Bandwidth(kbps) => {
                        let bps = kbps * 1024.0;
                        e.bandwidth = Some(e.bandwidth.map_or(bps, |b| b.min(bps)));
                    }
                    Filter::AuditLog(n) => e.audit = Some(*n),
                    Filter::Tee(to, rewrite) => e.tee.push((to.clone(), rewrite.clone())),
                    _ => {}
                }
            }
        }
        e
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
