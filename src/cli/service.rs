//! `knit service ...`.

use super::{join, print_json, table};
use crate::error::Result;
use crate::model::service::{BackendSpec, ServiceSpec};
use crate::node::Node;
use crate::store::Service;
use clap::{Args, Subcommand};
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service: new connections to VIP are spread over the backends.
    Create(CreateService),
    /// Every service with its VIP, node port, affinity and backends.
    #[command(visible_alias = "list")]
    Ls(super::listing::ListOpts),
    /// One service, with the addresses its backends resolve to now.
    Inspect {
        /// The service's name.
        name: String,
    },
    /// Remove a service and all its kernel state.
    Rm {
        /// The service's name.
        name: String,
    },
    /// Create every service in a JSON file (an array of {"name", "vip", "backends",
    /// "affinity", "node_port"}) in one transaction.
    Import {
        /// The JSON file.
        file: std::path::PathBuf,
    },
    /// Add or remove one backend.
    #[command(subcommand)]
    Backend(BackendCmd),
}

impl ServiceCmd {
    /// Whether the command changes the node (for `knit_command_seconds`).
    pub fn changes(&self) -> bool {
        !matches!(self, ServiceCmd::Ls(_) | ServiceCmd::Inspect { .. })
    }
}

#[derive(Args, Debug)]
pub struct CreateService {
    /// The service's name.
    pub name: String,
    /// IP:PORT[/tcp|udp|sctp] ([IPV6]:PORT for IPv6).
    #[arg(long)]
    pub vip: String,
    /// SANDBOX:PORT or IP:PORT (repeatable).
    #[arg(long = "backend")]
    pub backends: Vec<String>,
    /// client-ip[=SECONDS]: keep a client on one backend (default 10800 s).
    #[arg(long)]
    pub affinity: Option<String>,
    /// Also expose the service on this port of every node address.
    #[arg(long)]
    pub node_port: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum BackendCmd {
    /// Add a backend to a service.
    Add {
        /// The service's name.
        name: String,
        /// SANDBOX:PORT or IP:PORT.
        backend: String,
    },
    /// Remove a backend from a service.
    Rm {
        /// The service's name.
        name: String,
        /// SANDBOX:PORT or IP:PORT, as added.
        backend: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportItem {
    name: String,
    vip: String,
    #[serde(default)]
    backends: Vec<String>,
    affinity: Option<String>,
    node_port: Option<u32>,
}

fn backends_text(s: &Service) -> String {
    join(
        &s.backends
            .iter()
            .map(|b| b.spec.to_string())
            .collect::<Vec<_>>(),
    )
}

fn print_service(node: &Node, s: &Service, json: bool) -> Result<()> {
    let fw = crate::service::resolve(&node.store, s)?;
    let live: Vec<String> = fw
        .backends
        .iter()
        .map(|(_, ip, port)| BackendSpec {
            target: crate::model::service::Target::Ip(*ip),
            port: *port,
        })
        .map(|b| b.to_string())
        .collect();
    if json {
        print_json(&serde_json::json!({"service": s, "endpoints": live}));
        return Ok(());
    }
    println!("service {} (id {})", s.name, s.id);
    println!("  vip:       {}", s.vip);
    if let Some(np) = s.node_port {
        println!("  node port: {np}/{}", s.vip.proto);
    }
    if let Some(a) = s.affinity {
        println!("  affinity:  client-ip, {a} s");
    }
    println!("  backends:  {}", backends_text(s));
    println!("  endpoints: {}", join(&live));
    Ok(())
}

pub fn run(cmd: ServiceCmd, state_dir: &Path, json: bool) -> Result<i32> {
    match cmd {
        ServiceCmd::Create(c) => {
            let spec = ServiceSpec::new(
                &c.name,
                &c.vip,
                &c.backends,
                c.affinity.as_deref(),
                c.node_port,
            )?;
            let mut node = Node::open(state_dir, false)?;
            let (svc, existed) = node.create_service(&spec)?;
            // On a cluster node the service is the cluster's: published, or undone.
            if let Err(e) = node.publish_service(&svc.name) {
                if !existed {
                    let _ = node.remove_service(&svc.name);
                }
                return Err(e);
            }
            if !json {
                println!(
                    "{} service {} on {}",
                    if existed { "exists:" } else { "created" },
                    svc.name,
                    svc.vip
                );
            }
            print_service(&node, &svc, json)?;
        }
        ServiceCmd::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| crate::error::Error::io(format!("read {}", file.display()), e))?;
            let items: Vec<ImportItem> = serde_json::from_str(&text).map_err(|e| {
                crate::error::Error::invalid(
                    "FILE",
                    file.display(),
                    format!("not a service list: {e}"),
                )
            })?;
            let specs = items
                .iter()
                .map(|i| {
                    ServiceSpec::new(
                        &i.name,
                        &i.vip,
                        &i.backends,
                        i.affinity.as_deref(),
                        i.node_port,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let mut node = Node::open(state_dir, false)?;
            let done = node.create_services(&specs)?;
            let created = done.iter().filter(|(_, existed)| !existed).count();
            if json {
                print_json(
                    &serde_json::json!({"created": created, "existing": done.len() - created}),
                );
            } else {
                println!(
                    "imported {} service(s): {created} created, {} already there",
                    done.len(),
                    done.len() - created
                );
            }
        }
        ServiceCmd::Ls(opts) => {
            let node = Node::open(state_dir, false)?;
            let Some(all) = opts.apply(node.store.services()?, "name")? else {
                return Ok(0);
            };
            if json {
                print_json(&all);
            } else {
                table(
                    &["NAME", "VIP", "NODEPORT", "AFFINITY", "BACKENDS"],
                    all.iter()
                        .map(|s| {
                            vec![
                                s.name.clone(),
                                s.vip.to_string(),
                                s.node_port.map_or("-".into(), |p| p.to_string()),
                                s.affinity.map_or("-".into(), |a| format!("{a}s")),
                                backends_text(s),
                            ]
                        })
                        .collect(),
                );
            }
        }
        ServiceCmd::Inspect { name } => {
            let node = Node::open(state_dir, false)?;
            let svc = node.store.service(&name)?;
            print_service(&node, &svc, json)?;
        }
        ServiceCmd::Rm { name } => {
            let mut node = Node::open(state_dir, false)?;
            // A cluster service leaves etcd first: if etcd cannot be reached, nothing
            // changes (removing it here only would be undone by the next sync).
            let cluster = node.withdraw_service(&name)?;
            match node.remove_service(&name) {
                Ok(_) => {}
                // This node's agent saw it leave etcd and removed it already.
                Err(crate::error::Error::NotFound { .. }) if cluster => {}
                Err(e) => return Err(e),
            }
            if json {
                super::print_json(&serde_json::json!({ "removed": name }));
            } else {
                println!("removed service {name}");
            }
        }
        ServiceCmd::Backend(b) => {
            let (name, raw, add) = match b {
                BackendCmd::Add { name, backend } => (name, backend, true),
                BackendCmd::Rm { name, backend } => (name, backend, false),
            };
            let spec = BackendSpec::parse(&raw)?;
            let mut node = Node::open(state_dir, false)?;
            let svc = node.change_backend(&name, &spec, add)?;
            if node.store.cluster_services()?.contains(&name)
                && let Err(e) = node.publish_service(&name)
            {
                let _ = node.change_backend(&name, &spec, !add);
                return Err(e);
            }
            if !json {
                println!(
                    "{} backend {spec} {} service {name}",
                    if add { "added" } else { "removed" },
                    if add { "to" } else { "from" }
                );
            }
            print_service(&node, &svc, json)?;
        }
    }
    Ok(0)
}
