//! The names knit serves, as a pure snapshot built from the store: who is served at all
//! (`admit`), who may see what (scoping by the client's networks), forward and reverse
//! lookups. No I/O here.

use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// One DNS-enabled network as the server needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetView {
    pub id: i64,
    pub gateways: Vec<IpAddr>,
    pub domain: Option<String>,
    pub internal: bool,
    /// The network's subnets: reverse names under them are knit's, never forwarded.
    pub subnets: Vec<IpNet>,
    /// Interface index of the network's bridge in the node (0: not found). Queries to this
    /// network's gateways are served only when they arrive on it.
    pub bridge_ifindex: u32,
}

/// One attachment: the names it answers to and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The sandbox (store key): a client sees every network its sandbox is attached to.
    pub sandbox: String,
    pub network_id: i64,
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Default, Clone)]
pub struct Records {
    pub networks: Vec<NetView>,
    /// (network, lowercase fqdn-less name) → addresses.
    by_name: HashMap<(i64, String), Vec<IpAddr>>,
    /// (network, address) → primary name.
    by_ip: HashMap<(i64, IpAddr), String>,
    /// address → networks an attachment with that address is on (client scoping).
    client_nets: HashMap<IpAddr, Vec<i64>>,
    /// (network, address) of every attachment: the clients a network's listeners serve.
    members: HashSet<(i64, IpAddr)>,
    /// Subnets of every knit network (DNS or not): their reverse names stay on the node.
    subnets: Vec<IpNet>,
    /// Unique per snapshot built in this process: caches derived from a snapshot compare
    /// it instead of holding the snapshot alive.
    pub generation: u64,
}

static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Whether a query is served at all (`Records::admit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    /// It did not arrive on the bridge of the network whose gateway it was sent to (a host
    /// on the node's uplink, the node itself, or a spoofed source).
    WrongLink,
    /// Its source is not an address attached to that network.
    NotAttached,
}

/// What a local lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name is ours: these addresses of the requested family (maybe none: NODATA).
    Addrs(Vec<IpAddr>),
    /// A reverse name of ours.
    Ptr(String),
    /// A name under a knit domain that does not exist (NXDOMAIN without forwarding).
    NxDomain,
    /// Not a knit name: forward.
    NotOurs,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Records {
    pub fn build(networks: Vec<NetView>, hosts: Vec<Host>) -> Records {
        let subnets = networks.iter().flat_map(|n| n.subnets.clone()).collect();
        let mut r = Records {
            networks,
            subnets,
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..Default::default()
        };
        let mut sandbox_nets: HashMap<&str, Vec<i64>> = HashMap::new();
        for h in &hosts {
            let nets = sandbox_nets.entry(h.sandbox.as_str()).or_default();
            if !nets.contains(&h.network_id) {
                nets.push(h.network_id);
            }
        }
        for h in &hosts {
            for ip in &h.ips {
                r.client_nets
                    .insert(*ip, sandbox_nets[h.sandbox.as_str()].clone());
                r.members.insert((h.network_id, *ip));
            }
        }
        for h in hosts {
            if !r.networks.iter().any(|n| n.id == h.network_id) {
                continue;
            }
            for ip in &h.ips {
                if let Some(first) = h.names.first() {
                    r.by_ip
                        .entry((h.network_id, *ip))
                        .or_insert_with(|| normalize(first));
                }
            }
            for n in &h.names {
                let e = r.by_name.entry((h.network_id, normalize(n))).or_default();
                for ip in &h.ips {
                    if !e.contains(ip) {
                        e.push(*ip);
                    }
                }
            }
        }
        r
    }

    /// Subnets of knit networks that do not serve DNS: their reverse names are kept off the
    /// upstream resolvers too.
    pub fn with_subnets(mut self, more: impl IntoIterator<Item = IpNet>) -> Records {
        self.subnets.extend(more);
        self
    }

    /// Whether a query sent to a gateway of network `net_id` is served: it must come from
    /// an address attached to that network and, when the ingress interface is known
    /// (`ingress`: UDP, from IP_PKTINFO; 0 if the kernel did not say), arrive on that
    /// network's bridge. TCP passes None: a completed handshake already shows the peer is
    /// reachable at its address, which routes to the bridge.
    pub fn admit(&self, net_id: i64, client: IpAddr, ingress: Option<u32>) -> Verdict {
        let Some(net) = self.network(net_id) else {
            return Verdict::NotAttached;
        };
        if let Some(i) = ingress
            && (i == 0 || i != net.bridge_ifindex)
        {
            return Verdict::WrongLink;
        }
        if self.members.contains(&(net_id, client)) {
            Verdict::Serve
        } else {
            Verdict::NotAttached
        }
    }

    /// Networks visible to a client: those it is attached to. A client that is not a knit
    /// sandbox (the node, a stranger) sees the network whose gateway it asked.
    pub fn scope(&self, client: IpAddr, asked_network: i64) -> Vec<i64> {
        match self.client_nets.get(&client) {
            Some(nets) => nets.clone(),
            None => vec![asked_network],
        }
    }

    pub fn network(&self, id: i64) -> Option<&NetView> {
        self.networks.iter().find(|n| n.id == id)
    }

    /// Strips a network's domain (`web.mynet.knit` → `web` on that network).
    fn candidates(&self, qname: &str, scope: &[i64]) -> Vec<(i64, String)> {
        let q = normalize(qname);
        let mut out = vec![];
        for id in scope {
            out.push((*id, q.clone()));
            if let Some(d) = self.network(*id).and_then(|n| n.domain.as_deref()) {
                let suffix = format!(".{}", normalize(d));
                if let Some(short) = q.strip_suffix(&suffix) {
                    out.push((*id, short.to_string()));
                }
            }
        }
        out
    }

    fn under_our_domain(&self, qname: &str, scope: &[i64]) -> bool {
        let q = normalize(qname);
        scope
            .iter()
            .filter_map(|id| self.network(*id)?.domain.as_deref())
            .any(|d| {
                let d = normalize(d);
                q == d || q.ends_with(&format!(".{d}"))
            })
    }

    /// A/AAAA (`want_v4`) for `qname` as seen by a client scoped to `scope`.
    pub fn lookup(&self, qname: &str, want_v4: bool, scope: &[i64]) -> Answer {
        let mut found = false;
        let mut addrs = vec![];
        for key in self.candidates(qname, scope) {
            if let Some(ips) = self.by_name.get(&key) {
                found = true;
                for ip in ips.iter().filter(|ip| ip.is_ipv4() == want_v4) {
                    if !addrs.contains(ip) {
                        addrs.push(*ip);
                    }
                }
            }
        }
        let all: Vec<i64> = self.networks.iter().map(|n| n.id).collect();
        if found {
            Answer::Addrs(addrs)
        } else if self.under_our_domain(qname, scope)
            || self
                .candidates(qname, &all)
                .iter()
                .any(|k| self.by_name.contains_key(k))
        {
            // A knit name, but not visible from here: authoritative NXDOMAIN, never
            // forwarded (upstream must not learn or answer for sandbox names).
            Answer::NxDomain
        } else {
            Answer::NotOurs
        }
    }

    /// PTR for an address of a sandbox on the client's networks. Addresses of knit
    /// networks the client cannot see (or that nobody holds) are NXDOMAIN, never forwarded.
    pub fn reverse(&self, ip: IpAddr, scope: &[i64]) -> Answer {
        for id in scope {
            if let Some(n) = self.by_ip.get(&(*id, ip)) {
                let domain = self.network(*id).and_then(|n| n.domain.clone());
                return Answer::Ptr(match domain {
                    Some(d) => format!("{n}.{}", normalize(&d)),
                    None => n.clone(),
                });
            }
        }
        if self.subnets.iter().any(|s| s.contains(&ip)) || self.client_nets.contains_key(&ip) {
            Answer::NxDomain
        } else {
            Answer::NotOurs
        }
    }

    /// A reverse name (`parse_arpa_name`): a whole address is `reverse`; a shorter prefix
    /// inside a knit subnet exists with no data (NODATA, not NXDOMAIN, since names below
    /// it may exist); anything else is not knit's.
    pub fn reverse_name(&self, net: IpNet, scope: &[i64]) -> Answer {
        if net.prefix_len() == net.max_prefix_len() {
            return self.reverse(net.addr(), scope);
        }
        if self.subnets.iter().any(|s| s.contains(&net)) {
            Answer::Addrs(vec![])
        } else {
            Answer::NotOurs
        }
    }

    /// Gateway address → network id, for the listeners.
    pub fn listen_addrs(&self) -> BTreeMap<IpAddr, i64> {
        self.networks
            .iter()
            .flat_map(|n| n.gateways.iter().map(move |g| (*g, n.id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sample() -> Records {
        sample_with(0, 0)
    }

    /// The sample, with networks 1 and 2 on bridges `if1` and `if2`.
    fn sample_with(if1: u32, if2: u32) -> Records {
        Records::build(
            vec![
                NetView {
                    id: 1,
                    gateways: vec![ip("10.0.1.1")],
                    domain: Some("web.knit".into()),
                    internal: false,
                    subnets: vec!["10.0.1.0/24".parse().unwrap(), "fd01::/64".parse().unwrap()],
                    bridge_ifindex: if1,
                },
                NetView {
                    id: 2,
                    gateways: vec![ip("10.0.2.1")],
                    domain: None,
                    internal: true,
                    subnets: vec!["10.0.2.0/24".parse().unwrap()],
                    bridge_ifindex: if2,
                },
            ],
            vec![
                Host {
                    sandbox: "front".into(),
                    network_id: 1,
                    names: vec!["Front".into(), "www".into()],
                    ips: vec![ip("10.0.1.2"), ip("fd01::2")],
                },
                Host {
                    sandbox: "api".into(),
                    network_id: 1,
                    names: vec!["api".into()],
                    ips: vec![ip("10.0.1.3")],
                },
                Host {
                    sandbox: "api".into(),
                    network_id: 2,
                    names: vec!["api".into()],
                    ips: vec![ip("10.0.2.3")],
                },
                Host {
                    sandbox: "pg".into(),
                    network_id: 2,
                    names: vec!["pg".into()],
                    ips: vec![ip("10.0.2.4")],
                },
            ],
        )
    }

    #[test]
    fn names_aliases_domains_and_families() {
        let r = sample();
        let web = r.scope(ip("10.0.1.2"), 1);
        assert_eq!(web, vec![1]);
        assert_eq!(
            r.lookup("front", true, &web),
            Answer::Addrs(vec![ip("10.0.1.2")])
        );
        assert_eq!(
            r.lookup("WWW.", true, &web),
            Answer::Addrs(vec![ip("10.0.1.2")])
        );
        assert_eq!(
            r.lookup("front.web.knit", false, &web),
            Answer::Addrs(vec![ip("fd01::2")])
        );
        assert_eq!(
            r.lookup("api", false, &web),
            Answer::Addrs(vec![]),
            "exists, no AAAA"
        );
        assert_eq!(
            r.lookup("api", true, &web),
            Answer::Addrs(vec![ip("10.0.1.3")]),
            "only on web's network"
        );
        assert_eq!(r.lookup("nobody.web.knit", true, &web), Answer::NxDomain);
        assert_eq!(r.lookup("example.com", true, &web), Answer::NotOurs);
        assert_eq!(
            r.reverse(ip("10.0.1.2"), &web),
            Answer::Ptr("front.web.knit".into())
        );
    }

    #[test]
    fn scoping_by_client_networks() {
        let r = sample();
        // api is on both networks: from either of its addresses it sees both networks.
        let both = r.scope(ip("10.0.1.3"), 1);
        assert_eq!(both, vec![1, 2]);
        assert_eq!(
            r.lookup("pg", true, &both),
            Answer::Addrs(vec![ip("10.0.2.4")])
        );
        assert_eq!(
            r.lookup("api", true, &both),
            Answer::Addrs(vec![ip("10.0.1.3"), ip("10.0.2.3")])
        );
        // A web-only client cannot see pg, nor reverse-resolve it (and the PTR query is
        // not forwarded either).
        let web = r.scope(ip("10.0.1.2"), 1);
        assert_eq!(r.lookup("pg", true, &web), Answer::NxDomain);
        assert_eq!(r.reverse(ip("10.0.2.4"), &web), Answer::NxDomain);
        // An unknown client asking the db gateway sees the db network.
        assert_eq!(r.scope(ip("192.0.2.9"), 2), vec![2]);
    }

    fn guarded() -> Records {
        sample_with(7, 9)
    }

    #[test]
    fn only_attached_clients_on_the_networks_own_bridge_are_served() {
        let r = guarded();
        // A sandbox of network 1, on network 1's bridge.
        assert_eq!(r.admit(1, ip("10.0.1.2"), Some(7)), Verdict::Serve);
        assert_eq!(r.admit(1, ip("fd01::2"), Some(7)), Verdict::Serve);
        // The same source arriving on another link (the uplink: a spoofing LAN host).
        assert_eq!(r.admit(1, ip("10.0.1.2"), Some(3)), Verdict::WrongLink);
        // Or on the bridge of another knit network.
        assert_eq!(r.admit(1, ip("10.0.1.2"), Some(9)), Verdict::WrongLink);
        // The kernel did not say where it came from: not served.
        assert_eq!(r.admit(1, ip("10.0.1.2"), Some(0)), Verdict::WrongLink);
        // A LAN host, the node itself (its gateway address), an unassigned subnet address.
        assert_eq!(r.admit(1, ip("198.51.100.2"), Some(3)), Verdict::WrongLink);
        assert_eq!(r.admit(1, ip("198.51.100.2"), None), Verdict::NotAttached);
        assert_eq!(r.admit(1, ip("10.0.1.1"), None), Verdict::NotAttached);
        assert_eq!(r.admit(1, ip("10.0.1.99"), Some(7)), Verdict::NotAttached);
        // A sandbox of network 2 only (pg) asking network 1's gateway, even on its bridge.
        assert_eq!(r.admit(1, ip("10.0.2.4"), Some(7)), Verdict::NotAttached);
        assert_eq!(r.admit(2, ip("10.0.2.4"), Some(9)), Verdict::Serve);
        // api is on both: served by each network with that network's address.
        assert_eq!(r.admit(1, ip("10.0.1.3"), Some(7)), Verdict::Serve);
        assert_eq!(r.admit(2, ip("10.0.2.3"), Some(9)), Verdict::Serve);
        assert_eq!(r.admit(2, ip("10.0.1.3"), Some(9)), Verdict::NotAttached);
        // A network without a bridge found (ifindex 0) serves nobody over UDP.
        let mut r = r;
        r.networks[0].bridge_ifindex = 0;
        assert_eq!(r.admit(1, ip("10.0.1.2"), Some(0)), Verdict::WrongLink);
        // An unknown network id.
        assert_eq!(r.admit(5, ip("10.0.1.2"), None), Verdict::NotAttached);
    }

    #[test]
    fn reverse_names_of_knit_subnets_never_leave_the_node() {
        let r = guarded().with_subnets(["10.0.3.0/24".parse().unwrap()]);
        let web = r.scope(ip("10.0.1.2"), 1);
        let arpa = |s: &str| -> IpNet { s.parse().unwrap() };
        assert_eq!(
            r.reverse_name(arpa("10.0.1.2/32"), &web),
            Answer::Ptr("front.web.knit".into())
        );
        // Another network's sandbox, an unassigned address, a gateway, a non-DNS network.
        for a in [
            "10.0.2.4/32",
            "10.0.1.77/32",
            "10.0.2.1/32",
            "10.0.3.5/32",
            "fd01::99/128",
        ] {
            assert_eq!(r.reverse_name(arpa(a), &web), Answer::NxDomain, "{a}");
        }
        // A prefix inside a knit subnet exists without data; wider prefixes and other
        // addresses are not knit's.
        assert_eq!(
            r.reverse_name(arpa("10.0.2.0/24"), &web),
            Answer::Addrs(vec![])
        );
        assert_eq!(r.reverse_name(arpa("10.0.0.0/16"), &web), Answer::NotOurs);
        assert_eq!(
            r.reverse_name(arpa("203.0.113.7/32"), &web),
            Answer::NotOurs
        );
    }
}
