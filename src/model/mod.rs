//! Validated request types. Everything the user types is parsed here, once, into values
//! the rest of knit can trust; errors name the field and the value.

pub mod policy;
pub mod service;

use crate::error::{Error, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Names of networks and sandboxes: the CNI rule (`^[A-Za-z0-9][A-Za-z0-9_.-]*$`), bounded
/// so they fit in paths and nft identifiers.
pub fn validate_name(field: &'static str, value: &str) -> Result<()> {
    let ok_first = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest {
        return Err(Error::invalid(
            field,
            value,
            "must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        ));
    }
    if value.len() > 64 {
        return Err(Error::invalid(field, value, "longer than 64 characters"));
    }
    Ok(())
}

/// Interface names as the kernel (and libcni) accept them.
pub fn validate_ifname(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 15 {
        return Err(Error::invalid(field, value, "must be 1 to 15 characters"));
    }
    if value == "." || value == ".." {
        return Err(Error::invalid(
            field,
            value,
            "is not a valid interface name",
        ));
    }
    if value
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '%' || !c.is_ascii())
    {
        return Err(Error::invalid(
            field,
            value,
            "must not contain '/', ':', '%' or whitespace",
        ));
    }
    Ok(())
}

/// True for the names knit generates itself: `kv` + 10 hex digits (a sandbox's host veth)
/// and `knbr` + digits (a bridge knit named).
pub fn is_generated_link_name(value: &str) -> bool {
    let kv = value
        .strip_prefix("kv")
        .is_some_and(|h| h.len() == 10 && h.chars().all(|c| c.is_ascii_hexdigit()));
    let knbr = value
        .strip_prefix("knbr")
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    kv || knbr
}

/// A bridge name the user chose: an interface name made only of `[A-Za-z0-9_.-]` (it
/// reaches nftables rules and sysctl paths), and not a name knit generates for its own
/// links (which would collide with them).
pub fn validate_bridge_name(field: &'static str, value: &str) -> Result<()> {
    validate_ifname(field, value)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::invalid(
            field,
            value,
            "may contain only letters, digits, '_', '.' and '-'",
        ));
    }
    if is_generated_link_name(value) {
        return Err(Error::invalid(
            field,
            value,
            "is a name knit generates for its own links (kv<10 hex>, knbr<N>); choose another",
        ));
    }
    Ok(())
}

/// Rejects IPv4 octets written with leading zeros (`010.1.0.0`): some tools read them as
/// octal, so their meaning is ambiguous. Looks at every dotted quad, also one embedded in
/// an IPv6 address.
fn check_no_leading_zeros(field: &'static str, whole: &str, addr: &str) -> Result<()> {
    let quad = addr.rsplit(':').next().unwrap_or(addr);
    if quad.contains('.') && quad.split('.').any(|o| o.len() > 1 && o.starts_with('0')) {
        return Err(Error::invalid(
            field,
            whole,
            "has an IPv4 octet with a leading zero (ambiguous: octal or decimal?)",
        ));
    }
    Ok(())
}

/// Parses one IP address; errors name the field and the value.
pub fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr> {
    check_no_leading_zeros(field, s, s)?;
    IpAddr::from_str(s).map_err(|_| Error::invalid(field, s, "is not an IP address"))
}

/// At most one address per family (a sandbox gets one address per subnet, and a network
/// has one subnet per family): `--ip A --ip B` with two IPv4 addresses is an error, not a
/// silent choice.
pub fn check_one_per_family(field: &'static str, ips: &[IpAddr]) -> Result<()> {
    for (i, a) in ips.iter().enumerate() {
        if let Some(b) = ips[..i]
            .iter()
            .find(|b| b.is_ipv4() == a.is_ipv4() && *b != a)
        {
            return Err(Error::invalid(
                field,
                a,
                format!(
                    "a second IPv{} address (after {b}); give at most one address per family",
                    if a.is_ipv4() { 4 } else { 6 }
                ),
            ));
        }
    }
    Ok(())
}

/// Ranges that can never be a knit subnet, with the reason.
const RESERVED_RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "the unspecified (\"this network\") range"),
    ("127.0.0.0/8", "the loopback range"),
    ("169.254.0.0/16", "the link-local range"),
    ("224.0.0.0/4", "the multicast range"),
    ("::/128", "the unspecified address"),
    ("::1/128", "the loopback address"),
    ("::ffff:0:0/96", "the IPv4-mapped range"),
    ("fe80::/10", "the link-local range"),
    ("ff00::/8", "the multicast range"),
];

/// MTU bounds: IPv4 hosts must accept 576-byte datagrams; IPv6 needs 1280 on every link.
pub const MTU_MIN_V4: u32 = 576;
pub const MTU_MIN_V6: u32 = 1280;
pub const MTU_MAX: u32 = 65535;

/// Checks an MTU against the address families of the subnets it will carry.
pub fn check_mtu(field: &'static str, mtu: u32, subnets: &[IpNet]) -> Result<()> {
    if !(MTU_MIN_V4..=MTU_MAX).contains(&mtu) {
        return Err(Error::invalid(
            field,
            mtu,
            format!("must be between {MTU_MIN_V4} and {MTU_MAX}"),
        ));
    }
    if let Some(v6) = subnets.iter().find(|n| matches!(n, IpNet::V6(_)))
        && mtu < MTU_MIN_V6
    {
        return Err(Error::invalid(
            field,
            mtu,
            format!("IPv6 (subnet {v6}) needs an MTU of at least {MTU_MIN_V6}"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
    pub fn parse(field: &'static str, s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(Error::invalid(
                field,
                s,
                "protocol must be tcp, udp or sctp",
            )),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which network driver a network uses: only its name here (parsed, printed, stored);
/// what each driver does lives in `crate::driver`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    #[default]
    Bridge,
    Ptp,
}

impl Driver {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bridge" => Ok(Driver::Bridge),
            "ptp" => Ok(Driver::Ptp),
            _ => Err(Error::invalid("--driver", s, "must be bridge or ptp")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Ptp => "ptp",
        }
    }
}

/// A MAC address. knit generates locally administered unicast addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(field: &'static str, s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || Error::invalid(field, s, "must be six hex octets like 02:42:ac:11:00:02");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if out[0] & 1 == 1 {
            return Err(Error::invalid(field, s, "is a multicast address"));
        }
        if out == [0; 6] {
            return Err(Error::invalid(field, s, "is the all-zero address"));
        }
        Ok(Mac(out))
    }

    /// A random locally administered unicast MAC.
    pub fn random() -> Self {
        let mut b = random_bytes::<6>();
        b[0] = (b[0] & 0xfe) | 0x02;
        Mac(b)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Random bytes from the kernel (getrandom never fails for small requests after boot).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let r = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if r > 0 {
            filled += r as usize;
        }
    }
    b
}

/// One subnet of a network with its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub cidr: IpNet,
    pub gateway: IpAddr,
    /// host-local's rangeStart / rangeEnd: the part of the subnet handed out.
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
}

/// A route inside the sandbox (CNI ipam.routes); no gateway means the subnet's gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// Parses a CIDR that must be a network address (no host bits), with room for a gateway
/// and at least one sandbox.
pub fn parse_subnet(field: &'static str, s: &str) -> Result<IpNet> {
    let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
    check_no_leading_zeros(field, s, addr)?;
    if prefix.len() > 1 && prefix.starts_with('0') {
        return Err(Error::invalid(
            field,
            s,
            "has a prefix length with a leading zero",
        ));
    }
    let net = IpNet::from_str(s).map_err(|_| Error::invalid(field, s, "is not a CIDR"))?;
    if net.trunc() != net {
        return Err(Error::invalid(
            field,
            s,
            format!("has host bits set (did you mean {}?)", net.trunc()),
        ));
    }
    let max = match net {
        IpNet::V4(_) => 30,
        IpNet::V6(_) => 126,
    };
    if net.prefix_len() > max {
        return Err(Error::invalid(
            field,
            s,
            format!("is too small; the prefix length must be at most /{max}"),
        ));
    }
    for (range, what) in RESERVED_RANGES {
        let r: IpNet = range
            .parse()
            .map_err(|_| Error::invalid(field, range, "bad reserved range"))?;
        let same_family = matches!(
            (&r, &net),
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
        );
        if same_family && (r.contains(&net.network()) || net.contains(&r.network())) {
            return Err(Error::invalid(
                field,
                s,
                format!("overlaps {range}, {what}, which cannot be a container subnet"),
            ));
        }
    }
    Ok(net)
}

/// The first usable host address of a subnet, the default gateway.
pub fn default_gateway(net: &IpNet) -> IpAddr {
    crate::ipam::offset(net, 1)
}

/// Checks that `ip` is a usable host address inside `net`.
pub fn check_host_in(field: &'static str, ip: IpAddr, net: &IpNet) -> Result<()> {
    if !net.contains(&ip) {
        return Err(Error::invalid(
            field,
            ip,
            format!("is outside subnet {net}"),
        ));
    }
    if ip == net.network() {
        return Err(Error::invalid(
            field,
            ip,
            format!("is the network address of {net}"),
        ));
    }
    if matches!(net, IpNet::V4(_)) && ip == net.broadcast() {
        return Err(Error::invalid(
            field,
            ip,
            format!("is the broadcast address of {net}"),
        ));
    }
    Ok(())
}

/// A `network create` request as typed by the user (CLI flags or CNI config).
#[derive(Debug, Clone, Copy)]
pub struct NetworkRequest<'a> {
    pub name: &'a str,
    pub driver: Driver,
    pub bridge: Option<&'a str>,
    pub subnets: &'a [String],
    pub gateways: &'a [String],
    pub internal: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
}

/// A DNS name label sequence: letters, digits, '-', '.', no empty labels, ≤ 253 bytes.
pub fn validate_dns_name(field: &'static str, value: &str) -> Result<()> {
    let v = value.trim_end_matches('.');
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, value, "is not a valid DNS name"))
    }
}

/// A validated `network create` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: Driver,
    /// None: knit picks `knbr<id>`.
    pub bridge: Option<String>,
    pub subnets: Vec<SubnetSpec>,
    pub internal: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
    /// The bridge carries the gateway address(es) (CNI `isGateway`; always for the CLI).
    pub bridge_gateway: bool,
    /// CNI `promiscMode`.
    pub promisc: bool,
    /// Serve DNS on this network's gateway addresses (`knit daemon`).
    pub dns: bool,
    /// Names also resolve as NAME.DOMAIN; sandboxes get it as their search domain.
    pub dns_domain: Option<String>,
}

impl NetworkSpec {
    /// DNS settings: whether knit's DNS serves the network, and the domain its names
    /// also resolve under (`NAME.DOMAIN`; stored lowercase without the trailing dot).
    pub fn with_dns(&mut self, on: bool, domain: Option<&str>) -> Result<&mut Self> {
        self.dns = on;
        if let Some(d) = domain {
            validate_dns_name("--dns-domain", d)?;
            self.dns_domain = Some(d.trim_end_matches('.').to_ascii_lowercase());
        }
        Ok(self)
    }

    /// Validates raw CLI/CNI input. `gateways` may name one gateway per subnet.
    pub fn new(r: &NetworkRequest) -> Result<Self> {
        let NetworkRequest {
            name,
            driver,
            bridge,
            subnets,
            gateways,
            internal,
            masquerade,
            mtu,
        } = *r;
        validate_name("network name", name)?;
        if let Some(b) = bridge {
            validate_bridge_name("--bridge", b)?;
            if driver == Driver::Ptp {
                return Err(Error::invalid(
                    "--bridge",
                    b,
                    "the ptp driver has no bridge",
                ));
            }
        }
        if subnets.is_empty() {
            return Err(Error::invalid(
                "--subnet",
                "",
                "at least one subnet is required",
            ));
        }
        let mut nets = Vec::new();
        for s in subnets {
            let net = parse_subnet("--subnet", s)?;
            if let Some(other) = nets
                .iter()
                .find(|o: &&IpNet| o.contains(&net.network()) || net.contains(&o.network()))
            {
                return Err(Error::invalid(
                    "--subnet",
                    s,
                    format!("overlaps {other} of the same network"),
                ));
            }
            nets.push(net);
        }
        let mut gws: Vec<Option<IpAddr>> = vec![None; nets.len()];
        for g in gateways {
            let ip = parse_ip("--gateway", g)?;
            let idx = nets.iter().position(|n| n.contains(&ip)).ok_or_else(|| {
                Error::invalid("--gateway", g, "is not inside any of the network's subnets")
            })?;
            check_host_in("--gateway", ip, &nets[idx])?;
            if gws[idx].replace(ip).is_some() {
                return Err(Error::invalid(
                    "--gateway",
                    g,
                    format!("subnet {} already has a gateway", nets[idx]),
                ));
            }
        }
        if let Some(m) = mtu {
            check_mtu("--mtu", m, &nets)?;
        }
        let subnets = nets
            .into_iter()
            .zip(gws)
            .map(|(cidr, gw)| SubnetSpec {
                gateway: gw.unwrap_or_else(|| default_gateway(&cidr)),
                cidr,
                range_start: None,
                range_end: None,
            })
            .collect();
        Ok(NetworkSpec {
            name: name.to_string(),
            driver,
            bridge: bridge.map(str::to_string),
            subnets,
            internal,
            masquerade: masquerade && !internal,
            mtu,
            bridge_gateway: true,
            promisc: false,
            dns: true,
            dns_domain: None,
        })
    }
}

/// One `--publish` flag: `[HOSTIP:]HOSTPORT[-END]:CPORT[-END][/proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSpec {
    pub host_ip: Option<IpAddr>,
    pub host_ports: (u16, u16),
    pub container_ports: (u16, u16),
    pub proto: Proto,
}

pub(crate) fn parse_port(field: &'static str, whole: &str, s: &str) -> Result<u16> {
    let n: u32 = s
        .parse()
        .map_err(|_| Error::invalid(field, whole, format!("port {s:?} is not a number")))?;
    if !(1..=65535).contains(&n) {
        return Err(Error::invalid(
            field,
            whole,
            format!("port {n} is out of range 1-65535"),
        ));
    }
    Ok(n as u16)
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
        let host_ip = match host_ip {
            None | Some("") => None,
            Some(ip) => {
                check_no_leading_zeros(F, s, ip)?;
                let ip = IpAddr::from_str(ip).map_err(|_| {
                    Error::invalid(F, s, format!("host IP {ip:?} is not an address"))
                })?;
                if ip.is_unspecified() {
                    None
                } else if ip.is_multicast() {
                    return Err(Error::invalid(F, s, "host IP is multicast"));
                } else {
                    Some(ip)
                }
            }
        };
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

/// Where a sandbox's network namespace lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxRef {
    /// A named namespace in /run/netns.
    Named(String),
    /// Any nsfs path (a bind mount or /proc/PID/ns/net).
    Path(String),
    /// A running process's namespace.
    Pid(u32),
    /// A CNI attachment: keyed by container id and interface, at the runtime's netns path.
    Container {
        id: String,
        ifname: String,
        netns: String,
    },
}

pub const NETNS_DIR: &str = "/run/netns";

impl SandboxRef {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(pid) = s.strip_prefix("pid:") {
            let pid: u32 = pid.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::invalid("sandbox", s, "pid: must be followed by a process id")
            })?;
            return Ok(SandboxRef::Pid(pid));
        }
        if s.starts_with('/') {
            return Ok(SandboxRef::Path(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("cni:") {
            let (id, ifname) = rest
                .split_once('/')
                .ok_or_else(|| Error::invalid("sandbox", s, "expected cni:CONTAINERID/IFNAME"))?;
            validate_name("sandbox", id)?;
            validate_ifname("sandbox", ifname)?;
            return Ok(SandboxRef::Container {
                id: id.into(),
                ifname: ifname.into(),
                netns: String::new(),
            });
        }
        validate_name("sandbox", s)?;
        Ok(SandboxRef::Named(s.to_string()))
    }

    /// The key the store files attachments under.
    pub fn key(&self) -> String {
        match self {
            SandboxRef::Named(n) => n.clone(),
            SandboxRef::Path(p) => p.clone(),
            SandboxRef::Pid(p) => format!("pid:{p}"),
            SandboxRef::Container { id, ifname, .. } => format!("cni:{id}/{ifname}"),
        }
    }

    pub fn path(&self) -> String {
        match self {
            SandboxRef::Named(n) => format!("{NETNS_DIR}/{n}"),
            SandboxRef::Path(p) => p.clone(),
            SandboxRef::Pid(p) => format!("/proc/{p}/ns/net"),
            SandboxRef::Container { netns, .. } => netns.clone(),
        }
    }
}

/// What `attach` is asked for, by the CLI or a CNI ADD: the one request type from the
/// command line down to the store's reservation.
pub struct AttachRequest<'a> {
    pub network: &'a str,
    pub sandbox: &'a SandboxRef,
    /// None: the sandbox's next free ethN (eth0, then eth1 for a second network, ...).
    pub ifname: Option<&'a str>,
    pub static_ips: &'a [IpAddr],
    pub mac: Option<Mac>,
    pub publish: &'a [PublishSpec],
    pub container_id: Option<&'a str>,
    /// Routes to install instead of the network's default route (CNI ipam.routes).
    pub routes: Option<&'a [RouteSpec]>,
    /// Extra DNS names.
    pub aliases: &'a [String],
    /// `--label k=v` (what policies select).
    pub labels: &'a policy::Labels,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let p = PublishSpec::parse("8080:80").unwrap();
        assert_eq!(p.host_ip, None);
        assert_eq!(p.pairs(), vec![(8080, 80)]);
        assert_eq!(p.proto, Proto::Tcp);
        let p = PublishSpec::parse("127.0.0.1:53:5353/udp").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p.proto, Proto::Udp);
        let p = PublishSpec::parse("[fd00::1]:8000-8002:9000-9002/sctp").unwrap();
        assert_eq!(p.pairs(), vec![(8000, 9000), (8001, 9001), (8002, 9002)]);
        let p = PublishSpec::parse("0.0.0.0:7000-7001:80").unwrap();
        assert_eq!(p.host_ip, None);
        assert_eq!(p.pairs(), vec![(7000, 80), (7001, 80)]);
    }

    #[test]
    fn publish_errors_name_the_value() {
        for bad in [
            "0:80",
            "65536:80",
            "80",
            "a:b",
            "80:90/icmp",
            "9-8:80",
            "8000-8002:80-81",
            "1.2.3:80:80",
            "[::1:80:80",
            "1:2:3:4",
        ] {
            let e = PublishSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--publish") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn names_and_ifnames() {
        assert!(validate_name("n", "web-1.x_y").is_ok());
        assert!(validate_name("n", "-x").is_err());
        assert!(validate_name("n", "a b").is_err());
        assert!(validate_name("n", "").is_err());
        assert!(validate_ifname("i", "eth0").is_ok());
        assert!(validate_ifname("i", "0123456789abcdef").is_err());
        assert!(validate_ifname("i", "a/b").is_err());
        assert!(validate_ifname("i", "..").is_err());
    }

    #[test]
    fn subnets_are_checked() {
        assert!(parse_subnet("s", "10.0.0.0/24").is_ok());
        assert!(
            parse_subnet("s", "10.0.0.1/24")
                .unwrap_err()
                .to_string()
                .contains("10.0.0.0/24")
        );
        assert!(parse_subnet("s", "10.0.0.0/31").is_err());
        assert!(parse_subnet("s", "nonsense").is_err());
        assert!(parse_subnet("s", "fd00::/64").is_ok());
        let subnets = ["10.1.0.0/24".to_string(), "fd01::/64".to_string()];
        let gws = ["fd01::fe".to_string()];
        let req = |subnets, gateways| NetworkRequest {
            name: "n",
            driver: Driver::Bridge,
            bridge: None,
            subnets,
            gateways,
            internal: false,
            masquerade: true,
            mtu: None,
        };
        let spec = NetworkSpec::new(&req(&subnets, &gws)).unwrap();
        assert_eq!(spec.subnets[0].gateway.to_string(), "10.1.0.1");
        assert_eq!(spec.subnets[1].gateway.to_string(), "fd01::fe");
        let outside_gw = ["10.2.0.1".to_string()];
        let e = NetworkSpec::new(&req(&subnets[..1], &outside_gw));
        assert!(e.unwrap_err().to_string().contains("10.2.0.1"));
        let overlapping = ["10.1.0.0/16".to_string(), "10.1.2.0/24".to_string()];
        let e = NetworkSpec::new(&req(&overlapping, &[]));
        assert!(e.unwrap_err().to_string().contains("overlaps"));
    }

    #[test]
    fn leading_zeros_are_refused() {
        for bad in [
            "010.1.0.0/24",
            "10.01.0.0/24",
            "10.1.0.0/024",
            "::ffff:010.0.0.0/120",
        ] {
            let e = parse_subnet("--subnet", bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert!(
            parse_subnet("--subnet", "010.1.0.0/24")
                .unwrap_err()
                .to_string()
                .contains("leading zero")
        );
        assert!(parse_subnet("--subnet", "10.0.0.0/24").is_ok());
        assert!(parse_subnet("--subnet", "10.100.0.0/16").is_ok());
        let e = parse_ip("--ip", "010.1.0.5").unwrap_err().to_string();
        assert!(e.contains("--ip") && e.contains("leading zero"), "{e}");
        assert!(parse_ip("--ip", "10.1.0.5").is_ok());
        assert!(parse_ip("--ip", "0.0.0.0").is_ok());
        let e = PublishSpec::parse("010.0.0.1:80:80")
            .unwrap_err()
            .to_string();
        assert!(e.contains("leading zero"), "{e}");
        let subnets = ["10.1.0.0/24".to_string()];
        let gws = ["10.1.0.01".to_string()];
        let e = NetworkSpec::new(&NetworkRequest {
            name: "n",
            driver: Driver::Bridge,
            bridge: None,
            subnets: &subnets,
            gateways: &gws,
            internal: false,
            masquerade: true,
            mtu: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--gateway") && e.contains("leading zero"), "{e}");
    }

    #[test]
    fn one_address_per_family() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(check_one_per_family("--ip", &[ip("10.0.0.5"), ip("fd00::5")]).is_ok());
        assert!(check_one_per_family("--ip", &[ip("10.0.0.5"), ip("10.0.0.5")]).is_ok());
        let e = check_one_per_family("--ip", &[ip("10.0.0.5"), ip("10.0.0.6")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--ip") && e.contains("10.0.0.6") && e.contains("10.0.0.5"),
            "{e}"
        );
        assert!(check_one_per_family("--ip", &[ip("fd00::5"), ip("fd00::6")]).is_err());
    }

    #[test]
    fn reserved_subnets_are_refused() {
        for bad in [
            "169.254.0.0/16",
            "169.254.3.0/24",
            "169.0.0.0/8",
            "127.0.0.0/8",
            "0.0.0.0/8",
            "0.0.0.0/0",
            "224.0.0.0/24",
            "fe80::/64",
            "fe80::/10",
            "::ffff:0:0/96",
            "::ffff:10.0.0.0/120",
            "::/64",
            "ff02::/64",
        ] {
            let e = parse_subnet("--subnet", bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("overlaps"), "{bad}: {e}");
        }
        for good in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/24",
            "fd00::/64",
            "2001:db8::/64",
        ] {
            assert!(parse_subnet("--subnet", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn mtu_is_checked_per_family() {
        let dual = ["10.1.0.0/24".to_string(), "fd01::/64".to_string()];
        let spec = |subnets: &[String], mtu: u32| {
            NetworkSpec::new(&NetworkRequest {
                name: "n",
                driver: Driver::Bridge,
                bridge: None,
                subnets,
                gateways: &[],
                internal: false,
                masquerade: true,
                mtu: Some(mtu),
            })
        };
        let e = spec(&dual, 1000).unwrap_err().to_string();
        assert!(
            e.contains("--mtu") && e.contains("1000") && e.contains("1280"),
            "{e}"
        );
        assert!(spec(&dual, 1280).is_ok());
        assert!(spec(&dual[..1], 1000).is_ok());
        let e = spec(&dual[..1], 500).unwrap_err().to_string();
        assert!(e.contains("--mtu") && e.contains("576"), "{e}");
        assert!(spec(&dual[..1], 65536).is_err());
    }

    #[test]
    fn bridge_names_are_safe() {
        assert!(validate_bridge_name("--bridge", "cni-podman0").is_ok());
        assert!(validate_bridge_name("--bridge", "br_x.1").is_ok());
        for bad in ["br\"x", "br'x", "br{x}", "br;x", "br@x", "br#x", "br$x"] {
            let e = validate_bridge_name("--bridge", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--bridge") && e.contains("letters"),
                "{bad}: {e}"
            );
        }
        for bad in ["kv0123456789", "kvabcdefabcd", "knbr1", "knbr42"] {
            let e = validate_bridge_name("--bridge", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("knit generates"), "{bad}: {e}");
        }
        assert!(validate_bridge_name("--bridge", "kvm0").is_ok());
        assert!(validate_bridge_name("--bridge", "knbrx").is_ok());
        let subnets = ["10.1.0.0/24".to_string()];
        let e = NetworkSpec::new(&NetworkRequest {
            name: "n",
            driver: Driver::Bridge,
            bridge: Some("br\"0"),
            subnets: &subnets,
            gateways: &[],
            internal: false,
            masquerade: true,
            mtu: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--bridge"), "{e}");
    }

    #[test]
    fn macs() {
        assert_eq!(
            Mac::parse("m", "02:42:AC:11:00:02").unwrap().to_string(),
            "02:42:ac:11:00:02"
        );
        assert!(Mac::parse("m", "01:00:00:00:00:01").is_err());
        assert!(Mac::parse("m", "02:42").is_err());
        let r = Mac::random();
        assert_eq!(r.0[0] & 3, 2);
    }

    #[test]
    fn sandbox_refs() {
        assert_eq!(
            SandboxRef::parse("pid:42").unwrap().path(),
            "/proc/42/ns/net"
        );
        assert_eq!(SandboxRef::parse("web").unwrap().path(), "/run/netns/web");
        assert!(SandboxRef::parse("pid:x").is_err());
        assert!(SandboxRef::parse("../etc").is_err());
    }
}
