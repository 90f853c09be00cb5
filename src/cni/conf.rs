//! The network configuration on stdin: the reference bridge plugin's keys with a host-local
//! `ipam` section, plus runtimeConfig capabilities. Unknown keys are tolerated.

use super::error::{
    CONFLICT, CniError, DECODE, INCOMPATIBLE_VERSION, INVALID_CONFIG, UNSUPPORTED_FIELD,
};
use super::runtime_keys::normalise_runtime_config;
use crate::error::Error;
use crate::model::policy::Labels;
use crate::model::{self, Driver, Mac, NetworkRequest, NetworkSpec, PublishSpec, RouteSpec};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;

pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Range {
    pub subnet: String,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteConf {
    pub dst: String,
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipam {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub ranges: Option<Vec<Vec<Range>>>,
    /// The pre-0.3 flat form: one range given inline.
    pub subnet: Option<String>,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub gateway: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteConf>,
    /// host-local's reservation directory: knit keeps reservations in its store instead.
    pub data_dir: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMap {
    pub host_port: i64,
    pub container_port: i64,
    pub protocol: Option<String>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMap>,
    #[serde(default)]
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub ip_ranges: Option<Vec<Vec<Range>>>,
    pub dns: Option<Value>,
    pub aliases: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub bridge: Option<String>,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub force_address: bool,
    #[serde(default)]
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    pub vlan: Option<u32>,
    /// Accepted either way: knit checks every attachment's MAC and addresses (anti-spoofing
    /// is always on).
    pub macspoofchk: Option<bool>,
    pub enabledad: Option<bool>,
    pub ipam: Option<Ipam>,
    pub dns: Option<Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    pub args: Option<Value>,
    pub prev_result: Option<Value>,
    pub state_dir: Option<String>,
    /// knit extension: "bridge" (default) or "ptp".
    pub driver: Option<String>,
}

/// stdin decoded once: a JSON object, or the DECODE error every command reports.
pub fn decode(stdin: &[u8]) -> Result<Value, CniError> {
    let v: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(DECODE, format!("decoding network config: {e}")))?;
    if !v.is_object() {
        return Err(CniError::new(
            DECODE,
            "network config must be a JSON object",
        ));
    }
    Ok(v)
}

fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        return Ok(());
    }
    Err(CniError::new(
        INCOMPATIBLE_VERSION,
        format!(
            "incompatible CNI versions: config is {v:?}, plugin supports {SUPPORTED_VERSIONS:?}"
        ),
    ))
}

/// Parses stdin. Decoding failures are code 6; a missing or unknown version code 1.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    from_value(decode(stdin)?)
}

/// The configuration from the decoded stdin.
pub fn from_value(mut v: Value) -> Result<NetConf, CniError> {
    if let Some(rc) = v.get_mut("runtimeConfig") {
        normalise_runtime_config(rc);
    }
    let conf: NetConf = serde_json::from_value(v)
        .map_err(|e| CniError::new(DECODE, format!("decoding network config: {e}")))?;
    check_version(&conf.cni_version)?;
    Ok(conf)
}

/// What DEL needs from the configuration: which network, in which store. DEL removes what
/// knit's store recorded, so the ADD-only parts (runtimeConfig, ipam, dns, args,
/// prevResult, ...) are not decoded: a runtime must always be able to delete.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub cni_version: String,
    pub name: String,
    pub state_dir: Option<String>,
}

pub fn parse_identity(stdin: &[u8]) -> Result<Identity, CniError> {
    identity(&decode(stdin)?)
}

/// What DEL reads of the decoded stdin.
pub fn identity(v: &Value) -> Result<Identity, CniError> {
    let id = Identity::deserialize(v)
        .map_err(|e| CniError::new(DECODE, format!("decoding network config: {e}")))?;
    check_version(&id.cni_version)?;
    Ok(id)
}

/// A CNI error for an invalid configuration field (`path` as the runtime wrote it).
fn invalid_field(
    path: &str,
    value: impl std::fmt::Display,
    reason: impl std::fmt::Display,
) -> CniError {
    invalid(format!("invalid {path} {:?}: {reason}", value.to_string()))
}

/// The result's `dns` from the `dns` capability, whose conventional form is `{"servers",
/// "searches", "options"}` (a result says `nameservers` and `search`).
fn result_dns(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        for (from, to) in [("servers", "nameservers"), ("searches", "search")] {
            if let Some(val) = obj.remove(from)
                && !obj.contains_key(to)
            {
                obj.insert(to.to_string(), val);
            }
        }
    }
    v
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(INVALID_CONFIG, msg)
}

fn ip(field: &str, s: &str) -> Result<IpAddr, CniError> {
    s.parse()
        .map_err(|_| invalid(format!("{field}: {s:?} is not an IP address")))
}

/// "10.0.0.5" or "10.0.0.5/24" → the address.
fn ip_maybe_cidr(field: &str, s: &str) -> Result<IpAddr, CniError> {
    match s.split_once('/') {
        Some((a, _)) => ip(field, a),
        None => ip(field, s),
    }
}

/// Version ordering for "at least" checks.
pub fn version_at_least(v: &str, min: &str) -> bool {
    let parse = |s: &str| {
        s.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    parse(v) >= parse(min)
}

impl NetConf {
    /// The range sets: runtimeConfig.ipRanges overrides ipam.ranges; the flat legacy form is
    /// one range set. Each with the path of its range in the configuration (for errors).
    /// Empty strings (what go-cni sends for unset fields) mean absent.
    fn ranges(&self) -> Result<Vec<(String, Range)>, CniError> {
        let ipam = self.ipam.clone().unwrap_or_default();
        if !ipam.kind.is_empty() && ipam.kind != "host-local" && ipam.kind != "knit" {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                format!(
                    "ipam.type {:?}: knit allocates addresses itself (use \"host-local\")",
                    ipam.kind
                ),
            ));
        }
        let (sets, base) = match (&self.runtime_config.ip_ranges, &ipam.ranges, &ipam.subnet) {
            (Some(r), _, _) => (r.clone(), "runtimeConfig.ipRanges"),
            (None, Some(r), _) => (r.clone(), "ipam.ranges"),
            (None, None, Some(subnet)) => (
                vec![vec![Range {
                    subnet: subnet.clone(),
                    range_start: ipam.range_start.clone(),
                    range_end: ipam.range_end.clone(),
                    gateway: ipam.gateway.clone(),
                }]],
                "ipam",
            ),
            (None, None, None) => return Err(invalid("ipam: no ranges or subnet given")),
        };
        let present = |o: Option<String>| o.filter(|s| !s.is_empty());
        let mut out = vec![];
        for (i, set) in sets.into_iter().enumerate() {
            let path = if base == "ipam" {
                base.to_string()
            } else {
                format!("{base}[{i}][0]")
            };
            match set.len() {
                0 => return Err(invalid(format!("{base}: empty range set"))),
                1 => {
                    let r = set.into_iter().next().unwrap_or_default();
                    out.push((
                        path,
                        Range {
                            subnet: r.subnet,
                            range_start: present(r.range_start),
                            range_end: present(r.range_end),
                            gateway: present(r.gateway),
                        },
                    ));
                }
                _ => {
                    return Err(CniError::new(
                        UNSUPPORTED_FIELD,
                        "ipam.ranges: knit takes one range per range set (one subnet per address family)",
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The knit network this configuration describes.
    pub fn network_spec(&self) -> Result<NetworkSpec, CniError> {
        model::validate_name("name", &self.name).map_err(|e| invalid(e.to_string()))?;
        if self.vlan.is_some_and(|v| v != 0) {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                "vlan: VLAN tagging is not supported by knit yet",
            ));
        }
        let driver = match self.driver.as_deref() {
            None => Driver::default(),
            Some(d) => Driver::parse(d).map_err(|e| self.cni_error(e))?,
        };
        let ranges = self.ranges()?;
        let subnets: Vec<String> = ranges.iter().map(|(_, r)| r.subnet.clone()).collect();
        let gateways: Vec<String> = ranges
            .iter()
            .filter_map(|(_, r)| r.gateway.clone())
            .collect();
        let bridge = crate::driver::of(driver).cni_bridge(self.bridge.as_deref());
        let mut spec = NetworkSpec::new(&NetworkRequest {
            name: &self.name,
            driver,
            bridge: bridge.as_deref(),
            subnets: &subnets,
            gateways: &gateways,
            internal: false,
            masquerade: self.ip_masq,
            mtu: self.mtu,
        })
        .map_err(|e| self.cni_error(e))?;
        for (s, (path, r)) in spec.subnets.iter_mut().zip(&ranges) {
            for (field, raw, slot) in [
                ("rangeStart", &r.range_start, &mut s.range_start),
                ("rangeEnd", &r.range_end, &mut s.range_end),
            ] {
                if let Some(raw) = raw {
                    let path = format!("{path}.{field}");
                    let a = model::parse_ip("range", raw)
                        .map_err(|_| invalid_field(&path, raw, "is not an IP address"))?;
                    model::check_host_in("range", a, &s.cidr).map_err(|e| match e {
                        Error::Invalid { reason, .. } => invalid_field(&path, raw, reason),
                        e => e.into(),
                    })?;
                    *slot = Some(a);
                }
            }
            if let (Some(start), Some(end)) = (s.range_start, s.range_end)
                && start > end
            {
                return Err(invalid_field(
                    &format!("{path}.rangeStart"),
                    start,
                    format!("is after {path}.rangeEnd {end}"),
                ));
            }
        }
        spec.bridge_gateway = self.is_gateway
            || self.is_default_gateway
            || crate::driver::of(driver).gateway_on_node();
        spec.promisc = self.promisc_mode;
        Ok(spec)
    }

    /// Routes for the container: ipam.routes, plus a default route per family when
    /// isDefaultGateway is set (as the reference bridge plugin does).
    pub fn routes(&self, spec: &NetworkSpec) -> Result<Vec<RouteSpec>, CniError> {
        let mut out = vec![];
        for r in self
            .ipam
            .as_ref()
            .map(|i| i.routes.clone())
            .unwrap_or_default()
        {
            let dst: IpNet = r
                .dst
                .parse()
                .map_err(|_| invalid(format!("ipam.routes: dst {:?} is not a CIDR", r.dst)))?;
            let gw =
                r.gw.as_deref()
                    .map(|g| ip("ipam.routes gw", g))
                    .transpose()?;
            out.push(RouteSpec {
                dst: dst.trunc(),
                gw,
            });
        }
        if self.is_default_gateway {
            for s in &spec.subnets {
                let any: IpNet = if s.cidr.addr().is_ipv4() {
                    "0.0.0.0/0"
                } else {
                    "::/0"
                }
                .parse()
                .map_err(|_| invalid("default route"))?;
                if !out.iter().any(|r| r.dst == any) {
                    out.push(RouteSpec {
                        dst: any,
                        gw: Some(s.gateway),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Static addresses from runtimeConfig.ips, args.cni.ips and CNI_ARGS IP=.
    pub fn static_ips(&self, env_ips: &[String]) -> Result<Vec<IpAddr>, CniError> {
        let mut raw: Vec<String> = self.runtime_config.ips.clone();
        if let Some(ips) = self
            .args
            .as_ref()
            .and_then(|a| a.pointer("/cni/ips"))
            .and_then(Value::as_array)
        {
            raw.extend(ips.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
        raw.extend(env_ips.iter().cloned());
        let mut out: Vec<IpAddr> = vec![];
        for r in raw {
            let a = ip_maybe_cidr("ips", &r)?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
        // As host-local: every requested address must be allocated; one subnet per family.
        model::check_one_per_family("ips", &out).map_err(|e| invalid(e.to_string()))?;
        Ok(out)
    }

    pub fn mac(&self, env_mac: Option<&str>) -> Result<Option<Mac>, CniError> {
        let from_args = self
            .args
            .as_ref()
            .and_then(|a| a.pointer("/cni/mac"))
            .and_then(Value::as_str);
        match self.runtime_config.mac.as_deref().or(from_args).or(env_mac) {
            Some(m) => Mac::parse("mac", m)
                .map(Some)
                .map_err(|e| invalid(e.to_string())),
            None => Ok(None),
        }
    }

    pub fn publish(&self) -> Result<Vec<PublishSpec>, CniError> {
        self.runtime_config
            .port_mappings
            .iter()
            .enumerate()
            .map(|(i, p)| {
                PublishSpec::mapping(
                    "runtimeConfig.portMappings",
                    p.host_ip.as_deref(),
                    p.host_port,
                    p.container_port,
                    p.protocol.as_deref(),
                )
                .map_err(|e| match e {
                    Error::Invalid { value, reason, .. } => {
                        invalid_field(&format!("runtimeConfig.portMappings[{i}]"), value, reason)
                    }
                    e => e.into(),
                })
            })
            .collect()
    }

    /// Labels from the CNI `args` convention, `"args": {"cni": {"labels": [{"key": "app",
    /// "value": "web"}]}}`: what `knit policy` selects on, like `knit attach --label`.
    /// The convention makes `args` optional metadata a plugin may ignore, so a label knit's
    /// selectors could never name (empty, over 63 characters, other characters) is
    /// skipped; a `labels` that is not a list of `{key, value}` strings is an error.
    pub fn labels(&self) -> Result<Labels, CniError> {
        #[derive(Deserialize)]
        struct Label {
            key: String,
            value: String,
        }
        let Some(raw) = self
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("labels"))
        else {
            return Ok(Labels::new());
        };
        let list: Vec<Label> = serde_json::from_value(raw.clone()).map_err(|_| {
            invalid(format!(
                "args.cni.labels: expected a list of {{\"key\": ..., \"value\": ...}} strings, got {raw}"
            ))
        })?;
        Ok(list
            .into_iter()
            .filter_map(|l| crate::model::policy::label("args.cni.labels", &l.key, &l.value).ok())
            .collect())
    }

    /// DNS aliases from the `aliases` capability: `{"NETWORK": ["name", ...]}` (podman,
    /// netavark-style) or a plain list.
    pub fn aliases(&self) -> Result<Vec<String>, CniError> {
        let raw = match &self.runtime_config.aliases {
            None => return Ok(vec![]),
            Some(Value::Object(m)) => m.get(&self.name).cloned().unwrap_or(Value::Array(vec![])),
            Some(v) => v.clone(),
        };
        let list: Vec<String> = serde_json::from_value(raw)
            .map_err(|_| invalid("runtimeConfig.aliases: expected a list of names"))?;
        for a in &list {
            model::validate_dns_name("runtimeConfig.aliases", a)
                .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(list)
    }

    /// DNS settings for the result: runtimeConfig.dns wins over the config's dns.
    pub fn dns(&self) -> Option<Value> {
        self.runtime_config
            .dns
            .clone()
            .map(result_dns)
            .or_else(|| self.dns.clone())
    }

    /// The configuration path of a field the library names by its CLI flag.
    fn cni_field(&self, flag: &str, value: &str) -> Option<String> {
        let ranges = || self.ranges().unwrap_or_default();
        let same_net = |raw: &str| {
            raw == value
                || matches!((raw.parse::<IpNet>(), value.parse::<IpNet>()), (Ok(a), Ok(b)) if a == b)
        };
        Some(match flag {
            "network name" => "name".into(),
            "--bridge" | "bridge" => "bridge".into(),
            "--driver" => "driver".into(),
            "--mtu" => "mtu".into(),
            "--subnet" | "subnet" => ranges()
                .into_iter()
                .find(|(_, r)| same_net(&r.subnet))
                .map(|(p, _)| format!("{p}.subnet"))
                .unwrap_or_else(|| "ipam.ranges".into()),
            "--gateway" => ranges()
                .into_iter()
                .find(|(_, r)| r.gateway.as_deref() == Some(value))
                .map(|(p, _)| format!("{p}.gateway"))
                .unwrap_or_else(|| "ipam.ranges gateway".into()),
            "--ip" | "ip" => "ips".into(),
            "--mac" => "mac".into(),
            "--publish" | "publish" => "runtimeConfig.portMappings".into(),
            "--ifname" => "CNI_IFNAME".into(),
            "--alias" => "runtimeConfig.aliases".into(),
            "--label" => "args.cni.labels".into(),
            _ => return None,
        })
    }

    /// A library error as this configuration's runtime should read it: the configuration's
    /// field names (`ipam.ranges[0][0].subnet`), never the CLI's flags (`--subnet`).
    pub fn cni_error(&self, e: Error) -> CniError {
        match e {
            Error::Invalid {
                field,
                value,
                reason,
            } => match self.cni_field(field, &value) {
                Some(path) => invalid_field(&path, value, reason),
                None => Error::Invalid {
                    field,
                    value,
                    reason,
                }
                .into(),
            },
            Error::Conflict(msg) => {
                let msg = if let Some(rest) = msg.strip_prefix("ip ") {
                    format!("address {rest}")
                } else if let Some(rest) = msg.strip_prefix("publish ") {
                    format!("runtimeConfig.portMappings {rest}")
                } else {
                    msg
                };
                CniError::new(CONFLICT, msg)
            }
            e => e.into(),
        }
    }
}

#[cfg(test)]
mod tests;
