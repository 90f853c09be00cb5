//! Applying batches, and the questions asked of the kernel about knit's tables: does
//! the table exist, is it whole (the check ADD and CHECK make before trusting it).

use super::batch::{BRIDGE_FAMILY, Batch, FAMILY, TABLE};
use super::layout::{NetFw, expected_rule_counts};

impl Batch {
    /// Applies the batch as one transaction in the calling thread's namespace. Batches of
    /// plain element changes (attach, detach) go straight to nf_tables over netlink; the
    /// rest through libnftables.
    pub fn apply(&self) -> crate::error::Result<()> {
        self.apply_then(drop)
    }

    /// The same; `close` receives the nf_tables socket of an element batch so the caller
    /// decides how it is closed (detach uses `deferred::close_detached`).
    pub fn apply_then(
        &self,
        close: impl FnOnce(crate::nft::socket::Socket),
    ) -> crate::error::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if let Some(msgs) = crate::nft::wire::encode(TABLE, &self.cmds) {
            let mut sock = crate::nft::socket::Socket::open()?;
            let r = sock.apply(&msgs);
            close(sock);
            return r;
        }
        crate::nft::libnft::run(&self.render()).map(|_| ())
    }
}

/// Whether knit's tables are whole: they exist and every fixed and network chain is used
/// at least by the rules it should hold (the kernel's use count of a chain is its rules
/// plus the jumps to it; one dump of the chains per table, whose cost does not grow with
/// rules or elements). A table someone deleted or flushed is not whole: its hooked chains
/// have no rules and nothing jumps to them.
pub fn table_intact(nets: &[NetFw]) -> crate::error::Result<bool> {
    let expected = expected_rule_counts(nets);
    let mut sock = crate::nft::socket::Socket::open()?;
    for (family, want) in [
        crate::nft::wire::NFPROTO_INET,
        crate::nft::wire::NFPROTO_BRIDGE,
    ]
    .into_iter()
    .zip(expected)
    {
        let Some(uses) = sock.chain_uses(family, TABLE)? else {
            return Ok(false);
        };
        if !want
            .iter()
            .all(|(chain, n)| uses.get(chain).copied().unwrap_or(0) as usize >= *n)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether knit's table exists in this namespace (one netlink request).
pub fn table_exists() -> bool {
    crate::nft::socket::Socket::open()
        .and_then(|mut s| s.table_exists(TABLE))
        .unwrap_or(false)
}

/// knit's own tables as nft prints them (for `inspect`; never on a hot path): the inet
/// table, then the bridge table if it exists.
pub fn list_table() -> crate::error::Result<String> {
    let mut out = crate::nft::libnft::run(&format!("list table {FAMILY} {TABLE}"))?;
    if let Ok(bridge) = crate::nft::libnft::run(&format!("list table {BRIDGE_FAMILY} {TABLE}")) {
        out.push_str(&bridge);
    }
    Ok(out)
}
