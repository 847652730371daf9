//! The data volume remembers who owns it.
//!
//! A StatefulSet binds PersistentVolumeClaim `data-kv-2` to pod `kv-2` for life, but mistakes
//! happen: a volume restored into the wrong claim, two clusters sharing a host path, a local data
//! dir passed to the wrong replica. Opening such a volume would graft one member's Raft log onto
//! another member's identity and can silently fork the cluster. So the first start writes an
//! ownership record, `<data dir>/kvset-volume.json`, and every later start compares it with the
//! pod's identity *before opening anything else*, refusing with an error that names both owners.
//!
//! The record is written with write-to-temp, fsync, rename, fsync-dir, so a crash leaves either
//! the old record or the new one; a temp file left by a crash is removed on the next start
//! (without it, a first start that crashed would leave a directory that looks like foreign
//! data). A data directory the first start creates is fsynced into its parent. The cluster id is filled in once it is known (kv-0 mints it when
//! it initializes the cluster; a joining member learns it from the cluster before it joins).

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::PodIdentity;

/// File name of the ownership record inside the data dir.
pub const VOLUME_FILE: &str = "kvset-volume.json";
/// Bump when the record's meaning changes.
const FORMAT: u32 = 1;

/// Errors about the data volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// `owner` and `me` read like "kv-1 of cluster 3fa…" (the cluster part when known).
    #[error(
        "data dir {dir} belongs to {owner}, not to {me}; refusing to start and leaving the volume \
         untouched. Mount the volume of {pod} (in Kubernetes, PVC data-{pod}), or point --data-dir \
         at an empty directory to join as a new member"
    )]
    WrongOwner {
        dir: String,
        owner: String,
        me: String,
        pod: String,
    },
    #[error("data dir {dir} holds kvset data but no {VOLUME_FILE}: it was not written by this version of kvset or was damaged; refusing to touch it")]
    Unowned { dir: String },
    #[error("{path}: unreadable ownership record: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path} has format {found}; this kvset understands up to {FORMAT}: upgrade kvset")]
    TooNew { path: String, found: u32 },
    #[error("data dir {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The ownership record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOwner {
    pub format: u32,
    /// StatefulSet name.
    pub set: String,
    /// StatefulSet ordinal (= Raft node id).
    pub ordinal: u64,
    /// The cluster id once known.
    pub cluster_id: Option<String>,
    /// True when this member minted the cluster id to initialize the cluster (kv-0's first
    /// start); false when it learned the id from the cluster.
    #[serde(default)]
    pub minted: bool,
}

/// An opened, ownership-checked data directory.
#[derive(Clone, Debug)]
pub struct Volume {
    dir: PathBuf,
    owner: VolumeOwner,
    fresh: bool,
}

/// The size of the filesystem that holds a directory and the room left on it, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    /// What an unprivileged writer can still use.
    pub available: u64,
}

/// The filesystem space of the filesystem holding `dir` (statvfs).
pub fn filesystem_space(dir: &Path) -> std::io::Result<Space> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let block = stat.f_frsize as u64;
    #[allow(clippy::unnecessary_cast)]
    Ok(Space {
        total: stat.f_blocks as u64 * block,
        available: stat.f_bavail as u64 * block,
    })
}

/// Makes a change to the directory holding `path` (a new, renamed or removed entry) durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves the old content or the new one: write a
/// temp file beside it, fsync it, rename it over `path`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(path)
}

impl Volume {
    /// Checks (or, on an empty dir, claims) `dir` for `me`. `expected_cluster`, when given, must
    /// match the recorded cluster id. Touches nothing when the check fails.
    pub fn claim(
        dir: &Path,
        me: &PodIdentity,
        expected_cluster: Option<&str>,
    ) -> Result<Self, VolumeError> {
        let io = |source| VolumeError::Io {
            path: dir.display().to_string(),
            source,
        };
        create_dir_durably(dir).map_err(io)?;
        let record = dir.join(VOLUME_FILE);
        // A crash in the middle of `write_record` leaves its temp file: the rename never
        // happened, so the record it was writing does not exist. It is no kvset data (or a
        // first start that crashed would make the directory look foreign forever) and is
        // removed once the directory is ours.
        let stale = temp_path(dir);
        let drop_stale = || match fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
        if record.exists() {
            let owner = read_record(&record)?;
            let cluster_mismatch = match (expected_cluster, owner.cluster_id.as_deref()) {
                (Some(want), Some(have)) => want != have,
                _ => false,
            };
            if owner.set != me.set || owner.ordinal != me.ordinal || cluster_mismatch {
                return Err(VolumeError::WrongOwner {
                    dir: dir.display().to_string(),
                    owner: describe(
                        &format!("{}-{}", owner.set, owner.ordinal),
                        owner.cluster_id.as_deref(),
                    ),
                    me: describe(&me.to_string(), expected_cluster),
                    pod: me.to_string(),
                });
            }
            drop_stale()?;
            return Ok(Self {
                dir: dir.to_path_buf(),
                owner,
                fresh: false,
            });
        }
        // No record: only an empty directory may be claimed (lost+found is what a fresh ext4
        // volume carries).
        let mut entries = fs::read_dir(dir).map_err(io)?;
        let temp_name = stale.file_name().expect("a file name");
        if entries.any(|e| {
            e.map(|e| e.file_name() != "lost+found" && e.file_name() != temp_name)
                .unwrap_or(true)
        }) {
            return Err(VolumeError::Unowned {
                dir: dir.display().to_string(),
            });
        }
        drop_stale()?;
        let owner = VolumeOwner {
            format: FORMAT,
            set: me.set.clone(),
            ordinal: me.ordinal,
            cluster_id: expected_cluster.map(str::to_string),
            minted: false,
        };
        write_record(dir, &owner)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            owner,
            fresh: true,
        })
    }

    /// True when this start claimed an empty directory.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the sled database lives.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The recorded cluster id, if known.
    pub fn cluster_id(&self) -> Option<&str> {
        self.owner.cluster_id.as_deref()
    }

    /// True when this member minted the recorded cluster id.
    pub fn cluster_id_minted(&self) -> bool {
        self.owner.minted
    }

    /// Records the cluster id (once), and whether this member minted it. Recording a different
    /// id than the one stored is refused.
    pub fn set_cluster_id(&mut self, cluster_id: &str, minted: bool) -> Result<(), VolumeError> {
        match self.owner.cluster_id.as_deref() {
            Some(have) if have == cluster_id => Ok(()),
            Some(have) => {
                let pod = format!("{}-{}", self.owner.set, self.owner.ordinal);
                Err(VolumeError::WrongOwner {
                    dir: self.dir.display().to_string(),
                    owner: describe(&pod, Some(have)),
                    me: describe(&pod, Some(cluster_id)),
                    pod,
                })
            }
            None => {
                let mut owner = self.owner.clone();
                owner.cluster_id = Some(cluster_id.to_string());
                owner.minted = minted;
                write_record(&self.dir, &owner)?;
                self.owner = owner;
                Ok(())
            }
        }
    }
}

fn describe(pod: &str, cluster: Option<&str>) -> String {
    match cluster {
        Some(c) => format!("{pod} of cluster {c}"),
        None => pod.to_string(),
    }
}

fn read_record(path: &Path) -> Result<VolumeOwner, VolumeError> {
    let bytes = fs::read(path).map_err(|source| VolumeError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let owner: VolumeOwner = serde_json::from_slice(&bytes).map_err(|e| VolumeError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if owner.format > FORMAT {
        return Err(VolumeError::TooNew {
            path: path.display().to_string(),
            found: owner.format,
        });
    }
    Ok(owner)
}

/// Atomically replaces the record: temp file, fsync, rename, fsync of the directory.
fn write_record(dir: &Path, owner: &VolumeOwner) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io {
        path: dir.display().to_string(),
        source,
    };
    let tmp = temp_path(dir);
    let mut f = fs::File::create(&tmp).map_err(io)?;
    let json = serde_json::to_vec_pretty(owner).expect("the ownership record always serializes");
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, dir.join(VOLUME_FILE)).map_err(io)?;
    fsync(dir).map_err(io)?;
    Ok(())
}

/// Where `write_record` writes before it renames.
fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!("{VOLUME_FILE}.tmp"))
}

/// `create_dir_all`, then fsyncs the parent of every directory it created (deepest first), so
/// that a power cut cannot lose a data directory that was already claimed.
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir)?;
    for created in missing {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync(parent)?;
        }
    }
    Ok(())
}

/// fsyncs a file or directory (traced in the store's unit tests, see `store/io_trace.rs`).
fn fsync(path: &Path) -> std::io::Result<()> {
    crate::store::io_trace::record(|| crate::store::io_trace::Op::Fsync(path.to_path_buf()));
    fs::File::open(path).and_then(|f| f.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::io_trace::Op;

    fn id(name: &str) -> PodIdentity {
        PodIdentity::parse(name).unwrap()
    }

    #[test]
    fn first_start_claims_then_later_starts_check() {
        let tmp = tempfile::tempdir().unwrap();
        let v = Volume::claim(tmp.path(), &id("kv-1"), None).unwrap();
        assert!(v.is_fresh());
        let mut v = Volume::claim(tmp.path(), &id("kv-1"), None).unwrap();
        assert!(!v.is_fresh());
        v.set_cluster_id("c1", false).unwrap();
        assert_eq!(
            Volume::claim(tmp.path(), &id("kv-1"), Some("c1"))
                .unwrap()
                .cluster_id(),
            Some("c1")
        );
        assert!(v.set_cluster_id("c2", false).is_err());
    }

    #[test]
    fn refuses_another_ordinal_or_cluster_and_touches_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = Volume::claim(tmp.path(), &id("kv-1"), None).unwrap();
        v.set_cluster_id("c1", false).unwrap();
        std::fs::write(tmp.path().join("payload"), b"x").unwrap();
        let before = std::fs::read(tmp.path().join(VOLUME_FILE)).unwrap();

        let err = Volume::claim(tmp.path(), &id("kv-2"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kv-1") && err.contains("kv-2"), "{err}");
        let err = Volume::claim(tmp.path(), &id("db-1"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kv-1") && err.contains("db-1"), "{err}");
        let err = Volume::claim(tmp.path(), &id("kv-1"), Some("c9"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c1") && err.contains("c9"), "{err}");

        assert_eq!(std::fs::read(tmp.path().join(VOLUME_FILE)).unwrap(), before);
        assert!(tmp.path().join("payload").exists());
    }

    #[test]
    fn refuses_a_non_empty_unowned_dir() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("something"), b"x").unwrap();
        assert!(matches!(
            Volume::claim(tmp.path(), &id("kv-0"), None),
            Err(VolumeError::Unowned { .. })
        ));
        assert!(!tmp.path().join(VOLUME_FILE).exists());
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("lost+found")).unwrap();
        assert!(Volume::claim(tmp.path(), &id("kv-0"), None).is_ok());
    }

    /// Issue #21, item 8: a crash while the first start wrote the record leaves only the temp
    /// file. That directory holds no kvset data: claiming it again must work (and drop the
    /// stale temp file), not call it "unowned" forever.
    #[test]
    fn a_stale_temp_record_does_not_make_the_dir_unowned() {
        let tmp = tempfile::tempdir().unwrap();
        let stale = tmp.path().join(format!("{VOLUME_FILE}.tmp"));
        std::fs::write(&stale, b"{\"format\": 1, \"se").unwrap();
        let v = Volume::claim(tmp.path(), &id("kv-1"), None).expect("claim");
        assert!(v.is_fresh());
        assert!(!stale.exists(), "stale temp file removed");

        // Next to a record (a crash while recording the cluster id): ignored and removed.
        std::fs::write(&stale, b"garbage").unwrap();
        let v = Volume::claim(tmp.path(), &id("kv-1"), None).expect("claim");
        assert!(!v.is_fresh());
        assert!(!stale.exists(), "stale temp file removed");
    }

    /// Issue #21, item 8: a data directory created by the first start is fsynced into its
    /// parent, so a power cut cannot lose the directory (and the record in it) after the claim.
    #[test]
    fn a_new_data_dir_is_made_durable_in_its_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("data");
        let (claimed, ops) =
            crate::store::io_trace::capture(|| Volume::claim(&dir, &id("kv-0"), None));
        claimed.unwrap();
        for parent in [tmp.path().to_path_buf(), tmp.path().join("a")] {
            assert!(
                ops.contains(&Op::Fsync(parent.clone())),
                "{} not fsynced: {ops:?}",
                parent.display()
            );
        }
        assert!(ops.contains(&Op::Fsync(dir.clone())), "{ops:?}");
    }
}
