//! The ADD result, rendered in the shape of the version the configuration asked for.

use crate::store::{Attachment, Network};
use serde_json::{Value, json};

/// The result in the current (1.1) shape; `render` converts it.
pub fn build(net: &Network, att: &Attachment, dns: Option<Value>) -> Value {
    let mut interfaces = vec![];
    if let Some(br) = &net.bridge {
        interfaces.push(json!({"name": br, "mac": net.bridge_mac.to_string()}));
    }
    interfaces.push(json!({"name": att.host_ifname, "mac": att.host_mac}));
    let mut container = json!({"name": att.ifname, "mac": att.mac, "sandbox": att.netns_path});
    if let Some(m) = net.mtu {
        container["mtu"] = json!(m);
    }
    interfaces.push(container);
    let cidx = interfaces.len() - 1;
    let driver = crate::driver::for_network(net);
    let gw_for = |v4: bool| driver.result_gateway(net, v4);
    let ips: Vec<Value> = att
        .ips
        .iter()
        .map(|ip| {
            let mut v = json!({"address": ip.to_string(), "interface": cidx});
            if let Some(gw) = gw_for(ip.addr().is_ipv4()) {
                v["gateway"] = json!(gw.to_string());
            }
            v
        })
        .collect();
    let routes: Vec<Value> = driver
        .result_routes(net, att)
        .iter()
        .map(|r| match r.gw {
            Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
            None => json!({"dst": r.dst.to_string()}),
        })
        .collect();
    let mut r =
        json!({"cniVersion": "1.1.0", "interfaces": interfaces, "ips": ips, "routes": routes});
    if let Some(d) = dns.filter(|d| d.as_object().is_some_and(|o| !o.is_empty())) {
        r["dns"] = d;
    }
    r
}

fn family(ip: &Value) -> &'static str {
    if ip["address"].as_str().is_some_and(|a| a.contains(':')) {
        "6"
    } else {
        "4"
    }
}

/// Converts a 1.1-shaped result to `version`.
pub fn render(result: &Value, version: &str) -> Value {
    let mut r = result.clone();
    r["cniVersion"] = json!(version);
    match version {
        "1.1.0" | "1.0.0" => {
            if version == "1.0.0"
                && let Some(ifs) = r["interfaces"].as_array_mut()
            {
                for i in ifs {
                    if let Some(o) = i.as_object_mut() {
                        o.remove("mtu");
                    }
                }
            }
            r
        }
        "0.3.0" | "0.3.1" | "0.4.0" => {
            if let Some(ips) = r["ips"].as_array_mut() {
                for ip in ips {
                    ip["version"] = json!(family(ip));
                }
            }
            if let Some(ifs) = r["interfaces"].as_array_mut() {
                for i in ifs {
                    if let Some(o) = i.as_object_mut() {
                        o.remove("mtu");
                    }
                }
            }
            r
        }
        _ => {
            // 0.1.0 / 0.2.0: one ip4 and one ip6 object, routes split by family.
            let mut out = json!({"cniVersion": version});
            for fam in ["4", "6"] {
                let Some(ip) = result["ips"]
                    .as_array()
                    .and_then(|a| a.iter().find(|i| family(i) == fam))
                else {
                    continue;
                };
                let routes: Vec<Value> = result["routes"]
                    .as_array()
                    .map(|rs| {
                        rs.iter()
                            .filter(|r| {
                                r["dst"]
                                    .as_str()
                                    .is_some_and(|d| d.contains(':') == (fam == "6"))
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let mut o = json!({"ip": ip["address"], "routes": routes});
                if !ip["gateway"].is_null() {
                    o["gateway"] = ip["gateway"].clone();
                }
                out[format!("ip{fam}")] = o;
            }
            if !result["dns"].is_null() {
                out["dns"] = result["dns"].clone();
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({"cniVersion": "1.1.0",
            "interfaces": [{"name": "cni0", "mac": "02:00:00:00:00:01"}, {"name": "kv1", "mac": "02:00:00:00:00:02"},
                           {"name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/x", "mtu": 1400}],
            "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 2},
                    {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0", "gw": "fd00::1"}]})
    }

    #[test]
    fn shapes_per_version() {
        let v04 = render(&sample(), "0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert!(v04["interfaces"][2].get("mtu").is_none());
        let v10 = render(&sample(), "1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        let v11 = render(&sample(), "1.1.0");
        assert_eq!(v11["interfaces"][2]["mtu"], 1400);
        let v02 = render(&sample(), "0.2.0");
        assert_eq!(v02["ip4"]["ip"], "10.0.0.2/24");
        assert_eq!(v02["ip6"]["gateway"], "fd00::1");
        assert_eq!(v02["ip4"]["routes"].as_array().unwrap().len(), 1);
        assert!(v02.get("interfaces").is_none());
    }
}
