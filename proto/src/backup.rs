//! The backup file format, shared by `kvsetctl snapshot save` (writer) and
//! `kvset-server restore` (reader).
//!
//! ```text
//! "KVSETBAK"                      8 bytes magic
//! version                         u32 big-endian (1)
//! header length                   u32 big-endian
//! header                          protobuf `kvset.v1.SnapshotInfo`, `sha256` filled in
//! data                            the snapshot data, `size_bytes` long
//! ```
//!
//! The header's SHA-256 covers the data; a reader verifies both the length and the digest before
//! it trusts anything, so a truncated or corrupted backup is refused rather than restored.

use std::io::{Read, Write};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::v1::SnapshotInfo;

const MAGIC: &[u8; 8] = b"KVSETBAK";
const VERSION: u32 = 1;
/// A header larger than this is not a kvset backup.
const MAX_HEADER: u32 = 1 << 20;

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a kvset backup (bad magic bytes)")]
    NotABackup,
    #[error(
        "backup format version {0} is newer than this kvset understands ({VERSION}): upgrade kvset"
    )]
    TooNew(u32),
    #[error("backup header is damaged: {0}")]
    BadHeader(String),
    #[error("backup data is {actual} bytes but the header says {expected}: the file is truncated or damaged")]
    Length { expected: u64, actual: u64 },
    #[error("backup checksum mismatch (header {expected}, data {actual}): the file is damaged")]
    Checksum { expected: String, actual: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a backup: `info.sha256` and `info.size_bytes` are set from `data`.
pub fn write(mut out: impl Write, info: &SnapshotInfo, data: &[u8]) -> Result<(), BackupError> {
    let mut info = info.clone();
    info.sha256 = sha256_hex(data);
    info.size_bytes = data.len() as u64;
    let header = info.encode_to_vec();
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_be_bytes())?;
    out.write_all(&(header.len() as u32).to_be_bytes())?;
    out.write_all(&header)?;
    out.write_all(data)?;
    out.flush()?;
    Ok(())
}

/// Reads and verifies a backup; returns its header and data.
pub fn read(mut input: impl Read) -> Result<(SnapshotInfo, Vec<u8>), BackupError> {
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|_| BackupError::NotABackup)?;
    if &magic != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let mut word = [0u8; 4];
    input.read_exact(&mut word)?;
    let version = u32::from_be_bytes(word);
    if version > VERSION {
        return Err(BackupError::TooNew(version));
    }
    input.read_exact(&mut word)?;
    let header_len = u32::from_be_bytes(word);
    if header_len > MAX_HEADER {
        return Err(BackupError::BadHeader(format!(
            "header length {header_len}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    input
        .read_exact(&mut header)
        .map_err(|e| BackupError::BadHeader(e.to_string()))?;
    let info = SnapshotInfo::decode(header.as_slice())
        .map_err(|e| BackupError::BadHeader(e.to_string()))?;
    // The header's size is a claim, not a fact: reserve at most 64 MiB up front and let the
    // buffer grow with what actually arrives, reading one byte past the claim to see a longer
    // body without reading an unbounded one.
    let mut data = Vec::with_capacity(info.size_bytes.min(64 << 20) as usize);
    input
        .take(info.size_bytes.saturating_add(1))
        .read_to_end(&mut data)?;
    if data.len() as u64 != info.size_bytes {
        return Err(BackupError::Length {
            expected: info.size_bytes,
            actual: data.len() as u64,
        });
    }
    let actual = sha256_hex(&data);
    if actual != info.sha256 {
        return Err(BackupError::Checksum {
            expected: info.sha256.clone(),
            actual,
        });
    }
    Ok((info, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SnapshotInfo {
        SnapshotInfo {
            last_log_index: 42,
            last_log_term: 3,
            revision: 40,
            format: 1,
            keys: 2,
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_and_verifies() {
        let mut buf = Vec::new();
        write(&mut buf, &info(), b"snapshot bytes").unwrap();
        let (got, data) = read(buf.as_slice()).unwrap();
        assert_eq!(data, b"snapshot bytes");
        assert_eq!(got.last_log_index, 42);
        assert_eq!(got.sha256, sha256_hex(b"snapshot bytes"));
    }

    #[test]
    fn refuses_damage() {
        let mut buf = Vec::new();
        write(&mut buf, &info(), b"snapshot bytes").unwrap();
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            read(flipped.as_slice()),
            Err(BackupError::Checksum { .. })
        ));
        assert!(matches!(
            read(&buf[..buf.len() - 1]),
            Err(BackupError::Length { .. })
        ));
        assert!(matches!(
            read(&b"not a backup at all"[..]),
            Err(BackupError::NotABackup)
        ));
        // A body longer than the header says is refused too: the trailing bytes are not read
        // past the first one.
        let mut longer = buf.clone();
        longer.extend_from_slice(&[0u8; 4096]);
        assert!(matches!(
            read(longer.as_slice()),
            Err(BackupError::Length {
                expected: 14,
                actual: 15
            })
        ));
    }
}
