//! What the Docker driver must remember between calls, in knit's state directory: Docker
//! sends CreateNetwork once and never replays it (not after a plugin restart either), and
//! an endpoint's addresses and ports arrive at CreateEndpoint but are used at Join.
//! One JSON file per object, written whole and renamed into place.

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};

/// A Docker network: the knit network that carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub network: String,
}

/// A Docker endpoint between CreateEndpoint and DeleteEndpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub network: String,
    pub ips: Vec<std::net::IpAddr>,
    pub mac: String,
    /// Docker's port bindings, as given (see `driver::publish_of`).
    pub ports: Vec<PortBinding>,
}

/// One of Docker's `com.docker.network.portmap` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// IANA protocol number: 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    #[serde(rename = "IP", default)]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: u16,
    #[serde(default)]
    pub host_port_end: u16,
}

/// Docker's IDs are 64 hex digits; anything else never names a file.
pub fn check_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::invalid(field, id, "expected Docker's hex ID"));
    }
    Ok(())
}

fn path(dir: &Path, kind: &str, id: &str) -> PathBuf {
    dir.join("docker").join(kind).join(format!("{id}.json"))
}

pub fn save<T: Serialize>(dir: &Path, kind: &'static str, id: &str, v: &T) -> Result<()> {
    let p = path(dir, kind, id);
    let parent = p.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).op(|| format!("creating {}", parent.display()))?;
    let tmp = p.with_extension("tmp");
    let bytes = serde_json::to_vec(v).map_err(|e| Error::invalid(kind, id, e))?;
    std::fs::write(&tmp, bytes).op(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p).op(|| format!("renaming {}", p.display()))
}

pub fn load<T: DeserializeOwned>(dir: &Path, kind: &'static str, id: &str) -> Result<Option<T>> {
    let p = path(dir, kind, id);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::invalid(kind, id, format!("unreadable record: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
    }
}

pub fn remove(dir: &Path, kind: &'static str, id: &str) -> Result<()> {
    let p = path(dir, kind, id);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

/// Every record of `kind`, with its ID.
pub fn all<T: DeserializeOwned>(dir: &Path, kind: &'static str) -> Result<Vec<(String, T)>> {
    let d = dir.join("docker").join(kind);
    let Ok(entries) = std::fs::read_dir(&d) else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(id) = name.strip_suffix(".json")
            && let Some(v) = load::<T>(dir, kind, id)?
        {
            out.push((id.to_string(), v));
        }
    }
    Ok(out)
}
