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
//! 1. List the blob files. sled creates a blob inside a log reservation, and the flush waits for
//!    every reservation made before it, so each file listed here is complete after step 2.
//! 2. `db.flush()`: sled's buffers reach the kernel (and, through `sync_file_range`, the drive).
//! 3. `fdatasync(<sled>/db)`: the drive cache is flushed and the file size is persisted.
//! 4. `fsync` of every blob file not synced before, then `fsync(<sled>/blobs/)` when the set of
//!    blob files changed, so the blob names are durable too.
//!
//! Blob files are only ever written once (sled opens them with `create_new`), so a blob synced
//! once after it was complete stays synced; the set of synced names is kept in memory and
//! pruned when sled deletes blobs. Only blobs listed in step 1 are recorded: a blob that
//! appeared during the flush may still be half written by another thread, so it is fsynced
//! but not recorded, and the next sync fsyncs it again (recording it would leave its final
//! contents unsynced forever, and sled's recovery stops at a torn blob and drops every later
//! record, an acknowledged vote included). sled also deletes blobs while running (an
//! overwritten large value): a blob gone before its fsync is skipped, not an error. When the store opens, [`Durability::open`] syncs everything once (the `conf` file,
//! `db`, sled's own `snap.*` page-table snapshots, all blobs and every directory up to the data
//! directory), which also makes a freshly created data directory durable.
//!
//! Cost: one `fdatasync` per call, plus one `fsync` per new blob (what that costs is measured
//! in docs/BENCHMARKS.md, "Where kvset's time goes"). The log store calls this once per
//! `save_vote` and per purge it makes durable (its entries have their own files, see `wal.rs`);
//! the state machine when it builds or installs a snapshot. Opening fsyncs every
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
            if !fsync_if_present(&blob)? {
                continue;
            }
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
        self.sync_with(|| db.flush().map(drop).map_err(Into::into))
    }

    /// [`Durability::sync`] with the flush given by the caller (tests run code "during" it).
    fn sync_with(&self, flush: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Listed before the flush: sled creates a blob file inside a log reservation, and the
        // flush waits for every reservation made before it, so these files are complete once
        // it returns. A file that appears later may still be being written.
        let complete = blob_names(&self.blobs_dir)?;
        flush()?;
        self.db_file
            .sync_data()
            .map_err(|e| StoreError::io("fdatasync", &self.sled_dir.join("db"), e))?;

        let mut recorded = HashSet::with_capacity(synced.len());
        let mut changed = false;
        for name in blob_names(&self.blobs_dir)? {
            if synced.contains(&name) {
                recorded.insert(name);
                continue;
            }
            let path = self.blobs_dir.join(&name);
            if !fsync_if_present(&path)? {
                continue; // sled deleted it meanwhile (an overwritten value): nothing to keep
            }
            changed = true;
            if complete.contains(&name) {
                recorded.insert(name);
            }
            // Otherwise fsynced now, but not recorded: the next sync fsyncs it again, after the
            // flush that waits for sled to finish writing it.
        }
        if recorded.len() != synced.len() || changed {
            // New names must be durable; removed names are harmless if they come back (sled
            // deletes stale blobs when it recovers), but syncing costs the same either way.
            fsync_path(&self.blobs_dir)?;
        }
        *synced = recorded;
        Ok(())
    }
}

/// The file names in sled's blob directory (empty if it does not exist).
fn blob_names(blobs_dir: &Path) -> Result<HashSet<OsString>, StoreError> {
    Ok(read_dir(blobs_dir)?
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect())
}

/// fsyncs a file that sled may delete at any time; false if it is gone.
fn fsync_if_present(path: &Path) -> Result<bool, StoreError> {
    match fsync_path(path) {
        Ok(()) => Ok(true),
        Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(false)
        }
        Err(e) => Err(e),
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
    use std::io::Write;

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

    fn fsyncs_of(ops: &[Op], path: &Path) -> usize {
        ops.iter()
            .filter(|o| **o == Op::Fsync(path.to_path_buf()))
            .count()
    }

    /// Issue #21, item 4a: a blob file that appears while sled is still writing it (it shows up
    /// in the listing, but its write was not part of the flush) must not be recorded as synced:
    /// the next sync fsyncs it again, once sled has finished it.
    #[test]
    fn a_blob_written_during_the_flush_is_synced_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        let db = sled::Config::new().path(&sled_dir).open().unwrap();
        let durable = Durability::open(dir.path(), &sled_dir).unwrap();
        let blob = durable.blobs_dir.join("424242");

        let (result, ops) = io_trace::capture(|| {
            durable.sync_with(|| {
                db.flush()?;
                // Another thread's large insert starts its blob file while this sync runs.
                std::fs::create_dir_all(&durable.blobs_dir).unwrap();
                std::fs::write(&blob, [1u8; 100]).unwrap();
                Ok(())
            })
        });
        result.unwrap();
        let first = fsyncs_of(&ops, &blob);

        // sled finishes writing it; the next sync must make the finished file durable.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&blob)
            .unwrap()
            .write_all(&[2u8; 100])
            .unwrap();
        let (result, ops) = io_trace::capture(|| durable.sync(&db));
        result.unwrap();
        assert_eq!(
            fsyncs_of(&ops, &blob),
            1,
            "the blob's final contents were never fsynced (fsyncs during the first sync: {first})"
        );
        // Once it was listed before a flush, it is recorded and not synced again.
        let (result, ops) = io_trace::capture(|| durable.sync(&db));
        result.unwrap();
        assert_eq!(fsyncs_of(&ops, &blob), 0);
    }

    /// Issue #21, item 4b: sled deletes blob files at run time (when a large value is
    /// overwritten and its old segment retires). A blob that disappears between the listing and
    /// its fsync is not an error: its value is gone from the database too.
    #[test]
    fn a_blob_deleted_before_its_fsync_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        let db = sled::Config::new().path(&sled_dir).open().unwrap();
        let durable = Durability::open(dir.path(), &sled_dir).unwrap();
        db.insert(b"big", vec![7u8; 300 * 1024]).unwrap();
        db.flush().unwrap();
        let blobs: Vec<PathBuf> = read_dir(&durable.blobs_dir).unwrap();
        assert_eq!(blobs.len(), 1, "{blobs:?}");
        let doomed = blobs[0].clone();

        // sled removes the blob in the window between the listing and the fsync.
        let target = doomed.clone();
        let (result, ops) = io_trace::capture_with(
            move |op| {
                if *op == Op::Fsync(target.clone()) {
                    std::fs::remove_file(&target).unwrap();
                }
            },
            || durable.sync(&db),
        );
        assert!(ops.contains(&Op::Fsync(doomed.clone())), "{ops:?}");
        result.expect("a vanished blob must not fail the sync");
        assert!(!durable
            .synced_blobs
            .lock()
            .unwrap()
            .contains(doomed.file_name().unwrap()));
        durable.sync(&db).unwrap();
    }
}
