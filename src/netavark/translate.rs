//! netavark's JSON ↔ knit's requests. Pure: no kernel, no store, so every mapping and
//! every error is unit-tested.

use super::types::{NetAddress, NetInterface, Network, PluginExec, StatusBlock};
use crate::error::{Error, Result};
use crate::model::policy::Labels;
use crate::model::{self, Driver, Mac, NetworkRequest, NetworkSpec, PublishSpec, RouteSpec};
use crate::store::{Attachment, Network as KnitNetwork};
use ipnet::IpNet;
use std::net::IpAddr;

/// The search domain podman's own DNS (aardvark-dns) gives containers; knit's DNS answers
/// under it too, so `NAME.dns.podman` works the same on a knit network.
pub const PODMAN_DOMAIN: &str = "dns.podman";

/// Network options knit takes (`podman network create -d knit -o KEY=VALUE`).
pub const OPTIONS: &[&str] = &["mode", "mtu", "masquerade", "dns_domain"];

/// Per-container options (`podman run --network NET:OPTIONS`) are `label.KEY=VALUE`:
/// what `knit policy` selects on.
pub const LABEL_PREFIX: &str = "label.";

/// A library error (which names CLI flags) renamed to the netavark field it came from.
pub fn rename(e: Error) -> Error {
    match e {
        Error::Invalid {
            field,
            value,
            reason,
        } => {
            let field = match field {
                "network name" => "name",
                "--subnet" | "subnet" => "subnets[].subnet",
                "--gateway" => "subnets[].gateway",
                "--bridge" | "bridge" => "network_interface",
                "--mtu" => "options.mtu",
                "--driver" => "options.mode",
                "--dns-domain" => "options.dns_domain",
                "--ip" | "ip" => "network_options.static_ips",
                "--mac" => "network_options.static_mac",
                "--publish" | "publish" => "port_mappings",
                "--alias" => "network_options.aliases",
                "--ifname" => "network_options.interface_name",
                other => other,
            };
            Error::Invalid {
                field,
                value,
                reason,
            }
        }
        e => e,
    }
}

fn options(net: &Network) -> Result<std::collections::BTreeMap<String, String>> {
    let opts = net.options.clone().unwrap_or_default();
    if let Some(k) = opts.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(Error::invalid(
            "options",
            k,
            format!("unknown option; knit takes {}", OPTIONS.join(", ")),
        ));
    }
    if let Some(d) = net
        .ipam_options
        .as_ref()
        .and_then(|o| o.get("driver"))
        .filter(|d| !d.is_empty() && *d != "host-local")
    {
        return Err(Error::invalid(
            "ipam_options.driver",
            d,
            "knit allocates addresses itself (host-local semantics); dhcp and none are not supported",
        ));
    }
    if net
        .network_dns_servers
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(Error::invalid(
            "network_dns_servers",
            net.network_dns_servers
                .clone()
                .unwrap_or_default()
                .join(","),
            "knit's DNS forwards to the node's resolvers; per-network upstreams are not supported",
        ));
    }
    Ok(opts)
}

fn parse_bool(field: &'static str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(Error::invalid(field, v, "expected true or false")),
    }
}

/// The knit network a podman network describes. Its subnets must be filled in (by
/// `create`, see `complete`).
pub fn network_spec(net: &Network) -> Result<NetworkSpec> {
    let opts = options(net)?;
    let driver = match opts.get("mode") {
        None => Driver::default(),
        Some(m) => Driver::parse(m)
            .map_err(|_| Error::invalid("options.mode", m, "expected bridge or ptp"))?,
    };
    let mtu = opts
        .get("mtu")
        .map(|m| {
            m.parse::<u32>()
                .map_err(|_| Error::invalid("options.mtu", m, "expected a number"))
        })
        .transpose()?;
    let masquerade = match opts.get("masquerade") {
        Some(v) => parse_bool("options.masquerade", v)?,
        None => true,
    };
    let subnets = net.subnets.clone().unwrap_or_default();
    let cidrs: Vec<String> = subnets.iter().map(|s| s.subnet.clone()).collect();
    let gateways: Vec<String> = subnets.iter().filter_map(|s| s.gateway.clone()).collect();
    let bridge = match driver {
        Driver::Ptp => None,
        _ => net.network_interface.clone(),
    };
    let mut spec = NetworkSpec::new(&NetworkRequest {
        name: &net.name,
        driver,
        bridge: bridge.as_deref(),
        subnets: &cidrs,
        gateways: &gateways,
        internal: net.internal,
        masquerade,
        mtu,
    })
    .map_err(rename)?;
    for (s, raw) in spec.subnets.iter_mut().zip(&subnets) {
        let Some(range) = &raw.lease_range else {
            continue;
        };
        for (field, value, slot) in [
            (
                "subnets[].lease_range.start_ip",
                &range.start_ip,
                &mut s.range_start,
            ),
            (
                "subnets[].lease_range.end_ip",
                &range.end_ip,
                &mut s.range_end,
            ),
        ] {
            if let Some(v) = value {
                let a = model::parse_ip(field, v)?;
                model::check_host_in(field, a, &s.cidr)?;
                *slot = Some(a);
            }
        }
    }
    let domain = opts.get("dns_domain").map_or(PODMAN_DOMAIN, String::as_str);
    spec.with_dns(net.dns_enabled, Some(domain))
        .map_err(rename)?;
    spec.bridge_gateway = true;
    Ok(spec)
}

/// `create`: the network podman will store, with what knit chose filled in — subnets
/// when none were given (a free /24 from `pool`, and a /64 ULA when IPv6 is on), gateways,
/// and the bridge name. Fails on anything `setup` would refuse.
pub fn complete(mut raw: serde_json::Value, taken: &[IpNet]) -> Result<serde_json::Value> {
    let net: Network = serde_json::from_value(raw.clone())
        .map_err(|e| Error::invalid("network", "", format!("not a netavark network: {e}")))?;
    model::validate_name("name", &net.name)?;
    let mut subnets = net.subnets.clone().unwrap_or_default();
    let has = |v4: bool, s: &[super::types::Subnet]| {
        s.iter().any(|s| {
            s.subnet
                .parse::<IpNet>()
                .is_ok_and(|n| n.addr().is_ipv4() == v4)
        })
    };
    // No subnet given: an IPv4 one (and an IPv6 one below with --ipv6), as podman does.
    if subnets.is_empty() {
        subnets.push(super::types::Subnet {
            subnet: model::free_subnet(taken)?.to_string(),
            ..Default::default()
        });
    }
    if net.ipv6_enabled && !has(false, &subnets) {
        subnets.push(super::types::Subnet {
            subnet: model::random_ula().to_string(),
            ..Default::default()
        });
    }
    let mut with_subnets = net.clone();
    with_subnets.subnets = Some(subnets.clone());
    let driver_is_ptp = net
        .options
        .as_ref()
        .and_then(|o| o.get("mode"))
        .map(String::as_str)
        == Some("ptp");
    if with_subnets.network_interface.is_none() && !driver_is_ptp {
        with_subnets.network_interface = Some(bridge_name(&net.id));
    }
    let spec = network_spec(&with_subnets)?;
    if let Some(v6) = spec.subnets.iter().find(|s| s.cidr.addr().is_ipv6())
        && !net.ipv6_enabled
    {
        return Err(Error::invalid(
            "subnets[].subnet",
            v6.cidr,
            "an IPv6 subnet needs ipv6_enabled (podman network create --ipv6)",
        ));
    }
    // Written back: each subnet with its gateway, the lease range as given.
    let out: Vec<super::types::Subnet> = spec
        .subnets
        .iter()
        .zip(&subnets)
        .map(|(s, given)| super::types::Subnet {
            subnet: s.cidr.to_string(),
            gateway: Some(s.gateway.to_string()),
            lease_range: given.lease_range.clone(),
        })
        .collect();
    raw["subnets"] = serde_json::to_value(out).map_err(|e| Error::invalid("subnets", "", e))?;
    if let Some(b) = &spec.bridge {
        raw["network_interface"] = serde_json::Value::String(b.clone());
    }
    Ok(raw)
}

/// The bridge of a podman network without `--interface-name`: `knnv` and the start of the
/// network's ID, so the name is stable across setups and never a knit CLI bridge's.
pub fn bridge_name(id: &str) -> String {
    let tail: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(11)
        .collect();
    format!("knnv{tail}")
}

/// What `setup` passes to knit's attach, from one container's options.
pub struct AttachParts {
    pub static_ips: Vec<IpAddr>,
    pub mac: Option<Mac>,
    pub publish: Vec<PublishSpec>,
    pub names: Vec<String>,
    pub labels: Labels,
    pub routes: Option<Vec<RouteSpec>>,
}

pub fn attach_parts(exec: &PluginExec) -> Result<AttachParts> {
    let o = &exec.network_options;
    let mut static_ips = vec![];
    for raw in o.static_ips.iter().flatten() {
        static_ips.push(model::parse_ip("network_options.static_ips", raw)?);
    }
    model::check_one_per_family("network_options.static_ips", &static_ips)?;
    let mac = o
        .static_mac
        .as_deref()
        .map(|m| Mac::parse("network_options.static_mac", m))
        .transpose()?;
    let mut publish = vec![];
    for (i, p) in exec.port_mappings.iter().flatten().enumerate() {
        let host_ip = Some(p.host_ip.as_str()).filter(|h| !h.is_empty());
        let proto = Some(p.protocol.as_str()).filter(|p| !p.is_empty());
        for k in 0..p.range.max(1) {
            let spec = PublishSpec::mapping(
                "port_mappings",
                host_ip,
                p.host_port + k,
                p.container_port + k,
                proto,
            )
            .map_err(|e| match e {
                Error::Invalid { value, reason, .. } => Error::Invalid {
                    field: "port_mappings",
                    value: format!("[{i}] {value}"),
                    reason,
                },
                e => e,
            })?;
            publish.push(spec);
        }
    }
    // DNS names: the container's name (when it is a valid DNS name; podman allows names
    // that are not) and its aliases on this network.
    let mut names = vec![];
    if model::validate_dns_name("container_name", &exec.container_name).is_ok() {
        names.push(exec.container_name.clone());
    }
    for a in o.aliases.iter().flatten() {
        model::validate_dns_name("network_options.aliases", a)?;
        if !names.contains(a) {
            names.push(a.clone());
        }
    }
    let mut labels = Labels::new();
    for (k, v) in o.options.iter().flatten() {
        let Some(key) = k.strip_prefix(LABEL_PREFIX) else {
            return Err(Error::invalid(
                "network_options.options",
                k,
                format!("unknown option; knit takes {LABEL_PREFIX}KEY=VALUE"),
            ));
        };
        let (key, value) = crate::model::policy::label("network_options.options", key, v)?;
        labels.insert(key, value);
    }
    let routes = match &exec.network.routes {
        None => None,
        Some(rs) => {
            let mut out = vec![];
            for r in rs {
                let dst: IpNet = r.destination.parse().map_err(|_| {
                    Error::invalid("routes[].destination", &r.destination, "is not a CIDR")
                })?;
                let gw = r
                    .gateway
                    .as_deref()
                    .map(|g| model::parse_ip("routes[].gateway", g))
                    .transpose()?;
                out.push(RouteSpec {
                    dst: dst.trunc(),
                    gw,
                });
            }
            Some(out)
        }
    };
    Ok(AttachParts {
        static_ips,
        mac,
        publish,
        names,
        labels,
        routes,
    })
}

/// `setup`'s answer for one attachment.
pub fn status(net: &KnitNetwork, att: &Attachment) -> StatusBlock {
    let driver = crate::driver::for_network(net);
    let subnets = att
        .ips
        .iter()
        .map(|ip| NetAddress {
            ipnet: ip.to_string(),
            gateway: driver
                .result_gateway(net, ip.addr().is_ipv4())
                .map(|g| g.to_string()),
        })
        .collect();
    let mut block = StatusBlock::default();
    block.interfaces.insert(
        att.ifname.clone(),
        NetInterface {
            mac_address: att.mac.clone(),
            subnets,
        },
    );
    if net.serves_dns() {
        block.dns_server_ips = net.subnets.iter().map(|s| s.gateway.to_string()).collect();
        block.dns_search_domains = net.dns_domain.iter().cloned().collect();
    }
    block
}

#[cfg(test)]
mod tests;
