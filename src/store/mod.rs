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
const SCHEMA_VERSION: i64 = 4;
/// Candidates IPAM probes after the cursor before it counts the subnet's allocations.
const QUICK_PROBES: u128 = 16;
/// Above this many frames (pages) in the WAL, it is folded into the database when a command
/// ends (see `Drop`).
const WAL_FOLD_FRAMES: i32 = 64;
/// SQLite's own automatic checkpoint size, kept as a fallback if folding cannot run.
const WAL_AUTOCHECKPOINT_FRAMES: i32 = 1000;
/// A folded WAL file keeps up to this many bytes of its blocks for reuse.
const WAL_KEEP_BYTES: u64 = 1024 * 1024;

thread_local! {
    /// Frames in the WAL after this thread's last commit (SQLite's WAL hook; a store is
    /// used from one thread). The file size says nothing: a folded WAL keeps its blocks
    /// and starts over at its beginning.
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

fn note_wal_frames(wal: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    // Installing a WAL hook replaces SQLite's automatic checkpoint: keep it as a fallback.
    // Its result is ignored, as SQLite's own hook does: the commit has happened, and an
    // error here (BUSY while a fold holds the checkpoint lock) would report it as failed.
    if frames >= WAL_AUTOCHECKPOINT_FRAMES {
        let _ = wal.checkpoint();
    }
    Ok(())
}

mod policies;
mod services;
pub use services::{Backend, Service};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL,
    bridge TEXT UNIQUE,
    internal INTEGER NOT NULL,
    masquerade INTEGER NOT NULL,
    mtu INTEGER,
    bridge_mac TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT 'cli',
    bridge_gateway INTEGER NOT NULL DEFAULT 1,
    promisc INTEGER NOT NULL DEFAULT 0,
    dns INTEGER NOT NULL DEFAULT 1,
    dns_domain TEXT,
    ready INTEGER NOT NULL DEFAULT 1,
    policy TEXT NOT NULL DEFAULT 'allow'
);
CREATE TABLE IF NOT EXISTS subnets (
    id INTEGER PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    cidr TEXT NOT NULL UNIQUE,
    gateway TEXT NOT NULL,
    range_start TEXT,
    range_end TEXT,
    cursor TEXT
);
CREATE TABLE IF NOT EXISTS attachments (
    id INTEGER PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id),
    sandbox TEXT NOT NULL,
    netns_path TEXT NOT NULL,
    ifname TEXT NOT NULL,
    host_ifname TEXT NOT NULL UNIQUE,
    mac TEXT NOT NULL,
    host_mac TEXT NOT NULL,
    state TEXT NOT NULL,
    container_id TEXT,
    routes TEXT,
    aliases TEXT,
    labels TEXT,
    UNIQUE (network_id, sandbox)
);
CREATE TABLE IF NOT EXISTS allocations (
    subnet_id INTEGER NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
    ip TEXT NOT NULL,
    attachment_id INTEGER NOT NULL REFERENCES attachments(id) ON DELETE CASCADE,
    PRIMARY KEY (subnet_id, ip)
);
CREATE INDEX IF NOT EXISTS allocations_by_attachment ON allocations(attachment_id);
CREATE TABLE IF NOT EXISTS ports (
    attachment_id INTEGER NOT NULL REFERENCES attachments(id) ON DELETE CASCADE,
    family INTEGER NOT NULL,
    host_ip TEXT,
    proto TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    container_ip TEXT NOT NULL,
    container_port INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ports_by_port ON ports(proto, host_port);
CREATE INDEX IF NOT EXISTS ports_by_attachment ON ports(attachment_id);
CREATE TABLE IF NOT EXISTS sandboxes (
    name TEXT PRIMARY KEY
);
";

/// Tables added in version 3 (services and policies).
const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS services (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    vip TEXT NOT NULL,
    port INTEGER NOT NULL,
    proto TEXT NOT NULL,
    affinity INTEGER,
    node_port INTEGER,
    UNIQUE (vip, proto, port)
);
CREATE UNIQUE INDEX IF NOT EXISTS services_by_node_port ON services(proto, node_port)
    WHERE node_port IS NOT NULL;
CREATE TABLE IF NOT EXISTS backends (
    id INTEGER PRIMARY KEY,
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    port INTEGER NOT NULL,
    UNIQUE (service_id, kind, target, port)
);
CREATE INDEX IF NOT EXISTS backends_by_target ON backends(kind, target);
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    from_sel TEXT NOT NULL,
    to_sel TEXT NOT NULL,
    port INTEGER,
    proto TEXT
);
";

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
    conn: Connection,
    dir: std::path::PathBuf,
    /// Set by `fold_wal`: the maintenance process never spawns another one.
    folding: bool,
}

impl Drop for Store {
    /// Each knit command is a short process and usually the database's only connection,
    /// so SQLite rebuilds the WAL index on open by reading every frame of the WAL (and,
    /// having lost track of what was checkpointed, re-copies all of it at each automatic
    /// checkpoint). Left alone the WAL grows to megabytes and every command pays
    /// milliseconds for it. Once it passes 256 KiB it is folded into the database and
    /// truncated, by a detached `knit store-maintenance` process so that the fsyncs are not
    /// on this command's clock.
    fn drop(&mut self) {
        if !self.folding && self.wal_is_big() {
            spawn_maintenance(&self.dir);
            crate::trace::phase("store: maintenance spawned");
        }
    }
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

/// Starts `knit --state-dir DIR store-maintenance` without waiting for it.
fn spawn_maintenance(dir: &Path) {
    crate::deferred::spawn_self(&[
        std::ffi::OsStr::new("--state-dir"),
        dir.as_os_str(),
        std::ffi::OsStr::new("store-maintenance"),
    ]);
}

/// A stored value knit cannot read back: an error naming the table, column and value,
/// never a silent default.
fn bad_row(table: &str, column: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("{table}.{column} holds {value:?}, which knit cannot read").into(),
    )
}

/// A protocol column: tcp, udp or sctp, nothing else.
fn proto_col(table: &str, value: &str) -> rusqlite::Result<Proto> {
    Proto::parse("proto", value).map_err(|_| bad_row(table, "proto", value))
}

/// An optional JSON column: absent is None; present but unreadable is an error.
fn json_col<T: serde::de::DeserializeOwned>(
    table: &str,
    column: &str,
    value: Option<String>,
) -> rusqlite::Result<Option<T>> {
    value
        .map(|j| serde_json::from_str(&j).map_err(|_| bad_row(table, column, &j)))
        .transpose()
}

fn parse<T: FromStr>(s: String) -> rusqlite::Result<T> {
    s.parse::<T>()
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, s, rusqlite::types::Type::Text))
}

fn family(ip: &IpAddr) -> i64 {
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
        conn.wal_hook(Some(note_wal_frames));
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
        if version < SCHEMA_VERSION {
            let tx = conn.unchecked_transaction()?;
            if version == 0 {
                tx.execute_batch(SCHEMA)?;
            }
            if version == 1 {
                // Version 2 added DNS settings and aliases.
                tx.execute_batch(
                    "ALTER TABLE networks ADD COLUMN dns INTEGER NOT NULL DEFAULT 1;
                     ALTER TABLE networks ADD COLUMN dns_domain TEXT;
                     ALTER TABLE networks ADD COLUMN ready INTEGER NOT NULL DEFAULT 1;
                     ALTER TABLE attachments ADD COLUMN aliases TEXT;",
                )?;
            }
            if (1..3).contains(&version) {
                // Version 3 added policies and labels.
                tx.execute_batch(
                    "ALTER TABLE networks ADD COLUMN policy TEXT NOT NULL DEFAULT 'allow';
                     ALTER TABLE attachments ADD COLUMN labels TEXT;",
                )?;
            }
            tx.execute_batch(SCHEMA_V3)?;
            if version < 4 {
                // Version 4: ownership. A bridge knit adopted (never deleted), and the
                // process building a pending record (never reaped while it lives).
                tx.execute_batch(
                    "ALTER TABLE networks ADD COLUMN bridge_adopted INTEGER NOT NULL DEFAULT 0;
                     ALTER TABLE networks ADD COLUMN owner_pid INTEGER;
                     ALTER TABLE networks ADD COLUMN owner_start INTEGER;
                     ALTER TABLE attachments ADD COLUMN owner_pid INTEGER;
                     ALTER TABLE attachments ADD COLUMN owner_start INTEGER;",
                )?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
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
        })
    }

    fn open_read_only(dir: &Path, path: &Path) -> Result<Store> {
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
        })
    }

    /// Whether `dir` holds no database yet, or one that is empty (a truncated file with no
    /// WAL): the case where knit would silently start over.
    pub fn is_blank(dir: &Path) -> bool {
        let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        size("knit.db") == 0 && size("knit.db-wal") == 0
    }

    fn wal_is_big(&self) -> bool {
        WAL_FRAMES.with(|f| f.get()) > WAL_FOLD_FRAMES
    }

    /// Folds the WAL into the database and starts it over (see `Drop`); returns the frames
    /// left in the log. A concurrent reader (the daemon) only delays this briefly.
    pub fn fold_wal(&mut self) -> Result<i32> {
        self.folding = true;
        // RESTART holds the WAL write lock while it waits for readers: give up after
        // 500 ms rather than stall every writer for the commands' 60 s budget.
        self.conn.busy_timeout(Duration::from_millis(500))?;
        // Copy every frame into the database without blocking anyone (PASSIVE).
        let log = self.checkpoint("PASSIVE")?;
        if log <= WAL_FOLD_FRAMES {
            return Ok(log); // another fold got here first
        }
        // RESTART only waits for readers to leave the WAL; the frames are already copied.
        // The WAL is not truncated: on this filesystem (mounted `discard`) freeing its
        // blocks discards them synchronously while SQLite holds the write lock, 10+ ms for
        // every command waiting. One small write starts the log over at its beginning with
        // a new salt instead, so the next command's rebuild of the WAL index reads one
        // frame; a WAL file that once grew big is cut back to `WAL_KEEP_BYTES` then.
        self.conn
            .pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES as i64)?;
        self.checkpoint("RESTART")?;
        // Read and rewrite in one write transaction, so a migration by another process
        // cannot slip in between and be undone.
        let tx = self.write_tx()?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        self.checkpoint("PASSIVE")
    }

    /// One checkpoint in `mode`; the frames in the log.
    fn checkpoint(&self, mode: &str) -> Result<i32> {
        Ok(self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))?)
    }

    fn write_tx(&mut self) -> Result<rusqlite::Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    // ---- networks -----------------------------------------------------------------------

    /// Records a new network (not ready). `default_bridge` names its bridge from its id
    /// when the spec names none (the driver's naming; None: the driver has no bridge).
    pub fn create_network(
        &mut self,
        spec: &NetworkSpec,
        origin: &str,
        default_bridge: &dyn Fn(i64) -> Option<String>,
    ) -> Result<Network> {
        let tx = self.write_tx()?;
        if tx
            .query_row(
                "SELECT 1 FROM networks WHERE name = ?1",
                [&spec.name],
                |_| Ok(()),
            )
            .optional()?
            .is_some()
        {
            return Err(Error::exists("network", &spec.name));
        }
        {
            let mut stmt = tx.prepare(
                "SELECT s.cidr, n.name FROM subnets s JOIN networks n ON n.id = s.network_id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((parse::<IpNet>(r.get(0)?)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (cidr, owner) = row?;
                for s in &spec.subnets {
                    if cidr.contains(&s.cidr.network()) || s.cidr.contains(&cidr.network()) {
                        return Err(Error::invalid(
                            "subnet",
                            s.cidr,
                            format!("overlaps {cidr} of network {owner:?}"),
                        ));
                    }
                }
            }
        }
        if let Some(b) = &spec.bridge
            && tx
                .query_row("SELECT 1 FROM networks WHERE bridge = ?1", [b], |_| Ok(()))
                .optional()?
                .is_some()
        {
            return Err(Error::invalid(
                "bridge",
                b,
                "is already used by another knit network",
            ));
        }
        let mac = Mac::random();
        tx.execute(
            "INSERT INTO networks (name, driver, bridge, internal, masquerade, mtu, bridge_mac, origin, bridge_gateway, promisc, dns, dns_domain, ready)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0)",
            params![
                spec.name,
                spec.driver.as_str(),
                spec.bridge,
                spec.internal,
                spec.masquerade,
                spec.mtu,
                mac.to_string(),
                origin,
                spec.bridge_gateway,
                spec.promisc,
                spec.dns,
                spec.dns_domain
            ],
        )?;
        let id = tx.last_insert_rowid();
        if spec.bridge.is_none()
            && let Some(name) = default_bridge(id)
        {
            tx.execute(
                "UPDATE networks SET bridge = ?1 WHERE id = ?2",
                params![name, id],
            )?;
        }
        for s in &spec.subnets {
            tx.execute(
                "INSERT INTO subnets (network_id, cidr, gateway, range_start, range_end) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    id,
                    s.cidr.to_string(),
                    s.gateway.to_string(),
                    s.range_start.map(|a| a.to_string()),
                    s.range_end.map(|a| a.to_string())
                ],
            )?;
        }
        let net = Self::load_network(&tx, "id = ?1", id)?
            .ok_or_else(|| Error::not_found("network", id))?;
        tx.commit()?;
        Ok(net)
    }

    fn load_network(
        conn: &Connection,
        cond: &str,
        key: impl rusqlite::ToSql,
    ) -> Result<Option<Network>> {
        let sql = format!(
            "SELECT id, name, driver, bridge, internal, masquerade, mtu, bridge_mac, origin, bridge_gateway, promisc, dns, dns_domain, ready, policy, bridge_adopted FROM networks WHERE {cond}"
        );
        let net = conn
            .query_row(&sql, [key], |r| {
                let driver: String = r.get(2)?;
                let mac: String = r.get(7)?;
                Ok(Network {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    driver: Driver::parse(&driver)
                        .map_err(|_| bad_row("networks", "driver", &driver))?,
                    bridge: r.get(3)?,
                    subnets: vec![],
                    internal: r.get(4)?,
                    masquerade: r.get(5)?,
                    mtu: r.get(6)?,
                    bridge_mac: Mac::parse("bridge_mac", &mac)
                        .map_err(|_| bad_row("networks", "bridge_mac", &mac))?,
                    origin: r.get(8)?,
                    bridge_gateway: r.get(9)?,
                    promisc: r.get(10)?,
                    dns: r.get(11)?,
                    dns_domain: r.get(12)?,
                    ready: r.get(13)?,
                    policy: match r.get::<_, String>(14)?.as_str() {
                        "deny" => PolicyDefault::Deny,
                        "allow" => PolicyDefault::Allow,
                        other => return Err(bad_row("networks", "policy", other)),
                    },
                    bridge_adopted: r.get(15)?,
                })
            })
            .optional()?;
        let Some(mut net) = net else { return Ok(None) };
        let mut stmt = conn.prepare_cached(
            "SELECT id, cidr, gateway, range_start, range_end FROM subnets WHERE network_id = ?1 ORDER BY id",
        )?;
        net.subnets = stmt
            .query_map([net.id], |r| {
                Ok(Subnet {
                    id: r.get(0)?,
                    subnet: parse(r.get(1)?)?,
                    gateway: parse(r.get(2)?)?,
                    range_start: r.get::<_, Option<String>>(3)?.map(parse).transpose()?,
                    range_end: r.get::<_, Option<String>>(4)?.map(parse).transpose()?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(net))
    }

    pub fn network(&self, name: &str) -> Result<Network> {
        Self::load_network(&self.conn, "name = ?1", name)?
            .ok_or_else(|| Error::not_found("network", name))
    }

    pub fn find_network(&self, name: &str) -> Result<Option<Network>> {
        Self::load_network(&self.conn, "name = ?1", name)
    }

    pub fn networks(&self) -> Result<Vec<Network>> {
        let ids: Vec<i64> = self
            .conn
            .prepare("SELECT id FROM networks ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(n) = Self::load_network(&self.conn, "id = ?1", id)? {
                out.push(n);
            }
        }
        Ok(out)
    }

    pub fn mark_network_ready(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("UPDATE networks SET ready = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records that the network's bridge existed before (recorded before knit touches it).
    pub fn mark_bridge_adopted(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("UPDATE networks SET bridge_adopted = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn delete_network(&mut self, id: i64) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM networks WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    // ---- attachments --------------------------------------------------------------------

    /// Reserves addresses, a host interface name, MACs and host ports for a new attachment
    /// and records it as pending, all in one transaction. If the sandbox is already attached
    /// to the network, returns that attachment instead.
    /// `ifname` is the interface name chosen for the sandbox side; `host_ifname` makes a
    /// name for the host side (the driver's naming), tried until one is free.
    pub fn reserve(
        &mut self,
        req: &AttachRequest,
        ifname: &str,
        host_ifname: &dyn Fn() -> String,
    ) -> Result<Reserved> {
        let sandbox = req.sandbox.key();
        let netns_path = req.sandbox.path();
        let tx = self.write_tx()?;
        let net = Self::load_network(&tx, "name = ?1", req.network)?
            .ok_or_else(|| Error::not_found("network", req.network))?;
        if let Some(existing) = Self::load_attachments(
            &tx,
            "a.network_id = ?1 AND a.sandbox = ?2",
            params![net.id, sandbox],
        )?
        .into_iter()
        .next()
        {
            return Ok(Reserved {
                network: net,
                attachment: existing,
                existed: true,
            });
        }
        for ip in req.static_ips {
            if !net.subnets.iter().any(|s| s.subnet.contains(ip)) {
                let list: Vec<String> = net.subnets.iter().map(|s| s.subnet.to_string()).collect();
                return Err(Error::invalid(
                    "ip",
                    ip,
                    format!(
                        "is outside the subnets of network {:?} ({})",
                        net.name,
                        list.join(", ")
                    ),
                ));
            }
        }
        if !req.publish.is_empty() && net.internal {
            return Err(Error::invalid(
                "publish",
                net.name.clone(),
                "internal networks cannot publish ports",
            ));
        }
        let host_ifname = loop {
            let name = host_ifname();
            let taken = tx
                .query_row(
                    "SELECT 1 FROM attachments WHERE host_ifname = ?1",
                    [&name],
                    |_| Ok(()),
                )
                .optional()?;
            if taken.is_none() {
                break name;
            }
        };
        // MACs are unique on a network: a sandbox's, the host veths' (bridge ports: the
        // bridge delivers frames to a port's MAC to the node) and the bridge's own. A
        // duplicate would make one of them unreachable.
        if let Some(mac) = req.mac
            && let Some(holder) = Self::mac_holder(&tx, &net, mac)?
        {
            return Err(Error::Conflict(format!(
                "mac {mac} is already used on network {:?} by {holder}",
                net.name
            )));
        }
        // Generated ones too (2^46 of them, so this retries only in theory).
        let fresh = |tx: &Connection, other: Option<Mac>| -> Result<Mac> {
            loop {
                let m = Mac::random();
                if Some(m) != other && Self::mac_holder(tx, &net, m)?.is_none() {
                    return Ok(m);
                }
            }
        };
        let mac = match req.mac {
            Some(m) => m,
            None => fresh(&tx, None)?,
        };
        let host_mac = fresh(&tx, Some(mac))?;
        let owner = crate::lock::Owner::me();
        tx.execute(
            "INSERT INTO attachments (network_id, sandbox, netns_path, ifname, host_ifname, mac, host_mac, state, container_id, routes, aliases, labels, owner_pid, owner_start)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                net.id,
                sandbox,
                netns_path,
                ifname,
                host_ifname,
                mac.to_string(),
                host_mac.to_string(),
                req.container_id,
                req.routes.map(|r| serde_json::to_string(r).unwrap_or_default()),
                (!req.aliases.is_empty()).then(|| serde_json::to_string(req.aliases).unwrap_or_default()),
                (!req.labels.is_empty()).then(|| serde_json::to_string(req.labels).unwrap_or_default()),
                owner.pid,
                owner.start
            ],
        )?;
        let att_id = tx.last_insert_rowid();
        let mut ips = Vec::new();
        for s in &net.subnets {
            let requested = req.static_ips.iter().find(|ip| s.subnet.contains(*ip));
            let ip = match requested {
                Some(ip) => {
                    crate::model::check_host_in("ip", *ip, &s.subnet)?;
                    if *ip == s.gateway {
                        return Err(Error::invalid("ip", ip, "is the network's gateway"));
                    }
                    *ip
                }
                None => Self::next_free(&tx, &net.name, s)?,
            };
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO allocations (subnet_id, ip, attachment_id) VALUES (?1, ?2, ?3)",
                params![s.id, ip.to_string(), att_id],
            )?;
            if inserted == 0 {
                return Err(Error::Conflict(format!(
                    "ip {ip} is already in use on network {:?}",
                    net.name
                )));
            }
            // Only dynamic allocations move the round-robin cursor.
            if requested.is_none() {
                tx.execute(
                    "UPDATE subnets SET cursor = ?1 WHERE id = ?2",
                    params![ip.to_string(), s.id],
                )?;
            }
            ips.push(ip);
        }
        for spec in req.publish {
            let targets: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| match spec.host_ip {
                    Some(h) => h.is_ipv4() == ip.is_ipv4(),
                    None => true,
                })
                .collect();
            if targets.is_empty() {
                return Err(Error::invalid(
                    "publish",
                    spec.host_ip.map(|h| h.to_string()).unwrap_or_default(),
                    format!(
                        "network {:?} has no subnet of this address family",
                        net.name
                    ),
                ));
            }
            for cip in targets {
                for (hp, cp) in spec.pairs() {
                    let m = PortMapping {
                        host_ip: spec.host_ip,
                        host_port: hp,
                        container_ip: cip,
                        container_port: cp,
                        proto: spec.proto,
                    };
                    Self::claim_port(&tx, att_id, &m)?;
                }
            }
        }
        let att = Self::load_attachments(&tx, "a.id = ?1", [att_id])?
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("attachment", att_id))?;
        tx.commit()?;
        Ok(Reserved {
            network: net,
            attachment: att,
            existed: false,
        })
    }

    /// Who uses `mac` on `net` (its bridge, a sandbox or a sandbox's host veth), if anyone.
    fn mac_holder(tx: &Connection, net: &Network, mac: Mac) -> Result<Option<String>> {
        if let Some(br) = &net.bridge
            && mac == net.bridge_mac
        {
            return Ok(Some(format!("its bridge {br:?}")));
        }
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT sandbox, mac FROM attachments WHERE network_id = ?1 AND (mac = ?2 OR host_mac = ?2)",
                params![net.id, mac.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(sandbox, own)| {
            if own == mac.to_string() {
                format!("sandbox {sandbox:?}")
            } else {
                format!("the host veth of sandbox {sandbox:?}")
            }
        }))
    }

    fn next_free(tx: &Connection, network: &str, s: &Subnet) -> Result<IpAddr> {
        let cursor: Option<String> =
            tx.query_row("SELECT cursor FROM subnets WHERE id = ?1", [s.id], |r| {
                r.get(0)
            })?;
        let cursor = cursor.and_then(|c| c.parse().ok());
        let mut probe =
            tx.prepare_cached("SELECT 1 FROM allocations WHERE subnet_id = ?1 AND ip = ?2")?;
        let mut err = None;
        let mut taken = |ip: IpAddr| match probe
            .query_row(params![s.id, ip.to_string()], |_| Ok(()))
            .optional()
        {
            Ok(found) => found.is_some(),
            Err(e) => {
                err = Some(e);
                true
            }
        };
        let pool = s.pool();
        // The address after the cursor is almost always free: try a few before counting the
        // subnet's allocations (a COUNT walks all of them) to bound a longer walk.
        let mut ip = pool.next_free(cursor, &[s.gateway], QUICK_PROBES, &mut taken);
        if ip.is_none() {
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM allocations WHERE subnet_id = ?1",
                [s.id],
                |r| r.get(0),
            )?;
            ip = pool.next_free(cursor, &[s.gateway], count as u128, &mut taken);
        }
        if let Some(e) = err {
            return Err(e.into());
        }
        ip.ok_or_else(|| Error::Exhausted {
            network: network.to_string(),
            subnet: s.subnet.to_string(),
        })
    }

    fn claim_port(tx: &Connection, att_id: i64, m: &PortMapping) -> Result<()> {
        let fam = family(&m.container_ip);
        let host_ip = m.host_ip.map(|h| h.to_string());
        let clash: Option<String> = tx
            .query_row(
                "SELECT COALESCE(host_ip, '*') FROM ports WHERE proto = ?1 AND host_port = ?2 AND family = ?3
                 AND (host_ip IS NULL OR ?4 IS NULL OR host_ip = ?4) LIMIT 1",
                params![m.proto.as_str(), m.host_port, fam, host_ip],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = clash {
            return Err(Error::Conflict(format!(
                "publish {}:{}/{}: host port already published on {other}",
                host_ip.as_deref().unwrap_or("*"),
                m.host_port,
                m.proto
            )));
        }
        if let Some(svc) = services::node_port_owner(tx, m.proto, m.host_port)? {
            return Err(Error::Conflict(format!(
                "publish {}/{}: host port is the node port of service {svc:?}",
                m.host_port, m.proto
            )));
        }
        tx.execute(
            "INSERT INTO ports (attachment_id, family, host_ip, proto, host_port, container_ip, container_port)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![att_id, fam, host_ip, m.proto.as_str(), m.host_port, m.container_ip.to_string(), m.container_port],
        )?;
        Ok(())
    }

    /// Changes whenever another connection commits (SQLite's data_version): the DNS
    /// daemon polls it to notice attach/detach cheaply.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    pub fn mark_ready(&mut self, id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE attachments SET state = 'ready', owner_pid = NULL, owner_start = NULL WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Marks an attachment as being taken down by this process (detach): if the process
    /// dies or the final delete fails (a full disk), the record says so and the next detach
    /// or reconcile finishes the job, instead of a ready record without links.
    pub fn mark_removing(&mut self, id: i64) -> Result<()> {
        self.set_state(id, "removing")
    }

    /// Back to pending (an attach whose rebuild failed after marking it ready).
    pub fn mark_pending(&mut self, id: i64) -> Result<()> {
        self.set_state(id, "pending")
    }

    fn set_state(&mut self, id: i64, state: &str) -> Result<()> {
        let me = crate::lock::Owner::me();
        self.conn.execute(
            "UPDATE attachments SET state = ?2, owner_pid = ?3, owner_start = ?4 WHERE id = ?1",
            params![id, state, me.pid, me.start],
        )?;
        Ok(())
    }

    /// Releases an attachment: its addresses and ports go with it (ON DELETE CASCADE).
    pub fn release(&mut self, id: i64) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute("DELETE FROM attachments WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    fn load_attachments(
        conn: &Connection,
        cond: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<Attachment>> {
        let sql = format!(
            "SELECT a.id, a.network_id, n.name, a.sandbox, a.netns_path, a.ifname, a.host_ifname, a.mac, a.host_mac,
                    a.state, a.container_id, a.routes, a.aliases, a.labels, a.owner_pid, a.owner_start
             FROM attachments a JOIN networks n ON n.id = a.network_id WHERE {cond} ORDER BY a.id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut atts: Vec<Attachment> = stmt
            .query_map(p, |r| {
                let state: String = r.get(9)?;
                Ok(Attachment {
                    id: r.get(0)?,
                    network_id: r.get(1)?,
                    network: r.get(2)?,
                    sandbox: r.get(3)?,
                    netns_path: r.get(4)?,
                    ifname: r.get(5)?,
                    host_ifname: r.get(6)?,
                    mac: r.get(7)?,
                    host_mac: r.get(8)?,
                    state: match state.as_str() {
                        "ready" => AttachState::Ready,
                        "removing" => AttachState::Removing,
                        "pending" => AttachState::Pending,
                        other => return Err(bad_row("attachments", "state", other)),
                    },
                    container_id: r.get(10)?,
                    routes: json_col("attachments", "routes", r.get(11)?)?,
                    aliases: json_col("attachments", "aliases", r.get(12)?)?.unwrap_or_default(),
                    labels: json_col("attachments", "labels", r.get(13)?)?.unwrap_or_default(),
                    ips: vec![],
                    ports: vec![],
                    owner: match (r.get::<_, Option<i64>>(14)?, r.get::<_, Option<i64>>(15)?) {
                        (Some(pid), Some(start)) => Some(crate::lock::Owner { pid, start }),
                        _ => None,
                    },
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut ips = conn.prepare_cached(
            "SELECT al.ip, s.cidr FROM allocations al JOIN subnets s ON s.id = al.subnet_id
             WHERE al.attachment_id = ?1 ORDER BY s.id",
        )?;
        let mut ports = conn.prepare_cached(
            "SELECT host_ip, proto, host_port, container_ip, container_port FROM ports WHERE attachment_id = ?1 ORDER BY rowid",
        )?;
        for a in &mut atts {
            a.ips = ips
                .query_map([a.id], |r| {
                    let ip: IpAddr = parse(r.get(0)?)?;
                    let net: IpNet = parse(r.get(1)?)?;
                    IpNet::new(ip, net.prefix_len()).map_err(|_| {
                        rusqlite::Error::InvalidColumnType(
                            0,
                            ip.to_string(),
                            rusqlite::types::Type::Text,
                        )
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            a.ports = ports
                .query_map([a.id], |r| {
                    let host_ip: Option<String> = r.get(0)?;
                    let proto: String = r.get(1)?;
                    Ok(PortMapping {
                        host_ip: host_ip.map(parse).transpose()?,
                        proto: proto_col("ports", &proto)?,
                        host_port: r.get(2)?,
                        container_ip: parse(r.get(3)?)?,
                        container_port: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(atts)
    }

    pub fn attachment(&self, network_id: i64, sandbox: &str) -> Result<Option<Attachment>> {
        Ok(Self::load_attachments(
            &self.conn,
            "a.network_id = ?1 AND a.sandbox = ?2",
            params![network_id, sandbox],
        )?
        .into_iter()
        .next())
    }

    pub fn attachments_of_sandbox(&self, sandbox: &str) -> Result<Vec<Attachment>> {
        Self::load_attachments(&self.conn, "a.sandbox = ?1", [sandbox])
    }

    pub fn attachments_of_network(&self, network_id: i64) -> Result<Vec<Attachment>> {
        Self::load_attachments(&self.conn, "a.network_id = ?1", [network_id])
    }

    pub fn attachments_by_container(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<Attachment>> {
        Self::load_attachments(
            &self.conn,
            "a.container_id = ?1 AND a.ifname = ?2",
            [container_id, ifname],
        )
    }

    pub fn all_attachments(&self) -> Result<Vec<Attachment>> {
        Self::load_attachments(&self.conn, "1 = 1", [])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetworkSpec;

    fn tmp() -> std::path::PathBuf {
        let b = crate::model::random_bytes::<6>();
        let d = std::env::temp_dir()
            .join(format!("knit-store-{:x?}", b).replace([',', ' ', '[', ']'], ""));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn spec(name: &str, cidr: &str) -> NetworkSpec {
        NetworkSpec::new(&crate::model::NetworkRequest {
            name,
            driver: Driver::Bridge,
            bridge: None,
            subnets: &[cidr.to_string()],
            gateways: &[],
            internal: false,
            masquerade: true,
            mtu: None,
        })
        .unwrap()
    }

    fn req<'a>(
        net: &'a str,
        sb: &'a str,
        ips: &'a [IpAddr],
        publish: &'a [crate::model::PublishSpec],
    ) -> AttachRequest<'a> {
        AttachRequest {
            network: net,
            // Leaked: a test's requests live as long as the test.
            sandbox: Box::leak(Box::new(crate::model::SandboxRef::Named(sb.to_string()))),
            ifname: None,
            static_ips: ips,
            mac: None,
            publish,
            container_id: None,
            routes: None,
            aliases: &[],
            labels: &NO_LABELS,
        }
    }

    static NO_LABELS: Labels = Labels::new();

    fn host_name() -> String {
        let b = crate::model::random_bytes::<5>();
        format!(
            "kv{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4]
        )
    }

    fn knbr(id: i64) -> Option<String> {
        Some(format!("knbr{id}"))
    }

    fn new_att(r: Reserved) -> Attachment {
        assert!(!r.existed, "expected new");
        r.attachment
    }

    #[test]
    fn a_big_wal_is_folded_and_started_over() {
        let d = tmp();
        let mut st = Store::open(&d).unwrap();
        let spec =
            crate::model::service::ServiceSpec::new("s0", "10.96.0.1:80", &[], None, None).unwrap();
        for i in 0..400 {
            let mut s = spec.clone();
            s.name = format!("s{i}");
            s.vip =
                crate::model::service::Vip::parse(&format!("10.96.{}.{}:80", i / 200, i % 200 + 1))
                    .unwrap();
            st.create_service(&s).unwrap();
        }
        assert!(st.wal_is_big());
        st.folding = true; // the fold runs below; current_exe() is this test binary
        drop(st);
        // What `knit store-maintenance` does, on its own connection.
        let mut m = Store::open(&d).unwrap();
        assert!(m.checkpoint("PASSIVE").unwrap() > WAL_FOLD_FRAMES);
        assert!(m.fold_wal().unwrap() <= 2, "the log starts over");
        drop(m);
        let wal = d.join("knit.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() <= WAL_KEEP_BYTES);
        // Everything is still there for the next process, which finds a short log.
        let next = Store::open(&d).unwrap();
        assert_eq!(next.services().unwrap().len(), 400);
        assert!(next.checkpoint("PASSIVE").unwrap() <= 2);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn macs_are_unique_on_a_network() {
        let dir = tmp();
        let mut s = Store::open(&dir).unwrap();
        let net = s
            .create_network(&spec("n", "10.0.0.0/24"), "cli", &knbr)
            .unwrap();
        s.create_network(&spec("m", "10.1.0.0/24"), "cli", &knbr)
            .unwrap();
        let mac = Mac([2, 0, 0, 0, 0, 0x42]);
        let with_mac = |sb: &'static str, net: &'static str, mac: Mac| AttachRequest {
            mac: Some(mac),
            ..req(net, sb, &[], &[])
        };
        let a = new_att(
            s.reserve(&with_mac("a", "n", mac), "eth0", &host_name)
                .unwrap(),
        );
        assert_eq!(a.mac, "02:00:00:00:00:42");
        let e = s
            .reserve(&with_mac("b", "n", mac), "eth0", &host_name)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "mac 02:00:00:00:00:42 is already used on network \"n\" by sandbox \"a\""
        );
        let host = Mac::parse("host_mac", &a.host_mac).unwrap();
        let e = s
            .reserve(&with_mac("b", "n", host), "eth0", &host_name)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("by the host veth of sandbox \"a\""), "{e}");
        let e = s
            .reserve(&with_mac("b", "n", net.bridge_mac), "eth0", &host_name)
            .err()
            .unwrap();
        assert!(matches!(e, Error::Conflict(_)));
        assert!(e.to_string().contains("its bridge"), "{e}");
        // Nothing of the refused attempts remains; another network may use the same MAC.
        assert_eq!(s.all_attachments().unwrap().len(), 1);
        new_att(
            s.reserve(&with_mac("b", "m", mac), "eth0", &host_name)
                .unwrap(),
        );
        // Released, the MAC is free again.
        s.release(a.id).unwrap();
        new_att(
            s.reserve(&with_mac("c", "n", mac), "eth0", &host_name)
                .unwrap(),
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn allocation_exhaustion_and_reuse() {
        let dir = tmp();
        let mut s = Store::open(&dir).unwrap();
        s.create_network(&spec("n", "10.0.0.0/29"), "cli", &knbr)
            .unwrap();
        let mut got = vec![];
        for i in 0..5 {
            let a = new_att(
                s.reserve(&req("n", &format!("s{i}"), &[], &[]), "eth0", &host_name)
                    .unwrap(),
            );
            got.push(a.ips[0].to_string());
        }
        assert_eq!(
            got,
            [
                "10.0.0.2/29",
                "10.0.0.3/29",
                "10.0.0.4/29",
                "10.0.0.5/29",
                "10.0.0.6/29"
            ]
        );
        let e = s
            .reserve(&req("n", "s9", &[], &[]), "eth0", &host_name)
            .err()
            .unwrap();
        assert!(matches!(e, Error::Exhausted { .. }), "{e}");
        // Nothing of the failed attempt remains.
        assert_eq!(s.all_attachments().unwrap().len(), 5);
        let a = s.attachment(1, "s1").unwrap().unwrap();
        s.release(a.id).unwrap();
        let b = new_att(
            s.reserve(&req("n", "s9", &[], &[]), "eth0", &host_name)
                .unwrap(),
        );
        assert_eq!(b.ips[0].to_string(), "10.0.0.3/29");
        // Same sandbox again: idempotent.
        assert!(
            s.reserve(&req("n", "s9", &[], &[]), "eth0", &host_name)
                .unwrap()
                .existed
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn static_ips_and_ports_conflict() {
        let dir = tmp();
        let mut s = Store::open(&dir).unwrap();
        s.create_network(&spec("n", "10.1.0.0/24"), "cli", &knbr)
            .unwrap();
        let ip: IpAddr = "10.1.0.50".parse().unwrap();
        let p = [crate::model::PublishSpec::parse("8080:80").unwrap()];
        new_att(
            s.reserve(&req("n", "a", &[ip], &p), "eth0", &host_name)
                .unwrap(),
        );
        let e = s
            .reserve(&req("n", "b", &[ip], &[]), "eth0", &host_name)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("10.1.0.50") && e.contains("in use"), "{e}");
        let p2 = [crate::model::PublishSpec::parse("127.0.0.1:8080:80").unwrap()];
        let e = s
            .reserve(&req("n", "c", &[], &p2), "eth0", &host_name)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("8080"), "{e}");
        let out: IpAddr = "10.2.0.5".parse().unwrap();
        let e = s
            .reserve(&req("n", "d", &[out], &[]), "eth0", &host_name)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ip") && e.contains("10.2.0.5"), "{e}");
        let gw: IpAddr = "10.1.0.1".parse().unwrap();
        assert!(
            s.reserve(&req("n", "e", &[gw], &[]), "eth0", &host_name)
                .is_err()
        );
        assert_eq!(s.all_attachments().unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn overlapping_networks_rejected() {
        let dir = tmp();
        let mut s = Store::open(&dir).unwrap();
        s.create_network(&spec("a", "10.5.0.0/16"), "cli", &knbr)
            .unwrap();
        let e = s
            .create_network(&spec("b", "10.5.3.0/24"), "cli", &knbr)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("overlaps") && e.contains("10.5.3.0/24"), "{e}");
        let e = s
            .create_network(&spec("a", "10.6.0.0/24"), "cli", &knbr)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
