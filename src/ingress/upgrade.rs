//! Protocol switches through the proxy: a client's `Connection: upgrade` (a websocket over
//! HTTP/1.1), or an HTTP/2 extended CONNECT (RFC 8441, a websocket over one HTTP/2
//! stream). HTTP/1.1 backends are asked with an HTTP/1.1 handshake: for an HTTP/2 client the
//! proxy makes the handshake's key, checks the backend's answer to it, and answers the
//! client with 200 instead of 101. HTTP/2 backends (h2c, or TLS with ALPN h2) are asked
//! with an extended CONNECT: an HTTP/1.1 client's key is answered by the proxy. Once both
//! sides switched, bytes are copied both ways.

use super::lb::random_u64;
use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::Digest;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
/// RFC 6455 1.3.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A client's request to switch protocols and its side of the connection once the
/// backend agrees.
pub struct Upgrade {
    pub switch: Switch,
    pub client: hyper::upgrade::OnUpgrade,
}

/// What a client switches to, and how it asked.
pub struct Switch {
    /// The Upgrade header, or the `:protocol` pseudo-header.
    protocol: HeaderValue,
    /// For an HTTP/2 client (RFC 8441): the key the proxy sends an HTTP/1.1 backend.
    h2_key: Option<String>,
    /// For an HTTP/1.1 client: its Sec-WebSocket-Key, which the proxy answers itself when
    /// the backend speaks HTTP/2 (an extended CONNECT carries no key).
    client_key: Option<HeaderValue>,
}

impl Upgrade {
    /// The switch a request asks for, if any; takes the client's side out of it.
    pub fn of(parts: &mut http::request::Parts) -> Option<Upgrade> {
        if parts.method == Method::CONNECT && parts.version == http::Version::HTTP_2 {
            let protocol = parts.extensions.get::<hyper::ext::Protocol>()?;
            let protocol = HeaderValue::from_str(protocol.as_str()).ok()?;
            let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>()?;
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&random_u64().to_le_bytes());
            raw[8..].copy_from_slice(&random_u64().to_le_bytes());
            return Some(Upgrade {
                switch: Switch {
                    protocol,
                    h2_key: Some(base64::engine::general_purpose::STANDARD.encode(raw)),
                    client_key: None,
                },
                client,
            });
        }
        let asks = parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        let protocol = parts.headers.get(header::UPGRADE)?.clone();
        if !asks {
            return None;
        }
        let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>()?;
        Some(Upgrade {
            switch: Switch {
                protocol,
                h2_key: None,
                client_key: parts.headers.get(SEC_WEBSOCKET_KEY).cloned(),
            },
            client,
        })
    }
}

impl Switch {
    /// The method the backend gets: an HTTP/2 backend gets an extended CONNECT (RFC
    /// 8441), an HTTP/1.1 one the GET of a handshake.
    pub fn method(&self, asked: &Method, h2_backend: bool) -> Method {
        if h2_backend {
            Method::CONNECT
        } else if self.h2_key.is_some() {
            Method::GET
        } else {
            asked.clone()
        }
    }

    /// The handshake headers for the backend (for an HTTP/2 backend, `request_extension`
    /// carries the protocol; it takes no key).
    pub fn ask(&self, h: &mut HeaderMap, h2_backend: bool) {
        if h2_backend {
            h.remove(SEC_WEBSOCKET_KEY);
            if self.is_websocket() {
                h.entry(SEC_WEBSOCKET_VERSION)
                    .or_insert(HeaderValue::from_static("13"));
            }
            return;
        }
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, self.protocol.clone());
        if let Some(key) = &self.h2_key
            && let Ok(v) = HeaderValue::from_str(key)
        {
            h.insert(SEC_WEBSOCKET_KEY, v);
            h.entry(SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
    }

    /// The `:protocol` of the extended CONNECT to an HTTP/2 backend.
    pub fn request_extension(&self) -> Option<hyper::ext::Protocol> {
        // `:protocol` is compared as written (RFC 8441 uses the registry's "websocket"),
        // while an HTTP/1.1 Upgrade token is case-insensitive (RFC 6455 4.1).
        if self.is_websocket() {
            return Some(hyper::ext::Protocol::from_static("websocket"));
        }
        self.protocol.to_str().ok().map(hyper::ext::Protocol::from)
    }

    fn is_websocket(&self) -> bool {
        self.protocol.as_bytes().eq_ignore_ascii_case(b"websocket")
    }

    /// Whether the backend switched: 101 from HTTP/1.1, 200 to an extended CONNECT.
    pub fn switched(status: StatusCode, h2_backend: bool) -> bool {
        if h2_backend {
            status == StatusCode::OK
        } else {
            status == StatusCode::SWITCHING_PROTOCOLS
        }
    }

    /// Whether the backend's 101 answers this handshake (for an HTTP/2 client, whose
    /// key the proxy made, its Sec-WebSocket-Accept must fit the key).
    pub fn accepted(&self, backend: &HeaderMap, h2_backend: bool) -> bool {
        let Some(key) = &self.h2_key else {
            return true;
        };
        if h2_backend || !self.is_websocket() {
            return true;
        }
        backend.get(SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes()) == Some(accept_for(key).as_bytes())
    }

    /// The client's answer once the backend switched: 101 with the upgrade headers for an
    /// HTTP/1.1 client (and the answer to its key when an HTTP/2 backend took none), 200
    /// without them for an HTTP/2 one.
    pub fn answer(&self, status: &mut StatusCode, h: &mut HeaderMap, h2_backend: bool) {
        if self.h2_key.is_some() {
            *status = StatusCode::OK;
            h.remove(SEC_WEBSOCKET_ACCEPT);
            return;
        }
        *status = StatusCode::SWITCHING_PROTOCOLS;
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, self.protocol.clone());
        // An HTTP/1.1 backend answered the key itself; for an HTTP/2 one, which never saw
        // it, the proxy does.
        if h2_backend && self.is_websocket() {
            h.remove(SEC_WEBSOCKET_ACCEPT);
            if let Some(key) = self.client_key.as_ref().and_then(|k| k.to_str().ok())
                && let Ok(v) = HeaderValue::from_str(&accept_for(key))
            {
                h.insert(SEC_WEBSOCKET_ACCEPT, v);
            }
        }
    }
}

/// RFC 6455 4.2.2: the Sec-WebSocket-Accept for a key.
fn accept_for(key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// How long a switched connection may carry nothing when its route sets no idle timeout
/// (HAProxy's advice for `timeout tunnel`; websockets keep alive with pings well within).
pub const TUNNEL_IDLE: Duration = Duration::from_secs(3600);

/// Once both sides have switched protocols, copies bytes both ways until either ends, or
/// until nothing has moved either way for `idle` (a peer that vanished without a FIN would
/// otherwise hold both connections forever).
pub async fn splice(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    endpoint: String,
    idle: Duration,
) {
    match tokio::try_join!(client, backend) {
        Ok((c, b)) => {
            let start = Instant::now();
            let moved = Arc::new(AtomicU64::new(0));
            let mut c = Watched::new(TokioIo::new(c), start, moved.clone());
            let mut b = Watched::new(TokioIo::new(b), start, moved.clone());
            let copy = tokio::io::copy_bidirectional(&mut c, &mut b);
            tokio::pin!(copy);
            loop {
                let last = start + Duration::from_millis(moved.load(Ordering::Relaxed));
                tokio::select! {
                    r = &mut copy => {
                        if let Err(e) = r {
                            tracing::debug!(endpoint, error = %e, "upgraded connection ended");
                        }
                        return;
                    }
                    _ = tokio::time::sleep_until((last + idle).into()) => {
                        let now = start + Duration::from_millis(moved.load(Ordering::Relaxed));
                        if now == last {
                            tracing::debug!(endpoint, idle_ms = idle.as_millis() as u64, "upgraded connection idle: closed");
                            return;
                        }
                    }
                }
            }
        }
        Err(e) => tracing::warn!(endpoint, error = %e, "protocol switch failed"),
    }
}

/// One side of a switched connection; each read that brings bytes notes the time (in ms
/// since `start`) in `moved`.
struct Watched<T> {
    io: T,
    start: Instant,
    moved: Arc<AtomicU64>,
}

impl<T> Watched<T> {
    fn new(io: T, start: Instant, moved: Arc<AtomicU64>) -> Watched<T> {
        Watched { io, start, moved }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.moved.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_6455s_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
