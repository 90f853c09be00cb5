//! libnetwork's remote NetworkDriver calls, each mapped onto knit's networks and
//! attachments. Docker hands the driver addresses from its own IPAM and configures the
//! container's interface itself: knit builds the network at CreateNetwork, and at Join a
//! veth pair whose sandbox end stays in the node's namespace (a handoff) with knit's
//! firewall (anti-spoofing, published ports, policy) already in place for it.

use super::state::{self, EndpointRecord, NetworkRecord, PortBinding};
use crate::error::{Error, Result};
use crate::model::{
    Driver, Mac, NetworkRequest, NetworkSpec, PublishSpec, SandboxRef, policy::Labels,
};
use crate::node::Node;
use crate::node::attach::AttachArgs;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// knit networks made for Docker are named `docker-` and the start of Docker's network
/// ID, unless `-o knit.name=NAME` names them (what `knit policy` and `knit network ls`
/// then show).
pub const NAME_OPTION: &str = "knit.name";
const GENERIC: &str = "com.docker.network.generic";
const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// Options knit takes from `docker network create -o`.
const OPTIONS: &[&str] = &[NAME_OPTION, MTU_OPTION, "knit.masquerade"];

pub const ORIGIN: &str = "docker";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamData {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    gateway: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(default)]
    options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ids {
    #[serde(rename = "NetworkID", default)]
    network_id: String,
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Interface {
    #[serde(default)]
    address: String,
    #[serde(rename = "AddressIPv6", default)]
    address_ipv6: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<Interface>,
    #[serde(default)]
    options: Option<BTreeMap<String, Value>>,
}

fn decode<T: for<'a> Deserialize<'a>>(call: &'static str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::invalid(call, "", format!("bad request: {e}")))
}

/// Strips Docker's mask from a gateway (`10.1.0.1/24`).
fn plain_ip(field: &'static str, s: &str) -> Result<IpAddr> {
    crate::model::parse_ip(field, s.split('/').next().unwrap_or_default())
}

/// The knit network a Docker network create describes.
fn network_spec(req: &CreateNetwork) -> Result<NetworkSpec> {
    let opts = req.options.clone().unwrap_or_default();
    let generic: BTreeMap<String, String> = match opts.get(GENERIC) {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            Error::invalid(
                "-o",
                v.to_string(),
                "Docker's generic options must be strings",
            )
        })?,
    };
    if let Some(k) = generic.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(Error::invalid(
            "-o",
            k,
            format!("unknown option; knit takes {}", OPTIONS.join(", ")),
        ));
    }
    let name = match generic.get(NAME_OPTION) {
        Some(n) => n.clone(),
        None => format!("docker-{}", &req.network_id[..12.min(req.network_id.len())]),
    };
    let mtu = generic
        .get(MTU_OPTION)
        .map(|m| {
            m.parse::<u32>().map_err(|_| {
                Error::invalid("-o com.docker.network.driver.mtu", m, "expected a number")
            })
        })
        .transpose()?;
    let masquerade = match generic.get("knit.masquerade").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(v) => {
            return Err(Error::invalid(
                "-o knit.masquerade",
                v,
                "expected true or false",
            ));
        }
    };
    let internal = opts
        .get("com.docker.network.internal")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut subnets = vec![];
    let mut gateways = vec![];
    for d in req
        .ipv4_data
        .iter()
        .flatten()
        .chain(req.ipv6_data.iter().flatten())
    {
        subnets.push(d.pool.clone());
        if !d.gateway.is_empty() {
            gateways.push(plain_ip("--gateway", &d.gateway)?.to_string());
        }
    }
    let spec = NetworkSpec::new(&NetworkRequest {
        name: &name,
        driver: Driver::Bridge,
        bridge: None,
        subnets: &subnets,
        gateways: &gateways,
        internal,
        masquerade,
        mtu,
    })?;
    // knit's DNS serves the containers' names on the gateway (see `names`), beside
    // Docker's embedded DNS.
    Ok(spec)
}

/// Docker's port bindings as knit publish specs. A binding without a host port (`-p 80`)
/// is refused: Docker leaves picking one to the driver, and a port chosen at random would
/// be invisible to `docker port`.
pub fn publish_of(ports: &[PortBinding]) -> Result<Vec<PublishSpec>> {
    ports
        .iter()
        .map(|p| {
            let proto = match p.proto {
                6 => "tcp",
                17 => "udp",
                132 => "sctp",
                other => {
                    return Err(Error::invalid("-p", other, "unknown protocol number"));
                }
            };
            if p.host_port == 0 {
                return Err(Error::invalid(
                    "-p",
                    format!("{}/{proto}", p.port),
                    "knit needs an explicit host port (-p HOSTPORT:PORT)",
                ));
            }
            let host_ip = Some(p.host_ip.as_str()).filter(|h| !h.is_empty());
            PublishSpec::mapping(
                "-p",
                host_ip,
                i64::from(p.host_port),
                i64::from(p.port),
                Some(proto),
            )
        })
        .collect()
}

/// A container's MAC, derived from its IPv4 address as Docker's bridge driver does (and
/// `0a:58` + the address, as CNI's OVN and others do): `docker restart` makes a new
/// endpoint that usually gets the same address back, and with a new random MAC every
/// neighbour's ARP cache would send to the old one for up to a minute. IPv6-only: random.
pub fn mac_for(ips: &[IpAddr]) -> Mac {
    match ips.iter().find_map(|ip| match ip {
        IpAddr::V4(a) => Some(a.octets()),
        IpAddr::V6(_) => None,
    }) {
        Some([a, b, c, d]) => Mac([0x0a, 0x58, a, b, c, d]),
        None => Mac::random(),
    }
}

/// The veth end Docker moves into the container (≤ 15 characters, unique per endpoint).
pub fn handoff_name(endpoint: &str) -> String {
    format!("kd{}", &endpoint[..10.min(endpoint.len())])
}

fn network_of(dir: &Path, id: &str) -> Result<NetworkRecord> {
    state::check_id("NetworkID", id)?;
    state::load(dir, "networks", id)?.ok_or_else(|| Error::not_found("docker network", id))
}

pub fn create_network(dir: &Path, body: &[u8]) -> Result<Value> {
    let req: CreateNetwork = decode("CreateNetwork", body)?;
    state::check_id("NetworkID", &req.network_id)?;
    let spec = network_spec(&req)?;
    // One knit network per Docker network: another Docker network under the same
    // `knit.name` would share (and on removal take away) this one.
    if let Some((other, _)) = state::all::<NetworkRecord>(dir, "networks")?
        .into_iter()
        .find(|(id, r)| r.network == spec.name && *id != req.network_id)
    {
        return Err(Error::invalid(
            "-o knit.name",
            &spec.name,
            format!(
                "already carries Docker network {}",
                &other[..12.min(other.len())]
            ),
        ));
    }
    let mut node = Node::open(dir, false)?;
    let same_subnets = |n: &crate::store::Network| {
        let mut have: Vec<_> = n.subnets.iter().map(|s| s.subnet).collect();
        let mut want: Vec<_> = spec.subnets.iter().map(|s| s.cidr).collect();
        have.sort();
        want.sort();
        have == want
    };
    match node.store.find_network(&spec.name)? {
        // Docker retries a create whose answer it lost: the same network is no error.
        // Another Docker network under the same knit.name is.
        Some(n) if n.origin == ORIGIN && same_subnets(&n) => {}
        Some(_) => return Err(Error::exists("network", &spec.name)),
        None => {
            node.create_network_from(&spec, ORIGIN, crate::node::BridgeUse::Fresh)?;
        }
    }
    state::save(
        dir,
        "networks",
        &req.network_id,
        &NetworkRecord { network: spec.name },
    )?;
    Ok(json!({}))
}

pub fn delete_network(dir: &Path, body: &[u8]) -> Result<Value> {
    let req: Ids = decode("DeleteNetwork", body)?;
    state::check_id("NetworkID", &req.network_id)?;
    let Some(rec) = state::load::<NetworkRecord>(dir, "networks", &req.network_id)? else {
        return Ok(json!({}));
    };
    let mut node = Node::open(dir, false)?;
    if let Some(n) = node.store.find_network(&rec.network)?
        && n.origin == ORIGIN
    {
        node.remove_network(&rec.network)?;
    }
    state::remove(dir, "networks", &req.network_id)?;
    Ok(json!({}))
}

pub fn create_endpoint(dir: &Path, body: &[u8]) -> Result<Value> {
    let req: CreateEndpoint = decode("CreateEndpoint", body)?;
    let net = network_of(dir, &req.network_id)?;
    state::check_id("EndpointID", &req.endpoint_id)?;
    let iface = req.interface.unwrap_or_default();
    let mut ips = vec![];
    for a in [&iface.address, &iface.address_ipv6] {
        if !a.is_empty() {
            ips.push(plain_ip("--ip", a)?);
        }
    }
    let given_mac = !iface.mac_address.is_empty();
    let mac = if given_mac {
        Mac::parse("--mac-address", &iface.mac_address)?
    } else {
        mac_for(&ips)
    };
    let ports: Vec<PortBinding> = match req
        .options
        .as_ref()
        .and_then(|o| o.get("com.docker.network.portmap"))
    {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::invalid("-p", v.to_string(), format!("unreadable port map: {e}"))
        })?,
    };
    // Refused here rather than at Join, so `docker run` fails before anything is built.
    publish_of(&ports)?;
    let rec = EndpointRecord {
        network_id: req.network_id,
        network: net.network,
        ips,
        mac: mac.to_string(),
        ports,
    };
    state::save(dir, "endpoints", &req.endpoint_id, &rec)?;
    // Only what Docker did not set may be returned (it refuses an echoed address).
    Ok(if given_mac {
        json!({})
    } else {
        json!({"Interface": {"MacAddress": rec.mac}})
    })
}

fn endpoint_of(dir: &Path, id: &str) -> Result<EndpointRecord> {
    state::check_id("EndpointID", id)?;
    state::load(dir, "endpoints", id)?.ok_or_else(|| Error::not_found("docker endpoint", id))
}

pub fn join(dir: &Path, body: &[u8]) -> Result<Value> {
    let req: Ids = decode("Join", body)?;
    let ep = endpoint_of(dir, &req.endpoint_id)?;
    let ifname = handoff_name(&req.endpoint_id);
    let sandbox = SandboxRef::Handoff {
        endpoint: req.endpoint_id.clone(),
        ifname: ifname.clone(),
    };
    let publish = publish_of(&ep.ports)?;
    let mac = Mac::parse("mac", &ep.mac)?;
    let mut node = Node::open(dir, false)?;
    let done = node.attach(&AttachArgs {
        network: &ep.network,
        sandbox: &sandbox,
        ifname: Some(&ifname),
        static_ips: &ep.ips,
        mac: Some(mac),
        publish: &publish,
        container_id: Some(&req.endpoint_id),
        routes: None,
        aliases: &[],
        labels: &Labels::new(),
    })?;
    let gw = |v4: bool| {
        done.network
            .subnets
            .iter()
            .find(|s| s.subnet.addr().is_ipv4() == v4 && ep.ips.iter().any(|i| i.is_ipv4() == v4))
            .map(|s| s.gateway.to_string())
            .unwrap_or_default()
    };
    let mut out = json!({
        "InterfaceName": {"SrcName": ifname, "DstPrefix": "eth"},
        "Gateway": gw(true),
        "GatewayIPv6": gw(false),
    });
    if done.network.internal {
        // No way out: and no docker_gwbridge either.
        out["DisableGatewayService"] = json!(true);
        out["Gateway"] = json!("");
        out["GatewayIPv6"] = json!("");
    }
    Ok(out)
}

/// (Docker's network ID, the knit network, the endpoint ID) of a Join request.
pub fn joined(dir: &Path, body: &[u8]) -> Option<(String, String, String)> {
    let req: Ids = serde_json::from_slice(body).ok()?;
    let ep: EndpointRecord = state::load(dir, "endpoints", &req.endpoint_id).ok()??;
    Some((req.network_id, ep.network, req.endpoint_id))
}

/// DeleteEndpoint: the attachment and the veth go (Docker has moved the link back to
/// the node's namespace by now). Unknown endpoints are no error: Docker cleans up after
/// its own restarts with IDs knit may have forgotten.
pub fn delete_endpoint(dir: &Path, body: &[u8]) -> Result<Value> {
    let req: Ids = decode("DeleteEndpoint", body)?;
    state::check_id("EndpointID", &req.endpoint_id)?;
    if let Some(ep) = state::load::<EndpointRecord>(dir, "endpoints", &req.endpoint_id)? {
        let mut node = Node::open(dir, false)?;
        if let Some(net) = node.store.find_network(&ep.network)? {
            let key = format!("docker:{}", req.endpoint_id);
            if let Some(att) = node.store.attachment(net.id, &key)? {
                node.detach_attachment(&net, &att)?;
            }
        }
    }
    state::remove(dir, "endpoints", &req.endpoint_id)?;
    Ok(json!({}))
}

/// Calls that need no work from knit: ports are programmed at Join, Leave is followed
/// by DeleteEndpoint, discovery is for cluster stores knit does not use.
pub fn no_op(body: &[u8]) -> Result<Value> {
    let _: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| Error::invalid("request", "", e))?
    };
    Ok(json!({}))
}

#[cfg(test)]
mod tests;
