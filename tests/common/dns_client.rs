//! A DNS client for tests: `knit daemon` in a world's node, and queries over UDP and TCP
//! from inside a namespace.

use super::{World, in_ns};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Stdio};
use std::time::Duration;

/// A running `knit daemon`, killed when dropped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `knit daemon` with upstreams from `resolv`, a 300 ms upstream timeout and, if given,
/// metrics on `metrics`.
pub fn start_daemon(w: &World, resolv: &str, metrics: Option<&str>) -> Daemon {
    let mut args = vec![
        "daemon",
        "--resolv-conf",
        resolv,
        "--upstream-timeout-ms",
        "300",
    ];
    if let Some(m) = metrics {
        args.extend(["--metrics", m]);
    }
    let child = w
        .cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Daemon(child)
}

pub fn query_bytes(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

/// One UDP query from namespace `ns` (from `source` if given) to `server`:53.
pub fn ask_from(
    ns: &str,
    source: Option<IpAddr>,
    server: IpAddr,
    name: &str,
    t: RecordType,
) -> Result<Message, String> {
    let server = SocketAddr::new(server, 53);
    let q = query_bytes(name, t);
    in_ns(ns, move || {
        let bind = match (source, server.is_ipv4()) {
            (Some(ip), _) => SocketAddr::new(ip, 0),
            (None, true) => "0.0.0.0:0".parse().unwrap(),
            (None, false) => "[::]:0".parse().unwrap(),
        };
        let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        s.send_to(&q, server).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Message::from_vec(&buf[..n]).map_err(|e| e.to_string())
    })
}

/// One UDP query from namespace `ns` to `server`:53.
pub fn ask(ns: &str, server: &str, name: &str, t: RecordType) -> Result<Message, String> {
    ask_from(ns, None, server.parse().unwrap(), name, t)
}

/// One query over TCP.
pub fn ask_tcp(ns: &str, server: &str, name: &str, t: RecordType) -> Result<Message, String> {
    let server = SocketAddr::new(server.parse().unwrap(), 53);
    let q = query_bytes(name, t);
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(1))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        s.write_all(&out).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Message::from_vec(&buf).map_err(|e| e.to_string())
    })
}

pub fn addrs(m: &Message) -> Vec<String> {
    m.answers().iter().map(|r| r.data().to_string()).collect()
}
