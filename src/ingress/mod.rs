//! `knit ingress`: an HTTP router in front of knit's sandboxes and services, configured
//! with Skipper's route language (eskip). It sits beside `cni` and `docker` (a face of
//! knit) and reads the store to resolve `knit://` backends and for the routes kept there.
//!
//! - `eskip`: the route language's lexer and parser (text to `eskip::Route`s);
//! - `args`, `predicate`, `filter`, `route`: eskip routes compiled and checked (unknown
//!   names are reported, not syntax errors);
//! - `target`: backend URLs (`http://`, `https://`, `h2c://`, `knit://`);
//! - `tree`, `table`: the path tree and the route table that matches requests;
//! - `run`, `ratelimit`, `htpasswd`, `bodies`: the filters at work on a request, their
//!   limiter and password files, and the bodies they wrap (compression, pacing, capture);
//! - `lb` (and `weights`, weightedRoundRobin's), `health`, `resolve`, `forward`, `pool`, `backtls`: balancers, passive health,
//!   `knit://` endpoints from the store, the way to a backend (timeouts, retries,
//!   tee), the per-thread keep-alive connections (HTTP/1.1, h2c, TLS), the backends' TLS
//!   trust, and protocol switches (websockets over HTTP/1.1 and over HTTP/2); `forget`
//!   drops what was kept for endpoints and routes the table no longer has;
//! - `body`, `proxy`, `accesslog`, `metrics`, `tls`, `serve`: one request's way through
//!   the routes, the access log, Prometheus figures, TLS (and `pem`, its files), and the
//!   listener with reload and graceful shutdown.

mod accesslog;
mod args;
mod backtls;
mod bodies;
mod body;
pub mod eskip;
pub mod filter;
mod forget;
mod forward;
mod health;
mod htpasswd;
mod lb;
mod metrics;
mod pem;
mod pool;
pub mod predicate;
mod proxy;
mod ratelimit;
mod resolve;
pub mod route;
mod run;
pub mod serve;
mod shard;
pub mod table;
mod target;
mod tls;
mod tree;
mod upgrade;
mod weights;
