//! Services on the node: each change is a store change and the nft diff between the
//! service's old and new layout, applied under the kernel lock.

use crate::error::Result;
use crate::model::service::{BackendSpec, ServiceSpec};
use crate::nft::Batch;
use crate::node::Node;
use crate::service::*;
use crate::store::{Attachment, Service};

impl Node {
    /// Applies a service batch; if knit's table is missing (no network was ever built
    /// here, or it was wiped) the whole table is written from the store instead.
    fn apply_service_batch(&self, b: &Batch) -> Result<()> {
        // Closing an nf_tables socket after deletions waits for an RCU grace period; keep
        // that off the caller's clock (as detach does).
        self.apply_or_rebuild(b, Default::default()).map(|_| ())
    }

    /// Creates a service (idempotent for an identical spec). Returns it and whether it
    /// already existed.
    pub fn create_service(&mut self, spec: &ServiceSpec) -> Result<(Service, bool)> {
        let _k = self.kernel_lock()?;
        let (svc, existed) = self.store.create_service(spec)?;
        crate::trace::phase("store: service recorded");
        // Applied even if it existed: a create interrupted after the store write is
        // completed by running it again (the batch is idempotent).
        let fw = resolve(&self.store, &svc)?;
        if let Err(e) = self.apply_service_batch(Batch::new().service(None, Some(&fw))) {
            if !existed {
                let _ = self.store.delete_service(svc.id);
            }
            return Err(e);
        }
        crate::trace::phase("nft: service applied");
        Ok((svc, existed))
    }

    /// Creates many services with ONE nft transaction (bulk load, `knit service import`).
    /// All or nothing: if the transaction fails, the services recorded here are removed.
    pub fn create_services(&mut self, specs: &[ServiceSpec]) -> Result<Vec<(Service, bool)>> {
        let _k = self.kernel_lock()?;
        let mut done: Vec<(Service, bool)> = Vec::with_capacity(specs.len());
        let mut b = Batch::new();
        let undo = |node: &mut Node, done: &[(Service, bool)]| {
            for (svc, existed) in done {
                if !existed {
                    let _ = node.store.delete_service(svc.id);
                }
            }
        };
        for spec in specs {
            match self.store.create_service(spec) {
                Ok((svc, existed)) => {
                    b.service(None, Some(&resolve(&self.store, &svc)?));
                    done.push((svc, existed));
                }
                Err(e) => {
                    undo(self, &done);
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.apply_service_batch(&b) {
            undo(self, &done);
            return Err(e);
        }
        Ok(done)
    }

    pub fn remove_service(&mut self, name: &str) -> Result<Service> {
        let _k = self.kernel_lock()?;
        let svc = self.store.service(name)?;
        let fw = resolve(&self.store, &svc)?;
        self.apply_or_rebuild(
            Batch::new().service(Some(&fw), None),
            crate::node::network::Leaving {
                service: Some(svc.id),
                ..Default::default()
            },
        )?;
        self.store.delete_service(svc.id)?;
        drop(_k);
        crate::conntrack::service_changed(&fw, None);
        Ok(svc)
    }

    /// Adds (`add`) or removes one backend. Idempotent: an existing backend is not added
    /// twice, a missing one is not an error.
    pub fn change_backend(&mut self, name: &str, b: &BackendSpec, add: bool) -> Result<Service> {
        let _k = self.kernel_lock()?;
        let (before, after) = self.store.change_backend(name, b, add)?;
        let old = resolve(&self.store, &before)?;
        let new = resolve(&self.store, &after)?;
        // Unchanged in the store: re-assert the kernel side (completes a run that was
        // interrupted between the store write and the nft transaction).
        let from = (before != after).then_some(&old);
        if let Err(e) = self.apply_service_batch(Batch::new().service(from, Some(&new))) {
            if before == after {
                return Err(e);
            }
            let _ = self.store.undo_backend_change(after.id, b, add);
            return Err(e);
        }
        drop(_k);
        crate::conntrack::service_changed(&old, Some(&new));
        Ok(after)
    }

    /// Service changes caused by attaching (`add`) or detaching attachment `att_id` of
    /// `sandbox`: its services are re-resolved with and without it.
    pub fn service_changes_for(
        &self,
        b: &mut Batch,
        sandbox: &str,
        att_id: i64,
        add: bool,
    ) -> Result<()> {
        for svc in self.store.services_of_sandbox(sandbox)? {
            let atts = backend_attachments(&self.store, &svc)?;
            let others: Vec<Attachment> = atts
                .iter()
                .filter(|a| a.state.in_kernel() && a.id != att_id)
                .cloned()
                .collect();
            let with_att: Vec<Attachment> = atts
                .iter()
                .filter(|a| a.state.in_kernel() || a.id == att_id)
                .cloned()
                .collect();
            let with = resolve_from(&svc, &with_att);
            let without = resolve_from(&svc, &others);
            if with != without {
                let (old, new) = if add {
                    (without, with)
                } else {
                    (with, without)
                };
                b.service(Some(&old), Some(&new));
            }
        }
        Ok(())
    }
}
