//! Which block of a cluster subnet a node asks for: the one it held before if it is free
//! (a restarted node keeps its addresses), else the first free one. Taking it is an etcd
//! transaction that fails if the key exists, so two nodes racing for one block cannot
//! both get it; the loser asks again.

use ipnet::IpNet;
use std::collections::BTreeSet;

/// The block to ask for next in `subnet` (blocks of `/prefix`), or None when every block
/// is taken.
pub fn next_free(
    subnet: &IpNet,
    prefix: u8,
    taken: &BTreeSet<IpNet>,
    preferred: Option<&IpNet>,
) -> Option<IpNet> {
    if let Some(p) = preferred
        && subnet.contains(p)
        && p.prefix_len() == prefix
        && !taken.contains(p)
    {
        return Some(*p);
    }
    subnet.subnets(prefix).ok()?.find(|b| !taken.contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn first_free_or_the_old_one() {
        let taken: BTreeSet<IpNet> = [n("10.244.0.0/24"), n("10.244.1.0/24")].into();
        assert_eq!(
            next_free(&n("10.244.0.0/16"), 24, &taken, None),
            Some(n("10.244.2.0/24"))
        );
        assert_eq!(
            next_free(&n("10.244.0.0/16"), 24, &taken, Some(&n("10.244.9.0/24"))),
            Some(n("10.244.9.0/24"))
        );
        // Someone else has it now: the first free one instead.
        assert_eq!(
            next_free(&n("10.244.0.0/16"), 24, &taken, Some(&n("10.244.1.0/24"))),
            Some(n("10.244.2.0/24"))
        );
        let full: BTreeSet<IpNet> = [n("10.9.0.0/25"), n("10.9.0.128/25")].into();
        assert_eq!(next_free(&n("10.9.0.0/24"), 25, &full, None), None);
        assert_eq!(
            next_free(&n("fd00::/56"), 64, &BTreeSet::new(), None),
            Some(n("fd00::/64"))
        );
    }
}
