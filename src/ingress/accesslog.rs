//! The access log (`--access-log FILE|-`): one JSON object per line per request, written
//! when the response body has been sent (or the client went away: `"complete": false`),
//! so it has the bytes sent and the whole time taken.

use super::body::{Body, BoxError};
use crate::error::Error;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use serde::Serialize;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub struct AccessLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl AccessLog {
    /// `-`: standard output; else a file, appended to.
    pub fn open(spec: &str) -> crate::error::Result<AccessLog> {
        let out: Box<dyn Write + Send> = if spec == "-" {
            Box::new(std::io::stdout())
        } else {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(spec)
                .map_err(|e| Error::io(format!("opening the access log {spec}"), e))?;
            Box::new(f)
        };
        Ok(AccessLog {
            out: Mutex::new(out),
        })
    }

    fn write(&self, entry: &Entry) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        // A poisoned writer is still a writer (a panic elsewhere mid-line).
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line, so lines from concurrent requests do not interleave; a
        // full disk must not fail requests.
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
}

/// One request's line.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub time: String,
    pub remote: String,
    pub method: String,
    pub host: String,
    pub uri: String,
    pub proto: String,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub route: Option<String>,
    pub endpoint: Option<String>,
    pub user_agent: Option<String>,
    pub complete: bool,
}

/// Now as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A request's line until its response exists: if the request is dropped first (the
/// client went away while it waited), the line is written with status 499, as nginx does.
pub struct Pending {
    log: Arc<AccessLog>,
    entry: Option<Entry>,
    started: Instant,
}

impl Pending {
    pub fn new(log: Arc<AccessLog>, entry: Entry, started: Instant) -> Pending {
        Pending {
            log,
            entry: Some(entry),
            started,
        }
    }

    /// The line, to be completed with the response.
    pub fn take(mut self) -> Option<(Arc<AccessLog>, Entry)> {
        self.entry.take().map(|e| (self.log.clone(), e))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.status = 499;
            e.complete = false;
            e.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            self.log.write(&e);
        }
    }
}

/// A response body that writes its request's line when it ends or is dropped.
pub struct Logged {
    inner: Body,
    log: Arc<AccessLog>,
    entry: Option<Entry>,
    started: Instant,
}

impl Logged {
    pub fn new(inner: Body, log: Arc<AccessLog>, entry: Entry, started: Instant) -> Logged {
        Logged {
            inner,
            log,
            entry: Some(entry),
            started,
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut e) = self.entry.take() {
            e.complete = complete;
            e.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            self.log.write(&e);
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let done = hyper::body::Body::is_end_stream(&self.inner);
        self.finish(done);
    }
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(e)) = (frame.data_ref(), this.entry.as_mut()) {
                    e.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
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
    #[test]
    fn timestamps_look_like_rfc3339() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}
