//! What doctor reads of bridges: whether a bridge hands bridged frames to the IP netfilter
//! hooks, and the forwarding state of a bridge port.

use super::Netlink;
use crate::error::{IoContext, Result};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoPortData, LinkAttribute, LinkInfo, LinkMessage,
};

impl Netlink {
    /// The link-info entries of link `name` (kind data, port data).
    fn link_infos(&mut self, name: &str) -> Result<Vec<LinkInfo>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self
            .exchange_public(RouteNetlinkMessage::GetLink(msg))
            .op(|| format!("look up link {name}"))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .flat_map(|l| l.attributes)
            .filter_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => Some(infos),
                _ => None,
            })
            .flatten()
            .collect())
    }

    /// Whether bridge `name` hands bridged IPv4 and IPv6 frames to the IP netfilter hooks
    /// (its own nf_call_iptables / ip6tables; br_netfilter's sysctls are read by callers).
    pub fn bridge_nf_call(&mut self, name: &str) -> Result<(bool, bool)> {
        let (mut v4, mut v6) = (false, false);
        for i in self.link_infos(name)? {
            if let LinkInfo::Data(InfoData::Bridge(opts)) = i {
                for o in opts {
                    match o {
                        InfoBridge::NfCallIpTables(on) => v4 = on,
                        InfoBridge::NfCallIp6Tables(on) => v6 = on,
                        _ => {}
                    }
                }
            }
        }
        Ok((v4, v6))
    }

    /// The STP state of bridge port `name` (`forwarding`, `disabled`, `blocking`, ...);
    /// None when it is not a bridge port.
    pub fn bridge_port_state(&mut self, name: &str) -> Result<Option<String>> {
        for i in self.link_infos(name)? {
            if let LinkInfo::PortData(InfoPortData::BridgePort(opts)) = i {
                for o in opts {
                    if let InfoBridgePort::State(s) = o {
                        return Ok(Some(s.to_string()));
                    }
                }
            }
        }
        Ok(None)
    }
}
