//! Applying batches, and the questions asked of the kernel about knit's tables: does
//! the table exist, is it whole (the check ADD and CHECK make before trusting it).

use super::batch::Cmd;
use super::batch::{BRIDGE_FAMILY, Batch, FAMILY, TABLE};
use super::layout::NetFw;
use std::collections::BTreeMap;

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

/// The rules knit's fixed chains and each network's chains must hold, per table (`inet`,
/// `bridge`): what a flushed or partly deleted table lacks. (Policy and per-service chains
/// are left out: they come and go with their objects.)
pub fn expected_rule_counts(nets: &[NetFw]) -> [BTreeMap<String, usize>; 2] {
    // The fixed chains never change: counted once per process, not on every ADD.
    static BASE: std::sync::OnceLock<[BTreeMap<String, usize>; 2]> = std::sync::OnceLock::new();
    let mut counts = BASE
        .get_or_init(|| rule_counts(Batch::new().base()))
        .clone();
    for n in nets {
        for (all, add) in counts
            .iter_mut()
            .zip(rule_counts(Batch::new().network(n, true)))
        {
            all.extend(add);
        }
    }
    counts
}

/// Rules per chain a batch leaves, per table (`inet`, `bridge`).
pub(super) fn rule_counts(b: &Batch) -> [BTreeMap<String, usize>; 2] {
    let mut counts = [BTreeMap::new(), BTreeMap::new()];
    for c in &b.cmds {
        let (i, c) = match c {
            Cmd::Bridge(inner) => (1, inner.as_ref()),
            c => (0, c),
        };
        match c {
            Cmd::AddChain { name, .. } | Cmd::FlushChain(name) => {
                counts[i].insert(name.clone(), 0);
            }
            Cmd::AddRule { chain, .. } | Cmd::AddDnat { chain, .. } => {
                *counts[i].entry(chain.clone()).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    counts
}
