//! The embedded store (SQLite, WAL): networks, subnets, IP allocations, attachments and
//! published ports. Every allocation happens inside one IMMEDIATE transaction, so
//! concurrent knit processes serialize on the database and never hand out an address or a
//! host port twice; uniqueness constraints back that up.

use crate::error::{Error, IoContext, Result};
use crate::ipam::Pool;
use crate::model::policy::{Default as PolicyDefault, Labels};
use crate::model::{AttachRequest, Driver, Mac, NetworkSpec, PortMapping, Proto, RouteSpec};
use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/knit";
const SCHEMA_VERSION: i64 = 10;
/// Candidates IPAM probes after the cursor before it counts the subnet's allocations.
pub(super) const QUICK_PROBES: u128 = 16;
mod attachments;
mod cluster;
mod ingress;
mod networks;
mod policies;
mod remote;
mod schema;
mod services;
#[cfg(test)]
mod tests;
mod topologies;
mod wal;
pub use cluster::{ClusterLink, Membership};
pub use policies::{Atom, GroupKey};
pub use remote::RemoteEndpoint;
pub use services::{Backend, Service};

#[derive(Debug, Clone, Serialize)]
pub struct Subnet {
    #[serde(skip)]
    pub id: i64,
    pub subnet: IpNet,
    pub gateway: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
}

impl Network {
    /// Whether knit's DNS serves this network: enabled, and a bridge carrying gateway
    /// addresses to listen on.
    pub fn serves_dns(&self) -> bool {
        self.dns && self.bridge.is_some() && self.bridge_gateway
    }
}

impl Subnet {
    pub fn pool(&self) -> Pool {
        Pool::with_range(self.subnet, self.range_start, self.range_end)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub id: i64,
    pub name: String,
    pub driver: Driver,
    pub bridge: Option<String>,
    pub subnets: Vec<Subnet>,
    pub internal: bool,
    pub masquerade: bool,
    pub mtu: Option<u32>,
    #[serde(skip)]
    pub bridge_mac: Mac,
    pub origin: String,
    pub bridge_gateway: bool,
    pub promisc: bool,
    /// knit's DNS serves this network (on its gateway addresses).
    pub dns: bool,
    pub dns_domain: Option<String>,
    /// False until the kernel side was built once (a crash during creation leaves it so).
    pub ready: bool,
    /// Default verdict for new connections to this network's sandboxes.
    pub policy: PolicyDefault,
    /// Default verdict for new connections from them.
    pub egress: PolicyDefault,
    /// Under egress deny, DNS to knit's resolver still passes (unless turned off).
    pub egress_dns: bool,
    /// This node's part of a cluster network (None: a network of this node only).
    pub cluster: Option<ClusterLink>,
    /// The bridge existed before knit used it (CNI's shared `cni0`): knit adds its
    /// addresses and ports to it but never deletes it.
    pub bridge_adopted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachState {
    /// Reserved in the store; kernel state may be partial (a crash left it so).
    Pending,
    Ready,
    /// Being detached: still in the kernel until the detaching command removes it (a crash
    /// leaves it so; the next detach or reconcile finishes the job).
    Removing,
}

impl AttachState {
    /// Whether the kernel holds (or may hold) the attachment's elements: what firewall
    /// diffs of other commands must count.
    pub fn in_kernel(self) -> bool {
        matches!(self, AttachState::Ready | AttachState::Removing)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub id: i64,
    pub network_id: i64,
    pub network: String,
    pub sandbox: String,
    pub netns_path: String,
    /// The namespace's identity (`DEV:INODE` of its nsfs file) when it was attached: a
    /// path like /proc/PID/ns/net can later name another namespace (the PID reused, the
    /// container restarted), which must not be mistaken for this one.
    pub netns_id: Option<String>,
    pub ifname: String,
    pub host_ifname: String,
    pub mac: String,
    pub host_mac: String,
    pub state: AttachState,
    pub container_id: Option<String>,
    pub ips: Vec<IpNet>,
    pub ports: Vec<PortMapping>,
    /// Routes inside the sandbox; None means the network's default route.
    pub routes: Option<Vec<RouteSpec>>,
    /// Extra DNS names of this attachment.
    pub aliases: Vec<String>,
    /// `--label k=v`: what policies select.
    pub labels: Labels,
    /// The process building a pending attachment (see `lock::Owner`).
    #[serde(skip)]
    pub owner: Option<crate::lock::Owner>,
}

/// Outcome of a reservation: the network it was made on (read in the same transaction, so
/// callers need not load it again) and the new attachment, or the one that already existed.
pub struct Reserved {
    pub network: Network,
    pub attachment: Attachment,
    pub existed: bool,
}

pub struct Store {
    pub(super) conn: Connection,
    pub(super) dir: std::path::PathBuf,
    /// Set by `fold_wal`: the maintenance process never spawns another one.
    pub(super) folding: bool,
    /// This open migrated the database from a schema before 6 (policy rules to index).
    pub migrated_policies: bool,
}

/// How long a command waits for another one's lock before giving up.
const BUSY_LIMIT: Duration = Duration::from_secs(60);

/// SQLite's own busy handler sleeps 1, 2, 5, 10, ... ms between tries, so a command that
/// meets a lock held for one millisecond (another command's commit, a WAL fold) loses 3 ms
/// or more. knit's transactions are short: retry every 100 µs for the first 20 ms, then
/// every 2 ms, until `BUSY_LIMIT`.
fn retry_when_busy(tries: i32) -> bool {
    let tries = tries.max(0) as u64;
    let (step, waited) = if tries < 200 {
        (
            Duration::from_micros(100),
            Duration::from_micros(100 * tries),
        )
    } else {
        (
            Duration::from_millis(2),
            Duration::from_millis(20 + 2 * (tries - 200)),
        )
    };
    if waited >= BUSY_LIMIT {
        return false;
    }
    std::thread::sleep(step);
    true
}

/// A stored value knit cannot read back: an error naming the table, column and value,
/// never a silent default.
pub(super) fn bad_row(table: &str, column: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("{table}.{column} holds {value:?}, which knit cannot read").into(),
    )
}

/// A protocol column: tcp, udp or sctp, nothing else.
pub(super) fn proto_col(table: &str, value: &str) -> rusqlite::Result<Proto> {
    Proto::parse("proto", value).map_err(|_| bad_row(table, "proto", value))
}

/// An optional JSON column: absent is None; present but unreadable is an error.
pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    table: &str,
    column: &str,
    value: Option<String>,
) -> rusqlite::Result<Option<T>> {
    value
        .map(|j| serde_json::from_str(&j).map_err(|_| bad_row(table, column, &j)))
        .transpose()
}

pub(super) fn parse<T: FromStr>(s: String) -> rusqlite::Result<T> {
    s.parse::<T>()
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, s, rusqlite::types::Type::Text))
}

pub(super) fn family(ip: &IpAddr) -> i64 {
    if ip.is_ipv4() { 4 } else { 6 }
}

impl Store {
    /// Opens (creating if needed) `dir/knit.db`; the directory is 0700 and the file 0600.
    /// On a read-only state directory an existing database is opened read-only (listing
    /// and the DNS daemon work; changes fail with SQLite's read-only error).
    pub fn open(dir: &Path) -> Result<Store> {
        let path = dir.join("knit.db");
        let created = std::fs::create_dir_all(dir)
            .op(|| format!("create state dir {}", dir.display()))
            .and_then(|_| {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
                // Create the file with 0600 before SQLite opens it (SQLite would use the
                // umask).
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&path)
                    .op(|| format!("create {}", path.display()))
            });
        let read_only = match created {
            Ok(_) => false,
            Err(e)
                if matches!(e.errno(), Some(libc::EROFS) | Some(libc::EACCES))
                    && path.is_file() =>
            {
                true
            }
            Err(e) => return Err(e),
        };
        if read_only {
            return Self::open_read_only(dir, &path);
        }
        let conn = Connection::open(&path)?;
        conn.busy_handler(Some(retry_when_busy))?;
        conn.wal_hook(Some(wal::note_wal_frames));
        // Switching to WAL (a new database) and migrating need the database to themselves:
        // commands started together on a fresh state directory (a node's first pods) take
        // turns on STATE/store.lock instead of failing with "database is locked".
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let _init = if !mode.eq_ignore_ascii_case("wal") || version < SCHEMA_VERSION {
            Some(crate::lock::Lock::take_file(dir, "store.lock", true)?)
        } else {
            None
        };
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        // NORMAL is durable against process crashes (kill -9) in WAL mode; only a power
        // loss can drop the last transactions, and reconcile repairs from kernel state.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every knit command is a short process: checkpointing and deleting the WAL on each
        // close would cost two fsyncs and a WAL re-creation per command. SQLite still
        // checkpoints automatically as the WAL grows.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;

        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        refuse_newer(path_of(dir), version)?;
        let migrated_policies = version > 0 && version < 6;
        if version < SCHEMA_VERSION {
            let tx = conn.unchecked_transaction()?;
            schema::migrate(&tx, version)?;
            tx.commit()?;
        }
        for f in ["knit.db-wal", "knit.db-shm"] {
            let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600));
        }
        crate::trace::phase("store: opened");
        Ok(Store {
            conn,
            dir: dir.to_path_buf(),
            folding: false,
            migrated_policies,
        })
    }

    fn open_read_only(dir: &Path, path: &Path) -> Result<Store> {
        let version: i64 = {
            let conn =
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            conn.pragma_query_value(None, "user_version", |r| r.get(0))?
        };
        refuse_newer(path, version)?;
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_handler(Some(retry_when_busy))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            return Err(Error::Conflict(format!(
                "{} is read-only and at schema version {version} (knit needs {SCHEMA_VERSION}): open it once writable to migrate",
                path.display()
            )));
        }
        Ok(Store {
            conn,
            dir: dir.to_path_buf(),
            // Never fold a database we cannot write.
            folding: true,
            migrated_policies: false,
        })
    }

    /// Whether `dir` holds no database yet, or one that is empty (a truncated file with no
    /// WAL): the case where knit would silently start over.
    pub fn is_blank(dir: &Path) -> bool {
        let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        size("knit.db") == 0 && size("knit.db-wal") == 0
    }

    pub(super) fn write_tx(&mut self) -> Result<rusqlite::Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    // ---- sandboxes created by knit ------------------------------------------------------

    pub fn add_sandbox(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("INSERT OR IGNORE INTO sandboxes (name) VALUES (?1)", [name])?;
        Ok(())
    }

    pub fn remove_sandbox(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sandboxes WHERE name = ?1", [name])?;
        Ok(())
    }

    pub fn sandboxes(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sandboxes ORDER BY name")?;
        let v = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }
}

fn path_of(dir: &Path) -> std::path::PathBuf {
    dir.join("knit.db")
}

/// A store written by a newer knit is never opened by an older one: its migrations may
/// have changed what rows mean, and writing them with the old meaning would corrupt it.
fn refuse_newer(path: impl AsRef<Path>, version: i64) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(Error::Conflict(format!(
            "{} is at schema version {version}, newer than this knit ({}, schema {SCHEMA_VERSION}): run the newer knit that wrote it (downgrades are not supported)",
            path.as_ref().display(),
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(())
}
