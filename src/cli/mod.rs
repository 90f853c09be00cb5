//! The command line: parse, call the library, print a table (or JSON with --json).

use crate::error::{Error, Result};
use crate::model::{Mac, PublishSpec, SandboxRef};
use crate::netns;
use crate::node::Node;
use crate::node::attach::AttachArgs;
use crate::store::{Attachment, DEFAULT_STATE_DIR};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// Prints a line of a demo; a closed stdout (`knit demo | head`) is ignored so the demo
/// still runs to its end and removes everything it built.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod apply;
mod cluster;
mod demo;
mod demo_cluster;
mod graph;
mod ingress;
pub use ingress::IngressCmd;
mod output;
pub(crate) use output::{join, print_json, table};
use output::{port_text, print_attachment};
mod explain;
pub mod listing;
mod network;
mod policy;
pub mod report;
mod service;

/// `knit --version`: the release and the commit it was built from (see build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KNIT_COMMIT"), ")");

#[derive(Parser, Debug)]
#[command(
    name = "knit",
    version = VERSION,
    about = "Container networking for Linux: sandboxes, bridge and ptp networks, IPAM, NAT, port publishing, L4 services, network policy, container DNS"
)]
pub struct Cli {
    /// Where knit keeps its database.
    #[arg(long, global = true, env = "KNIT_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log lines as text or JSON (levels from RUST_LOG, default info; on stderr).
    #[arg(long, global = true, value_enum, default_value_t = crate::log::LogFormat::Text)]
    pub log_format: crate::log::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Network namespaces that hold containers.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Bridge and ptp networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Connect a sandbox to a network.
    Attach(AttachCli),
    /// Disconnect a sandbox from a network.
    Detach {
        /// The network to disconnect from.
        network: String,
        /// The sandbox (NAME, /PATH, pid:PID, cni:CONTAINERID/IFNAME).
        sandbox: String,
    },
    /// Everything the kernel has for one sandbox.
    Inspect {
        /// The sandbox (NAME, /PATH, pid:PID, cni:CONTAINERID/IFNAME).
        sandbox: String,
        /// Also its connections, from the node's conntrack (tuples, NAT, state, timeout).
        #[arg(long)]
        flows: bool,
        /// With --flows: only flows with this port (either side, before or after NAT).
        #[arg(long, requires = "flows")]
        port: Option<u16>,
        /// With --flows: only tcp, udp, icmp or sctp.
        #[arg(long, requires = "flows")]
        proto: Option<String>,
    },
    /// L4 load balancing: a virtual IP:port spread over backends.
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Who may open connections to a network's sandboxes.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Make the node match a topology file (YAML): create what is missing, change what
    /// differs, remove what an earlier apply of it created that it no longer declares.
    Apply(apply::ApplyCli),
    /// Remove what a topology file's applies created (a second destroy does nothing).
    Destroy(apply::ApplyCli),
    /// Re-apply all kernel state from the store.
    Reconcile,
    /// Fold the store's write-ahead log into the database (knit runs this itself).
    #[command(hide = true)]
    StoreMaintenance,
    /// Lend nf_tables sockets to knit commands in this namespace (knit starts it itself).
    #[command(hide = true)]
    NftKeeper,
    /// Build the seeds' lab in a throwaway namespace, prove it with packets, remove it
    /// (`knit demo cluster`: the multi-host chapter, three nodes on a throwaway etcd).
    Demo {
        /// `cluster` for the multi-host chapter; nothing for the single-node lab.
        scene: Option<String>,
    },
    /// The node daemon: DNS for every DNS-enabled network (on its gateway addresses),
    /// and on a cluster node the agent (lease, watch, peers).
    Daemon(DaemonCli),
    /// This node in a cluster: join, leave, list the nodes.
    #[command(subcommand)]
    Node(cluster::NodeCmd),
    /// Why can't SRC reach DST? Walks the path step by step, asking the kernel (route,
    /// neighbour entries, links, forwarding, rp_filter, every foreign firewall chain on the
    /// way, DNAT of published ports and services, masquerade, conntrack, policy, DNS, the
    /// way back, path MTU, the listener) and names the first broken step and its fix.
    /// Changes nothing. Exit status 0: every step fine; 2: a step is broken; 1: bad input.
    Doctor(explain::DoctorArgs),
    /// Sends one real probe from SRC to DST (TCP SYN, UDP datagram, or ICMP echo without a
    /// port) with nftables tracing on for that flow only, and prints the hooks, tables,
    /// chains and rules it crossed in every namespace on the way, with verdicts, NAT and
    /// the knit object behind each knit rule; then where it was delivered or dropped. The
    /// trace rules are removed afterwards. Exit status 0: delivered; 2: refused, dropped
    /// or unanswered.
    Trace(explain::TraceArgs),
    /// An HTTP router (Skipper's eskip routes) in front of sandboxes and services.
    #[command(subcommand)]
    Ingress(ingress::IngressCmd),
    /// The node's topology drawn: networks, sandboxes with addresses and published ports,
    /// services with backends, policy rules, cluster peers.
    Graph(explain::GraphArgs),
    /// Shell completions on stdout (e.g. `knit completions bash >
    /// /usr/share/bash-completion/completions/knit`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout (`knit man > /usr/share/man/man1/knit.1`).
    Man,
}

impl Command {
    /// The name commands that change the node are counted under in the daemon's
    /// `knit_command_seconds` (None: read-only or long-running commands).
    pub fn label(&self) -> Option<&'static str> {
        use network::NetworkCmd as N;
        Some(match self {
            Command::Sandbox(SandboxCmd::Add { .. }) => "sandbox add",
            Command::Sandbox(SandboxCmd::Rm { .. }) => "sandbox rm",
            Command::Network(N::Create(_)) => "network create",
            Command::Network(N::Rm { .. }) => "network rm",
            Command::Network(N::Prune) => "network prune",
            Command::Network(N::Connect(_)) | Command::Attach(_) => "attach",
            Command::Network(N::Disconnect { .. }) | Command::Detach { .. } => "detach",
            Command::Service(c) if c.changes() => "service",
            Command::Policy(c) if c.changes() => "policy",
            Command::Node(c) if c.changes() => "node",
            Command::Reconcile => "reconcile",
            Command::Apply(a) if a.changes() => "apply",
            Command::Destroy(a) if a.changes() => "destroy",
            _ => return None,
        })
    }
}

#[derive(Args, Debug)]
pub struct DaemonCli {
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9153).
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Where the upstream resolvers are listed (re-read when it changes).
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// How long to wait for each upstream resolver.
    #[arg(long, default_value_t = 1000)]
    pub upstream_timeout_ms: u64,
    /// Also serve Docker's remote network driver API (`docker network create -d knit`).
    #[arg(long)]
    pub docker_plugin: bool,
    /// Where the Docker plugin listens (Docker finds plugin `knit` there).
    #[arg(long, default_value = crate::docker::DEFAULT_SOCKET)]
    pub docker_plugin_socket: PathBuf,
    /// dockerd's API socket, asked for the names of containers on knit networks (for
    /// knit's DNS).
    #[arg(long, default_value = crate::docker::names::DEFAULT_DOCKER_HOST)]
    pub docker_host: PathBuf,
    #[command(flatten)]
    pub ingress: ingress::DaemonIngress,
}

#[derive(Subcommand, Debug)]
pub enum SandboxCmd {
    /// Create a named network namespace (/run/netns/NAME) that knit owns.
    Add {
        /// The namespace's name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 64 characters).
        name: String,
    },
    /// Detach a sandbox from every network and, if knit created it, delete it.
    Rm {
        /// The sandbox (NAME, /PATH, pid:PID).
        name: String,
    },
    /// List the sandboxes knit created and the ones attached to its networks.
    #[command(visible_alias = "list")]
    Ls(listing::ListOpts),
    /// Run a command inside the sandbox, like `ip netns exec`.
    Exec {
        /// The sandbox (NAME, /PATH, pid:PID).
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct AttachCli {
    /// The network to connect to.
    pub network: String,
    /// SANDBOX forms: NAME (a namespace in /run/netns, e.g. one made by `knit sandbox add`),
    /// /PATH (any network-namespace file), pid:PID (a process's namespace),
    /// cni:CONTAINERID/IFNAME (an attachment made through the CNI plugin).
    pub sandbox: String,
    /// A static address (one per address family), instead of the next free one.
    #[arg(long = "ip")]
    pub ips: Vec<String>,
    /// A static MAC for the sandbox's interface (unicast; default: random).
    #[arg(long)]
    pub mac: Option<String>,
    /// Interface name inside the sandbox (default: the next free ethN).
    #[arg(long)]
    pub ifname: Option<String>,
    /// [HOSTIP:]HOSTPORT[-END]:CPORT[-END][/tcp|udp|sctp]
    #[arg(long = "publish", short = 'p')]
    pub publish: Vec<String>,
    /// Another DNS name for the sandbox on this network.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// key=value label that policies select (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

fn parse_ips(raw: &[String]) -> Result<Vec<IpAddr>> {
    let ips = raw
        .iter()
        .map(|s| crate::model::parse_ip("--ip", s))
        .collect::<Result<Vec<IpAddr>>>()?;
    crate::model::check_one_per_family("--ip", &ips)?;
    Ok(ips)
}

pub fn run(mut cli: Cli) -> Result<i32> {
    crate::log::init(cli.log_format);
    // Docker's words for attach and detach.
    cli.command = match cli.command {
        Command::Network(network::NetworkCmd::Connect(a)) => Command::Attach(a),
        Command::Network(network::NetworkCmd::Disconnect { network, sandbox }) => {
            Command::Detach { network, sandbox }
        }
        c => c,
    };
    let open = |exclusive| Node::open(&cli.state_dir, exclusive);
    match cli.command {
        Command::Sandbox(SandboxCmd::Exec { name, cmd }) => {
            let r = SandboxRef::parse(&name)?;
            let ns =
                netns::Netns::open(r.path()).map_err(|_| Error::not_found("sandbox", &name))?;
            let etc = match &r {
                SandboxRef::Named(n) => Some(n.as_str()),
                _ => None,
            };
            Err(netns::exec_in(&ns, etc, &cmd))
        }
        Command::Sandbox(SandboxCmd::Add { name }) => {
            crate::model::validate_name("sandbox", &name)?;
            let mut node = open(false)?;
            let created = node.add_sandbox(&name)?;
            if cli.json {
                print_json(
                    &serde_json::json!({"sandbox": name, "created": created, "netns": netns::named_path(&name)}),
                );
            } else {
                println!(
                    "{} sandbox {name} ({})",
                    if created { "created" } else { "exists:" },
                    netns::named_path(&name).display()
                );
            }
            Ok(0)
        }
        Command::Sandbox(SandboxCmd::Rm { name }) => {
            let r = SandboxRef::parse(&name)?;
            let SandboxRef::Named(name) = r else {
                return Err(Error::invalid(
                    "sandbox",
                    name,
                    "only named sandboxes can be removed",
                ));
            };
            let mut node = open(false)?;
            let done = node.remove_sandbox(&name)?;
            crate::resolv::sync(&node.store, &name)?;
            if cli.json {
                print_json(&serde_json::json!({
                    "sandbox": name,
                    "deleted": done.deleted,
                    "detached": done.detached,
                }));
            } else {
                if done.deleted {
                    println!(
                        "removed sandbox {name} ({} attachment(s) detached)",
                        done.detached
                    );
                } else {
                    println!(
                        "detached sandbox {name} from {} network(s); its namespace was not created by knit and is left in place",
                        done.detached
                    );
                }
            }
            Ok(0)
        }
        Command::Sandbox(SandboxCmd::Ls(opts)) => {
            let node = open(false)?;
            let mut names = node.store.sandboxes()?;
            let atts = node.store.all_attachments()?;
            for a in &atts {
                if !names.contains(&a.sandbox) {
                    names.push(a.sandbox.clone());
                }
            }
            #[derive(Serialize)]
            struct Row {
                sandbox: String,
                exists: bool,
                attachments: Vec<Attachment>,
            }
            let rows: Vec<Row> = names
                .into_iter()
                .map(|n| {
                    let mine: Vec<Attachment> =
                        atts.iter().filter(|a| a.sandbox == n).cloned().collect();
                    // A CNI sandbox's namespace is wherever the runtime put it (e.g.
                    // /var/run/netns/cni-…): only its attachments know the path.
                    let path = mine
                        .iter()
                        .map(|a| a.netns_path.clone())
                        .find(|p| !p.is_empty())
                        .or_else(|| SandboxRef::parse(&n).ok().map(|r| r.path()))
                        .unwrap_or_else(|| n.clone());
                    Row {
                        exists: !path.is_empty() && netns::is_netns(std::path::Path::new(&path)),
                        attachments: mine,
                        sandbox: n,
                    }
                })
                .collect();
            let Some(rows) = opts.apply(rows, "sandbox")? else {
                return Ok(0);
            };
            if cli.json {
                print_json(&rows);
            } else {
                table(
                    &["SANDBOX", "EXISTS", "NETWORKS", "ADDRESSES"],
                    rows.iter()
                        .map(|r| {
                            let nets: Vec<String> =
                                r.attachments.iter().map(|a| a.network.clone()).collect();
                            let ips: Vec<String> = r
                                .attachments
                                .iter()
                                .flat_map(|a| a.ips.iter().map(|i| i.to_string()))
                                .collect();
                            vec![
                                r.sandbox.clone(),
                                r.exists.to_string(),
                                join(&nets),
                                join(&ips),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(0)
        }
        Command::Network(c) => network::run(c, &cli.state_dir, cli.json),
        Command::Attach(a) => {
            let sandbox = SandboxRef::parse(&a.sandbox)?;
            let ips = parse_ips(&a.ips)?;
            let mac = a
                .mac
                .as_deref()
                .map(|m| Mac::parse("--mac", m))
                .transpose()?;
            let publish = a
                .publish
                .iter()
                .map(|p| PublishSpec::parse(p))
                .collect::<Result<Vec<_>>>()?;
            let labels = crate::model::policy::parse_labels("--label", &a.labels)?;
            let mut node = open(false)?;
            let done = node.attach(&AttachArgs {
                network: &a.network,
                sandbox: &sandbox,
                ifname: a.ifname.as_deref(),
                static_ips: &ips,
                mac,
                publish: &publish,
                container_id: None,
                routes: None,
                aliases: &a.aliases,
                labels: &labels,
            })?;
            crate::resolv::sync(&node.store, &done.attachment.sandbox)?;
            print_attachment(&done.attachment, done.existed, cli.json);
            if !cli.json && done.network.dns && !crate::dns::daemon_running(&cli.state_dir) {
                println!(
                    "  dns: unavailable (no `knit daemon` running for {}); names resolve once it starts",
                    cli.state_dir.display()
                );
            }
            Ok(0)
        }
        Command::Detach { network, sandbox } => {
            let sandbox = SandboxRef::parse(&sandbox)?;
            let mut node = open(false)?;
            let gone = node.detach(&network, &sandbox)?;
            crate::resolv::sync(&node.store, &sandbox.key())?;
            if cli.json {
                print_json(&serde_json::json!({"detached": gone.is_some()}));
            } else if gone.is_some() {
                println!("detached {} from {network}", sandbox.key());
            } else {
                println!("{} was not attached to {network}", sandbox.key());
            }
            Ok(0)
        }
        Command::Inspect {
            sandbox,
            flows,
            port,
            proto,
        } => {
            let sandbox = SandboxRef::parse(&sandbox)?;
            let node = open(false)?;
            let mut v = node.inspect_sandbox(&sandbox)?;
            if flows {
                let proto = match proto.as_deref() {
                    None => None,
                    Some("tcp") => Some(6),
                    Some("udp") => Some(17),
                    Some("icmp") => Some(1),
                    Some("sctp") => Some(132),
                    Some(p) => {
                        return Err(Error::invalid(
                            "--proto",
                            p,
                            "expected tcp, udp, icmp or sctp",
                        ));
                    }
                };
                let f = crate::node::flows::FlowFilter { port, proto };
                v.flows = Some(node.sandbox_flows(&sandbox, &f)?);
            }
            if v.attachments.is_empty() && v.inside.is_none() {
                return Err(Error::not_found("sandbox", sandbox.key()));
            }
            if cli.json {
                print_json(&v);
            } else {
                report::print_inspect(&v);
            }
            Ok(0)
        }
        Command::Reconcile => {
            let mut node = open(true)?;
            let rep = node.reconcile()?;
            if cli.json {
                print_json(&rep);
            } else {
                println!(
                    "reconciled {} network(s), {} attachment(s) in place; removed {} pending, {} with a vanished sandbox",
                    rep.networks,
                    rep.attachments_ok.len(),
                    rep.pending_removed.len(),
                    rep.gone_removed.len(),
                );
                for l in &rep.unrecorded_links {
                    println!(
                        "  unrecorded link {l}: knit-style name but no record; left alone (delete it by hand if it is a leftover)"
                    );
                }
                for e in &rep.errors {
                    println!("  error: {e}");
                }
            }
            Ok(if rep.errors.is_empty() { 0 } else { 1 })
        }
        Command::Service(c) => service::run(c, &cli.state_dir, cli.json),
        Command::Policy(c) => policy::run(c, &cli.state_dir, cli.json),
        Command::Apply(a) => apply::apply(a, &cli.state_dir, cli.json),
        Command::Destroy(a) => apply::destroy(a, &cli.state_dir, cli.json),
        Command::Node(c) => cluster::run(c, &cli.state_dir, cli.json),
        Command::Ingress(c) => ingress::run(c, &cli.state_dir, cli.json),
        Command::StoreMaintenance => {
            // Folding never creates a database: one that vanished since the command that
            // spawned this is a lost store, for the next command to report.
            if crate::store::Store::is_blank(&cli.state_dir) {
                return Ok(0);
            }
            let mut store = crate::store::Store::open(&cli.state_dir)?;
            store.fold_wal()?;
            Ok(0)
        }
        Command::NftKeeper => crate::nft::keeper::run_keeper(),
        Command::Doctor(a) => explain::doctor(&open(false)?, &a, cli.json),
        Command::Trace(a) => explain::trace(&open(false)?, &a, cli.json),
        Command::Graph(a) => {
            explain::enter_node_ns(&a)?;
            explain::graph(&open(false)?, &a)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "knit", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Error::io("writing the man page", e))?;
            Ok(0)
        }
        Command::Demo { scene } => demo::hold_if_interrupted(match scene.as_deref() {
            None => demo::run(),
            Some("cluster") => demo_cluster::run(),
            Some(other) => Err(crate::error::Error::invalid(
                "demo",
                other,
                "the demos are `knit demo` and `knit demo cluster`",
            )),
        }),
        Command::Daemon(d) => {
            if d.docker_plugin {
                crate::docker::spawn(
                    cli.state_dir.clone(),
                    &d.docker_plugin_socket,
                    d.docker_host.clone(),
                )?;
            }
            ingress::spawn_in_daemon(&d.ingress, &cli.state_dir)?;
            crate::node::agent::spawn(cli.state_dir.clone());
            crate::dns::run(crate::dns::Config {
                state_dir: cli.state_dir.clone(),
                resolv_conf: d.resolv_conf,
                metrics: d.metrics,
                upstream_timeout: std::time::Duration::from_millis(d.upstream_timeout_ms),
            })
        }
    }
}

#[cfg(test)]
mod help_tests;
