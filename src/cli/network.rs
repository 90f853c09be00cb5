//! `knit network ...`.

use super::{join, port_text, print_json, table};
use crate::error::{Error, Result};
use crate::model::{Driver, NetworkRequest, NetworkSpec};
use crate::node::Node;
use crate::store::Network;
use clap::{Args, Subcommand};
use ipnet::IpNet;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a bridge or ptp network (or, with --scope cluster, one across the cluster).
    Create(CreateCli),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(super::listing::ListOpts),
    /// One network and its attachments.
    Inspect {
        /// The network's name.
        name: String,
    },
    /// Remove networks (refused while sandboxes are attached).
    #[command(visible_alias = "remove")]
    Rm {
        /// The networks' names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network nothing is attached to (not cluster networks, not Docker's:
    /// Docker removes those).
    Prune,
    /// Connect a sandbox to a network (`knit attach`, Docker's word order).
    Connect(super::AttachCli),
    /// Disconnect a sandbox from a network (`knit detach`).
    Disconnect {
        /// The network.
        network: String,
        /// The sandbox (NAME, /PATH, pid:PID, cni:CONTAINERID/IFNAME).
        sandbox: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateCli {
    /// The network's name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 64 characters).
    pub name: String,
    /// IPv4 and/or IPv6 subnet (repeat for dual-stack).
    #[arg(long = "subnet", required = true)]
    pub subnets: Vec<String>,
    /// Gateway address (one per address family; default: first host address).
    #[arg(long = "gateway")]
    pub gateways: Vec<String>,
    /// `bridge` (sandboxes on one bridge, the node routes and NATs) or `ptp` (one routed
    /// veth per sandbox, no bridge).
    #[arg(long, default_value = "bridge")]
    pub driver: String,
    /// Bridge interface name (default knbr<id>).
    #[arg(long)]
    pub bridge: Option<String>,
    /// No outbound route or NAT; no traffic to or from outside the network.
    #[arg(long)]
    pub internal: bool,
    /// Traffic leaving the network keeps the sandbox's own address (no SNAT).
    #[arg(long)]
    pub no_masquerade: bool,
    /// MTU of the bridge and the sandboxes' interfaces (576..=65535 for IPv4, 1280.. for
    /// IPv6).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Do not serve DNS on this network.
    #[arg(long)]
    pub no_dns: bool,
    /// Names also resolve as NAME.DOMAIN (and sandboxes search it).
    #[arg(long)]
    pub dns_domain: Option<String>,
    /// `node` (this node only) or `cluster` (every joined node; stored in etcd).
    #[arg(long, default_value = "node")]
    pub scope: String,
    /// Cluster networks: the size of each node's IPv4 block.
    #[arg(long, default_value_t = 24)]
    pub node_prefix: u8,
    /// Cluster networks: the size of each node's IPv6 block.
    #[arg(long, default_value_t = 64)]
    pub node_prefix6: u8,
}

pub fn run(cmd: NetworkCmd, state_dir: &Path, json: bool) -> Result<i32> {
    let open = |exclusive| Node::open(state_dir, exclusive);
    match cmd {
        NetworkCmd::Create(c) if c.scope != "node" => create_cluster_network(&c, state_dir, json),
        NetworkCmd::Create(c) => {
            let mut spec = NetworkSpec::new(&NetworkRequest {
                name: &c.name,
                driver: Driver::parse(&c.driver)?,
                bridge: c.bridge.as_deref(),
                subnets: &c.subnets,
                gateways: &c.gateways,
                internal: c.internal,
                masquerade: !c.no_masquerade,
                mtu: c.mtu,
            })?;
            spec.with_dns(!c.no_dns, c.dns_domain.as_deref())?;
            let mut node = open(false)?;
            let net = node.create_network(&spec)?;
            if !json {
                print!("created ");
            }
            print_network(&net, json);
            Ok(0)
        }
        NetworkCmd::Ls(opts) => {
            let node = open(false)?;
            let mut rows = vec![];
            for n in node.store.networks()? {
                let mut v = serde_json::to_value(&n).unwrap_or_default();
                v["attached"] = node.store.attachments_of_network(n.id)?.len().into();
                rows.push(v);
            }
            let rows = opts.select(rows)?;
            let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
            let nets: Vec<Network> = node
                .store
                .networks()?
                .into_iter()
                .filter(|n| names.contains(&n.name.as_str()))
                .collect();
            if opts.print(&rows, "name")? {
                return Ok(0);
            }
            if json {
                print_json(&nets);
            } else {
                let mut rows = Vec::new();
                for n in &nets {
                    let count = node.store.attachments_of_network(n.id)?.len();
                    let subnets: Vec<String> =
                        n.subnets.iter().map(|s| s.subnet.to_string()).collect();
                    let mut flags = vec![];
                    if n.internal {
                        flags.push("internal");
                    }
                    if !n.masquerade {
                        flags.push("no-masquerade");
                    }
                    rows.push(vec![
                        n.name.clone(),
                        n.driver.as_str().into(),
                        n.bridge.clone().unwrap_or("-".into()),
                        join(&subnets),
                        count.to_string(),
                        join(&flags),
                    ]);
                }
                table(
                    &["NAME", "DRIVER", "BRIDGE", "SUBNETS", "ATTACHED", "FLAGS"],
                    rows,
                );
            }
            Ok(0)
        }
        NetworkCmd::Inspect { name } => {
            let node = open(false)?;
            let net = node.store.network(&name)?;
            let atts: Vec<_> = node
                .store
                .attachments_of_network(net.id)?
                .into_iter()
                .map(|a| crate::node::inspect::as_configured(&net, a))
                .collect();
            if json {
                print_json(&serde_json::json!({"network": net, "attachments": atts}));
            } else {
                print_network(&net, false);
                for a in &atts {
                    println!(
                        "  - {} {} {} {:?} {}",
                        a.sandbox,
                        a.ifname,
                        join(&a.ips),
                        a.state,
                        join(&port_text(a))
                    );
                }
            }
            Ok(0)
        }
        NetworkCmd::Rm { names } => {
            let mut node = open(false)?;
            let mut removed = vec![];
            for name in &names {
                match node.store.network(name)? {
                    n if n.cluster.is_some() => node.remove_cluster_network(&n)?,
                    _ => {
                        node.remove_network(name)?;
                    }
                }
                if !json {
                    println!("removed network {name}");
                }
                removed.push(name.clone());
            }
            if json {
                print_json(&serde_json::json!({ "removed": removed }));
            }
            Ok(0)
        }
        NetworkCmd::Prune => {
            let mut node = open(false)?;
            let mut removed = vec![];
            for n in node.store.networks()? {
                let unused = node.store.attachments_of_network(n.id)?.is_empty();
                if unused && n.cluster.is_none() && n.origin != crate::docker::driver::ORIGIN {
                    node.remove_network(&n.name)?;
                    removed.push(n.name);
                }
            }
            if json {
                print_json(&serde_json::json!({ "removed": removed }));
            } else {
                for n in &removed {
                    println!("removed network {n}");
                }
            }
            Ok(0)
        }
        NetworkCmd::Connect(_) | NetworkCmd::Disconnect { .. } => {
            unreachable!("handled by cli::run as attach and detach")
        }
    }
}

pub(super) fn print_network(n: &Network, json: bool) {
    if json {
        print_json(n);
        return;
    }
    let subnets: Vec<String> = n
        .subnets
        .iter()
        .map(|s| format!("{} gw {}", s.subnet, s.gateway))
        .collect();
    println!(
        "network {} (id {}, driver {})",
        n.name,
        n.id,
        n.driver.as_str()
    );
    println!("  bridge:     {}", n.bridge.as_deref().unwrap_or("-"));
    println!("  subnets:    {}", subnets.join(", "));
    println!("  internal:   {}", n.internal);
    println!("  masquerade: {}", n.masquerade);
    if let Some(m) = n.mtu {
        println!("  mtu:        {m}");
    }
}

/// `knit network create NAME --subnet CIDR --scope cluster`.
fn create_cluster_network(c: &CreateCli, state_dir: &Path, json: bool) -> Result<i32> {
    if c.scope != "cluster" {
        return Err(Error::invalid("scope", &c.scope, "must be node or cluster"));
    }
    for (set, flag) in [
        (!c.gateways.is_empty(), "gateway"),
        (c.bridge.is_some(), "bridge"),
        (c.internal, "internal"),
        (c.no_masquerade, "no-masquerade"),
        (c.mtu.is_some(), "mtu"),
        (c.driver != "bridge", "driver"),
    ] {
        if set {
            return Err(Error::invalid(
                "scope",
                "cluster",
                format!("--{flag} is not supported for cluster networks (each node picks its own)"),
            ));
        }
    }
    let subnets = c
        .subnets
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| Error::invalid("subnet", s, "expected a CIDR"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut node = Node::open(state_dir, false)?;
    let net = node.create_cluster_network(&c.name, subnets, c.node_prefix, c.node_prefix6)?;
    if !json {
        print!("created ");
    }
    print_network(&net, json);
    Ok(0)
}
