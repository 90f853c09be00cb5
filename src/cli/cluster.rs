//! `knit node ...`.

use super::{print_json, table};
use crate::error::Result;
use crate::model::cluster::JoinSpec;
use crate::node::Node;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Join the cluster whose state is in etcd: register this node under a lease
    /// (renewed by `knit daemon`), lease its blocks of the cluster networks, program its
    /// peers.
    Join {
        /// http(s)://HOST:PORT[,...]
        #[arg(long)]
        etcd: String,
        /// TLS: the CA that signed etcd's certificate.
        /// TLS: the CA that signed etcd's certificate.
        #[arg(long)]
        etcd_ca: Option<String>,
        /// TLS: this node's client certificate (with --etcd-key).
        #[arg(long)]
        etcd_cert: Option<String>,
        /// TLS: the key of this node's client certificate.
        #[arg(long)]
        etcd_key: Option<String>,
        /// This node's name in the cluster (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// The address (or link) peers reach this node on (default: the default route's).
        #[arg(long)]
        underlay: Option<String>,
        /// vxlan, routed (all peers on one L2 segment) or auto (routed where possible).
        #[arg(long, default_value = "auto")]
        backend: String,
        /// The first VXLAN network identifier cluster networks created here take.
        #[arg(long, default_value_t = 1)]
        vni: u32,
        /// The UDP port VXLAN uses between nodes.
        #[arg(long, default_value_t = 4789)]
        vxlan_port: u16,
        /// Seconds a dead node stays in its peers' routes at most.
        #[arg(long, default_value_t = 15)]
        lease_ttl: i64,
    },
    /// The cluster's nodes as this node sees them.
    #[command(visible_alias = "list")]
    Ls(super::listing::ListOpts),
    /// Leave the cluster: this node's keys go at once, then its cluster programming.
    Leave,
}

impl NodeCmd {
    /// Whether the command changes the node (for `knit_command_seconds`).
    pub fn changes(&self) -> bool {
        !matches!(self, NodeCmd::Ls(_))
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

pub fn run(cmd: NodeCmd, state_dir: &Path, json: bool) -> Result<i32> {
    match cmd {
        NodeCmd::Join {
            etcd,
            etcd_ca,
            etcd_cert,
            etcd_key,
            name,
            underlay,
            backend,
            vni,
            vxlan_port,
            lease_ttl,
        } => {
            let name = name.unwrap_or_else(host_name);
            let mut spec = JoinSpec::new(
                &etcd,
                &name,
                underlay.as_deref(),
                &backend,
                vni,
                vxlan_port,
                lease_ttl,
            )?;
            spec.tls = crate::model::cluster::TlsFiles::new(
                etcd_ca.as_deref(),
                etcd_cert.as_deref(),
                etcd_key.as_deref(),
            )?;
            let mut node = Node::open(state_dir, false)?;
            let m = node.join(&spec)?;
            if json {
                print_json(&m);
            } else {
                println!(
                    "joined as {} (underlay {} on {}, backend {}, lease {} s); run `knit daemon` to stay in",
                    m.name,
                    m.underlay,
                    m.underlay_if,
                    m.backend.as_str(),
                    m.lease_ttl
                );
            }
        }
        NodeCmd::Leave => {
            let mut node = Node::open(state_dir, false)?;
            let m = node.leave()?;
            if json {
                print_json(&serde_json::json!({ "left": m.name }));
            } else {
                println!("left the cluster ({} is gone from etcd)", m.name);
            }
        }
        NodeCmd::Ls(opts) => {
            let node = Node::open(state_dir, false)?;
            let Some(peers) = opts.apply(node.cluster_report()?, "name")? else {
                return Ok(0);
            };
            if json {
                print_json(&peers);
            } else {
                table(
                    &[
                        "NODE",
                        "UNDERLAY",
                        "PATH",
                        "BLOCKS",
                        "VTEP MAC",
                        "LEASE",
                        "PROGRAMMED",
                    ],
                    peers
                        .iter()
                        .map(|p| {
                            vec![
                                p.name.clone(),
                                p.underlay.to_string(),
                                p.path.clone(),
                                p.blocks
                                    .iter()
                                    .map(|b| b.to_string())
                                    .collect::<Vec<_>>()
                                    .join(","),
                                p.vtep_macs.join(","),
                                p.lease_left.map_or("expired".into(), |t| format!("{t} s")),
                                if p.programmed { "yes" } else { "NO" }.into(),
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(0)
}
