//! knit as a netavark plugin (podman 5's way to add network drivers): the same binary,
//! run by netavark as `knit create|setup NETNS|teardown NETNS|info` with JSON on stdin
//! (netavark's `plugin-API.md`). Install it as `knit` in a plugin directory
//! (`/usr/libexec/netavark/knit` → the knit binary) and `podman network create -d knit`.
//!
//! Networks are built on the first container that uses them (origin "netavark"), like
//! CNI's; `create` only validates and fills in what knit chooses, so podman stores a
//! config `setup` accepts.

pub mod translate;
pub mod types;

use crate::error::{Error, Result};
use crate::model::SandboxRef;
use crate::node::Node;
use crate::node::attach::AttachArgs;
use crate::store::DEFAULT_STATE_DIR;
use serde_json::json;
use std::io::Read;
use std::path::PathBuf;
use types::PluginExec;

/// The plugin API version knit speaks.
pub const API_VERSION: &str = "1.0.0";

/// The subcommands netavark runs a plugin with; the CLI has none of these names.
pub const COMMANDS: &[&str] = &["create", "setup", "teardown", "info"];

pub const ORIGIN: &str = "netavark";

/// Entry point when argv[1] is one of `COMMANDS`. Returns the exit status; errors go to
/// stdout as `{"error": "..."}`, which netavark shows to the podman user.
pub fn main(args: &[String]) -> i32 {
    let mut stdin = Vec::new();
    if args.first().map(String::as_str) != Some("info") {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    match run(args, &stdin) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            0
        }
        Err(e) => {
            println!("{}", json!({ "error": e.to_string() }));
            1
        }
    }
}

fn state_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("KNIT_STATE_DIR")
            .ok()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
    )
}

/// One plugin command over its arguments and stdin.
pub fn run(args: &[String], stdin: &[u8]) -> Result<String> {
    let cmd = args.first().map(String::as_str).unwrap_or_default();
    let netns = || {
        args.get(1).cloned().ok_or_else(|| {
            Error::invalid(
                "netns",
                "",
                format!("`{cmd}` needs the container's netns path"),
            )
        })
    };
    match cmd {
        "info" => Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "api_version": API_VERSION,
            "description": "knit: bridge and ptp networks with knit's IPAM, NAT, published ports, DNS and policy",
        })
        .to_string()),
        "create" => create(stdin),
        "setup" | "teardown" => {
            let (netns, exec) = (netns()?, decode(stdin)?);
            let started = std::time::Instant::now();
            let done = if cmd == "setup" {
                setup(&netns, &exec)
            } else {
                teardown(&netns, &exec)
            };
            let label = if cmd == "setup" { "netavark setup" } else { "netavark teardown" };
            crate::metrics::record_command(&state_dir(), label, started.elapsed());
            done
        }
        other => Err(Error::invalid(
            "command",
            other,
            format!("expected one of {}", COMMANDS.join(", ")),
        )),
    }
}

fn decode(stdin: &[u8]) -> Result<PluginExec> {
    serde_json::from_slice(stdin)
        .map_err(|e| Error::invalid("stdin", "", format!("not netavark plugin input: {e}")))
}

fn create(stdin: &[u8]) -> Result<String> {
    let raw: serde_json::Value = serde_json::from_slice(stdin)
        .map_err(|e| Error::invalid("stdin", "", format!("not a netavark network: {e}")))?;
    // Subnets knit already uses, so a network without --subnet gets a free one. Reading
    // only: `create` leaves the kernel and the store as they are.
    let dir = state_dir();
    let taken = if dir.join("knit.db").exists() {
        Node::open(&dir, false)?
            .store
            .networks()?
            .iter()
            .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
            .collect()
    } else {
        vec![]
    };
    Ok(translate::complete(raw, &taken)?.to_string())
}

fn sandbox(netns: &str, exec: &PluginExec) -> SandboxRef {
    SandboxRef::Container {
        id: exec.container_id.clone(),
        ifname: exec.network_options.interface_name.clone(),
        netns: netns.to_string(),
    }
}

fn setup(netns: &str, exec: &PluginExec) -> Result<String> {
    if !crate::netns::is_netns(std::path::Path::new(netns)) {
        return Err(Error::invalid("netns", netns, "is not a network namespace"));
    }
    if !crate::cni::env::valid_container_id(&exec.container_id) {
        return Err(Error::invalid(
            "container_id",
            &exec.container_id,
            "must be letters, digits, '_', '.' or '-'",
        ));
    }
    let spec = translate::network_spec(&exec.network)?;
    let parts = translate::attach_parts(exec)?;
    let mut node = Node::open(&state_dir(), false)?;
    let sandbox = sandbox(netns, exec);
    let ifname = Some(exec.network_options.interface_name.as_str()).filter(|i| !i.is_empty());
    let args = AttachArgs {
        network: &spec.name,
        sandbox: &sandbox,
        ifname,
        static_ips: &parts.static_ips,
        mac: parts.mac,
        publish: &parts.publish,
        container_id: Some(&exec.container_id),
        routes: parts.routes.as_deref(),
        aliases: &parts.names,
        labels: &parts.labels,
    };
    // The network can be reclaimed between ensuring it and attaching (another runtime
    // network took its subnets): ensure again once.
    let mut tries = 0;
    let done = loop {
        node.ensure_runtime_network(&spec, ORIGIN)
            .map_err(translate::rename)?;
        match node.attach(&args) {
            Err(Error::NotFound {
                kind: "network", ..
            }) if tries == 0 => tries += 1,
            other => break other.map_err(translate::rename)?,
        }
    };
    let block = translate::status(&done.network, &done.attachment);
    serde_json::to_string(&block).map_err(|e| Error::invalid("status", "", e))
}

/// Undoes `setup`; a container that was never (or is no longer) attached is no error, as
/// netavark tears down after failed setups too.
fn teardown(netns: &str, exec: &PluginExec) -> Result<String> {
    crate::model::validate_name("network.name", &exec.network.name)?;
    let mut node = Node::open(&state_dir(), false)?;
    let Some(net) = node.store.find_network(&exec.network.name)? else {
        return Ok(String::new());
    };
    let key = sandbox(netns, exec).key();
    if let Some(att) = node.store.attachment(net.id, &key)? {
        node.detach_attachment(&net, &att)?;
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests;
