//! Names users give knit (networks, sandboxes, interfaces, bridges, DNS names), checked
//! once here; errors name the field and the value.

use crate::error::{Error, Result};

/// Names of networks and sandboxes: the CNI rule (`^[A-Za-z0-9][A-Za-z0-9_.-]*$`), bounded
/// so they fit in paths and nft identifiers.
pub fn validate_name(field: &'static str, value: &str) -> Result<()> {
    let ok_first = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest {
        return Err(Error::invalid(
            field,
            value,
            "must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        ));
    }
    if value.len() > 64 {
        return Err(Error::invalid(field, value, "longer than 64 characters"));
    }
    Ok(())
}

/// Interface names as the kernel (and libcni) accept them.
pub fn validate_ifname(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 15 {
        return Err(Error::invalid(field, value, "must be 1 to 15 characters"));
    }
    if value == "." || value == ".." {
        return Err(Error::invalid(
            field,
            value,
            "is not a valid interface name",
        ));
    }
    if value
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '%' || !c.is_ascii())
    {
        return Err(Error::invalid(
            field,
            value,
            "must not contain '/', ':', '%' or whitespace",
        ));
    }
    Ok(())
}

/// True for the names knit generates itself: `kv` + 10 hex digits (a sandbox's host veth)
/// and `knbr` + digits (a bridge knit named).
pub fn is_generated_link_name(value: &str) -> bool {
    let kv = value
        .strip_prefix("kv")
        .is_some_and(|h| h.len() == 10 && h.chars().all(|c| c.is_ascii_hexdigit()));
    let knbr = value
        .strip_prefix("knbr")
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
    kv || knbr
}

/// A bridge name the user chose: an interface name made only of `[A-Za-z0-9_.-]` (it
/// reaches nftables rules and sysctl paths), and not a name knit generates for its own
/// links (which would collide with them).
pub fn validate_bridge_name(field: &'static str, value: &str) -> Result<()> {
    validate_ifname(field, value)?;
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::invalid(
            field,
            value,
            "may contain only letters, digits, '_', '.' and '-'",
        ));
    }
    if is_generated_link_name(value) {
        return Err(Error::invalid(
            field,
            value,
            "is a name knit generates for its own links (kv<10 hex>, knbr<N>); choose another",
        ));
    }
    Ok(())
}

/// A DNS name label sequence: letters, digits, '-', '.', no empty labels, ≤ 253 bytes.
pub fn validate_dns_name(field: &'static str, value: &str) -> Result<()> {
    let v = value.trim_end_matches('.');
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, value, "is not a valid DNS name"))
    }
}
