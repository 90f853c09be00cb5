//! `knit policy ...`.

use super::{print_json, table};
use crate::error::{Error, Result};
use crate::model::policy::{Action, Default, Direction, PortRange, RuleSpec, Selector};
use crate::node::Node;
use crate::node::policy::PolicyChange;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// What happens to connections no rule allows: `default NET [ingress|egress]
    /// allow|deny` (ingress when the direction is left out).
    Default {
        /// The network.
        network: String,
        /// [ingress|egress] allow|deny
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
        /// Egress: whether DNS to knit's own resolver passes an egress deny (default
        /// allow).
        #[arg(long)]
        dns: Option<String>,
    },
    /// Allow new connections to (or, with --egress, from) sandboxes of NETWORK.
    Allow {
        /// The network whose sandboxes the rule is about.
        network: String,
        /// SANDBOX, labels key=value[,key=value] (all must match), or (ingress) a CIDR.
        #[arg(long)]
        from: String,
        /// SANDBOX or labels (ingress: on NETWORK), or (egress) a CIDR.
        #[arg(long)]
        to: String,
        /// A CIDR inside the --from/--to CIDR that the rule leaves out (repeatable).
        #[arg(long)]
        except: Vec<String>,
        /// N[-M][/tcp|udp|sctp]: only this destination port or range.
        #[arg(long)]
        port: Option<String>,
        /// The rule is about traffic leaving NETWORK's sandboxes (--from on NETWORK).
        #[arg(long)]
        egress: bool,
    },
    /// Defaults (with the packets they dropped) and every rule (with its ID and the
    /// packets it allowed).
    #[command(visible_alias = "list")]
    Ls(super::listing::ListOpts),
    /// Remove one rule.
    Rm {
        /// The rule's ID (from `knit policy ls`).
        id: String,
    },
    /// Apply NetworkPolicy-shaped documents (YAML or JSON): each document's rules are
    /// diffed against what an earlier import of it recorded, and all changes go in as one
    /// transaction.
    Import {
        /// The file (YAML stream, JSON array or List); `-` for stdin.
        file: String,
        /// The network of documents without metadata.namespace.
        #[arg(long)]
        network: Option<String>,
        /// Also remove the rules of earlier imported documents this file no longer has.
        #[arg(long)]
        prune: bool,
    },
}

impl PolicyCmd {
    /// Whether the command changes the node (for `knit_command_seconds`).
    pub fn changes(&self) -> bool {
        !matches!(self, PolicyCmd::Ls(_))
    }
}

fn default_args(args: &[String]) -> Result<(Direction, Default)> {
    match args {
        [d] => Ok((Direction::Ingress, Default::parse(d)?)),
        [dir, d] => Ok((Direction::parse(dir)?, Default::parse(d)?)),
        _ => Err(Error::invalid(
            "default",
            args.join(" "),
            "expected [ingress|egress] allow|deny",
        )),
    }
}

pub fn run(cmd: PolicyCmd, state_dir: &Path, json: bool) -> Result<i32> {
    match cmd {
        PolicyCmd::Default { network, args, dns } => {
            let (dir, d) = default_args(&args)?;
            let dns = match dns.as_deref() {
                None => None,
                Some(_) if dir == Direction::Ingress => {
                    return Err(Error::invalid(
                        "dns",
                        dns.unwrap_or_default(),
                        "applies to egress defaults only",
                    ));
                }
                Some(v) => Some(Default::parse(v)? == Default::Allow),
            };
            let mut node = Node::open(state_dir, false)?;
            let net = node.set_policy_default(&network, dir, d, dns)?;
            if json {
                print_json(
                    &serde_json::json!({"network": net.name, "direction": dir, "default": d}),
                );
            } else {
                println!(
                    "network {}: {} default {}",
                    net.name,
                    dir.as_str(),
                    d.as_str()
                );
            }
        }
        PolicyCmd::Allow {
            network,
            from,
            to,
            except,
            port,
            egress,
        } => {
            let dir = if egress {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            let (from_ex, to_ex): (&[String], &[String]) = match dir {
                Direction::Ingress => (&except, &[]),
                Direction::Egress => (&[], &except),
            };
            let spec = RuleSpec {
                action: Action::Allow,
                dir,
                from: Selector::parse("from", &from, dir == Direction::Ingress, from_ex)?,
                to: Selector::parse("to", &to, dir == Direction::Egress, to_ex)?,
                port: port.as_deref().map(PortRange::parse).transpose()?,
                origin: None,
            };
            let mut node = Node::open(state_dir, false)?;
            let (rule, new) = node.add_policy(&network, spec)?;
            if json {
                print_json(&rule);
            } else {
                println!(
                    "{} policy {}: {network} {} allows {} -> {}{}",
                    if new { "added" } else { "exists:" },
                    rule.id,
                    rule.spec.dir.as_str(),
                    rule.spec.from,
                    rule.spec.to,
                    rule.spec
                        .port
                        .map(|p| format!(" port {p}"))
                        .unwrap_or_default()
                );
            }
        }
        PolicyCmd::Ls(opts) => {
            let node = Node::open(state_dir, false)?;
            let mut report = crate::node::policy_report::report(&node)?;
            // -q, --filter and --format work on the rules (-q: their IDs).
            let Some(rules) = opts.apply(std::mem::take(&mut report.rules), "id")? else {
                return Ok(0);
            };
            report.rules = rules;
            if json {
                print_json(&report);
            } else {
                for n in &report.networks {
                    println!(
                        "network {}: ingress {} (dropped {} packets), egress {} (dropped {} packets){}",
                        n.network,
                        n.ingress.as_str(),
                        n.ingress_dropped,
                        n.egress.as_str(),
                        n.egress_dropped,
                        if n.egress == Default::Deny && !n.egress_dns {
                            ", DNS denied"
                        } else {
                            ""
                        }
                    );
                }
                table(
                    &[
                        "ID", "NETWORK", "DIR", "FROM", "TO", "PORT", "PACKETS", "ORIGIN",
                    ],
                    report
                        .rules
                        .iter()
                        .map(|r| {
                            let s = &r.rule.spec;
                            vec![
                                r.rule.id.to_string(),
                                r.rule.network.clone(),
                                s.dir.as_str().to_string(),
                                if s.action == Action::Isolate {
                                    "(isolates)".to_string()
                                } else {
                                    s.from.to_string()
                                },
                                s.to.to_string(),
                                s.port.map_or("any".into(), |p| p.to_string()),
                                r.packets.to_string(),
                                s.origin.clone().unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect(),
                );
            }
        }
        PolicyCmd::Rm { id } => {
            let mut node = Node::open(state_dir, false)?;
            let rule = node.remove_policy(&id)?;
            if json {
                print_json(&rule);
            } else {
                println!("removed policy {} from {}", rule.id, rule.network);
            }
        }
        PolicyCmd::Import {
            file,
            network,
            prune,
        } => {
            let text = if file == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .map_err(|e| Error::invalid("file", "-", e))?;
                t
            } else {
                std::fs::read_to_string(&file).map_err(|e| Error::invalid("file", &file, e))?
            };
            let docs = crate::model::netpol::parse_documents(&text, network.as_deref())
                .map_err(|e| crate::model::netpol::with_source(e, &file))?;
            let mut node = Node::open(state_dir, false)?;
            let change = import_change(&node, &docs, prune)?;
            let add = change.add.len();
            let changed = node.change_policy(change)?;
            let new = changed.added.iter().filter(|(_, new)| *new).count();
            if json {
                print_json(&serde_json::json!({
                    "documents": docs.iter().map(|d| &d.name).collect::<Vec<_>>(),
                    "added": new,
                    "removed": changed.removed.len(),
                }));
            } else {
                println!(
                    "imported {} documents: {new} rules added, {} removed ({} unchanged)",
                    docs.len(),
                    changed.removed.len(),
                    add - new
                );
            }
        }
    }
    Ok(0)
}

/// The difference between the documents and what earlier imports of them recorded.
fn import_change(
    node: &Node,
    docs: &[crate::model::netpol::PolicyDoc],
    prune: bool,
) -> Result<PolicyChange> {
    let mut change = PolicyChange::default();
    for doc in docs {
        let existing = node.store.rules_of_origin(&doc.name)?;
        for r in &existing {
            if r.network != doc.network || !doc.rules.contains(&r.spec) {
                change.remove.push(r.id);
            }
        }
        for spec in &doc.rules {
            if !existing
                .iter()
                .any(|r| r.network == doc.network && r.spec == *spec)
            {
                change.add.push((doc.network.clone(), spec.clone()));
            }
        }
    }
    if prune {
        for origin in node.store.origins()? {
            if !docs.iter().any(|d| d.name == origin) {
                change
                    .remove
                    .extend(node.store.rules_of_origin(&origin)?.iter().map(|r| r.id));
            }
        }
    }
    Ok(change)
}
