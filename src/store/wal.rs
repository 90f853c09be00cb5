//! Keeping the WAL short. Each knit command is a short process and usually the database's
//! only connection, so SQLite rebuilds the WAL index on open by reading every frame: the
//! WAL is folded into the database by a detached `knit store-maintenance` once it grows.

use super::Store;
use crate::error::Result;
use std::path::Path;
use std::time::Duration;

/// Above this many frames (pages) in the WAL, it is folded into the database when a command
/// ends (see `Drop`).
pub(super) const WAL_FOLD_FRAMES: i32 = 64;
/// SQLite's own automatic checkpoint size, kept as a fallback if folding cannot run.
const WAL_AUTOCHECKPOINT_FRAMES: i32 = 1000;
/// A folded WAL file keeps up to this many bytes of its blocks for reuse.
pub(super) const WAL_KEEP_BYTES: u64 = 1024 * 1024;

thread_local! {
    /// Frames in the WAL after this thread's last commit (SQLite's WAL hook; a store is
    /// used from one thread). The file size says nothing: a folded WAL keeps its blocks
    /// and starts over at its beginning.
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

pub(super) fn note_wal_frames(
    wal: &rusqlite::hooks::Wal,
    frames: std::ffi::c_int,
) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    // Installing a WAL hook replaces SQLite's automatic checkpoint: keep it as a fallback.
    // Its result is ignored, as SQLite's own hook does: the commit has happened, and an
    // error here (BUSY while a fold holds the checkpoint lock) would report it as failed.
    if frames >= WAL_AUTOCHECKPOINT_FRAMES {
        let _ = wal.checkpoint();
    }
    Ok(())
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

/// Starts `knit --state-dir DIR store-maintenance` without waiting for it.
fn spawn_maintenance(dir: &Path) {
    crate::deferred::spawn_self(&[
        std::ffi::OsStr::new("--state-dir"),
        dir.as_os_str(),
        std::ffi::OsStr::new("store-maintenance"),
    ]);
}

impl Store {
    pub(super) fn wal_is_big(&self) -> bool {
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
    pub(super) fn checkpoint(&self, mode: &str) -> Result<i32> {
        Ok(self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))?)
    }
}
