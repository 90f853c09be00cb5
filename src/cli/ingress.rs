//! `knit ingress ...`: check a routes file, or serve it.

use super::print_json;
use crate::error::{Error, Result};
use crate::ingress::eskip;
use crate::ingress::route;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum IngressCmd {
    /// Parse and validate a routes file (eskip) without serving it: prints the route ids.
    /// Exit status 1: a syntax or argument error (FILE:LINE:COL: message); 3: it parses
    /// but uses predicates, filters or backends knit does not implement (listed).
    Check {
        /// The routes file.
        file: PathBuf,
    },
    /// Serve HTTP: route requests by the routes file to backends (HTTP URLs, knit
    /// services and sandboxes). The file is watched and reloaded on change; a file that
    /// does not load is refused whole and the old routes stay. SIGTERM stops accepting,
    /// lets in-flight requests finish, then exits.
    Serve(Box<ServeArgs>),
    /// Routes kept in knit's store, served beside the routes file by every `knit ingress
    /// serve` of this state directory (a stored route replaces a file route of the same
    /// id); a running one picks changes up without a restart.
    #[command(subcommand)]
    Route(RouteCmd),
}

#[derive(Subcommand, Debug)]
pub enum RouteCmd {
    /// Add a route: its id, and the route in eskip without the id, e.g.
    /// 'Path("/api") -> setPath("/") -> "http://10.0.0.2:8080"'. Exit status 1: it does not
    /// parse or has a bad argument; 3: it uses something knit does not implement; 4: the
    /// id exists (--replace replaces it).
    Add {
        /// The route's id (letters, digits and _).
        id: String,
        /// The route in eskip, without its id.
        route: String,
        /// Replace a stored route of this id.
        #[arg(long)]
        replace: bool,
    },
    /// Remove a stored route (exit status 3 if there is none of that id).
    Rm {
        /// The route's id.
        id: String,
    },
    /// List the stored routes, as eskip (--json: as data).
    Ls,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where to listen, ADDR:PORT (e.g. 0.0.0.0:8080 or [::]:8080).
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// The routes file (eskip); without one, only the routes kept in the store.
    #[arg(long)]
    pub routes: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9911).
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// How often the routes file is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub reload_ms: u64,
    /// Backend connect timeout, ms (a route's connectTimeout("…") overrides it).
    #[arg(long, default_value_t = 5000)]
    pub connect_timeout_ms: u64,
    /// How long a backend may take to send response headers, ms; 0: no limit (a
    /// route's backendTimeout("…") overrides it).
    #[arg(long, default_value_t = 60000)]
    pub response_header_timeout_ms: u64,
    /// The longest pause in a backend's response body, and the longest silence both ways
    /// on a switched (websocket) connection, ms; 0: no limit for bodies, an hour for
    /// switched connections (a route's idleTimeout("…") overrides it).
    #[arg(long, default_value_t = 0)]
    pub idle_timeout_ms: u64,
    /// A client must send a request's head within this many ms, else its connection is
    /// closed (slowloris).
    #[arg(long, default_value_t = 10000)]
    pub header_read_timeout_ms: u64,
    /// Request heads larger than this many bytes are refused with 431 (at least 8192).
    #[arg(long, default_value_t = 65536)]
    pub max_header_bytes: usize,
    /// Serving threads (as nginx's worker_processes, HAProxy's nbthread); 0: one per
    /// core.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: u16,
    /// Passive health: an endpoint failing this many times in a row leaves the rotation
    /// (0: never).
    #[arg(long, default_value_t = 3)]
    pub eject_after: u32,
    /// ... for this many ms.
    #[arg(long, default_value_t = 10000)]
    pub eject_ms: u64,
    /// Speak HTTP/2 without TLS (h2c, prior knowledge) to every backend; without it only
    /// to backends written h2c://HOST:PORT.
    #[arg(long)]
    pub backend_http2: bool,
    /// Write one JSON line per request to this file (appended), or `-` for standard
    /// output.
    #[arg(long, value_name = "FILE|-")]
    pub access_log: Option<String>,
    /// Serve HTTPS: the certificate chain (PEM); needs --tls-key. HTTP/2 and HTTP/1.1 are
    /// offered by ALPN.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Verify https:// backends against these CAs (PEM) instead of the system's bundle.
    #[arg(long)]
    pub backend_ca: Option<PathBuf>,
    /// Mutual TLS to backends: the certificate chain (PEM) shown to https:// backends that
    /// ask for one; needs --backend-key.
    #[arg(long, requires = "backend_key")]
    pub backend_cert: Option<PathBuf>,
    /// The key (PEM) of --backend-cert.
    #[arg(long, requires = "backend_cert")]
    pub backend_key: Option<PathBuf>,
    /// Mutual TLS: clients must show a certificate one of these CAs (PEM) signed; a
    /// route's tlsPassClientCertificates() passes it to the backend. Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: serve clients without a certificate too (one that shows a
    /// certificate must still show a valid one).
    #[arg(long, requires = "tls_client_ca")]
    pub tls_client_optional: bool,
}

pub fn run(cmd: IngressCmd, state_dir: &Path, json: bool) -> Result<i32> {
    match cmd {
        IngressCmd::Check { file } => check(&file, json),
        IngressCmd::Route(c) => route_cmd(c, state_dir, json),
        IngressCmd::Serve(a) => crate::ingress::serve::run(serve_config(*a, state_dir)),
    }
}

fn serve_config(a: ServeArgs, state_dir: &Path) -> crate::ingress::serve::Config {
    let ms = std::time::Duration::from_millis;
    crate::ingress::serve::Config {
        listen: a.listen,
        routes: a.routes,
        metrics: a.metrics,
        state_dir: state_dir.to_path_buf(),
        reload: ms(a.reload_ms.max(50)),
        connect_timeout: ms(a.connect_timeout_ms.max(1)),
        response_header_timeout: (a.response_header_timeout_ms > 0)
            .then(|| ms(a.response_header_timeout_ms)),
        idle_timeout: (a.idle_timeout_ms > 0).then(|| ms(a.idle_timeout_ms)),
        header_read_timeout: ms(a.header_read_timeout_ms.max(1)),
        max_header_bytes: a.max_header_bytes.max(8192),
        threads: usize::from(a.threads),
        eject_after: a.eject_after,
        eject_for: ms(a.eject_ms),
        backend_http2: a.backend_http2,
        access_log: a.access_log,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        backend_ca: a.backend_ca,
        backend_cert: a.backend_cert,
        backend_key: a.backend_key,
        tls_client_ca: a.tls_client_ca,
        tls_client_optional: a.tls_client_optional,
    }
}

/// `knit daemon --ingress "SERVE ARGS"`: the ingress as one more service of the node
/// daemon, on a thread of its own (its own runtimes, as `knit ingress serve`).
#[derive(Args, Debug)]
pub struct DaemonIngress {
    /// Also serve the ingress, with these `knit ingress serve` arguments, split at spaces
    /// (e.g. "--listen 0.0.0.0:80 --routes /etc/knit/routes.eskip").
    #[arg(long, value_name = "SERVE ARGS", allow_hyphen_values = true)]
    pub ingress: Option<String>,
}

/// Starts the daemon's ingress: its arguments and routes are checked here, so a bad
/// configuration stops the daemon at start; a failure later ends the daemon too (an
/// ingress that is asked for and not serving is an outage, not a warning).
pub fn spawn_in_daemon(d: &DaemonIngress, state_dir: &Path) -> Result<()> {
    let Some(args) = &d.ingress else {
        return Ok(());
    };
    let words = args.split_whitespace();
    let a = <ServeCli as clap::Parser>::try_parse_from(std::iter::once("serve").chain(words))
        .map_err(|e| Error::invalid("--ingress", args, e.to_string().trim().to_string()))?
        .serve;
    if let Some(routes) = &a.routes {
        crate::ingress::table::Table::load_merged(
            &std::fs::read_to_string(routes)
                .map_err(|e| Error::io(format!("reading {}", routes.display()), e))?,
            &[],
        )
        .map_err(|e| Error::invalid("--ingress", routes.display(), e.to_string()))?;
    }
    let cfg = serve_config(a, state_dir);
    std::thread::Builder::new()
        .name("ingress".into())
        .spawn(move || {
            let code = match crate::ingress::serve::run(cfg) {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!(error = %e, "the daemon's ingress failed");
                    1
                }
            };
            std::process::exit(code);
        })
        .map_err(|e| Error::io("starting the ingress thread", e))?;
    Ok(())
}

/// `ServeArgs` parsed from a string of arguments.
#[derive(clap::Parser, Debug)]
struct ServeCli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn route_cmd(cmd: RouteCmd, state_dir: &Path, json: bool) -> Result<i32> {
    match cmd {
        RouteCmd::Add { id, route, replace } => {
            let text = route.trim().trim_end_matches(';').trim().to_string();
            let parsed = match eskip::parse(&format!("{id}: {text};")) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("route {id}: {e}");
                    return Ok(crate::error::exit::INVALID);
                }
            };
            if parsed.len() != 1 || parsed[0].id != id {
                return Err(Error::Invalid {
                    field: "route",
                    value: route,
                    reason:
                        "expected one route without its id (and an id of letters, digits and _)"
                            .into(),
                });
            }
            if let Err(p) = route::compile(&parsed) {
                for e in &p.invalid {
                    eprintln!("route {id}: {e}");
                }
                for u in &p.unsupported {
                    eprintln!(
                        "route {id}: {} {} is not implemented by knit",
                        u.kind, u.name
                    );
                }
                return Ok(if p.invalid.is_empty() {
                    crate::error::exit::NOT_FOUND
                } else {
                    crate::error::exit::INVALID
                });
            }
            // Through the node: a lost store is an error, not a fresh start.
            let mut node = crate::node::Node::open(state_dir, false)?;
            if !node.store.put_ingress_route(&id, &text, replace)? {
                return Err(Error::Exists {
                    kind: "ingress route",
                    name: id,
                });
            }
            println!("{id}");
            Ok(0)
        }
        RouteCmd::Rm { id } => {
            let mut node = crate::node::Node::open(state_dir, false)?;
            if !node.store.remove_ingress_route(&id)? {
                return Err(Error::NotFound {
                    kind: "ingress route",
                    name: id,
                });
            }
            Ok(0)
        }
        RouteCmd::Ls => {
            let routes = if crate::store::Store::is_blank(state_dir) {
                vec![]
            } else {
                crate::store::Store::open(state_dir)?.ingress_routes()?
            };
            if json {
                let v: Vec<_> = routes
                    .iter()
                    .map(|(id, r)| serde_json::json!({"id": id, "route": r}))
                    .collect();
                print_json(&serde_json::Value::Array(v));
            } else {
                for (id, r) in &routes {
                    println!("{id}: {r};");
                }
            }
            Ok(0)
        }
    }
}

fn check(file: &Path, json: bool) -> Result<i32> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
    let f = file.display();
    let parsed = match eskip::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{f}:{e}");
            return Ok(crate::error::exit::INVALID);
        }
    };
    let (invalid, unsupported) = match route::compile(&parsed) {
        Ok(_) => (vec![], vec![]),
        Err(p) => (p.invalid, p.unsupported),
    };
    if !invalid.is_empty() {
        for e in &invalid {
            eprintln!("{f}:{e}");
        }
        return Ok(crate::error::exit::INVALID);
    }
    if json {
        print_json(&serde_json::json!({
            "file": file,
            "routes": parsed,
            "unsupported": unsupported,
        }));
    } else {
        for r in &parsed {
            println!("{}", if r.id.is_empty() { "(unnamed)" } else { &r.id });
        }
        for u in &unsupported {
            eprintln!(
                "{f}:{}:{}: route {}: {} {} is not implemented by knit",
                u.line, u.col, u.route, u.kind, u.name
            );
        }
    }
    Ok(if unsupported.is_empty() {
        0
    } else {
        crate::error::exit::NOT_FOUND
    })
}
