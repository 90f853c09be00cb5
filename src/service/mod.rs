//! L4 services: a virtual IP:port spread over backends (kube-proxy's job). The store
//! holds services and backends; `rules` turns one service into nft objects; this module
//! resolves sandbox backends to addresses and applies each change as one transaction.

use crate::error::Result;
use crate::model::service::Target;
use crate::nft::service::ServiceFw;
use crate::store::{Attachment, Service, Store};

/// The service with backends resolved to addresses, as the kernel has it: a sandbox
/// backend uses the address of the VIP's family on the sandbox's first ready attachment
/// that has one; a sandbox without is out of the rotation. (A pending attachment belongs
/// to a command still building it; that command adds it under the kernel lock.)
pub fn resolve(store: &Store, svc: &Service) -> Result<ServiceFw> {
    let atts: Vec<Attachment> = backend_attachments(store, svc)?
        .into_iter()
        .filter(|a| a.state.in_kernel())
        .collect();
    Ok(resolve_from(svc, &atts))
}

/// Every attachment (any state) of the service's sandbox backends, on this node or (a
/// cluster endpoint) on another.
pub fn backend_attachments(store: &Store, svc: &Service) -> Result<Vec<Attachment>> {
    let mut atts = Vec::new();
    let mut names = vec![];
    for b in &svc.backends {
        if let Target::Sandbox(name) = &b.spec.target {
            atts.extend(store.attachments_of_sandbox(name)?);
            names.push(name);
        }
    }
    if !names.is_empty() {
        atts.extend(
            store
                .remote_attachments()?
                .into_iter()
                .filter(|a| names.contains(&&a.sandbox)),
        );
    }
    Ok(atts)
}

/// The same against attachments already loaded (a rebuild loads them all once).
pub fn resolve_from(svc: &Service, atts: &[Attachment]) -> ServiceFw {
    let v4 = svc.vip.ip.is_ipv4();
    let backends = svc
        .backends
        .iter()
        .filter_map(|b| {
            let ip = match &b.spec.target {
                Target::Ip(ip) => Some(*ip),
                Target::Sandbox(name) => atts
                    .iter()
                    .filter(|a| &a.sandbox == name)
                    .flat_map(|a| a.ips.iter().map(|n| n.addr()))
                    .find(|ip| ip.is_ipv4() == v4),
            };
            ip.map(|ip| (b.id, ip, b.spec.port))
        })
        .collect();
    ServiceFw {
        id: svc.id,
        vip: svc.vip,
        affinity: svc.affinity,
        node_port: svc.node_port,
        backends,
    }
}
