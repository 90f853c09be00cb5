//! Published ports: `[HOSTIP:]HOSTPORT[-END]:CPORT[-END][/proto]` parsed into a spec, and
//! the per-address mappings the store records.

use super::addr::check_no_leading_zeros;
use super::*;

/// One `--publish` flag: `[HOSTIP:]HOSTPORT[-END]:CPORT[-END][/proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    pub host_ip: Option<IpAddr>,
    pub host_ports: (u16, u16),
    pub container_ports: (u16, u16),
    pub proto: Proto,
}

/// A host IP to publish on: none, empty or unspecified means every address; multicast is
/// refused.
fn host_ip_of(field: &'static str, whole: &str, ip: Option<&str>) -> Result<Option<IpAddr>> {
    match ip {
        None | Some("") => Ok(None),
        Some(ip) => {
            check_no_leading_zeros(field, whole, ip)?;
            let ip = IpAddr::from_str(ip).map_err(|_| {
                Error::invalid(field, whole, format!("host IP {ip:?} is not an address"))
            })?;
            if ip.is_unspecified() {
                Ok(None)
            } else if ip.is_multicast() {
                Err(Error::invalid(field, whole, "host IP is multicast"))
            } else {
                Ok(Some(ip))
            }
        }
    }
}

fn parse_range(field: &'static str, whole: &str, s: &str) -> Result<(u16, u16)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (parse_port(field, whole, a)?, parse_port(field, whole, b)?),
        None => {
            let p = parse_port(field, whole, s)?;
            (p, p)
        }
    };
    if b < a {
        return Err(Error::invalid(
            field,
            whole,
            format!("range {a}-{b} is reversed"),
        ));
    }
    Ok((a, b))
}

impl PublishSpec {
    pub fn parse(s: &str) -> Result<Self> {
        const F: &str = "--publish";
        let (body, proto) = match s.rsplit_once('/') {
            Some((b, p)) => (
                b,
                Proto::parse(F, p).map_err(|_| {
                    Error::invalid(F, s, format!("protocol {p:?} must be tcp, udp or sctp"))
                })?,
            ),
            None => (s, Proto::Tcp),
        };
        // The host IP is everything before the last two ':'-separated fields; IPv6 goes in [].
        let (host_ip, rest) = if let Some(stripped) = body.strip_prefix('[') {
            let (ip, rest) = stripped
                .split_once("]:")
                .ok_or_else(|| Error::invalid(F, s, "expected [IPv6]:HOSTPORT:CPORT"))?;
            (Some(ip), rest)
        } else {
            let parts: Vec<&str> = body.split(':').collect();
            match parts.len() {
                2 => (None, body),
                3 => (Some(parts[0]), &body[parts[0].len() + 1..]),
                _ => return Err(Error::invalid(F, s, "expected [HOSTIP:]HOSTPORT:CPORT")),
            }
        };
        let host_ip = host_ip_of(F, s, host_ip)?;
        let (hp, cp) = rest
            .split_once(':')
            .ok_or_else(|| Error::invalid(F, s, "expected HOSTPORT:CPORT"))?;
        let host_ports = parse_range(F, s, hp)?;
        let container_ports = parse_range(F, s, cp)?;
        let hlen = host_ports.1 - host_ports.0;
        let clen = container_ports.1 - container_ports.0;
        if clen != 0 && clen != hlen {
            return Err(Error::invalid(
                F,
                s,
                "host and container ranges must have the same length (or one container port)",
            ));
        }
        if hlen > 1023 {
            return Err(Error::invalid(F, s, "a range may hold at most 1024 ports"));
        }
        Ok(PublishSpec {
            host_ip,
            host_ports,
            container_ports,
            proto,
        })
    }

    /// One port mapping as runtimes send it (CNI `portMappings`): host IP (empty or absent:
    /// every address), host port, container port, protocol (empty or absent: tcp). `field`
    /// names where it came from in errors.
    pub fn mapping(
        field: &'static str,
        host_ip: Option<&str>,
        host_port: i64,
        container_port: i64,
        proto: Option<&str>,
    ) -> Result<Self> {
        let port = |what: &str, p: i64| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::invalid(field, p, format!("{what} must be 1-65535")))
        };
        let (hp, cp) = (
            port("hostPort", host_port)?,
            port("containerPort", container_port)?,
        );
        let proto = match proto.filter(|p| !p.is_empty()) {
            None => Proto::Tcp,
            Some(p) => Proto::parse(field, p)?,
        };
        Ok(PublishSpec {
            host_ip: host_ip_of(field, host_ip.unwrap_or(""), host_ip)?,
            host_ports: (hp, hp),
            container_ports: (cp, cp),
            proto,
        })
    }

    /// The (host port, container port) pairs this spec publishes.
    pub fn pairs(&self) -> Vec<(u16, u16)> {
        (self.host_ports.0..=self.host_ports.1)
            .map(|hp| {
                let cp = if self.container_ports.0 == self.container_ports.1 {
                    self.container_ports.0
                } else {
                    self.container_ports.0 + (hp - self.host_ports.0)
                };
                (hp, cp)
            })
            .collect()
    }
}

/// A published port as stored and as programmed: one host port to one container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
    pub proto: Proto,
}
