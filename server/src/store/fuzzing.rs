//! Entry points for the fuzz targets in `fuzz/`: one function per decoder of bytes that come
//! from disk or the network, so that a fuzzer can feed them arbitrary input.
//!
//! The decoders are private to the store (their types are internal), so this module lives
//! inside it and is compiled only with the `fuzzing` feature, which nothing but the fuzz crate
//! turns on. Each function calls the decoders the server itself uses, in the order it uses
//! them, and returns what they return: the contract under test is that bad input gives an
//! error, never a panic, a hang or an allocation out of proportion to the input. Nothing here
//! reimplements a decoder; a function only arranges the input the way the server receives it
//! (a segment file in a log directory, a snapshot file in its directory, a log entry applied to
//! a state machine).

use std::fs;
use std::path::Path;

use kvset_proto::backup::{self, BackupError};
use kvset_proto::v1::RangeRequest;
use openraft::{CommittedLeaderId, EntryPayload};

use super::codec::{self, KvHeader, KvRecord};
use super::cursor::Cursor;
use super::dedup::ClientRecord;
use super::error::StoreError;
use super::history::{self, StoredEvent};
use super::lease::LeaseRecord;
use super::meta::SmMeta;
use super::snapfile::SnapshotFile;
use super::wal::Wal;
use super::{alarm, log, restore, snapshot, Store};
use crate::raft::types::{Entry, LogId, Proto, Vote};

/// Why a fuzzed input was refused: the decoders' own errors.
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    /// A store decoder refused the input.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backup reader refused the input.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The input could not be put where the decoder reads it (the scratch directory).
    #[error("setting up the input in {0}: {1}")]
    Setup(String, std::io::Error),
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), FuzzError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| FuzzError::Setup(parent.display().to_string(), e))?;
    }
    fs::write(path, bytes).map_err(|e| FuzzError::Setup(path.display().to_string(), e))
}

/// The file name of the segment whose first index is 1 (`wal.rs` names segments by the first
/// index, 20 digits).
pub const FIRST_SEGMENT: &str = "00000000000000000001.wal";

/// A Raft log segment file: `bytes` become the only segment of a log in `dir` (which should be
/// empty), the log is opened as the store opens it (checking every record, cutting a torn
/// tail), and every stored entry is read back and decoded. Returns how many entries it holds.
pub fn raft_log_segment(dir: &Path, bytes: &[u8]) -> Result<usize, FuzzError> {
    write(&dir.join(FIRST_SEGMENT), bytes)?;
    let wal = Wal::open(dir, 0)?;
    let Some((first, last)) = wal.bounds() else {
        return Ok(0);
    };
    let payloads = wal.read(first, Some(last.saturating_add(1)))?;
    for payload in &payloads {
        log::decode_entry(payload)?;
    }
    Ok(payloads.len())
}

/// The snapshot file (`snapshot/current`): `bytes` become the file in `dir` (which should be
/// empty), which is opened (reading its header, as a store does when it opens) and loaded
/// (checking length and checksum); its data is then decoded like [`snapshot_data`].
pub fn snapshot_file(dir: &Path, bytes: &[u8]) -> Result<usize, FuzzError> {
    write(&dir.join("current"), bytes)?;
    let file = SnapshotFile::open(dir)?;
    let Some((_meta, data)) = file.load()? else {
        return Ok(0);
    };
    snapshot_data(&data)
}

/// Snapshot data, as a follower receives it from the leader (`install_snapshot`) and as a
/// store reads it from its snapshot file: decoded, then loaded into an empty temporary tree
/// the way an install fills a state machine (which checks key order, leases and history).
/// Returns the number of keys.
pub fn snapshot_data(bytes: &[u8]) -> Result<usize, FuzzError> {
    let summary = restore::describe_snapshot(bytes)?;
    let payload = snapshot::decode(bytes)?;
    let keys = payload.kvs.len();
    debug_assert_eq!(summary.keys, keys as u64);
    let db = sled::Config::new()
        .temporary(true)
        .open()
        .map_err(StoreError::from)?;
    let tree = db.open_tree("sm").map_err(StoreError::from)?;
    snapshot::load(&tree, payload)?;
    Ok(keys)
}

/// A backup file, as `kvset-server restore` reads it: header and checksum, then a summary of
/// the snapshot data in it. Returns the number of keys.
pub fn backup_file(bytes: &[u8]) -> Result<u64, FuzzError> {
    let (_info, data) = backup::read(bytes)?;
    Ok(restore::describe_snapshot(&data)?.keys)
}

/// Every record codec of the state-machine and Raft trees, and the range cursor a client sends
/// back, run on the same bytes: key-value records, the metadata record, lease, history and
/// dedup records and history keys, the alarm table, the generation pointer, the vote and log
/// ids of the `raft` tree. Returns how many of them accepted the bytes.
pub fn store_records(bytes: &[u8]) -> usize {
    let mut accepted = 0;
    let mut count = |ok: bool| accepted += usize::from(ok);
    count(KvRecord::decode(bytes).is_ok());
    count(KvHeader::decode(bytes).is_ok());
    count(codec::key_value(b"key", bytes, false).is_ok());
    count(codec::decode_u64("state-machine generation", bytes).is_ok());
    count(SmMeta::decode(bytes).is_ok());
    count(codec::decode::<LeaseRecord>("lease record", bytes).is_ok());
    count(codec::decode::<ClientRecord>("dedup record", bytes).is_ok());
    count(history::parse_event_key(bytes).is_ok());
    if let Ok(event) = StoredEvent::decode(bytes) {
        count(event.to_proto(1, true).is_ok());
    }
    count(alarm::decode(Some(bytes)).is_ok());
    count(codec::decode::<Vote>("vote", bytes).is_ok());
    count(codec::decode::<LogId>("committed log id", bytes).is_ok());
    count(Cursor::decode_for(&cursor_range(bytes.to_vec())).is_ok());
    accepted
}

/// The range request a fuzzed cursor is checked against in [`store_records`] (a cursor is
/// bound to its range).
fn cursor_range(cursor: Vec<u8>) -> RangeRequest {
    RangeRequest {
        start: b"a".to_vec(),
        end: b"z".to_vec(),
        cursor,
        ..Default::default()
    }
}

/// How many of [`sample_entries`] a fresh state machine applies before the fuzzed entry in
/// [`log_command`]: keys, a lease, history and a dedup record for the fuzzed command to work on.
const PRELUDE: usize = 5;

/// A log with one entry of every kind the state machine applies, built with the server's own
/// types: the first [`PRELUDE`] set up state, the rest cover a transaction, a ranged delete, a
/// group-commit batch, a compaction, a lease revoke, an alarm, a blank entry and a membership.
fn sample_entries() -> Vec<(&'static str, Entry)> {
    use std::collections::{BTreeMap, BTreeSet};

    use kvset_proto::raft::log_command::Command;
    use kvset_proto::raft::{CommandBatch, LogCommand};
    use kvset_proto::v1::alarm_request::AlarmAction;
    use kvset_proto::v1::{
        compare, request_op, AlarmRequest, AlarmType, CompactRequest, Compare, DeleteRequest,
        LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestId, RequestOp,
        TxnRequest,
    };

    use crate::raft::types::MemberNode;

    let log_id = |index: usize| openraft::LogId::new(CommittedLeaderId::new(1, 0), index as u64);
    let command = |request_id: Option<(u64, u64)>, command| LogCommand {
        request_id: request_id.map(|(client_id, sequence)| RequestId {
            client_id,
            sequence,
        }),
        command: Some(command),
    };
    let put = |key: &str, lease| {
        Command::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: format!("value of {key}").into_bytes(),
            lease,
            ..Default::default()
        })
    };
    let grant = |id| Command::LeaseGrant(LeaseGrantRequest { ttl: 60, id });
    let txn = Command::Txn(TxnRequest {
        compares: vec![Compare {
            key: b"a".to_vec(),
            target: compare::Target::Version as i32,
            op: compare::Op::Greater as i32,
            operand: Some(compare::Operand::Version(1)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::Range(RangeRequest {
                start: b"a".to_vec(),
                end: b"c".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: b"t".to_vec(),
                value: b"failed".to_vec(),
                ..Default::default()
            })),
        }],
        request_id: None,
    });
    let membership = openraft::Membership::new(
        vec![BTreeSet::from([1])],
        BTreeMap::from([(
            1,
            MemberNode {
                name: "kv-0".into(),
                client_addr: "127.0.0.1:2379".into(),
                peer_addr: "127.0.0.1:2380".into(),
            },
        )]),
    );
    let payloads = vec![
        (
            "lease_grant",
            EntryPayload::Normal(Proto(command(None, grant(7)))),
        ),
        (
            "put",
            EntryPayload::Normal(Proto(command(None, put("a", 0)))),
        ),
        (
            "put_with_lease",
            EntryPayload::Normal(Proto(command(None, put("b", 7)))),
        ),
        (
            "put_with_request_id",
            EntryPayload::Normal(Proto(command(Some((1, 1)), put("c", 0)))),
        ),
        (
            "put_again",
            EntryPayload::Normal(Proto(command(None, put("a", 0)))),
        ),
        (
            "txn",
            EntryPayload::Normal(Proto(command(Some((1, 2)), txn))),
        ),
        (
            "delete_prefix",
            EntryPayload::Normal(Proto(command(
                None,
                Command::Delete(DeleteRequest {
                    key: b"c".to_vec(),
                    prefix: true,
                    prev_kv: true,
                    ..Default::default()
                }),
            ))),
        ),
        (
            "batch",
            EntryPayload::Normal(Proto(command(
                None,
                Command::Batch(CommandBatch {
                    commands: vec![
                        command(Some((2, 1)), put("d", 0)),
                        command(Some((3, 1)), grant(9)),
                        command(Some((3, 2)), put("e", 9)),
                    ],
                }),
            ))),
        ),
        (
            "compact",
            EntryPayload::Normal(Proto(command(
                None,
                Command::Compact(CompactRequest { revision: 3 }),
            ))),
        ),
        (
            "lease_revoke",
            EntryPayload::Normal(Proto(command(
                None,
                Command::LeaseRevoke(LeaseRevokeRequest { id: 7 }),
            ))),
        ),
        (
            "alarm",
            EntryPayload::Normal(Proto(command(
                None,
                Command::Alarm(AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: 1,
                    alarm: AlarmType::Nospace as i32,
                    ..Default::default()
                }),
            ))),
        ),
        ("blank", EntryPayload::Blank),
        ("membership", EntryPayload::Membership(membership)),
    ];
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, (name, payload))| {
            let entry = Entry {
                log_id: log_id(i + 1),
                payload,
            };
            (name, entry)
        })
        .collect()
}

/// One input for a fuzz target's seed corpus.
#[derive(Clone, Debug)]
pub struct Seed {
    /// The fuzz target it is for (a directory of `fuzz/seeds/`).
    pub target: &'static str,
    /// The file name.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// Valid inputs for every target above, made by the server's own encoders from a state machine
/// that applied [`sample_entries`] (`dir`, which should be empty, holds the store and the log
/// they are written to). The fuzz crate's seed corpus is this (`fuzz/README.md`).
pub fn seeds(dir: &Path) -> Result<Vec<Seed>, FuzzError> {
    let mut out = Vec::new();
    let mut seed = |target, name: &str, bytes| {
        out.push(Seed {
            target,
            name: name.to_string(),
            bytes,
        })
    };
    let entries = sample_entries();

    // The log: every entry in one segment, and each entry on its own.
    let log_dir = dir.join("raft-log");
    let mut wal = Wal::open(&log_dir, 0)?;
    let mut records = Vec::new();
    for (name, entry) in &entries {
        let bytes = codec::encode("log entry", entry)?;
        seed("log_command", name, bytes.clone());
        records.push((entry.log_id.index, bytes));
    }
    wal.append(&records)?.sync()?;
    drop(wal);
    let segment = fs::read(log_dir.join(FIRST_SEGMENT))
        .map_err(|e| FuzzError::Setup(log_dir.display().to_string(), e))?;
    seed("raft_log_segment", "segment", segment);

    // The state machine after that log, its snapshot (format 3: history and leases) and the
    // snapshot file the build left, and the same state in formats 1 and 2.
    let store_dir = dir.join("store");
    let store = Store::open(&store_dir)?;
    let sm = store.state_machine();
    sm.apply_now(entries.into_iter().map(|(_, e)| e).collect())?;
    let snap = sm.snapshot_now()?;
    let data = snap.snapshot.into_inner();
    let current = store_dir.join("snapshot").join("current");
    let file =
        fs::read(&current).map_err(|e| FuzzError::Setup(current.display().to_string(), e))?;
    seed("snapshot_file", "current", file);
    seed("snapshot_data", "format3", data.clone());
    let mut older = snapshot::decode(&data)?;
    older.history.clear();
    older.leases.clear();
    older.max_lease_id = 0;
    older.compact_revision = older.revision;
    seed("snapshot_data", "format2", snapshot::encode(&older)?);
    older.alarms.clear();
    seed("snapshot_data", "format1", snapshot::encode(&older)?);

    // A backup of that snapshot.
    let info = kvset_proto::v1::SnapshotInfo {
        last_log_index: snap.meta.last_log_id.map_or(0, |l| l.index),
        last_log_term: snap.meta.last_log_id.map_or(0, |l| l.leader_id.term),
        revision: sm.revision(),
        format: snapshot::format_of(&data),
        keys: sm.key_count(),
        ..Default::default()
    };
    let mut backup = Vec::new();
    backup::write(&mut backup, &info, &data)?;
    seed("backup_file", "backup", backup);

    // One record of each kind the trees hold.
    let record = |lease| KvRecord {
        create_revision: 2,
        mod_revision: 5,
        version: 2,
        lease,
        value: b"value".to_vec(),
    };
    seed("store_records", "kv", record(0).encode());
    seed("store_records", "kv_leased", record(7).encode());
    let meta = SmMeta {
        last_applied: Some(openraft::LogId::new(CommittedLeaderId::new(1, 0), 5)),
        revision: 5,
        key_count: 3,
        client_count: 1,
        compact_revision: 2,
        max_lease_id: 7,
        ..Default::default()
    };
    seed("store_records", "meta", meta.encode()?);
    let lease = LeaseRecord { ttl: 60 };
    seed(
        "store_records",
        "lease",
        codec::encode("lease record", &lease)?,
    );
    let event = StoredEvent {
        key: b"a".to_vec(),
        after: Some(record(0).encode()),
        before: Some(record(7).encode()),
    };
    seed(
        "store_records",
        "history_event",
        codec::encode("history event", &event)?,
    );
    seed(
        "store_records",
        "history_key",
        history::event_key(5, 1).to_vec(),
    );
    let client = ClientRecord {
        sequence: 3,
        log_index: 4,
        result: vec![8, 5],
    };
    seed(
        "store_records",
        "dedup",
        codec::encode("dedup record", &client)?,
    );
    seed(
        "store_records",
        "alarms",
        alarm::encode(&sm_alarms())?.unwrap_or_default(),
    );
    seed("store_records", "generation", 2u64.to_be_bytes().to_vec());
    seed(
        "store_records",
        "vote",
        codec::encode("vote", &Vote::new(3, 1))?,
    );
    let log_id = openraft::LogId::new(CommittedLeaderId::new(3, 1), 42);
    seed("store_records", "log_id", codec::encode("log id", &log_id)?);
    let cursor = Cursor {
        after: b"b".to_vec(),
        first_page_revision: 5,
        range: super::cursor::fingerprint(&cursor_range(Vec::new())),
    };
    seed("store_records", "cursor", cursor.encode()?);
    Ok(out)
}

/// An alarm table of one raised alarm.
fn sm_alarms() -> Vec<alarm::Alarm> {
    vec![alarm::Alarm {
        member_id: 1,
        alarm: 1,
        member_name: "kv-0".into(),
        usage_bytes: 1 << 30,
        quota_bytes: 1 << 30,
    }]
}

/// A Raft log entry (the payload of a log record, as `raft_log_segment` reads it back): decoded
/// the way the log store decodes it, then applied to a fresh state machine in `dir` (which
/// should be empty) that holds a few keys, a lease and a dedup record. A command that cannot be
/// applied must be an error, never a panic. Returns the revision after applying.
pub fn log_command(dir: &Path, bytes: &[u8]) -> Result<i64, FuzzError> {
    let mut entry = log::decode_entry(bytes)?;
    let store = Store::open(dir)?;
    let sm = store.state_machine();
    let prelude: Vec<Entry> = sample_entries()
        .into_iter()
        .take(PRELUDE)
        .map(|(_, e)| e)
        .collect();
    // The fuzzed entry follows the prelude in the log, whatever index it claims.
    entry.log_id = openraft::LogId::new(CommittedLeaderId::new(1, 0), PRELUDE as u64 + 1);
    sm.apply_now(prelude)?;
    sm.apply_now(vec![entry])?;
    Ok(sm.revision())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `target`'s entry point on `bytes` in a fresh scratch directory under `dir`; `Ok`
    /// with a count of what it found, or the decoder's error as text.
    fn run(dir: &Path, target: &str, bytes: &[u8]) -> Result<u64, String> {
        let scratch = tempfile::tempdir_in(dir).unwrap();
        let scratch = scratch.path();
        let count = match target {
            "raft_log_segment" => raft_log_segment(scratch, bytes).map(|n| n as u64),
            "snapshot_file" => snapshot_file(scratch, bytes).map(|n| n as u64),
            "snapshot_data" => snapshot_data(bytes).map(|n| n as u64),
            "backup_file" => backup_file(bytes),
            "log_command" => log_command(scratch, bytes).map(|rev| rev as u64),
            "store_records" => Ok(store_records(bytes) as u64),
            other => panic!("no entry point for fuzz target {other}"),
        };
        count.map_err(|e| e.to_string())
    }

    /// The seeds reach past every decoder's first checks: each is accepted, and finds what was
    /// put in it.
    #[test]
    fn every_generated_seed_is_accepted_by_its_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let seeds = seeds(&dir.path().join("made")).unwrap();
        let targets: std::collections::BTreeSet<_> = seeds.iter().map(|s| s.target).collect();
        assert_eq!(targets.len(), 6, "{targets:?}");
        for seed in &seeds {
            let found = run(dir.path(), seed.target, &seed.bytes)
                .unwrap_or_else(|e| panic!("{}/{}: {e}", seed.target, seed.name));
            let want_at_least = match seed.target {
                "raft_log_segment" => sample_entries().len() as u64,
                "log_command" => PRELUDE as u64 - 1, // revision after the prelude's puts
                _ => 1,
            };
            assert!(
                found >= want_at_least,
                "{}/{}: {found} < {want_at_least}",
                seed.target,
                seed.name
            );
        }
    }

    /// The committed corpus (`fuzz/seeds/`) stays valid input as the formats evolve, and the
    /// inputs fuzzing found (`regression-*`) stay refused with an error. Regenerate the seeds
    /// with the `fuzz_seeds` example when a format changes.
    #[test]
    fn the_committed_seed_corpus_matches_the_decoders() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        let dir = tempfile::tempdir().unwrap();
        let mut checked = 0;
        for target in fs::read_dir(&root).unwrap() {
            let target = target.unwrap();
            let name = target.file_name().into_string().unwrap();
            if name == "ctl_txn_json" || name == "auth_policy" {
                continue; // kvsetctl's, and the auth module's (checked in `auth::tests`)
            }
            for file in fs::read_dir(target.path()).unwrap() {
                let file = file.unwrap();
                let file_name = file.file_name().into_string().unwrap();
                let bytes = fs::read(file.path()).unwrap();
                let got = run(dir.path(), &name, &bytes);
                if file_name.starts_with("regression-") {
                    if name != "store_records" {
                        assert!(got.is_err(), "{name}/{file_name} is accepted: {got:?}");
                    }
                } else {
                    assert!(
                        got.is_ok(),
                        "{name}/{file_name} is refused: {got:?}; regenerate the seeds"
                    );
                }
                checked += 1;
            }
        }
        assert!(
            checked >= 6,
            "only {checked} seeds under {}",
            root.display()
        );
    }
}
