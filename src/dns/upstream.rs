//! The node's upstream resolvers (from resolv.conf, re-read when it changes) and forwarding
//! with a bounded timeout per upstream.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

/// Nameservers of a resolv.conf text.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = w.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The file and what it said the last time it changed.
pub struct ResolvConf {
    path: std::path::PathBuf,
    stamp: Option<(SystemTime, u64)>,
    pub servers: Vec<SocketAddr>,
}

impl ResolvConf {
    pub fn new(path: &Path) -> Self {
        let mut r = ResolvConf {
            path: path.to_path_buf(),
            stamp: None,
            servers: vec![],
        };
        r.refresh();
        r
    }

    /// Re-reads the file if its mtime or size changed; true if the servers changed.
    pub fn refresh(&mut self) -> bool {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == self.stamp {
            return false;
        }
        self.stamp = stamp;
        let servers = std::fs::read_to_string(&self.path)
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default();
        let changed = servers != self.servers;
        self.servers = servers;
        changed
    }
}

/// Sockets per address family in the forwarding pool.
const POOL: usize = 16;

/// Identifies one forwarded query in flight: family, pooled socket, wire id.
type Key = (bool, usize, u16);

struct Waiter {
    upstream: SocketAddr,
    tx: oneshot::Sender<Vec<u8>>,
}

type Pending = Arc<Mutex<HashMap<Key, Waiter>>>;

/// Forwarding over a pool of long-lived UDP sockets (per family, each on its own random
/// ephemeral port) instead of a socket per query, which cost a socket, a bind and two
/// epoll registrations per forwarded query. Each query leaves on a random pooled socket
/// with a fresh random id; an answer is accepted only from the upstream it was sent to, on
/// that socket, with that id, so a spoofer still has to guess the id and the port.
pub struct Forwarder {
    v4: Vec<Arc<UdpSocket>>,
    v6: Vec<Arc<UdpSocket>>,
    pending: Pending,
}

impl Forwarder {
    /// Binds the pool and starts one reader task per socket (inside the runtime). A family
    /// the node cannot bind (no IPv6) just has no sockets.
    pub async fn new() -> Forwarder {
        let pending: Pending = Arc::default();
        let mut pools = (vec![], vec![]);
        for v4 in [true, false] {
            let bind: SocketAddr = if v4 {
                SocketAddr::from(([0u8; 4], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            for idx in 0..POOL {
                let Ok(sock) = UdpSocket::bind(bind).await else {
                    break;
                };
                let sock = Arc::new(sock);
                tokio::spawn(read_answers(sock.clone(), (v4, idx), pending.clone()));
                if v4 {
                    pools.0.push(sock);
                } else {
                    pools.1.push(sock);
                }
            }
        }
        Forwarder {
            v4: pools.0,
            v6: pools.1,
            pending,
        }
    }

    /// Sends `query` to each upstream in turn until one answers. None if all failed or
    /// timed out.
    pub async fn forward(
        &self,
        query: &[u8],
        upstreams: &[SocketAddr],
        timeout: Duration,
    ) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let original = [query[0], query[1]];
        let mut out = query.to_vec();
        for up in upstreams {
            let pool = if up.is_ipv4() { &self.v4 } else { &self.v6 };
            if pool.is_empty() {
                continue;
            }
            let r: [u8; 4] = crate::model::random_bytes();
            let idx = usize::from(r[0]) % pool.len();
            let (tx, rx) = oneshot::channel();
            let key = {
                let Ok(mut pending) = self.pending.lock() else {
                    return None;
                };
                let mut id = u16::from_ne_bytes([r[1], r[2]]);
                // At most a few hundred queries are in flight: a free id is near.
                while pending.contains_key(&(up.is_ipv4(), idx, id)) {
                    id = id.wrapping_add(1);
                }
                let key = (up.is_ipv4(), idx, id);
                pending.insert(key, Waiter { upstream: *up, tx });
                key
            };
            out[..2].copy_from_slice(&key.2.to_be_bytes());
            let answer = match pool[idx].send_to(&out, up).await {
                Ok(_) => tokio::time::timeout(timeout, rx)
                    .await
                    .ok()
                    .and_then(|r| r.ok()),
                Err(_) => None,
            };
            match answer {
                Some(mut a) => {
                    a[..2].copy_from_slice(&original);
                    return Some(a);
                }
                None => {
                    if let Ok(mut pending) = self.pending.lock() {
                        pending.remove(&key);
                    }
                }
            }
        }
        None
    }
}

/// Hands each answer arriving on one pooled socket to the query waiting for it; anything
/// else (late, stray, spoofed) is dropped.
async fn read_answers(sock: Arc<UdpSocket>, at: (bool, usize), pending: Pending) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if n < 12 {
            continue;
        }
        let key = (at.0, at.1, u16::from_be_bytes([buf[0], buf[1]]));
        let waiter = match pending.lock() {
            Ok(mut p) => match p.get(&key) {
                Some(w) if w.upstream == from => p.remove(&key),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(w) = waiter {
            let _ = w.tx.send(buf[..n].to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolv_conf() {
        let s = super::parse_resolv_conf(
            "# c\nsearch x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver bad\noptions ndots:1\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].to_string(), "192.0.2.53:53");
        assert_eq!(s[1].port(), 53);
    }
}
