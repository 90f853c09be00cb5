//! The network configuration on stdin: the reference bridge plugin's keys with a host-local
//! `ipam` section, plus runtimeConfig capabilities. Unknown keys are tolerated.

use super::error::{CniError, DECODE, INCOMPATIBLE_VERSION, INVALID_CONFIG, UNSUPPORTED_FIELD};
use crate::model::{self, Driver, Mac, NetworkRequest, NetworkSpec, PublishSpec, RouteSpec};
use crate::policy::spec::{Labels, parse_label};
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

/// Parses stdin. Decoding failures are code 6; a missing or unknown version code 1.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(DECODE, format!("decoding network config: {e}")))?;
    if !v.is_object() {
        return Err(CniError::new(
            DECODE,
            "network config must be a JSON object",
        ));
    }
    let conf: NetConf = serde_json::from_value(v)
        .map_err(|e| CniError::new(DECODE, format!("decoding network config: {e}")))?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI versions: config is {:?}, plugin supports {:?}",
                conf.cni_version, SUPPORTED_VERSIONS
            ),
        ));
    }
    Ok(conf)
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
    /// one range set.
    fn ranges(&self) -> Result<Vec<Range>, CniError> {
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
        let sets = match (&self.runtime_config.ip_ranges, &ipam.ranges, &ipam.subnet) {
            (Some(r), _, _) => r.clone(),
            (None, Some(r), _) => r.clone(),
            (None, None, Some(subnet)) => vec![vec![Range {
                subnet: subnet.clone(),
                range_start: ipam.range_start.clone(),
                range_end: ipam.range_end.clone(),
                gateway: ipam.gateway.clone(),
            }]],
            (None, None, None) => return Err(invalid("ipam: no ranges or subnet given")),
        };
        let mut out = vec![];
        for set in sets {
            match set.len() {
                0 => return Err(invalid("ipam.ranges: empty range set")),
                1 => out.push(set.into_iter().next().unwrap_or_default()),
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
            None => Driver::Bridge,
            Some(d) => Driver::parse(d).map_err(|e| invalid(format!("driver: {e}")))?,
        };
        let ranges = self.ranges()?;
        let subnets: Vec<String> = ranges.iter().map(|r| r.subnet.clone()).collect();
        let gateways: Vec<String> = ranges.iter().filter_map(|r| r.gateway.clone()).collect();
        let bridge = match driver {
            Driver::Bridge => Some(self.bridge.clone().unwrap_or_else(|| "cni0".into())),
            Driver::Ptp => None,
        };
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
        .map_err(|e| invalid(e.to_string()))?;
        for (s, r) in spec.subnets.iter_mut().zip(&ranges) {
            for (field, raw, slot) in [
                ("rangeStart", &r.range_start, &mut s.range_start),
                ("rangeEnd", &r.range_end, &mut s.range_end),
            ] {
                if let Some(raw) = raw {
                    let a = ip(field, raw)?;
                    model::check_host_in("rangeStart/rangeEnd", a, &s.cidr)
                        .map_err(|e| invalid(e.to_string()))?;
                    *slot = Some(a);
                }
            }
        }
        spec.bridge_gateway = self.is_gateway || self.is_default_gateway || driver == Driver::Ptp;
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
            .map(|p| {
                let proto = p.protocol.clone().unwrap_or_else(|| "tcp".into());
                let host = match p.host_ip.as_deref() {
                    None | Some("") => String::new(),
                    Some(h) if h.contains(':') => format!("[{h}]:"),
                    Some(h) => format!("{h}:"),
                };
                PublishSpec::parse(&format!(
                    "{host}{}:{}/{}",
                    p.host_port, p.container_port, proto
                ))
                .map_err(|e| invalid(format!("runtimeConfig.portMappings: {e}")))
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
            .filter_map(|l| parse_label("args.cni.labels", &format!("{}={}", l.key, l.value)).ok())
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
        self.runtime_config.dns.clone().or_else(|| self.dns.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODMAN: &str = r#"{
      "cniVersion": "0.4.0", "name": "podman", "type": "knit", "bridge": "cni-podman0",
      "isGateway": true, "ipMasq": true, "hairpinMode": true, "someFutureKey": {"x": 1},
      "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
               "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]},
      "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]}
    }"#;

    #[test]
    fn podman_config() {
        let c = parse(PODMAN.as_bytes()).unwrap();
        let spec = c.network_spec().unwrap();
        assert_eq!(spec.bridge.as_deref(), Some("cni-podman0"));
        assert!(spec.masquerade && spec.bridge_gateway);
        assert_eq!(spec.subnets[0].gateway.to_string(), "10.88.0.1");
        let routes = c.routes(&spec).unwrap();
        assert_eq!(
            routes,
            vec![RouteSpec {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: None
            }]
        );
        assert_eq!(c.publish().unwrap()[0].pairs(), vec![(8080, 80)]);
    }

    #[test]
    fn labels_from_args_convention() {
        let with = |args: &str| {
            let mut v: Value = serde_json::from_str(PODMAN).unwrap();
            v["args"] = serde_json::from_str(args).unwrap();
            parse(v.to_string().as_bytes()).unwrap().labels()
        };
        assert!(
            parse(PODMAN.as_bytes())
                .unwrap()
                .labels()
                .unwrap()
                .is_empty()
        );
        let l = with(
            r#"{"cni": {"labels": [{"key": "app", "value": "web"},
                {"key": "app.kubernetes.io/tier", "value": "db"},
                {"key": "empty", "value": ""}, {"key": "bad key", "value": "x"}]},
                "other": 1}"#,
        )
        .unwrap();
        assert_eq!(
            l.into_iter().collect::<Vec<_>>(),
            [
                ("app".to_string(), "web".to_string()),
                ("app.kubernetes.io/tier".to_string(), "db".to_string())
            ]
        );
        assert!(with(r#"{"cni": {}}"#).unwrap().is_empty());
        let e = with(r#"{"cni": {"labels": {"app": "web"}}}"#).unwrap_err();
        assert!(e.msg.contains("args.cni.labels"), "{}", e.msg);
    }

    #[test]
    fn legacy_flat_ipam_and_ranges() {
        let c = parse(br#"{"cniVersion":"0.3.1","name":"n","type":"knit","isDefaultGateway":true,
            "ipam":{"type":"host-local","subnet":"10.1.0.0/24","rangeStart":"10.1.0.100","rangeEnd":"10.1.0.110"}}"#)
        .unwrap();
        let spec = c.network_spec().unwrap();
        assert_eq!(
            spec.subnets[0].range_start.unwrap().to_string(),
            "10.1.0.100"
        );
        assert_eq!(
            c.routes(&spec).unwrap()[0].gw.unwrap().to_string(),
            "10.1.0.1"
        );
        assert!(
            !spec.masquerade,
            "ipMasq defaults to false, as in the reference plugin"
        );
    }

    #[test]
    fn errors_have_spec_codes() {
        assert_eq!(parse(b"{").unwrap_err().code, DECODE);
        assert_eq!(parse(b"[]").unwrap_err().code, DECODE);
        assert_eq!(
            parse(br#"{"cniVersion":"9.9.9","name":"n","type":"knit"}"#)
                .unwrap_err()
                .code,
            INCOMPATIBLE_VERSION
        );
        let c = parse(br#"{"cniVersion":"1.0.0","name":"n","type":"knit","ipam":{"type":"dhcp"}}"#)
            .unwrap();
        assert_eq!(c.network_spec().unwrap_err().code, UNSUPPORTED_FIELD);
        let c = parse(br#"{"cniVersion":"1.0.0","name":"bad name","type":"knit","ipam":{"subnet":"10.0.0.0/24"}}"#).unwrap();
        assert_eq!(c.network_spec().unwrap_err().code, INVALID_CONFIG);
    }

    #[test]
    fn versions() {
        assert!(version_at_least("1.1.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
        assert!(version_at_least("0.4.0", "0.4.0"));
    }
}

/// Everything the plugin derives from a configuration, as ADD does it (the fuzz entry).
pub fn exercise(data: &[u8]) {
    if let Ok(c) = parse(data)
        && let Ok(spec) = c.network_spec()
    {
        let _ = c.routes(&spec);
        let _ = c.static_ips(&["10.0.0.9".into()]);
        let _ = c.mac(None);
        let _ = c.publish();
        let _ = c.dns();
    }
}

/// Mutation fuzzing of the configuration parser on stable Rust: byte flips, truncations,
/// splices and token insertions over realistic seeds. Every input must give a result or a
/// coded error, never a panic. (`fuzz/` has the same target for cargo-fuzz / libFuzzer.)
#[cfg(test)]
mod fuzz {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const SEEDS: &[&str] = &[
        r#"{"cniVersion":"0.4.0","name":"podman","type":"knit","bridge":"cni-podman0","isGateway":true,"ipMasq":true,"ipam":{"type":"host-local","routes":[{"dst":"0.0.0.0/0"}],"ranges":[[{"subnet":"10.88.0.0/16","gateway":"10.88.0.1"}]]},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""}],"ips":["10.88.0.9/16"],"mac":"02:00:00:00:00:09"}}"#,
        r#"{"cniVersion":"1.1.0","name":"n","type":"knit","isDefaultGateway":true,"ipam":{"subnet":"fd00::/64","rangeStart":"fd00::10","rangeEnd":"fd00::20"},"args":{"cni":{"ips":["fd00::11"]}},"dns":{"nameservers":["10.0.0.1"]}}"#,
        r#"{"cniVersion":"0.3.1","name":"p","type":"knit","driver":"ptp","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd01::/64"}]]}}"#,
    ];
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "null",
        "true",
        "-1",
        "1e999",
        "\"\\u0000\"",
        "0.0.0.0/0",
        "::",
        "/",
        "65536",
        "\"a\"",
        "[[",
        "]]",
    ];

    #[test]
    fn config_parser_survives_mutations() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let iterations = std::env::var("KNIT_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30_000);
        for _ in 0..iterations {
            let mut d = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(d.len() + 1);
                match rng.below(5) {
                    0 if !d.is_empty() => {
                        let i = rng.below(d.len());
                        d[i] = rng.next() as u8;
                    }
                    1 => d.truncate(at),
                    2 => {
                        let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                        d.splice(at..at, t.iter().copied());
                    }
                    3 if !d.is_empty() => {
                        let end = (at + rng.below(16)).min(d.len());
                        d.drain(at.min(end)..end);
                    }
                    _ => {
                        let other = SEEDS[rng.below(SEEDS.len())].as_bytes();
                        let from = rng.below(other.len());
                        let piece = &other[from..(from + rng.below(24)).min(other.len())];
                        d.splice(at..at, piece.iter().copied());
                    }
                }
            }
            exercise(&d);
        }
    }
}
