//! The node's upstream resolvers (from resolv.conf, re-read when it changes) and forwarding
//! with a bounded timeout per upstream.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;

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

/// Sends `query` to each upstream in turn until one answers with the same id. None if all
/// failed or timed out.
pub async fn forward(query: &[u8], upstreams: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    if query.len() < 2 {
        return None;
    }
    let id = [query[0], query[1]];
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .ok()?;
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == *up && n >= 12 && buf[..2] == id => {
                    return Some(buf[..n].to_vec());
                }
                Ok(Ok(_)) => continue, // stray or spoofed datagram: keep waiting
                _ => break,
            }
        }
    }
    None
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
