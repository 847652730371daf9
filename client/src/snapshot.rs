//! Backups: a consistent snapshot of the whole store, streamed from the leader
//! (`Cluster.Snapshot`) and kept in a backup file (the format of [`kvset_proto::backup`], which
//! `kvset-server restore` reads).
//!
//! [`crate::Client::snapshot`] finds the leader like any leader-bound call (a follower refuses
//! with `UNAVAILABLE` and the `kvset-leader` hint, which the retry loop follows), asks it to
//! build a snapshot covering everything applied when the request arrived, and collects the
//! stream: the first chunk carries the [`SnapshotInfo`], the last one the SHA-256 of all data.
//! A stream that breaks is retried from the start, as a read (a snapshot changes nothing). The
//! whole transfer, building included, is one attempt bounded by the call's deadline (the retry
//! deadline), not by the per-attempt request timeout, because building and streaming a large
//! store takes longer than a single request should.
//!
//! Before anything is returned the data is checked against the announced size and the checksum;
//! a mismatch is [`crate::Error::Protocol`] and is not retried.
//!
//! [`Snapshot::save`] writes a backup file atomically: a temporary file in the same directory
//! (mode 0600 on Unix, since a backup holds every value), fsync, rename over the target, fsync of
//! the directory. A failure removes the temporary file, so there is either the complete new
//! backup or no change. [`Snapshot::load`] reads a backup file and verifies it (length and
//! checksum) without contacting the cluster; `kvsetctl snapshot inspect` uses it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kvset_proto::backup::{self, BackupError};
use kvset_proto::v1 as pb;
use kvset_proto::v1::cluster_client::ClusterClient;

use crate::client::{request, Client};
use crate::endpoint::Route;
use crate::error::{Error, Result};
use crate::retry::{self, CallSpec, Safety};
use crate::types::{HasHeader, Header, Role};

/// What a snapshot holds: the header of a `Snapshot` stream and of a backup file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Who served it (the leader), in which cluster and term.
    pub header: Header,
    /// The last log entry the snapshot includes.
    pub last_log_index: u64,
    /// The term of that entry.
    pub last_log_term: u64,
    /// The store revision the snapshot holds.
    pub revision: i64,
    /// Size of the snapshot data in bytes.
    pub size_bytes: u64,
    /// The server's snapshot data format version.
    pub format: u32,
    /// Hex SHA-256 of the snapshot data.
    pub sha256: String,
    /// Keys in the snapshot.
    pub keys: u64,
}

impl SnapshotInfo {
    pub(crate) fn from_pb(info: pb::SnapshotInfo) -> SnapshotInfo {
        SnapshotInfo {
            header: Header::from_pb(info.header),
            last_log_index: info.last_log_index,
            last_log_term: info.last_log_term,
            revision: info.revision,
            size_bytes: info.size_bytes,
            format: info.format,
            sha256: info.sha256,
            keys: info.keys,
        }
    }

    /// The wire form, as stored at the head of a backup file.
    pub fn to_pb(&self) -> pb::SnapshotInfo {
        let h = &self.header;
        pb::SnapshotInfo {
            header: Some(pb::ResponseHeader {
                cluster_id: h.cluster_id.clone(),
                member: Some(pb::MemberRef {
                    name: h.member.clone(),
                    ordinal: h.ordinal,
                    role: role_to_pb(h.role) as i32,
                }),
                raft_term: h.term,
                revision: h.revision,
            }),
            last_log_index: self.last_log_index,
            last_log_term: self.last_log_term,
            revision: self.revision,
            size_bytes: self.size_bytes,
            format: self.format,
            sha256: self.sha256.clone(),
            keys: self.keys,
        }
    }
}

fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Unknown => pb::Role::Unspecified,
        Role::Leader => pb::Role::Leader,
        Role::Follower => pb::Role::Follower,
        Role::Learner => pb::Role::Learner,
        Role::Candidate => pb::Role::Candidate,
        Role::Shutdown => pb::Role::Shutdown,
    }
}

/// A verified snapshot: its header and its data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What it holds; `sha256` and `size_bytes` match `data`.
    pub info: SnapshotInfo,
    /// The snapshot data, in the server's format (opaque to the client).
    pub data: Vec<u8>,
}

impl Snapshot {
    /// Writes the snapshot to `path` as a backup file, atomically (see the module docs).
    /// Blocking: call it from `spawn_blocking` in async code, or use
    /// [`crate::Client::save_snapshot`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomically(path.as_ref(), &self.info.to_pb(), &self.data)
    }

    /// Reads a backup file and verifies it: the magic bytes, the format version, the header,
    /// the data's length and its SHA-256. Fails with [`Error::Backup`] when the file cannot be
    /// read or is not a valid backup. Blocking.
    pub fn load(path: impl AsRef<Path>) -> Result<Snapshot> {
        let path = path.as_ref();
        let bad = |message: String| Error::Backup {
            path: path.display().to_string(),
            message,
        };
        let file = File::open(path).map_err(|e| bad(format!("cannot read the file: {e}")))?;
        let (info, data) = backup::read(std::io::BufReader::new(file)).map_err(|e| match e {
            BackupError::Io(io) => bad(format!("cannot read the file: {io}")),
            other => bad(other.to_string()),
        })?;
        Ok(Snapshot {
            info: SnapshotInfo::from_pb(info),
            data,
        })
    }
}

/// The chunks of one `Snapshot` stream, collected.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    info: Option<pb::SnapshotInfo>,
    data: Vec<u8>,
    sha256: String,
}

impl HasHeader for Collected {
    fn header(&self) -> Option<&pb::ResponseHeader> {
        self.info.as_ref().and_then(|i| i.header.as_ref())
    }
}

/// Checks a collected stream: the info came first, the size and the checksum match the data.
pub(crate) fn verify(endpoint: &str, c: Collected) -> Result<Snapshot> {
    let damaged = |message: String| Error::Protocol {
        endpoint: endpoint.to_string(),
        message,
    };
    let mut info = c
        .info
        .ok_or_else(|| damaged("the snapshot stream carried no SnapshotInfo".into()))?;
    if c.sha256.is_empty() {
        return Err(damaged(
            "the snapshot stream ended without its checksum (it was cut short)".into(),
        ));
    }
    if c.data.len() as u64 != info.size_bytes {
        return Err(damaged(format!(
            "the snapshot stream carried {} bytes but announced {}; the transfer is damaged, \
             nothing was saved",
            c.data.len(),
            info.size_bytes
        )));
    }
    let actual = backup::sha256_hex(&c.data);
    if actual != c.sha256 {
        return Err(damaged(format!(
            "snapshot checksum mismatch: the member sent sha256 {} but the data hashes to \
             {actual}; the transfer is damaged, nothing was saved",
            c.sha256
        )));
    }
    info.sha256 = actual;
    Ok(Snapshot {
        info: SnapshotInfo::from_pb(info),
        data: c.data,
    })
}

/// Writes a backup file atomically; see the module docs.
fn write_atomically(path: &Path, info: &pb::SnapshotInfo, data: &[u8]) -> Result<()> {
    let failed = |message: String| Error::Io {
        path: path.display().to_string(),
        message,
    };
    let name = path
        .file_name()
        .ok_or_else(|| failed("the path names no file".into()))?;
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let write = || -> std::io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&tmp)?;
        let mut out = BufWriter::new(file);
        backup::write(&mut out, info, data).map_err(|e| match e {
            BackupError::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        })?;
        out.flush()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform can sync a directory).
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        failed(e.to_string())
    })
}

impl Client {
    /// Streams a consistent snapshot of the whole store from the leader and verifies it (size
    /// and SHA-256). Bounded by the retry deadline ([`crate::ClientBuilder::retry_deadline`]);
    /// see the [module docs](crate::snapshot) for what is retried.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let timeout = self.config().retry_deadline;
        // One attempt may take the whole deadline: building and streaming the snapshot of a
        // large store takes longer than the per-request timeout allows.
        let mut config = self.config().clone();
        config.request_timeout = timeout;
        let spec = CallSpec {
            op: "snapshot",
            safety: Safety::Read,
            route: Route::Leader,
            timeout,
            max_attempts: 0,
        };
        let started = Instant::now();
        let (collected, endpoint) =
            retry::run(self.registry(), &config, spec, |ch, t| async move {
                let mut stream = ClusterClient::new(ch)
                    .max_decoding_message_size(64 * 1024 * 1024)
                    .snapshot(request(pb::SnapshotRequest {}, t))
                    .await?
                    .into_inner();
                let mut c = Collected::default();
                while let Some(chunk) = stream.message().await? {
                    if c.info.is_none() {
                        c.info = chunk.info;
                    }
                    c.data.extend_from_slice(&chunk.data);
                    if !chunk.sha256.is_empty() {
                        c.sha256 = chunk.sha256;
                    }
                }
                Ok(tonic::Response::new(c))
            })
            .await?;
        let snapshot = verify(&endpoint, collected)?;
        tracing::debug!(
            endpoint = %endpoint,
            bytes = snapshot.data.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot received"
        );
        Ok(snapshot)
    }

    /// Streams a snapshot from the leader ([`Client::snapshot`]), verifies it, and writes it to
    /// `path` as a backup file, atomically ([`Snapshot::save`]). A damaged stream is an error
    /// and leaves no file. Returns what the backup holds.
    pub async fn save_snapshot(&self, path: impl AsRef<Path>) -> Result<SnapshotInfo> {
        let snapshot = self.snapshot().await?;
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || snapshot.save(&path).map(|()| snapshot.info))
            .await
            .map_err(|e| Error::Io {
                path: shown,
                message: format!("the writer task failed: {e}"),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(data: &[u8]) -> pb::SnapshotInfo {
        pb::SnapshotInfo {
            header: Some(pb::ResponseHeader {
                cluster_id: "c1".into(),
                member: Some(pb::MemberRef {
                    name: "kv-0".into(),
                    ordinal: 0,
                    role: pb::Role::Leader as i32,
                }),
                raft_term: 3,
                revision: 40,
            }),
            last_log_index: 42,
            last_log_term: 3,
            revision: 40,
            size_bytes: data.len() as u64,
            format: 1,
            sha256: String::new(),
            keys: 7,
        }
    }

    #[test]
    fn verify_accepts_a_good_stream_and_refuses_damage() {
        let data = b"snapshot bytes".to_vec();
        let good = || Collected {
            info: Some(info(&data)),
            data: data.clone(),
            sha256: backup::sha256_hex(&data),
        };
        let s = verify("e:1", good()).unwrap();
        assert_eq!(s.info.sha256, backup::sha256_hex(&data));
        assert_eq!(s.info.header.member, "kv-0");
        assert_eq!(
            s.info.to_pb().header,
            info(&data).header,
            "header round-trips"
        );

        let mut flipped = good();
        flipped.data[0] ^= 1;
        let e = verify("e:1", flipped).unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
        assert!(e.to_string().contains("checksum mismatch"), "{e}");

        let mut short = good();
        short.data.pop();
        assert!(verify("e:1", short)
            .unwrap_err()
            .to_string()
            .contains("announced"));
        let mut no_sum = good();
        no_sum.sha256.clear();
        assert!(verify("e:1", no_sum).is_err());
        let mut no_info = good();
        no_info.info = None;
        assert!(verify("e:1", no_info).is_err());
    }

    #[test]
    fn save_is_atomic_and_load_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"the data".to_vec();
        let snapshot = verify(
            "e:1",
            Collected {
                info: Some(info(&data)),
                data: data.clone(),
                sha256: backup::sha256_hex(&data),
            },
        )
        .unwrap();
        let path = dir.path().join("backup.kvset");
        std::fs::write(&path, b"an older backup").unwrap();
        snapshot.save(&path).unwrap();
        let loaded = Snapshot::load(&path).unwrap();
        assert_eq!(loaded, snapshot);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("backup.kvset")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // Damage is detected, with the file named.
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let e = Snapshot::load(&path).unwrap_err();
        assert!(matches!(e, Error::Backup { .. }), "{e:?}");
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        assert!(e.to_string().contains("backup.kvset"), "{e}");
        let e = Snapshot::load(dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");

        // A directory that does not exist: an error, and nothing is left behind.
        let e = snapshot
            .save(dir.path().join("no-such-dir").join("b.kvset"))
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }
}
