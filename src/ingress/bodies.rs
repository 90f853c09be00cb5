//! Bodies the filters wrap around a response or request body: compressed (gzip or
//! deflate, for `compress`), throttled (for `bandwidth`), and captured (the first bytes
//! of a request body, for `auditLog`).

use super::body::{Body, BoxError};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use hyper::body::{Frame, SizeHint};
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    Gzip,
    Deflate,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }

    /// What the client's Accept-Encoding allows: gzip first, then deflate.
    pub fn accepted(accept: &str) -> Option<Encoding> {
        let ok = |name: &str| {
            accept.split(',').any(|item| {
                let mut parts = item.split(';');
                let token = parts.next().unwrap_or("").trim();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .filter_map(|q| q.trim().parse::<f64>().ok())
                    .next()
                    .unwrap_or(1.0);
                (token.eq_ignore_ascii_case(name) || token == "*") && q > 0.0
            })
        };
        if ok("gzip") {
            Some(Encoding::Gzip)
        } else if ok("deflate") {
            Some(Encoding::Deflate)
        } else {
            None
        }
    }
}

enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Deflate(ZlibEncoder<Vec<u8>>),
}

impl Encoder {
    fn write(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                Ok(std::mem::take(e.get_mut()))
            }
            Encoder::Deflate(e) => {
                e.write_all(data)?;
                Ok(std::mem::take(e.get_mut()))
            }
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Deflate(e) => e.finish(),
        }
    }
}

/// A body compressed as it streams.
pub struct Compressed {
    inner: Body,
    encoder: Option<Encoder>,
}

impl Compressed {
    pub fn new(inner: Body, encoding: Encoding, level: u32) -> Compressed {
        let level = Compression::new(level);
        let encoder = match encoding {
            Encoding::Gzip => Encoder::Gzip(GzEncoder::new(vec![], level)),
            Encoding::Deflate => Encoder::Deflate(ZlibEncoder::new(vec![], level)),
        };
        Compressed {
            inner,
            encoder: Some(encoder),
        }
    }
}

impl hyper::body::Body for Compressed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = encoder.write(&data)?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    // Trailers: the compressed body ends first.
                    Err(trailers) => {
                        let rest = this.encoder.take().map(Encoder::finish).transpose()?;
                        if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                        }
                        return Poll::Ready(Some(Ok(trailers)));
                    }
                },
                Poll::Ready(None) => {
                    let rest = this.encoder.take().map(Encoder::finish).transpose()?;
                    return Poll::Ready(rest.map(|r| Ok(Frame::data(Bytes::from(r)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }
}

/// A body that flows at most `rate` bytes per second.
pub struct Throttled {
    inner: Body,
    rate: f64,
    start: Option<tokio::time::Instant>,
    sent: u64,
    pending: Bytes,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Throttled {
    pub fn new(inner: Body, rate: f64) -> Throttled {
        Throttled {
            inner,
            rate,
            start: None,
            sent: 0,
            pending: Bytes::new(),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl hyper::body::Body for Throttled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let now = tokio::time::Instant::now();
                let start = *this.start.get_or_insert(now);
                let due = start + Duration::from_secs_f64(this.sent as f64 / this.rate);
                if due > now {
                    this.sleep.as_mut().reset(due);
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                // Tenths of a second's worth at a time, so the flow is smooth.
                let chunk = ((this.rate / 10.0) as usize).max(256);
                let n = this.pending.len().min(chunk);
                let out = this.pending.split_to(n);
                this.sent += n as u64;
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body passed on unchanged while its first `limit` bytes are kept.
pub struct Captured {
    inner: Body,
    limit: usize,
    kept: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    pub fn new(inner: Body, limit: usize) -> (Captured, Arc<Mutex<Vec<u8>>>) {
        let kept = Arc::new(Mutex::new(vec![]));
        let c = Captured {
            inner,
            limit,
            kept: kept.clone(),
        };
        (c, kept)
    }
}

impl hyper::body::Body for Captured {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            // A poisoned buffer is still a buffer (a panic elsewhere mid-append).
            let mut kept = this.kept.lock().unwrap_or_else(|p| p.into_inner());
            let room = this.limit.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..room.min(data.len())]);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding() {
        assert_eq!(Encoding::accepted("gzip, deflate"), Some(Encoding::Gzip));
        assert_eq!(
            Encoding::accepted("deflate, gzip;q=0"),
            Some(Encoding::Deflate)
        );
        assert_eq!(Encoding::accepted("br"), None);
        assert_eq!(Encoding::accepted("*"), Some(Encoding::Gzip));
    }
}
