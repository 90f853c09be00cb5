//! The data plane's metrics as the store and the kernel have them when the daemon's
//! `/metrics` is scraped: networks, attachments, published ports, services and their
//! backends, policy drops; then the daemon's own latency histograms.

use crate::error::Result;
use crate::metrics::{CLUSTER_SYNC, PLUGIN_CALLS, escape, gauge_header};
use crate::model::policy::Direction;
use crate::node::Node;
use std::fmt::Write;
use std::path::Path;

/// The data plane as the store and the kernel have it now.
pub fn data_plane(state_dir: &Path, out: &mut String) -> Result<()> {
    let node = Node::open(state_dir, false)?;
    let nets = node.store.networks()?;
    gauge_header(
        out,
        "knit_networks",
        "Networks, by driver and origin.",
        "gauge",
    );
    let mut by_kind = std::collections::BTreeMap::new();
    for n in &nets {
        *by_kind
            .entry((n.driver.as_str().to_string(), n.origin.clone()))
            .or_insert(0u64) += 1;
    }
    for ((driver, origin), c) in by_kind {
        let _ = writeln!(
            out,
            "knit_networks{{driver=\"{}\",origin=\"{}\"}} {c}",
            escape(&driver),
            escape(&origin)
        );
    }
    gauge_header(
        out,
        "knit_attachments",
        "Sandboxes attached, by network.",
        "gauge",
    );
    let mut ports = vec![];
    for n in &nets {
        let atts = node.store.attachments_of_network(n.id)?;
        let _ = writeln!(
            out,
            "knit_attachments{{network=\"{}\"}} {}",
            escape(&n.name),
            atts.len()
        );
        ports.push((
            n.name.clone(),
            atts.iter().map(|a| a.ports.len()).sum::<usize>(),
        ));
    }
    gauge_header(
        out,
        "knit_published_ports",
        "Published ports, by network.",
        "gauge",
    );
    for (net, c) in ports {
        let _ = writeln!(
            out,
            "knit_published_ports{{network=\"{}\"}} {c}",
            escape(&net)
        );
    }
    let services = node.store.services()?;
    gauge_header(out, "knit_services", "L4 services.", "gauge");
    let _ = writeln!(out, "knit_services {}", services.len());
    gauge_header(
        out,
        "knit_service_backends",
        "Backends of each service.",
        "gauge",
    );
    for s in &services {
        let _ = writeln!(
            out,
            "knit_service_backends{{service=\"{}\"}} {}",
            escape(&s.name),
            s.backends.len()
        );
    }
    gauge_header(
        out,
        "knit_policy_dropped_packets_total",
        "Packets dropped by a network's default deny, by direction (nft counters).",
        "counter",
    );
    for n in &nets {
        for (dir, name) in [
            (Direction::Ingress, "ingress"),
            (Direction::Egress, "egress"),
        ] {
            let c = crate::nft::policy::chain_drops(&crate::nft::policy::chain(n.id, dir));
            let _ = writeln!(
                out,
                "knit_policy_dropped_packets_total{{network=\"{}\",direction=\"{name}\"}} {c}",
                escape(&n.name)
            );
        }
    }
    PLUGIN_CALLS.render(out);
    crate::metrics::collect_commands(state_dir);
    crate::metrics::render_commands(out);
    gauge_header(
        out,
        "knit_cluster_sync_seconds",
        "Cluster agent syncs (kernel programmed from etcd's state).",
        "histogram",
    );
    CLUSTER_SYNC.render(out, "knit_cluster_sync_seconds", "");
    Ok(())
}
