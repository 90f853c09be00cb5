//! The CNI configuration fuzz entry point: everything the plugin derives from a network
//! configuration on stdin, as ADD does it, through knit's public API. One copy, used by the
//! libFuzzer target (`fuzz/fuzz_targets/cni_config.rs`) and by the stable mutation fuzz
//! test (`tests/cni_config_fuzz.rs`), both of which include this file with `#[path]`.

use knit::cni::conf::parse;
use knit::cni::error::{CniError, DECODE, INCOMPATIBLE_VERSION, INVALID_CONFIG, UNSUPPORTED_FIELD};

/// How far one input got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reached {
    /// Refused by the parser.
    Rejected,
    /// Parsed, but its network (name, driver, IPAM) was refused.
    Parsed,
    /// Parsed to a network; some other part ADD reads (routes, addresses, MAC, ports,
    /// labels, aliases) was refused.
    Network,
    /// Every part ADD reads was accepted.
    Derived,
}

/// Runs `data` through the parser and every derivation ADD makes. Never panics on its own:
/// a refusal must be a CNI error with a code a runtime understands and a message, which
/// is asserted (so the fuzzer reports an uncoded refusal as a crash).
pub fn cni_config(data: &[u8]) -> Reached {
    let conf = match parse(data) {
        Ok(c) => c,
        Err(e) => {
            coded(&e);
            return Reached::Rejected;
        }
    };
    let spec = match conf.network_spec() {
        Ok(s) => s,
        Err(e) => {
            coded(&e);
            return Reached::Parsed;
        }
    };
    // CNI_ARGS addresses: exercised, but not required (they may lie outside the subnet).
    if let Err(e) = conf.static_ips(&["10.0.0.9".into()]) {
        coded(&e);
    }
    let _ = conf.dns();
    let parts = [
        conf.routes(&spec).map(drop),
        conf.static_ips(&[]).map(drop),
        conf.mac(None).map(drop),
        conf.publish().map(drop),
        conf.labels().map(drop),
        conf.aliases().map(drop),
    ];
    let mut reached = Reached::Derived;
    for p in parts {
        if let Err(e) = p {
            coded(&e);
            reached = Reached::Network;
        }
    }
    reached
}

/// A configuration error a runtime can act on: a spec code and a message.
fn coded(e: &CniError) {
    assert!(
        matches!(
            e.code,
            INCOMPATIBLE_VERSION | UNSUPPORTED_FIELD | DECODE | INVALID_CONFIG
        ),
        "configuration error with code {}: {}",
        e.code,
        e.msg
    );
    assert!(
        !e.msg.trim().is_empty(),
        "error {} without a message",
        e.code
    );
}
