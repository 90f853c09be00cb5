//! knit as a CNI 1.1 plugin: the same binary, selected by CNI_COMMAND in the environment.
//! Drop-in for bridge + host-local + portmap: one process does the interface, the
//! addresses, masquerade and port mappings, on the same store as the CLI.

pub mod check;
pub mod conf;
pub mod env;
pub mod error;
pub mod result;
mod runtime_keys;

use crate::model::SandboxRef;
use crate::node::Node;
use crate::node::attach::AttachArgs;
use crate::store::{DEFAULT_STATE_DIR, Network};
use conf::{NetConf, SUPPORTED_VERSIONS, version_at_least};
use env::{Command, Env};
use error::*;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Entry point when CNI_COMMAND is set. Returns the exit status.
pub fn main() -> i32 {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let (out, code) = run(&stdin, |k| std::env::var(k).ok());
    if !out.is_empty() {
        println!("{out}");
    }
    code
}

/// Runs one CNI command; returns (stdout, exit status). Pure over its inputs apart from the
/// kernel and the store, so tests can drive it in-process too.
pub fn run(stdin: &[u8], get: impl Fn(&str) -> Option<String>) -> (String, i32) {
    // stdin is decoded once; every command works from this value.
    let value = conf::decode(stdin);
    let version = value
        .as_ref()
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string());
    match dispatch(value, &get) {
        Ok(out) => (out, 0),
        Err(e) => (e.to_json(&version), 1),
    }
}

fn dispatch(
    value: Result<Value, CniError>,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<String, CniError> {
    let env = Env::from(get)?;
    if env.command == Command::Version {
        let asked = value
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .unwrap_or_else(|| "1.1.0".into());
        return Ok(
            json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS}).to_string(),
        );
    }
    let state_dir_of = |conf_dir: &Option<String>| {
        PathBuf::from(
            conf_dir
                .clone()
                .or_else(|| get("KNIT_STATE_DIR"))
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        )
    };
    if env.command == Command::Del {
        // DEL never depends on the ADD-only parts of the configuration.
        let id = conf::identity(&value?)?;
        let dir = state_dir_of(&id.state_dir);
        let started = std::time::Instant::now();
        let done = del(&env, &id.name, &dir);
        crate::metrics::record_command(&dir, "cni del", started.elapsed());
        return done;
    }
    let raw = value?;
    let conf = conf::from_value(raw.clone())?;
    let state_dir = state_dir_of(&conf.state_dir);
    let started = std::time::Instant::now();
    let done = run_command(&env, &conf, &raw, &state_dir);
    if env.command == Command::Add {
        crate::metrics::record_command(&state_dir, "cni add", started.elapsed());
    }
    done
}

/// The commands that read the whole configuration.
fn run_command(
    env: &Env,
    conf: &NetConf,
    raw: &Value,
    state_dir: &Path,
) -> Result<String, CniError> {
    match env.command {
        Command::Add => add(env, conf, state_dir),
        Command::Del => unreachable!("handled above"),
        Command::Check => {
            if !version_at_least(&conf.cni_version, "0.4.0") {
                return Err(CniError::new(
                    INCOMPATIBLE_VERSION,
                    format!(
                        "CHECK needs cniVersion 0.4.0 or later, config has {}",
                        conf.cni_version
                    ),
                ));
            }
            check::check(env, conf, state_dir)
        }
        Command::Gc => {
            need_1_1(conf, "GC")?;
            gc(conf, raw, state_dir)
        }
        Command::Status => {
            need_1_1(conf, "STATUS")?;
            status(conf, state_dir)
        }
        Command::Version => unreachable!("handled above"),
    }
}

fn need_1_1(conf: &NetConf, what: &str) -> Result<(), CniError> {
    if version_at_least(&conf.cni_version, "1.1.0") {
        Ok(())
    } else {
        Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "{what} needs cniVersion 1.1.0, config has {}",
                conf.cni_version
            ),
        ))
    }
}

fn open(state_dir: &Path) -> Result<Node, CniError> {
    Node::open(state_dir, false).map_err(|e| {
        CniError::new(
            IO_FAILURE,
            format!("opening knit state in {}: {e}", state_dir.display()),
        )
    })
}

fn add(env: &Env, conf: &NetConf, state_dir: &Path) -> Result<String, CniError> {
    if conf.prev_result.is_some() {
        return Err(CniError::new(
            UNSUPPORTED_FIELD,
            "prevResult: knit creates the container interface and must be the first plugin in a chain",
        ));
    }
    if !crate::netns::is_netns(std::path::Path::new(&env.netns)) {
        return Err(CniError::new(
            INVALID_ENV,
            format!("CNI_NETNS {:?} is not a network namespace", env.netns),
        ));
    }
    let spec = conf.network_spec()?;
    let routes = conf.routes(&spec)?;
    let ips = conf.static_ips(&env.args.ips)?;
    let mac = conf.mac(env.args.mac.as_deref())?;
    let publish = conf.publish()?;
    // DNS names: the `aliases` capability, and the container's name, which podman and
    // CRI runtimes pass as K8S_POD_NAME (the dnsname plugin's convention).
    let mut names = conf.aliases()?;
    if let Some(pod) = &env.args.pod_name
        && crate::model::validate_dns_name("K8S_POD_NAME", pod).is_ok()
        && !names.contains(pod)
    {
        names.insert(0, pod.clone());
    }
    let labels = conf.labels()?;
    let mut node = open(state_dir)?;
    node.ensure_runtime_network(&spec, "cni")
        .map_err(|e| conf.cni_error(e))?;
    let sandbox = SandboxRef::Container {
        id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: env.netns.clone(),
    };
    let done = node
        .attach(&AttachArgs {
            network: &conf.name,
            sandbox: &sandbox,
            ifname: Some(&env.ifname),
            static_ips: &ips,
            mac,
            publish: &publish,
            container_id: Some(&env.container_id),
            routes: Some(&routes),
            aliases: &names,
            labels: &labels,
        })
        .map_err(|e| conf.cni_error(e))?;
    let dns = conf.dns().or_else(|| knit_dns(&done.network));
    let r = result::build(&done.network, &done.attachment, dns);
    Ok(result::render(&r, &conf.cni_version).to_string())
}

/// The result's `dns` when the configuration has none: knit's own server on the gateway.
fn knit_dns(net: &Network) -> Option<Value> {
    if !net.serves_dns() {
        return None;
    }
    let servers: Vec<String> = net.subnets.iter().map(|s| s.gateway.to_string()).collect();
    let mut d = json!({"nameservers": servers});
    if let Some(domain) = &net.dns_domain {
        d["search"] = json!([domain]);
        d["domain"] = json!(domain);
    }
    Some(d)
}

fn del(env: &Env, name: &str, state_dir: &Path) -> Result<String, CniError> {
    crate::model::validate_name("name", name)
        .map_err(|e| CniError::new(INVALID_CONFIG, e.to_string()))?;
    let mut node = open(state_dir)?;
    let Some(net) = node.store.find_network(name)? else {
        return Ok(String::new());
    };
    if let Some(att) = node.store.attachment(net.id, &env.sandbox_key())? {
        node.detach_attachment(&net, &att)?;
    }
    Ok(String::new())
}

/// The attachments a GC request says are still in use.
fn valid_attachments(raw: &Value) -> Vec<(String, String)> {
    let list = raw
        .get("cni.dev/valid-attachments")
        .or_else(|| raw.get("cni.dev/attachments"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|a| {
            Some((
                a["containerID"].as_str()?.to_string(),
                a["ifname"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn gc(conf: &NetConf, raw: &Value, state_dir: &Path) -> Result<String, CniError> {
    let valid = valid_attachments(raw);
    let mut node = open(state_dir)?;
    let Some(net) = node.store.find_network(&conf.name)? else {
        return Ok(String::new());
    };
    let mut failures = vec![];
    for att in node.store.attachments_of_network(net.id)? {
        let Some(cid) = &att.container_id else {
            continue;
        };
        if valid.iter().any(|(c, i)| c == cid && *i == att.ifname) {
            continue;
        }
        if let Err(e) = node.detach_attachment(&net, &att) {
            failures.push(format!("{cid}/{}: {e}", att.ifname));
        }
    }
    if failures.is_empty() {
        Ok(String::new())
    } else {
        Err(
            CniError::new(IO_FAILURE, "GC could not remove every stale attachment")
                .details(failures.join("; ")),
        )
    }
}

fn status(conf: &NetConf, state_dir: &Path) -> Result<String, CniError> {
    let not_ready = |m: String| CniError::new(NOT_AVAILABLE, m);
    crate::nft::libnft::Session::new().map_err(|e| not_ready(e.to_string()))?;
    // STATUS only looks: it never creates the state directory (or the store in it).
    if !state_dir.is_dir() {
        return Err(not_ready(format!(
            "knit's state directory {} does not exist (check stateDir / KNIT_STATE_DIR)",
            state_dir.display()
        )));
    }
    if !state_dir.join("knit.db").exists() {
        // No network yet: ADD can serve if it can create the store here.
        return if writable(state_dir) {
            Ok(String::new())
        } else {
            Err(not_ready(format!(
                "knit's state directory {} is not writable",
                state_dir.display()
            )))
        };
    }
    let node = Node::open(state_dir, false)
        .map_err(|e| not_ready(format!("knit state in {}: {e}", state_dir.display())))?;
    if let Some(net) = node.store.find_network(&conf.name)?
        && let Some(br) = &net.bridge
    {
        let mut nl = crate::netlink::Netlink::open()?;
        if nl.link_index(br)?.is_none() {
            let degraded = !node.store.attachments_of_network(net.id)?.is_empty();
            let code = if degraded { DEGRADED } else { NOT_AVAILABLE };
            return Err(CniError::new(
                code,
                format!(
                    "bridge {br} of network {:?} is missing; run `knit reconcile`",
                    net.name
                ),
            ));
        }
    }
    Ok(String::new())
}

/// Whether this process may create files in `dir`.
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}
