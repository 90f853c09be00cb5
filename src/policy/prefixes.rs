//! A CIDR minus its exceptions as the fewest prefixes that cover exactly the rest.

use ipnet::IpNet;

/// `net` without any address of `except`, as disjoint prefixes in address order.
pub fn cidr_minus(net: IpNet, except: &[IpNet]) -> Vec<IpNet> {
    let mut out = vec![];
    split(net, except, &mut out);
    out
}

fn split(net: IpNet, except: &[IpNet], out: &mut Vec<IpNet>) {
    if except.iter().any(|e| e.contains(&net)) {
        return;
    }
    if !except.iter().any(|e| net.contains(e)) {
        out.push(net);
        return;
    }
    // Some exception lies strictly inside: recurse into the halves (a prefix that
    // contains a strictly smaller one is never a host route, so it has halves).
    if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
        for h in halves {
            split(h, except, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn carves_exceptions() {
        let got = cidr_minus("10.0.0.0/8".parse().unwrap(), &nets(&["10.1.0.0/16"]));
        assert_eq!(
            got,
            nets(&[
                "10.0.0.0/16",
                "10.2.0.0/15",
                "10.4.0.0/14",
                "10.8.0.0/13",
                "10.16.0.0/12",
                "10.32.0.0/11",
                "10.64.0.0/10",
                "10.128.0.0/9"
            ])
        );
        // Every address of the CIDR but the exception is covered, exactly once.
        let total: u64 = got.iter().map(|n| 1u64 << (32 - n.prefix_len())).sum();
        assert_eq!(total, (1 << 24) - (1 << 16));
        assert!(cidr_minus("10.0.0.0/8".parse().unwrap(), &nets(&["10.0.0.0/8"])).is_empty());
        assert_eq!(
            cidr_minus("fd00::/64".parse().unwrap(), &[]),
            nets(&["fd00::/64"])
        );
        let two = cidr_minus(
            "192.168.0.0/24".parse().unwrap(),
            &nets(&["192.168.0.0/26", "192.168.0.128/25"]),
        );
        assert_eq!(two, nets(&["192.168.0.64/26"]));
    }
}
