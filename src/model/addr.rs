//! Addresses and subnets as users write them: strict parsing (no leading zeros), the
//! ranges knit refuses, gateways, MTUs.

use crate::error::{Error, Result};
use ipnet::IpNet;
use std::net::IpAddr;
use std::str::FromStr;

/// Rejects IPv4 octets written with leading zeros (`010.1.0.0`): some tools read them as
/// octal, so their meaning is ambiguous. Looks at every dotted quad, also one embedded in
/// an IPv6 address.
pub(super) fn check_no_leading_zeros(field: &'static str, whole: &str, addr: &str) -> Result<()> {
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

/// The first /24 of 10.90.0.0/15 that none of `taken` overlaps: the subnet knit picks
/// when a runtime (netavark, Docker's IPAM) asks for a network without one.
pub fn free_subnet(taken: &[IpNet]) -> Result<IpNet> {
    for i in 0..512u32 {
        let a =
            std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 90, 0, 0)) + (i << 8));
        let cand =
            IpNet::V4(ipnet::Ipv4Net::new(a, 24).map_err(|e| Error::invalid("subnets", a, e))?);
        if !taken
            .iter()
            .any(|t| t.contains(&cand.network()) || cand.contains(&t.network()))
        {
            return Ok(cand);
        }
    }
    Err(Error::invalid(
        "subnets",
        "10.90.0.0/15",
        "no free /24 left; give one with --subnet",
    ))
}

/// A random unique local /64 (RFC 4193: fd00::/8 with a 40-bit random global ID).
pub fn random_ula() -> IpNet {
    let r = super::random_bytes::<5>();
    let seg = |a: u8, b: u8| (u16::from(a) << 8) | u16::from(b);
    let a = std::net::Ipv6Addr::new(
        0xfd00 | u16::from(r[0]),
        seg(r[1], r[2]),
        seg(r[3], r[4]),
        0,
        0,
        0,
        0,
        0,
    );
    // Invariant: 64 is a valid IPv6 prefix length.
    IpNet::V6(ipnet::Ipv6Net::new(a, 64).unwrap_or_default())
}
