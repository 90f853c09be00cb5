//! Everything nftables, dependencies pointing down only:
//!
//! - `layout`: the command data (`Cmd`, `Elem`, `Batch`) and knit's tables — sets, base
//!   chains, networks, attachments, anti-spoofing; `service` and `policy` lay out services
//!   and network policy from the data their resolvers hand over (`ServiceFw`,
//!   `PolicyChains`);
//! - `wire`: the nf_tables netlink encoding of element batches (and the dumps the table
//!   check reads);
//! - `libnft`: libnftables, for everything else;
//! - `keeper`: the per-namespace process that lends nf_tables sockets.

pub mod apply;
pub mod batch;
pub mod guard;
pub mod keeper;
pub mod layout;
pub mod libnft;
pub mod policy;
pub mod service;
pub mod socket;
pub mod trace;
pub mod wire;

pub use apply::*;
pub use batch::*;
pub use guard::Guard;
pub use layout::*;
pub use wire::proto_num;
