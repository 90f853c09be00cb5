//! The etcd client knit uses: connect with a deadline, list the prefix, create-if-absent
//! transactions, leases. Every error names the endpoints and what was being done, and
//! every call has a timeout, so an etcd that is down fails a command quickly and never
//! hangs a daemon.

use super::keys::PREFIX;
use super::state::ClusterState;
use crate::error::{Error, Result};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use std::time::Duration;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Etcd {
    pub client: Client,
    endpoints: String,
}

fn err(endpoints: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Conflict(format!("etcd {endpoints}: {what}: {e}"))
}

impl Etcd {
    pub async fn connect(access: &crate::model::cluster::EtcdAccess) -> Result<Etcd> {
        let endpoints = &access.endpoints;
        let eps = endpoints.join(",");
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            // HTTP/2 pings notice a dead connection; generous enough that a busy node
            // does not drop a live one.
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if let Some(t) = &access.tls {
            let read = |f: &std::path::Path, field: &'static str| {
                std::fs::read(f).map_err(|e| Error::invalid(field, f.display(), e))
            };
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca, "etcd-ca")?));
            if let (Some(c), Some(k)) = (&t.cert, &t.key) {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    read(c, "etcd-cert")?,
                    read(k, "etcd-key")?,
                ));
            }
            opts = opts.with_tls(tls);
        }
        let client = tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|_| err(&eps, "connect", "timed out"))?
            .map_err(|e| err(&eps, "connect", e))?;
        let mut e = Etcd {
            client,
            endpoints: eps,
        };
        // Connecting is lazy: ask once so an unreachable etcd fails here, clearly.
        e.get_raw(&format!("{PREFIX}nodes/"), true).await?;
        Ok(e)
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> Error {
        err(&self.endpoints, what, e)
    }

    async fn get_raw(&mut self, key: &str, prefix: bool) -> Result<etcd_client::GetResponse> {
        let opts = prefix.then(|| GetOptions::new().with_prefix());
        let eps = self.endpoints.clone();
        tokio::time::timeout(REQUEST_TIMEOUT, self.client.get(key, opts))
            .await
            .map_err(|_| err(&eps, &format!("get {key}"), "timed out"))?
            .map_err(|e| err(&eps, &format!("get {key}"), e))
    }

    /// Everything under knit's prefix, and the revision it was read at.
    pub async fn list(&mut self) -> Result<(ClusterState, i64, Vec<String>)> {
        let resp = self.get_raw(PREFIX, true).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut s = ClusterState::default();
        let mut problems = vec![];
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            if let Some(p) = s.apply(key, Some(kv.value()), kv.lease()) {
                problems.push(p);
            }
        }
        Ok((s, rev, problems))
    }

    /// Puts every `(key, value)` only if none of the keys exists (one transaction);
    /// `lease`: bound to it. Ok(false): some key existed, nothing was written.
    pub async fn create(&mut self, kvs: &[(String, Vec<u8>)], lease: Option<i64>) -> Result<bool> {
        let when: Vec<Compare> = kvs
            .iter()
            .map(|(k, _)| Compare::version(k.as_str(), CompareOp::Equal, 0))
            .collect();
        let ops: Vec<TxnOp> = kvs
            .iter()
            .map(|(k, v)| {
                TxnOp::put(
                    k.as_str(),
                    v.clone(),
                    lease.map(|l| PutOptions::new().with_lease(l)),
                )
            })
            .collect();
        let txn = Txn::new().when(when).and_then(ops);
        let what = format!(
            "create {}",
            kvs.first().map(|(k, _)| k.as_str()).unwrap_or("")
        );
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.txn(txn))
            .await
            .map_err(|_| self.fail(&what, "timed out"))?
            .map_err(|e| self.fail(&what, e))?;
        Ok(resp.succeeded())
    }

    /// Puts a key (bound to `lease` if given), whatever was there.
    pub async fn put(&mut self, key: &str, value: Vec<u8>, lease: Option<i64>) -> Result<()> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        tokio::time::timeout(REQUEST_TIMEOUT, self.client.put(key, value, opts))
            .await
            .map_err(|_| self.fail(&format!("put {key}"), "timed out"))?
            .map_err(|e| self.fail(&format!("put {key}"), e))?;
        Ok(())
    }

    /// Deletes a key, or every key under it with `prefix`.
    pub async fn delete(&mut self, key: &str, prefix: bool) -> Result<()> {
        let opts = prefix.then(|| etcd_client::DeleteOptions::new().with_prefix());
        tokio::time::timeout(REQUEST_TIMEOUT, self.client.delete(key, opts))
            .await
            .map_err(|_| self.fail(&format!("delete {key}"), "timed out"))?
            .map_err(|e| self.fail(&format!("delete {key}"), e))?;
        Ok(())
    }

    pub async fn grant(&mut self, ttl: i64) -> Result<i64> {
        let r = tokio::time::timeout(REQUEST_TIMEOUT, self.client.lease_grant(ttl, None))
            .await
            .map_err(|_| self.fail("grant a lease", "timed out"))?
            .map_err(|e| self.fail("grant a lease", e))?;
        Ok(r.id())
    }

    /// Seconds left on a lease (None: it expired or never existed).
    pub async fn ttl_left(&mut self, lease: i64) -> Result<Option<i64>> {
        let r = tokio::time::timeout(REQUEST_TIMEOUT, self.client.lease_time_to_live(lease, None))
            .await
            .map_err(|_| self.fail("read a lease", "timed out"))?
            .map_err(|e| self.fail("read a lease", e))?;
        Ok((r.ttl() > 0).then_some(r.ttl()))
    }

    /// Revokes a lease: every key bound to it is deleted at once.
    pub async fn revoke(&mut self, lease: i64) -> Result<()> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.lease_revoke(lease)).await {
            Err(_) => Err(self.fail("revoke a lease", "timed out")),
            Ok(Ok(_)) => Ok(()),
            // Already gone (expired): nothing is bound to it any more.
            Ok(Err(e)) if e.to_string().contains("not found") => Ok(()),
            Ok(Err(e)) => Err(self.fail("revoke a lease", e)),
        }
    }

    /// Renews a lease once (the daemon calls this every third of the TTL).
    pub async fn keep_alive(&mut self, lease: i64) -> Result<Option<i64>> {
        let eps = self.endpoints.clone();
        let run = async {
            let (mut keeper, mut stream) = self.client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        let r = tokio::time::timeout(REQUEST_TIMEOUT, run)
            .await
            .map_err(|_| err(&eps, "renew the lease", "timed out"))?
            .map_err(|e| err(&eps, "renew the lease", e))?;
        Ok(r.and_then(|r| (r.ttl() > 0).then_some(r.ttl())))
    }
}

/// Runs `f` on a small runtime of its own (CLI commands are synchronous). SIGPIPE is
/// ignored meanwhile: the CLI restores its default (a closed stdout ends the process
/// quietly), but an etcd that closes the connection (a refused client certificate) must
/// give an error, not kill the command.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    // SAFETY: swapping a signal disposition; the previous one is restored below.
    let before = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let r = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start a runtime", e))
        .and_then(|rt| rt.block_on(f));
    // SAFETY: restores what was there.
    unsafe { libc::signal(libc::SIGPIPE, before) };
    r
}
