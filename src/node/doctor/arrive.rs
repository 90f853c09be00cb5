//! doctor's last hops: the destination's link (both ends), its way back to the source and
//! that next hop's neighbour entry, the path MTU, and a listener on the port (every backend
//! of a service).

use super::ends::{Dest, End, Via, proto_name};
use super::hops::{Leg, expected_mac, neighbour_step};
use super::{Report, Walk};
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::node::Node;
use crate::store::Network;
use std::net::IpAddr;

impl Node {
    /// Arriving: the destination's link, its way back, the path MTU, a listener.
    pub(super) fn arrive(
        &self,
        leg: &Leg,
        dst: &Dest,
        nets: &[Network],
        nl: &mut Netlink,
        r: &mut Report,
    ) -> Walk {
        let d = match &dst.end {
            End::Sandbox { att, .. } => att,
            End::Node => {
                if let Some((port, proto)) = dst.final_port {
                    let here = Netns::current()?;
                    if listening(&here, dst.final_ip, port, proto)? == Listen::Yes {
                        r.pass(
                            "listener",
                            format!(
                                "something listens on {port}/{} on the node",
                                proto_name(proto)
                            ),
                        );
                    } else {
                        return Err(r.fail(
                            "listener",
                            format!("nothing listens on {port}/{} on the node: the connection would be refused", proto_name(proto)),
                            "start the service on the node (`ss -lntu` lists listeners), or publish a sandbox's port there (`knit attach NETWORK SANDBOX --publish HOST:CONTAINER`)",
                        ));
                    }
                }
                return Ok(());
            }
            End::Outside => return Ok(()),
        };
        let Ok(dns) = Netns::open(&d.netns_path) else {
            return Err(r.fail(
                "destination",
                format!("{}'s namespace is gone", d.sandbox),
                "knit reconcile",
            ));
        };
        let mut dnl = Netlink::open_in(&dns)?;
        let dst_link = dnl.link_by_name(&d.ifname)?;
        let Some(link) = dst_link.filter(|l| l.up) else {
            return Err(r.fail(
                "destination interface",
                format!("{} in {} is down", d.ifname, d.sandbox),
                format!("ip -n {} link set {} up", d.sandbox, d.ifname),
            ));
        };
        let net = nets.iter().find(|n| n.id == d.network_id);
        match nl.link_by_name(&d.host_ifname)? {
            Some(l) if !l.up => {
                return Err(r.fail(
                    "destination interface",
                    format!(
                        "the node end {} of {}'s {} is down",
                        l.name, d.sandbox, d.ifname
                    ),
                    format!(
                        "ip link set {} up (in the node namespace), or knit reconcile",
                        l.name
                    ),
                ));
            }
            None => {
                return Err(r.fail(
                    "destination interface",
                    format!(
                        "the node end {} of {}'s {} is gone",
                        d.host_ifname, d.sandbox, d.ifname
                    ),
                    "knit reconcile",
                ));
            }
            Some(_) => {
                super::hops::bridge_port_step(r, nl, &d.host_ifname, "destination interface")?;
                r.pass(
                    "destination interface",
                    format!("{} up in {}", d.ifname, d.sandbox),
                )
            }
        }
        // The way back: a translated flow from a knit sandbox comes from the node (hairpin
        // masquerade), anything else from its own address.
        let back = match (&dst.via, &leg.att, leg.src_ip) {
            (Via::Direct, _, Some(s)) => Some(s),
            (_, None, Some(s)) => Some(s),
            _ => None,
        };
        if let Some(back) = back {
            let Some(route) = dnl.route_to(back)? else {
                return Err(r.fail(
                    "return route",
                    format!("{} has no route back to {back}: replies are never sent (Network is unreachable)", d.sandbox),
                    format!("give {} a default route via its gateway: `ip -n {} route add default via GATEWAY`", d.sandbox, d.sandbox),
                ));
            };
            r.pass(
                "return route",
                format!(
                    "{} reaches {back}{}",
                    d.sandbox,
                    route
                        .gateway
                        .map(|g| format!(" via {g}"))
                        .unwrap_or_default()
                ),
            );
            if route.oif == Some(link.index) {
                let nh = route.gateway.unwrap_or(back);
                let want = expected_mac(self, nl, nh, d, net)?;
                neighbour_step(r, &mut dnl, &d.sandbox, &link, nh, want)?;
            }
        }
        // Path MTU: every link on the way takes the source's full-size packets (a smaller
        // one drops them when DF is set, as TCP's always are).
        let mut on_path: Vec<(String, Option<u32>)> = vec![];
        let src_net = leg
            .att
            .as_ref()
            .and_then(|a| nets.iter().find(|n| n.id == a.network_id));
        for name in [
            leg.att.as_ref().map(|a| a.host_ifname.clone()),
            src_net.and_then(|n| n.bridge.clone()),
            Some(d.host_ifname.clone()),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(l) = nl.link_by_name(&name)? {
                on_path.push((format!("{name} (node)"), l.mtu));
            }
        }
        on_path.push((format!("{} in {}", link.name, d.sandbox), link.mtu));
        if let Some((l, mtu)) = on_path
            .iter()
            .filter_map(|(n, m)| m.map(|m| (n, m)))
            .find(|(_, m)| *m < leg.mtu)
        {
            let src_mtu = leg.mtu;
            return Err(r.fail(
                "path MTU",
                format!("{l} has MTU {mtu}, smaller than {}'s {src_mtu}: full-size packets with DF set (all TCP) are dropped", leg.name),
                format!("give {l} MTU {src_mtu} again (`ip link set ... mtu {src_mtu}`), or lower it for the whole network with `knit network create --mtu`"),
            ));
        }
        r.pass("path MTU", format!("{} all the way", leg.mtu));
        let Some((_, proto)) = dst.final_port else {
            return Ok(());
        };
        let targets: Vec<(String, String, IpAddr, u16)> = if dst.backends.is_empty() {
            vec![(
                d.sandbox.clone(),
                d.netns_path.clone(),
                dst.final_ip,
                dst.final_port.map_or(0, |p| p.0),
            )]
        } else {
            dst.backends
                .iter()
                .filter_map(|(a, ip, p)| {
                    a.as_ref()
                        .map(|a| (a.sandbox.clone(), a.netns_path.clone(), *ip, *p))
                })
                .collect()
        };
        let p = proto_name(proto);
        let mut missing = vec![];
        for (name, path, ip, port) in &targets {
            let ns = Netns::open(path)?;
            match listening(&ns, *ip, *port, proto)? {
                Listen::Yes => {}
                Listen::No => missing.push(format!("{port}/{p} in {name}")),
                Listen::OnlyOn(addrs) => {
                    let on: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                    missing.push(format!(
                        "{port}/{p} in {name} for {ip} (it is bound to {} only)",
                        on.join(", ")
                    ));
                }
            }
        }
        if let Some(first) = missing.first() {
            let what = match &dst.via {
                Via::Published(m) => format!(" (published as {}/{p} on the node)", m.host_port),
                Via::Service(s) => format!(" (a backend of service {})", s.name),
                Via::Direct => String::new(),
            };
            let sandbox = targets[0].0.clone();
            return Err(r.fail(
                "listener",
                format!("nothing listens on {}{what}: the connection would be refused", missing.join(", ")),
                format!("start the service there (`knit sandbox exec {sandbox} -- ss -lntu` lists listeners); first: {first}"),
            ));
        }
        r.pass(
            "listener",
            format!(
                "something listens on {}",
                targets
                    .iter()
                    .map(|(n, _, _, port)| format!("{port}/{p} in {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        Ok(())
    }
}

/// What listens on a port, as seen from a client of `ip`.
#[derive(Debug, PartialEq, Eq)]
pub enum Listen {
    /// Bound to `ip` or to every address.
    Yes,
    /// Bound only to other addresses (e.g. 127.0.0.1): connections to `ip` are refused.
    OnlyOn(Vec<IpAddr>),
    No,
}

/// The address in a `/proc/net/{tcp,udp}{,6}` column (`0100007F:0050`): hex, each 32-bit
/// word in the kernel's (little-endian) byte order.
fn proc_addr(hex: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = hex.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let words: Option<Vec<u32>> = (0..a.len() / 8)
        .map(|i| u32::from_str_radix(a.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_le_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    Some((ip, port))
}

/// Whether something in `ns` listens on `port` for clients of `ip` (`/proc/net/tcp*` or
/// `udp*`; TCP in state LISTEN, UDP bound).
pub fn listening(ns: &Netns, ip: IpAddr, port: u16, proto: u8) -> crate::error::Result<Listen> {
    let bound: Vec<IpAddr> = ns.run(move || {
        let files: &[&str] = if proto == 17 {
            &["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
        } else {
            &["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        };
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .filter_map(|l| {
                        let cols: Vec<&str> = l.split_whitespace().collect();
                        let (addr, local_port) = proc_addr(cols.get(1)?)?;
                        // TCP: state 0A is LISTEN; UDP sockets are bound (state 07).
                        let state_ok = proto == 17 || cols.get(3) == Some(&"0A");
                        (local_port == port && state_ok).then_some(addr)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    })?;
    let mapped = |a: &IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*a),
        _ => *a,
    };
    Ok(if bound.is_empty() {
        Listen::No
    } else if bound.iter().any(|a| a.is_unspecified() || mapped(a) == ip) {
        Listen::Yes
    } else {
        Listen::OnlyOn(bound)
    })
}

#[cfg(test)]
mod tests {
    use super::proc_addr;

    #[test]
    fn proc_net_addresses_decode() {
        assert_eq!(
            proc_addr("0100007F:0050"),
            Some(("127.0.0.1".parse().unwrap(), 80))
        );
        assert_eq!(
            proc_addr("00000000000000000000000000000000:1F90"),
            Some(("::".parse().unwrap(), 8080))
        );
        assert_eq!(
            proc_addr("B80D0120000000000000000001000000:0035"),
            Some(("2001:db8::1".parse().unwrap(), 53))
        );
    }
}
