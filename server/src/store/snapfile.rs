//! The current snapshot, kept durably in one file: `<data_dir>/snapshot/current`.
//!
//! openraft asks for the current snapshot after a restart (`get_current_snapshot`) and sends it
//! to followers that need purged entries, and the state machine rebuilds itself from it when
//! sled's copy is behind (see `state_machine.rs`). So it must survive crashes whole.
//!
//! File layout: magic `KVSETSNP`, format `u32` BE, meta length `u32` BE, the [`SnapshotMeta`]
//! (postcard), data length `u64` BE, the data (the snapshot bytes of `snapshot.rs`), and a
//! CRC-32 (`u32` BE) of everything before it.
//!
//! Replacement is atomic: write `current.tmp`, fsync it, rename it over `current`, fsync the
//! directory. A crash leaves either the old file or the new one (and maybe a stale `.tmp`, which
//! opening removes). An older snapshot never replaces a newer one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::codec;
use super::durable::fsync_path;
use super::error::StoreError;
use crate::raft::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"KVSETSNP";
const FILE_FORMAT: u32 = 1;
const CURRENT: &str = "current";
const TEMP: &str = "current.tmp";

/// The directory holding the current snapshot, and the current snapshot's metadata.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    dir: PathBuf,
    /// Metadata of the file on disk; the lock also serializes replacements.
    current: Mutex<Option<SnapshotMeta>>,
}

impl SnapshotFile {
    /// Opens (creating) the directory and reads the current snapshot's metadata, if any.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let created = !dir.exists();
        fs::create_dir_all(dir).map_err(|e| StoreError::io("create", dir, e))?;
        if created {
            if let Some(parent) = dir.parent() {
                fsync_path(parent)?;
            }
        }
        let temp = dir.join(TEMP);
        if temp.exists() {
            fs::remove_file(&temp).map_err(|e| StoreError::io("remove", &temp, e))?;
        }
        let path = dir.join(CURRENT);
        let current = if path.exists() {
            Some(read_header(&path)?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            current: Mutex::new(current),
        })
    }

    /// The current snapshot's metadata.
    pub(crate) fn meta(&self) -> Option<SnapshotMeta> {
        self.lock().clone()
    }

    /// Durably makes `(meta, data)` the current snapshot, unless the current one is newer
    /// (covers a higher log index). Returns whether it was stored.
    pub(crate) fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<bool, StoreError> {
        let mut current = self.lock();
        let index = |m: &SnapshotMeta| m.last_log_id.map(|l| l.index);
        if current.as_ref().is_some_and(|c| index(c) > index(meta)) {
            return Ok(false);
        }

        let meta_bytes = codec::encode("snapshot meta", meta)?;
        let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| StoreError::Corrupt {
            what: "snapshot meta",
            detail: "larger than 4 GiB".into(),
        })?;
        let mut head = Vec::with_capacity(32 + meta_bytes.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&FILE_FORMAT.to_be_bytes());
        head.extend_from_slice(&meta_len.to_be_bytes());
        head.extend_from_slice(&meta_bytes);
        head.extend_from_slice(&(data.len() as u64).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(data);

        let temp = self.dir.join(TEMP);
        let path = self.dir.join(CURRENT);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&temp)?;
            f.write_all(&head)?;
            f.write_all(data)?;
            f.write_all(&crc.finalize().to_be_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| StoreError::io("write", &temp, e))?;
        fs::rename(&temp, &path).map_err(|e| StoreError::io("rename", &temp, e))?;
        fsync_path(&self.dir)?;
        *current = Some(meta.clone());
        Ok(true)
    }

    /// Reads the whole current snapshot and verifies its checksum.
    pub(crate) fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
        let _guard = self.lock();
        let path = self.dir.join(CURRENT);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        let corrupt = |detail: &str| StoreError::Corrupt {
            what: "snapshot file",
            detail: format!("{}: {detail}", path.display()),
        };
        let (body, crc) = bytes
            .split_last_chunk::<4>()
            .ok_or_else(|| corrupt("too short"))?;
        if crc32fast::hash(body) != u32::from_be_bytes(*crc) {
            return Err(corrupt("checksum mismatch"));
        }
        let (meta, rest) = parse_header(body).map_err(|d| corrupt(&d))?;
        let (len, data) = rest
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("no data length"))?;
        if u64::from_be_bytes(*len) != data.len() as u64 {
            return Err(corrupt("data length mismatch"));
        }
        Ok(Some((meta, data.to_vec())))
    }

    /// Size of the snapshot file in bytes (0 without one).
    pub(crate) fn size(&self) -> u64 {
        fs::metadata(self.dir.join(CURRENT)).map_or(0, |m| m.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SnapshotMeta>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads only the metadata at the front of a snapshot file.
///
/// The metadata length comes from the file, so it is checked against the file's size before
/// a buffer of that size is allocated: a damaged length is an error, not a 4 GiB allocation.
fn read_header(path: &Path) -> Result<SnapshotMeta, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "snapshot file",
        detail: format!("{}: {detail}", path.display()),
    };
    let mut f = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let size = f
        .metadata()
        .map_err(|e| StoreError::io("stat", path, e))?
        .len();
    let mut fixed = [0u8; 16];
    f.read_exact(&mut fixed)
        .map_err(|e| StoreError::io("read", path, e))?;
    if &fixed[..8] != MAGIC {
        return Err(corrupt("not a kvset snapshot file".into()));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&fixed[12..16]);
    let meta_len = u32::from_be_bytes(len);
    if 16 + u64::from(meta_len) > size {
        return Err(corrupt(format!(
            "metadata of {meta_len} bytes runs past the end of the file ({size} bytes)"
        )));
    }
    let mut head = fixed.to_vec();
    head.resize(16 + meta_len as usize, 0);
    f.read_exact(&mut head[16..])
        .map_err(|e| StoreError::io("read", path, e))?;
    parse_header(&head).map(|(meta, _)| meta).map_err(corrupt)
}

/// Parses magic, format and metadata; returns the metadata and the bytes after it.
fn parse_header(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not a kvset snapshot file".into());
    }
    let int = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        u32::from_be_bytes(b)
    };
    if int(8) != FILE_FORMAT {
        return Err(format!(
            "file format {} (this build reads {FILE_FORMAT})",
            int(8)
        ));
    }
    let end = 16 + int(12) as usize;
    let meta_bytes = bytes.get(16..end).ok_or("truncated metadata")?;
    let meta = postcard::from_bytes(meta_bytes).map_err(|e| format!("metadata: {e}"))?;
    Ok((meta, &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 0), index)),
            snapshot_id: format!("s{index}"),
            ..Default::default()
        }
    }

    #[test]
    fn save_load_reopen_and_refuse_older() {
        let dir = tempfile::tempdir().unwrap();
        let snap_dir = dir.path().join("snapshot");
        let f = SnapshotFile::open(&snap_dir).unwrap();
        assert_eq!(f.meta(), None);
        assert_eq!(f.load().unwrap(), None);

        assert!(f.save(&meta(5), b"five").unwrap());
        assert!(
            !f.save(&meta(4), b"four").unwrap(),
            "older snapshot must not win"
        );
        assert_eq!(f.load().unwrap(), Some((meta(5), b"five".to_vec())));

        drop(f);
        let f = SnapshotFile::open(&snap_dir).unwrap();
        assert_eq!(f.meta(), Some(meta(5)));
        assert!(f.size() > 4);
    }

    #[test]
    fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let f = SnapshotFile::open(dir.path()).unwrap();
        f.save(&meta(1), b"data").unwrap();
        let path = dir.path().join(CURRENT);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - 6;
        bytes[at] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(f.load(), Err(StoreError::Corrupt { .. })));
    }

    /// Found by the `snapshot_file` fuzz target: opening read the metadata length from the
    /// file (bytes 12..16) and zero-filled a buffer of that size (up to 4 GiB) before checking
    /// the magic or the file's size. Now a length past the end of the file is refused first.
    #[test]
    fn a_metadata_length_past_the_end_is_refused_without_allocating_it() {
        let dir = tempfile::tempdir().unwrap();
        // 18 bytes: no magic, and a metadata length of 0xbe534550 (3.2 GB).
        let crash = b"KKV\xbe\xbe\xbe\xbe\xbe\xbe\xbe\xbe\xbe\xbeSEPV\x00";
        fs::write(dir.path().join(CURRENT), crash).unwrap();
        let err = SnapshotFile::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("not a kvset snapshot file"),
            "{err}"
        );

        // The same with the right magic and format: the length is checked against the file.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FILE_FORMAT.to_be_bytes());
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.extend_from_slice(b"meta");
        fs::write(dir.path().join(CURRENT), &bytes).unwrap();
        let err = SnapshotFile::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
