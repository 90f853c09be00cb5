//! `knit policy ...`.

use super::{print_json, table};
use crate::error::Result;
use crate::model::policy::{Default, PortSpec, Selector};
use crate::node::Node;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Set what happens to connections no rule allows: allow (the default) or deny.
    Default { network: String, default: String },
    /// Allow new connections to sandboxes of NETWORK.
    Allow {
        network: String,
        /// SANDBOX, key=value label, or CIDR.
        #[arg(long)]
        from: String,
        /// SANDBOX or key=value label (on NETWORK).
        #[arg(long)]
        to: String,
        /// N[/tcp|udp|sctp]: only this destination port.
        #[arg(long)]
        port: Option<String>,
    },
    /// Deny networks and every allow rule (with its ID).
    Ls,
    /// Remove one allow rule.
    Rm { id: String },
}

pub fn run(cmd: PolicyCmd, state_dir: &Path, json: bool) -> Result<i32> {
    match cmd {
        PolicyCmd::Default { network, default } => {
            let d = Default::parse(&default)?;
            let mut node = Node::open(state_dir, false)?;
            let net = node.set_policy_default(&network, d)?;
            if json {
                print_json(&serde_json::json!({"network": net.name, "default": d}));
            } else {
                println!("network {}: default {}", net.name, d.as_str());
            }
        }
        PolicyCmd::Allow {
            network,
            from,
            to,
            port,
        } => {
            let from = Selector::parse("--from", &from, false)?;
            let to = Selector::parse("--to", &to, true)?;
            let port = port.as_deref().map(PortSpec::parse).transpose()?;
            let mut node = Node::open(state_dir, false)?;
            let (rule, new) = node.add_policy(&network, &from, &to, port)?;
            if json {
                print_json(&rule);
            } else {
                println!(
                    "{} policy {}: {network} allows {} -> {}{}",
                    if new { "added" } else { "exists:" },
                    rule.id,
                    rule.from,
                    rule.to,
                    rule.port.map(|p| format!(" port {p}")).unwrap_or_default()
                );
            }
        }
        PolicyCmd::Ls => {
            let node = Node::open(state_dir, false)?;
            let nets = node.store.networks()?;
            let rules = node.store.rules()?;
            if json {
                let defaults: Vec<_> = nets
                    .iter()
                    .map(|n| serde_json::json!({"network": n.name, "default": n.policy}))
                    .collect();
                print_json(&serde_json::json!({"defaults": defaults, "rules": rules}));
            } else {
                for n in nets.iter().filter(|n| n.policy == Default::Deny) {
                    println!("network {}: default deny", n.name);
                }
                table(
                    &["ID", "NETWORK", "FROM", "TO", "PORT"],
                    rules
                        .iter()
                        .map(|r| {
                            vec![
                                r.id.to_string(),
                                r.network.clone(),
                                r.from.to_string(),
                                r.to.to_string(),
                                r.port.map_or("any".into(), |p| p.to_string()),
                            ]
                        })
                        .collect(),
                );
            }
        }
        PolicyCmd::Rm { id } => {
            let mut node = Node::open(state_dir, false)?;
            let rule = node.remove_policy(&id)?;
            if !json {
                println!("removed policy {} from {}", rule.id, rule.network);
            }
        }
    }
    Ok(0)
}
