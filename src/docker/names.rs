//! Container names for knit's DNS. Docker's network driver API never tells a driver
//! which container an endpoint is for; dockerd's own API does, once the container is
//! connected (`GET /networks/ID`: endpoint → container name; the container's aliases on
//! that network from `GET /containers/ID/json`). After a Join the daemon asks, in the
//! background, and records the names as the attachment's DNS names: knit's DNS on the
//! network's gateway then answers them (Docker's embedded DNS at 127.0.0.11 answers them
//! too, for containers that use it).

use crate::error::Result;
use crate::node::Node;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_DOCKER_HOST: &str = "/var/run/docker.sock";

/// One GET on dockerd's API socket (HTTP/1.0: the whole body, no chunking).
fn get(sock: &Path, path: &str) -> Option<Value> {
    let mut s = UnixStream::connect(sock).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// The container's name and its aliases on the network, once dockerd shows the endpoint.
fn names_of(sock: &Path, network_id: &str, endpoint_id: &str) -> Option<Vec<String>> {
    let net = get(sock, &format!("/networks/{network_id}"))?;
    let (cid, c) = net["Containers"]
        .as_object()?
        .iter()
        .find(|(_, c)| c["EndpointID"] == endpoint_id)?;
    let mut names = vec![c["Name"].as_str()?.trim_start_matches('/').to_string()];
    if let Some(ctr) = get(sock, &format!("/containers/{cid}/json"))
        && let Some(nets) = ctr["NetworkSettings"]["Networks"].as_object()
    {
        for n in nets.values().filter(|n| n["NetworkID"] == network_id) {
            for a in n["Aliases"].as_array().into_iter().flatten() {
                if let Some(a) = a.as_str()
                    && !names.iter().any(|x| x == a)
                {
                    names.push(a.to_string());
                }
            }
        }
    }
    names.retain(|n| crate::model::validate_dns_name("name", n).is_ok());
    Some(names)
}

fn record(dir: &Path, network: &str, endpoint_id: &str, names: &[String]) -> Result<()> {
    let mut node = Node::open(dir, false)?;
    if let Some(net) = node.store.find_network(network)?
        && let Some(att) = node
            .store
            .attachment(net.id, &format!("docker:{endpoint_id}"))?
    {
        node.store.set_aliases(att.id, names)?;
    }
    Ok(())
}

/// Looks the endpoint's container up in the background (dockerd connects it after Join
/// returns), for up to 10 s.
pub fn spawn_lookup(
    dir: PathBuf,
    sock: PathBuf,
    network_id: String,
    network: String,
    endpoint_id: String,
) {
    let _ = std::thread::Builder::new()
        .name("docker-names".into())
        .spawn(move || {
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(names) = names_of(&sock, &network_id, &endpoint_id) {
                    if let Err(e) = record(&dir, &network, &endpoint_id, &names) {
                        tracing::warn!("docker endpoint {endpoint_id}: recording its names: {e}");
                    }
                    return;
                }
            }
            tracing::info!(
                "docker endpoint {endpoint_id}: no container found for it in 10 s; no DNS names"
            );
        });
}
