//! What a user asks of a service, validated: `--vip IP:PORT[/proto]`, backends as
//! `SANDBOX:PORT` or `IP:PORT`, `--affinity client-ip[=SECONDS]`, `--node-port N`.

use crate::error::{Error, Result};
use crate::model::{Proto, parse_port, validate_name};
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// Kubernetes' default for ClientIP affinity.
pub const DEFAULT_AFFINITY_SECS: u32 = 10_800;

/// Splits `HOST:PORT` / `[V6]:PORT` into its parts (`field` names the flag in errors).
fn split_host_port<'a>(field: &'static str, s: &'a str) -> Result<(&'a str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| Error::invalid(field, s, "expected [IPV6]:PORT"))?;
        (h, p)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| Error::invalid(field, s, "expected HOST:PORT"))?
    };
    if host.is_empty() {
        return Err(Error::invalid(field, s, "the host part is empty"));
    }
    if host.contains(':') && !host.starts_with("cni:") && !s.starts_with('[') {
        return Err(Error::invalid(
            field,
            s,
            "write IPv6 addresses as [ADDR]:PORT",
        ));
    }
    Ok((host, parse_port(field, s, port)?))
}

/// The virtual address a service answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

impl Vip {
    pub fn parse(s: &str) -> Result<Self> {
        const F: &str = "--vip";
        let (body, proto) = match s.rsplit_once('/') {
            Some((b, p)) => (b, Proto::parse(F, p)?),
            None => (s, Proto::Tcp),
        };
        let (host, port) = split_host_port(F, body)?;
        let ip: IpAddr = host
            .parse()
            .map_err(|_| Error::invalid(F, s, format!("{host:?} is not an IP address")))?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return Err(Error::invalid(
                F,
                s,
                "a service address must be a unicast, non-loopback address",
            ));
        }
        if let IpAddr::V4(v4) = ip
            && (v4.is_broadcast() || v4.is_link_local())
        {
            return Err(Error::invalid(F, s, "not a usable service address"));
        }
        Ok(Vip { ip, port, proto })
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}/{}", self.port, self.proto),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}/{}", self.port, self.proto),
        }
    }
}

/// Who receives a service's connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Target {
    /// A sandbox known to knit: its address follows the sandbox's attachments.
    Sandbox(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BackendSpec {
    pub target: Target,
    pub port: u16,
}

impl BackendSpec {
    pub fn parse(s: &str) -> Result<Self> {
        const F: &str = "--backend";
        let (host, port) = split_host_port(F, s)?;
        let target = match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                return Err(Error::invalid(F, s, "not a usable backend address"));
            }
            Ok(ip) => Target::Ip(ip),
            Err(_) if host.starts_with("cni:") => Target::Sandbox(host.to_string()),
            Err(_) => {
                validate_name(F, host).map_err(|_| {
                    Error::invalid(
                        F,
                        s,
                        format!("{host:?} is neither an IP address nor a sandbox name"),
                    )
                })?;
                Target::Sandbox(host.to_string())
            }
        };
        Ok(BackendSpec { target, port })
    }

    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Sandbox(_) => "sandbox",
            Target::Ip(_) => "ip",
        }
    }

    pub fn target_text(&self) -> String {
        match &self.target {
            Target::Sandbox(s) => s.clone(),
            Target::Ip(ip) => ip.to_string(),
        }
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.target_text(), self.port),
        }
    }
}

/// `client-ip` or `client-ip=SECONDS`.
pub fn parse_affinity(s: &str) -> Result<u32> {
    const F: &str = "--affinity";
    let (mode, secs) = match s.split_once('=') {
        Some((m, n)) => (m, Some(n)),
        None => (s, None),
    };
    if mode != "client-ip" {
        return Err(Error::invalid(
            F,
            s,
            "the only affinity is client-ip[=SECONDS]",
        ));
    }
    match secs {
        None => Ok(DEFAULT_AFFINITY_SECS),
        Some(n) => match n.parse::<u32>() {
            Ok(v) if (1..=86_400 * 7).contains(&v) => Ok(v),
            _ => Err(Error::invalid(
                F,
                s,
                "the timeout must be 1 to 604800 seconds",
            )),
        },
    }
}

/// A whole service as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub vip: Vip,
    pub backends: Vec<BackendSpec>,
    /// Client-IP affinity timeout in seconds.
    pub affinity: Option<u32>,
    pub node_port: Option<u16>,
}

impl ServiceSpec {
    pub fn new(
        name: &str,
        vip: &str,
        backends: &[String],
        affinity: Option<&str>,
        node_port: Option<u32>,
    ) -> Result<Self> {
        validate_name("NAME", name)?;
        let vip = Vip::parse(vip)?;
        let mut specs = Vec::new();
        for b in backends {
            let spec = BackendSpec::parse(b)?;
            check_family(&vip, &spec)?;
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
        let node_port = match node_port {
            None => None,
            Some(n) if (1..=65535).contains(&n) => Some(n as u16),
            Some(n) => return Err(Error::invalid("--node-port", n, "out of range 1-65535")),
        };
        Ok(ServiceSpec {
            name: name.to_string(),
            vip,
            backends: specs,
            affinity: affinity.map(parse_affinity).transpose()?,
            node_port,
        })
    }
}

/// An IP backend must be of the VIP's family (DNAT cannot cross families).
pub fn check_family(vip: &Vip, b: &BackendSpec) -> Result<()> {
    if let Target::Ip(ip) = b.target
        && ip.is_ipv4() != vip.ip.is_ipv4()
    {
        return Err(Error::invalid(
            "--backend",
            b,
            format!("address family differs from the service address {}", vip.ip),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips() {
        let v = Vip::parse("10.96.0.10:80").unwrap();
        assert_eq!((v.port, v.proto), (80, Proto::Tcp));
        let v = Vip::parse("[fd00:96::1]:53/udp").unwrap();
        assert_eq!(v.ip, "fd00:96::1".parse::<IpAddr>().unwrap());
        assert_eq!(v.proto, Proto::Udp);
        assert_eq!(v.to_string(), "[fd00:96::1]:53/udp");
        for bad in [
            "10.96.0.10",
            "10.96.0.10:0",
            "10.96.0.10:70000",
            "10.96.0.10:80/icmp",
            "0.0.0.0:80",
            "127.0.0.1:80",
            "224.0.0.1:80",
            "fd00::1:80",
            "web:80",
        ] {
            let e = Vip::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--vip"), "{bad}: {e}");
        }
    }

    #[test]
    fn backends() {
        let b = BackendSpec::parse("web1:8080").unwrap();
        assert_eq!(b.target, Target::Sandbox("web1".into()));
        assert_eq!(b.port, 8080);
        let b = BackendSpec::parse("[fd00::5]:80").unwrap();
        assert_eq!(b.target, Target::Ip("fd00::5".parse().unwrap()));
        assert_eq!(b.to_string(), "[fd00::5]:80");
        let b = BackendSpec::parse("cni:abc/eth0:80").unwrap();
        assert_eq!(b.target, Target::Sandbox("cni:abc/eth0".into()));
        for bad in ["web1", "web1:", ":80", "we b:80", "0.0.0.0:80", "web:99999"] {
            assert!(BackendSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs() {
        let s = ServiceSpec::new(
            "web",
            "10.96.0.1:80",
            &["a:80".into(), "a:80".into(), "10.0.0.9:81".into()],
            Some("client-ip=60"),
            Some(30080),
        )
        .unwrap();
        assert_eq!(s.backends.len(), 2, "duplicates collapse");
        assert_eq!(s.affinity, Some(60));
        assert_eq!(parse_affinity("client-ip").unwrap(), DEFAULT_AFFINITY_SECS);
        assert!(parse_affinity("cookie").is_err());
        assert!(parse_affinity("client-ip=0").is_err());
        let e = ServiceSpec::new("web", "10.96.0.1:80", &["[fd00::1]:80".into()], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("family"), "{e}");
        assert!(ServiceSpec::new("web", "10.96.0.1:80", &[], None, Some(0)).is_err());
        assert!(ServiceSpec::new("bad name", "10.96.0.1:80", &[], None, None).is_err());
    }
}
