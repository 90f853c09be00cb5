//! `knit sandbox rm`: detach from every network, delete the namespace only if knit made it.

use super::attach::refuse_node_namespace;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::netns::Netns;
use crate::node::Node;

/// What `sandbox rm` did.
pub struct SandboxRemoved {
    pub detached: usize,
    /// The namespace was knit's (`knit sandbox add`) and is gone; otherwise it was only
    /// detached and left in place.
    pub deleted: bool,
}

impl Node {
    /// `knit sandbox add NAME`: creates the named namespace (with `lo` up) and records it
    /// as knit's. Returns false if a namespace of that name existed already: it is not
    /// knit's to delete later, so it is not recorded.
    pub fn add_sandbox(&mut self, name: &str) -> Result<bool> {
        crate::model::validate_name("sandbox", name)?;
        let created = crate::netns::create_named(name, crate::netlink::bring_up_loopback)?;
        if created {
            self.store.add_sandbox(name)?;
        }
        Ok(created)
    }

    /// `knit sandbox rm NAME`: detaches the sandbox from every network and deletes its
    /// namespace if knit created it. A namespace knit did not create (`ip netns add`, a
    /// runtime's) is only detached; the node's own is never touched.
    pub fn remove_sandbox(&mut self, name: &str) -> Result<SandboxRemoved> {
        let path = crate::netns::named_path(name);
        let ours = self.store.sandboxes()?.iter().any(|s| s == name);
        let atts = self.store.attachments_of_sandbox(name)?;
        let exists = crate::netns::is_netns(&path);
        if atts.is_empty() && !(ours && exists) {
            return Err(if exists {
                Error::invalid(
                    "sandbox",
                    name,
                    "was not created by knit (`knit sandbox add`) and is not attached: knit leaves it alone",
                )
            } else {
                Error::not_found("sandbox", name)
            });
        }
        if ours && exists {
            refuse_node_namespace(&Netns::open(&path)?, name)?;
        }
        let _net_locks = Lock::networks(&self.state_dir, atts.iter().map(|a| a.network.as_str()))?;
        let _sbx_lock = Lock::sandbox(&self.state_dir, name)?;
        let atts = self.store.attachments_of_sandbox(name)?;
        for a in &atts {
            let net = self.store.network(&a.network)?;
            self.remove_attachment(&net, a)?;
        }
        let deleted = ours && crate::netns::delete_named(name)?;
        if ours {
            self.store.remove_sandbox(name)?;
        }
        Ok(SandboxRemoved {
            detached: atts.len(),
            deleted,
        })
    }
}
