//! Making a sled flush durable.
//!
//! `sled::Db::flush()` (0.34, Linux, without the `io_uring` feature) writes its I/O buffers with
//! `pwrite` and then calls `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on the written
//! range of the `db` file. That survives a process crash but not a power cut or a kernel panic:
//! `sync_file_range` neither flushes the drive's volatile write cache nor persists the file's
//! metadata (its size, when the log grew). sled's background flusher does `sync_all()` only every
//! `flush_every_ms` (500 ms by default).
//!
//! Worse, sled writes any single item larger than a quarter of its segment (~128 KiB with the
//! default 512 KiB segments; see `over_blob_threshold` in sled's `pagecache/logger.rs`) to its
//! own file `<sled>/blobs/<lsn>` with plain `write_all` and **no fsync at all**
//! (`pagecache/blob_io.rs`); the log only holds a pointer to it. A 200 KiB value is therefore not
//! durable after `flush()` even on a healthy disk, and the directory entry of the new file is not
//! durable either.
//!
//! [`Durability::sync`] closes both gaps, in this order:
//!
//! 1. `db.flush()`: sled's buffers reach the kernel (and, through `sync_file_range`, the drive).
//! 2. `fdatasync(<sled>/db)`: the drive cache is flushed and the file size is persisted.
//! 3. `fsync` of every blob file not synced before, then `fsync(<sled>/blobs/)` when the set of
//!    blob files changed, so the blob names are durable too.
//!
//! Blob files are only ever written once (sled opens them with `create_new`), so a blob synced
//! once stays synced; the set of synced names is kept in memory and pruned when sled deletes
//! blobs. When the store opens, [`Durability::open`] syncs everything once (the `conf` file,
//! `db`, sled's own `snap.*` page-table snapshots, all blobs and every directory up to the data
//! directory), which also makes a freshly created data directory durable.
//!
//! Cost: one `fdatasync` per call, plus one `fsync` per new blob (measured on the development
//! VM, debug build: ~0.55 ms for an append of one small entry, of which ~0.2 ms is the added
//! `fdatasync`; ~3.2 ms for one 200 KiB entry, blob fsync included). The log store calls this
//! once per `save_vote` and per `purge` (its entries have their own files, see `wal.rs`); the
//! state machine when it builds or installs a snapshot. Opening fsyncs every
//! existing blob once, which costs one fsync per large value still stored.
//!
//! What this does not cover: sled's internal ordering assumptions when it reuses log segments
//! rely on its own `sync_file_range`/`sync_all` calls; and a lost rename of sled's own `snap.*`
//! file only makes sled replay more of its log. Both are sled's business and are unchanged here.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::error::StoreError;
use super::io_trace::{self, Op};

/// Turns sled flushes into durable ones (see the module docs).
#[derive(Debug)]
pub(crate) struct Durability {
    /// `<data_dir>/sled`.
    sled_dir: PathBuf,
    /// `<data_dir>/sled/blobs`.
    blobs_dir: PathBuf,
    /// sled's single data file, `<data_dir>/sled/db`, opened once for `fdatasync`.
    db_file: File,
    /// Names of the blob files known to be durable, with their directory entries.
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Durability {
    /// Syncs everything sled has on disk under `sled_dir`, and the directories from `sled_dir` up
    /// to and including `data_dir`, then returns a handle for cheap per-write syncs.
    pub(crate) fn open(data_dir: &Path, sled_dir: &Path) -> Result<Self, StoreError> {
        let db_path = sled_dir.join("db");
        let db_file = File::open(&db_path).map_err(|e| StoreError::io("open", &db_path, e))?;
        let blobs_dir = sled_dir.join("blobs");

        // Every regular file sled keeps next to `db` (conf, snap.*), then the blobs.
        for entry in read_dir(sled_dir)? {
            if entry.is_file() {
                fsync_path(&entry)?;
            }
        }
        let mut synced = HashSet::new();
        for blob in read_dir(&blobs_dir)? {
            fsync_path(&blob)?;
            if let Some(name) = blob.file_name() {
                synced.insert(name.to_os_string());
            }
        }
        fsync_path(&blobs_dir)?;
        fsync_path(sled_dir)?;
        fsync_path(data_dir)?;
        if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The data directory's own entry, in case it was just created.
            fsync_path(parent)?;
        }

        Ok(Self {
            sled_dir: sled_dir.to_path_buf(),
            blobs_dir,
            db_file,
            synced_blobs: Mutex::new(synced),
        })
    }

    /// Flushes sled and makes everything it holds so far durable on disk.
    pub(crate) fn sync(&self, db: &sled::Db) -> Result<(), StoreError> {
        db.flush()?;
        self.db_file
            .sync_data()
            .map_err(|e| StoreError::io("fdatasync", &self.sled_dir.join("db"), e))?;
        self.sync_blobs()
    }

    /// fsyncs blob files that appeared since the last call, and the blobs directory if its
    /// listing changed.
    fn sync_blobs(&self) -> Result<(), StoreError> {
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut present = HashSet::with_capacity(synced.len());
        let mut changed = false;
        for blob in read_dir(&self.blobs_dir)? {
            let Some(name) = blob.file_name().map(|n| n.to_os_string()) else {
                continue;
            };
            if !synced.contains(&name) {
                fsync_path(&blob)?;
                changed = true;
            }
            present.insert(name);
        }
        if present.len() != synced.len() || changed {
            // New names must be durable; removed names are harmless if they come back (sled
            // deletes stale blobs when it recovers), but syncing costs the same either way.
            fsync_path(&self.blobs_dir)?;
        }
        *synced = present;
        Ok(())
    }
}

/// fsyncs a file or a directory by path.
pub(crate) fn fsync_path(path: &Path) -> Result<(), StoreError> {
    io_trace::record(|| Op::Fsync(path.to_path_buf()));
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io("fsync", path, e))
}

/// The paths in a directory (empty if it does not exist).
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir, e)),
    };
    entries
        .map(|entry| {
            entry
                .map(|e| e.path())
                .map_err(|e| StoreError::io("list", dir, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_values_land_in_blob_files_that_sync_covers() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        let db = sled::Config::new().path(&sled_dir).open().unwrap();
        let durable = Durability::open(dir.path(), &sled_dir).unwrap();
        assert!(durable.synced_blobs.lock().unwrap().is_empty());

        // 300 KiB is above sled's blob threshold: it is written to blobs/<lsn>.
        db.insert(b"big", vec![7u8; 300 * 1024]).unwrap();
        durable.sync(&db).unwrap();
        let synced = durable.synced_blobs.lock().unwrap().clone();
        assert_eq!(synced.len(), 1, "one blob file expected, got {synced:?}");

        // Small writes do not create blobs; the set stays as it is.
        db.insert(b"small", b"v".to_vec()).unwrap();
        durable.sync(&db).unwrap();
        assert_eq!(*durable.synced_blobs.lock().unwrap(), synced);
    }
}
