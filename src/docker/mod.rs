//! knit as a Docker network driver: a libnetwork remote driver served by `knit daemon
//! --docker-plugin` on a unix socket (`/run/docker/plugins/knit.sock`, where Docker
//! looks for plugin `knit`), so `docker network create -d knit` networks are knit's, and
//! `--ipam-driver knit` takes their pools and addresses from knit too.
//! HTTP/1.1 + JSON as Docker's plugin client speaks it; one thread per connection (Docker
//! keeps a few connections open and sends one call at a time on each).

pub mod driver;
mod http;
pub mod ipam;
pub mod names;
pub mod state;

use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/knit.sock";

/// Binds the socket and serves it from a thread of its own. A bind failure is returned
/// (the daemon refuses to start half-configured).
pub fn spawn(state_dir: PathBuf, socket: &Path, docker_host: PathBuf) -> Result<()> {
    let listener = bind(socket)?;
    std::thread::Builder::new()
        .name("docker-plugin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let dir = state_dir.clone();
                let host = docker_host.clone();
                let _ = std::thread::Builder::new()
                    .name("docker-conn".into())
                    .spawn(move || serve(&dir, &host, conn));
            }
        })
        .map_err(|e| Error::io("starting the Docker plugin thread", e))?;
    Ok(())
}

/// Binds `socket`, replacing a stale socket file nobody listens on; a live one (another
/// knit daemon) or any other kind of file there is refused.
fn bind(socket: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(Error::invalid(
                "--docker-plugin-socket",
                socket.display(),
                "exists and is not a socket",
            ));
        }
        if UnixStream::connect(socket).is_ok() {
            return Err(Error::invalid(
                "--docker-plugin-socket",
                socket.display(),
                "another process serves this socket",
            ));
        }
        std::fs::remove_file(socket)
            .map_err(|e| Error::io(format!("removing stale {}", socket.display()), e))?;
    }
    let l = UnixListener::bind(socket)
        .map_err(|e| Error::io(format!("binding {}", socket.display()), e))?;
    // The daemon acts as root on what arrives here: only root (dockerd) may connect.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", socket.display()), e))?;
    Ok(l)
}

fn serve(dir: &Path, docker_host: &Path, conn: UnixStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut input = BufReader::new(conn);
    while let Ok(Some(req)) = http::read_request(&mut input) {
        let (status, body) = if req.method != "POST" {
            (405, json!({"Err": format!("{} is not POST", req.method)}))
        } else {
            answer(dir, docker_host, &req.path, &req.body)
        };
        if http::write_response(&mut out, status, &body.to_string()).is_err() {
            return;
        }
    }
}

/// One call: (HTTP status, JSON body). Failures are 500 with `{"Err": ...}`, which
/// Docker reads for both the network and the IPAM interface.
pub fn answer(dir: &Path, docker_host: &Path, path: &str, body: &[u8]) -> (u16, Value) {
    let call = path.trim_start_matches('/');
    let started = std::time::Instant::now();
    let result = match call {
        "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
        "IpamDriver.GetCapabilities" => {
            Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
        }
        "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
            "LocalDefaultAddressSpace": "knit-local",
            "GlobalDefaultAddressSpace": "knit-global",
        })),
        "IpamDriver.RequestPool" => ipam::request_pool(dir, body),
        "IpamDriver.ReleasePool" => ipam::release_pool(dir, body),
        "IpamDriver.RequestAddress" => ipam::request_address(dir, body),
        "IpamDriver.ReleaseAddress" => ipam::release_address(dir, body),
        "NetworkDriver.GetCapabilities" => {
            Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
        }
        "NetworkDriver.CreateNetwork" => driver::create_network(dir, body),
        "NetworkDriver.DeleteNetwork" => driver::delete_network(dir, body),
        "NetworkDriver.CreateEndpoint" => driver::create_endpoint(dir, body),
        "NetworkDriver.DeleteEndpoint" => driver::delete_endpoint(dir, body),
        "NetworkDriver.Join" => driver::join(dir, body).inspect(|_| {
            if let Some((nid, network, eid)) = driver::joined(dir, body) {
                names::spawn_lookup(
                    dir.to_path_buf(),
                    docker_host.to_path_buf(),
                    nid,
                    network,
                    eid,
                );
            }
        }),
        "NetworkDriver.EndpointOperInfo" => driver::no_op(body).map(|_| json!({"Value": {}})),
        "NetworkDriver.Leave"
        | "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity"
        | "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete" => driver::no_op(body),
        _ => {
            return (
                404,
                json!({"Err": format!("knit does not implement {call}")}),
            );
        }
    };
    crate::metrics::PLUGIN_CALLS.observe(
        call.strip_prefix("NetworkDriver.").unwrap_or(call),
        started.elapsed(),
    );
    match result {
        Ok(v) => (200, v),
        Err(e) => {
            tracing::warn!("docker {call}: {e}");
            (500, json!({"Err": e.to_string()}))
        }
    }
}
