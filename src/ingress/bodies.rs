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

    /// What the client's Accept-Encoding allows: gzip first, then deflate. A coding
    /// named outright has the weight given to it, others that of `*` (RFC 9110 12.5.3:
    /// `*, gzip;q=0` refuses gzip).
    pub fn accepted(accept: &str) -> Option<Encoding> {
        let items: Vec<(&str, f64)> = accept
            .split(',')
            .map(|item| {
                let mut parts = item.split(';');
                let token = parts.next().unwrap_or("").trim();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .filter_map(|q| q.trim().parse::<f64>().ok())
                    .next()
                    .unwrap_or(1.0);
                (token, q)
            })
            .collect();
        let ok = |name: &str| {
            let named = items.iter().find(|(t, _)| t.eq_ignore_ascii_case(name));
            let any = items.iter().find(|(t, _)| *t == "*");
            named.or(any).is_some_and(|(_, q)| *q > 0.0)
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

    /// What was written so far, compressed and ready to send (a sync flush).
    fn flush(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => {
                e.flush()?;
                Ok(std::mem::take(e.get_mut()))
            }
            Encoder::Deflate(e) => {
                e.flush()?;
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

/// A body compressed as it streams. What the encoder holds is flushed whenever the
/// inner body has nothing more yet (a stream of events reaches the client as it comes,
/// not when the encoder's buffer fills), and trailers follow the compressed end.
pub struct Compressed {
    inner: Body,
    encoder: Option<Encoder>,
    /// Bytes went into the encoder since it last gave any out.
    held: bool,
    /// The inner body's trailers, sent after the compressed end.
    trailers: Option<http::HeaderMap>,
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
            held: false,
            trailers: None,
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
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending if this.held => {
                    this.held = false;
                    let out = encoder.flush()?;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        // Output now need not be all of it: the encoder keeps a tail.
                        this.held |= !data.is_empty();
                        let out = encoder.write(&data)?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    // Trailers: the compressed body ends first.
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        let rest = this.encoder.take().map(Encoder::finish).transpose()?;
                        if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(rest)))));
                        }
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
        self.encoder.is_none() && self.trailers.is_none()
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
        assert_eq!(Encoding::accepted("*, gzip;q=0"), Some(Encoding::Deflate));
        assert_eq!(Encoding::accepted("gzip;q=0, *"), Some(Encoding::Deflate));
        assert_eq!(Encoding::accepted("*;q=0, gzip"), Some(Encoding::Gzip));
        assert_eq!(Encoding::accepted("*;q=0"), None);
    }

    /// A body that gives `parts` one at a time, pending before each, then trailers.
    struct Trickle(Vec<&'static [u8]>, bool, Option<http::HeaderMap>);

    impl hyper::body::Body for Trickle {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.1 = !self.1;
            if self.1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.0.is_empty() {
                return Poll::Ready(self.2.take().map(|t| Ok(Frame::trailers(t))));
            }
            let part = self.0.remove(0);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(part)))))
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn compressed_streams_flush_as_they_come_and_keep_their_trailers() {
        use http_body_util::BodyExt;
        use std::io::Read;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let inner = Trickle(
            vec![b"event: one\n\n", b"event: two\n\n"],
            false,
            Some(trailers),
        );
        let mut body = Compressed::new(inner.boxed(), Encoding::Gzip, 6);
        // The first event can be read out before the second comes.
        let mut all = vec![];
        for frames in 1.. {
            let f = body.frame().await.unwrap().unwrap();
            all.extend_from_slice(&f.into_data().unwrap());
            let mut got = vec![];
            let _ = flate2::read::GzDecoder::new(&all[..]).read_to_end(&mut got);
            if got == b"event: one\n\n" {
                break;
            }
            assert!(
                got.is_empty() && frames < 3,
                "not flushed at the pause: {got:?}"
            );
        }
        let mut seen_trailers = None;
        while let Some(f) = body.frame().await {
            let f = f.unwrap();
            match f.into_data() {
                Ok(d) => all.extend_from_slice(&d),
                Err(f) => seen_trailers = f.into_trailers().ok(),
            }
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(&all[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "event: one\n\nevent: two\n\n");
        assert_eq!(seen_trailers.unwrap()["grpc-status"], "0");
        assert!(hyper::body::Body::is_end_stream(&body));
    }
}
