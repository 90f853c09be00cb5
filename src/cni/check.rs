//! CHECK: compare what the kernel has with what knit built for this attachment (and with
//! the runtime's prevResult); report every difference.

use super::conf::NetConf;
use super::env::Env;
use super::error::*;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::nft::port_element;
use crate::node::Node;
use netlink_packet_route::AddressFamily;
use std::path::Path;

pub fn check(env: &Env, conf: &NetConf, state_dir: &Path) -> Result<String, CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(INVALID_CONFIG, "CHECK needs prevResult"))?;
    let node = Node::open(state_dir, false)?;
    let net = node.store.find_network(&conf.name)?.ok_or_else(|| {
        CniError::new(
            UNKNOWN_CONTAINER,
            format!("network {:?} is unknown to knit", conf.name),
        )
    })?;
    let att = node
        .store
        .attachment(net.id, &env.sandbox_key())?
        .ok_or_else(|| {
            CniError::new(
                UNKNOWN_CONTAINER,
                format!(
                    "container {} has no attachment {} on {:?}",
                    env.container_id, env.ifname, conf.name
                ),
            )
        })?;
    let mut drift: Vec<String> = vec![];

    // The runtime's view must match ours.
    let prev_ips: Vec<String> = prev["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for ip in &att.ips {
        if !prev_ips.contains(&ip.to_string()) {
            drift.push(format!("prevResult lacks address {ip}"));
        }
    }

    // Node side: host veth (up, on the bridge) and the bridge.
    let mut nl = Netlink::open()?;
    match nl.link_by_name(&att.host_ifname)? {
        None => drift.push(format!("host interface {} is missing", att.host_ifname)),
        Some(l) if !l.up => drift.push(format!("host interface {} is down", att.host_ifname)),
        Some(l) => {
            if let Some(br) = &net.bridge {
                let br_index = nl.link_index(br)?;
                if br_index.is_none() {
                    drift.push(format!("bridge {br} is missing"));
                } else if l.controller != br_index {
                    drift.push(format!(
                        "{} is not attached to bridge {br}",
                        att.host_ifname
                    ));
                }
            }
        }
    }

    // Sandbox side: interface, MAC, addresses, routes.
    match Netns::open(&env.netns) {
        Err(_) => drift.push(format!("namespace {} is gone", env.netns)),
        Ok(ns) => {
            let ifname = att.ifname.clone();
            let (links, addrs, routes) = ns.run(move || -> crate::error::Result<_> {
                let mut nl = Netlink::open()?;
                let link = nl.link_by_name(&ifname)?;
                let addrs = nl.addresses()?;
                let mut routes = nl.routes(AddressFamily::Inet)?;
                routes.extend(nl.routes(AddressFamily::Inet6)?);
                Ok((link, addrs, routes))
            })??;
            match links {
                None => drift.push(format!(
                    "interface {} is missing in the sandbox",
                    att.ifname
                )),
                Some(l) => {
                    if l.mac.as_deref() != Some(att.mac.as_str()) {
                        drift.push(format!(
                            "interface {} has MAC {}, expected {}",
                            att.ifname,
                            l.mac.as_deref().unwrap_or("(none)"),
                            att.mac
                        ));
                    }
                    for ip in &att.ips {
                        if !addrs
                            .iter()
                            .any(|(i, a)| *i == l.index && a.addr() == ip.addr())
                        {
                            drift.push(format!(
                                "address {} is missing on {}",
                                ip.addr(),
                                att.ifname
                            ));
                        }
                    }
                    let driver = crate::driver::for_network(&net);
                    if driver.checks_routes() {
                        for r in driver.result_routes(&net, &att) {
                            // The sandbox's first network keeps the default route: any
                            // default of the family will do.
                            let default = r.dst.prefix_len() == 0;
                            if !routes.iter().any(|k| {
                                (k.dst == r.dst && k.gateway == r.gw)
                                    || (default
                                        && k.dst.prefix_len() == 0
                                        && k.dst.addr().is_ipv4() == r.dst.addr().is_ipv4())
                            }) {
                                drift.push(format!("route {} is missing", route_text(&r)));
                            }
                        }
                    }
                }
            }
        }
    }

    // Firewall: knit's whole table (all networks) is verified and, if a firewall reload
    // or a flush damaged it, rewritten from the store; then this attachment's ports.
    {
        let _k = node.kernel_lock()?;
        node.ensure_table_intact()?;
    }
    if !att.ports.is_empty() {
        let mut session = crate::nft::libnft::Session::new()?;
        for p in &att.ports {
            let (map, elem) = port_element(p);
            let key = elem.key_text();
            if session
                .run(&format!(
                    "get element inet {} {map} {{ {key} }}",
                    crate::nft::TABLE
                ))
                .is_err()
            {
                drift.push(format!(
                    "published port {}/{} is missing from the firewall",
                    p.host_port, p.proto
                ));
            }
        }
    }

    if drift.is_empty() {
        Ok(String::new())
    } else {
        Err(CniError::new(
            DRIFT,
            format!(
                "attachment of {} differs from what knit built",
                env.container_id
            ),
        )
        .details(drift.join("; ")))
    }
}

/// `0.0.0.0/0 via 10.88.0.1`, or `10.0.0.0/8 (no gateway)`: what a person reads.
fn route_text(r: &crate::model::RouteSpec) -> String {
    match r.gw {
        Some(gw) => format!("{} via {gw}", r.dst),
        None => format!("{} (no gateway)", r.dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_as_text() {
        let r = crate::model::RouteSpec {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("10.88.0.1".parse().unwrap()),
        };
        assert_eq!(route_text(&r), "0.0.0.0/0 via 10.88.0.1");
        let r = crate::model::RouteSpec {
            dst: "10.0.0.0/8".parse().unwrap(),
            gw: None,
        };
        assert_eq!(route_text(&r), "10.0.0.0/8 (no gateway)");
    }
}
