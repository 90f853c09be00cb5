//! Pure address arithmetic and the allocation walk. The store supplies "is this taken?";
//! this module decides which address comes next, so it can be tested without a database.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(net: &IpNet, v: u128) -> IpAddr {
    match net {
        // Truncation is intended: v4 values never exceed u32 because they stay inside the subnet.
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The address `n` positions after the network address.
pub fn offset(net: &IpNet, n: u128) -> IpAddr {
    from_u128(net, to_u128(net.network()) + n)
}

/// The pool of host addresses a subnet hands out: everything except the network address
/// and, for IPv4, the broadcast address.
#[derive(Debug, Clone)]
pub struct Pool {
    net: IpNet,
    first: u128,
    last: u128,
}

impl Pool {
    pub fn new(net: IpNet) -> Self {
        let base = to_u128(net.network());
        let last = match net {
            IpNet::V4(_) => to_u128(net.broadcast()) - 1,
            IpNet::V6(_) => to_u128(net.broadcast()),
        };
        Pool {
            net,
            first: base + 1,
            last,
        }
    }

    /// A pool limited to `[start, end]` (host-local's rangeStart / rangeEnd), clamped to the
    /// subnet's host addresses.
    pub fn with_range(net: IpNet, start: Option<IpAddr>, end: Option<IpAddr>) -> Self {
        let mut p = Pool::new(net);
        if let Some(s) = start.filter(|s| net.contains(s)) {
            p.first = p.first.max(to_u128(s));
        }
        if let Some(e) = end.filter(|e| net.contains(e)) {
            p.last = p.last.min(to_u128(e));
        }
        p
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let v = to_u128(ip);
        self.net.contains(&ip) && v >= self.first && v <= self.last
    }

    pub fn size(&self) -> u128 {
        self.last - self.first + 1
    }

    /// Next free address after `cursor` (round-robin: addresses released recently are
    /// reused last), skipping `reserved` (the gateway). `taken` answers for one address;
    /// `taken_count` bounds the walk: among `taken_count + 2` consecutive candidates at
    /// least one is free, so the walk never scans a whole /64.
    pub fn next_free(
        &self,
        cursor: Option<IpAddr>,
        reserved: &[IpAddr],
        taken_count: u128,
        mut taken: impl FnMut(IpAddr) -> bool,
    ) -> Option<IpAddr> {
        let start = match cursor.map(to_u128) {
            Some(c) if c >= self.first && c < self.last => c + 1,
            _ => self.first,
        };
        let budget = self.size().min(taken_count + reserved.len() as u128 + 1);
        let mut v = start;
        for _ in 0..budget {
            let ip = from_u128(&self.net, v);
            if !reserved.contains(&ip) && !taken(ip) {
                return Some(ip);
            }
            v = if v == self.last { self.first } else { v + 1 };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_free_skips_gateway_and_wraps() {
        let pool = Pool::new("10.0.0.0/29".parse().unwrap());
        assert_eq!(pool.size(), 6);
        let gw = [ip("10.0.0.1")];
        let mut taken = HashSet::new();
        let mut cursor = None;
        let mut got = vec![];
        while let Some(a) = pool.next_free(cursor, &gw, taken.len() as u128, |x| taken.contains(&x))
        {
            taken.insert(a);
            cursor = Some(a);
            got.push(a.to_string());
        }
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        // Release .3; the walk continues after the cursor (.6), wraps and finds .3.
        taken.remove(&ip("10.0.0.3"));
        assert_eq!(
            pool.next_free(cursor, &gw, taken.len() as u128, |x| taken.contains(&x)),
            Some(ip("10.0.0.3"))
        );
    }

    #[test]
    fn round_robin_reuses_released_last() {
        let pool = Pool::new("10.0.0.0/24".parse().unwrap());
        let gw = [ip("10.0.0.1")];
        let taken: HashSet<IpAddr> = [ip("10.0.0.2")].into();
        // .3 was just released; the cursor sits on it, so .4 comes next, not .3.
        let next = pool.next_free(Some(ip("10.0.0.3")), &gw, 1, |x| taken.contains(&x));
        assert_eq!(next, Some(ip("10.0.0.4")));
    }

    #[test]
    fn ipv6_walk_is_bounded() {
        let pool = Pool::new("fd00::/64".parse().unwrap());
        let gw = [ip("fd00::1")];
        let mut calls = 0;
        let got = pool.next_free(None, &gw, 0, |_| {
            calls += 1;
            false
        });
        assert_eq!(got, Some(ip("fd00::2")));
        assert_eq!(calls, 1);
        // Everything "taken": the walk stops after taken_count + reserved + 1 probes.
        let mut calls = 0;
        let none = pool.next_free(None, &gw, 10, |_| {
            calls += 1;
            true
        });
        assert_eq!(none, None);
        assert!(calls <= 12);
    }

    #[test]
    fn ranges_limit_the_pool() {
        let net = "10.9.0.0/24".parse().unwrap();
        let pool = Pool::with_range(net, Some(ip("10.9.0.100")), Some(ip("10.9.0.101")));
        assert_eq!(pool.size(), 2);
        assert!(pool.contains(ip("10.9.0.100")) && !pool.contains(ip("10.9.0.99")));
        let taken: HashSet<IpAddr> = [ip("10.9.0.100")].into();
        assert_eq!(
            pool.next_free(None, &[], 1, |x| taken.contains(&x)),
            Some(ip("10.9.0.101"))
        );
        assert_eq!(
            pool.next_free(Some(ip("10.9.0.101")), &[], 2, |_| true),
            None
        );
    }

    #[test]
    fn v4_excludes_network_and_broadcast() {
        let pool = Pool::new("192.168.5.0/30".parse().unwrap());
        let taken: HashSet<IpAddr> = HashSet::new();
        assert_eq!(
            pool.next_free(None, &[ip("192.168.5.1")], 0, |x| taken.contains(&x)),
            Some(ip("192.168.5.2"))
        );
        assert_eq!(
            pool.next_free(Some(ip("192.168.5.2")), &[ip("192.168.5.1")], 1, |x| x
                == ip("192.168.5.2")),
            None
        );
    }
}
