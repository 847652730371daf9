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
//! the old record or the new one. The cluster id is filled in once it is known (kv-0 mints it when
//! it initializes the cluster; a joining member learns it from the cluster before it joins).

use std::fs;
use std::io::Write;
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
        fs::create_dir_all(dir).map_err(io)?;
        let record = dir.join(VOLUME_FILE);
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
            return Ok(Self {
                dir: dir.to_path_buf(),
                owner,
                fresh: false,
            });
        }
        // No record: only an empty directory may be claimed (lost+found is what a fresh ext4
        // volume carries).
        let mut entries = fs::read_dir(dir).map_err(io)?;
        if entries.any(|e| e.map(|e| e.file_name() != "lost+found").unwrap_or(true)) {
            return Err(VolumeError::Unowned {
                dir: dir.display().to_string(),
            });
        }
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
    let tmp = dir.join(format!("{VOLUME_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io)?;
    let json = serde_json::to_vec_pretty(owner).expect("the ownership record always serializes");
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, dir.join(VOLUME_FILE)).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
