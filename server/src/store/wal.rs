//! The Raft log's entries on disk: append-only segment files, one `write` and one `fdatasync`
//! per append.
//!
//! Keeping the log in sled cost every append a sled batch, a sled flush (two `pwrite`s and two
//! `sync_file_range(WAIT)`s, which also flushed whatever the state machine had written) and then
//! the `fdatasync` that makes it durable; and every entry went through sled's page cache and
//! garbage collection a second time. Raft needs none of that from its log: entries are
//! appended at the end, read back mostly near the end, cut off at the end on a conflict, and
//! dropped at the front after a snapshot. So the log is a plain write-ahead log:
//!
//! ```text
//! <data_dir>/raft-log/
//!   00000000000000000001.wal    segment starting at index 1
//!   00000000000000052311.wal    segment starting at index 52311 (the active one: the last)
//! segment  = magic "KVWAL001", then records
//! record   = payload length (u32 LE) | CRC-32 of index and payload (u32 LE) | index (u64 LE)
//!            | payload (the caller's bytes: postcard of the openraft entry)
//! ```
//!
//! - **Append** writes all records of a call with one `write` to the active segment; [`Wal::sync`]
//!   then `fdatasync`s it. An append starts a new segment once the active one passed
//!   [`SEGMENT_BYTES`]; creating one syncs the directory, so the name is durable before any
//!   record in it is reported durable.
//! - **Truncate** (a new leader overwrote the tail) deletes the later segments, last first,
//!   fsyncing the directory after each unlink, then cuts the file holding the first removed
//!   index. Whatever a power cut keeps is a prefix of the log: never a cut file followed by a
//!   segment whose unlink was lost.
//! - **Purge** (entries are in a snapshot) deletes whole segments that end at or before the
//!   purge point, oldest first; the caller records the purge point durably first. Entries of a
//!   partly purged segment stay on disk until the whole segment goes; the floor (the purge
//!   point + 1, given to [`Wal::open`]) hides them.
//! - **Opening** first deletes segments wholly below the floor that a crash brought back (an
//!   unlink that never became durable: a segment followed by one starting at or below the
//!   floor). It then reads every segment and checks each record's CRC and index. A damaged
//!   record at the end of the last segment with no valid record after it is a torn append (a
//!   crash in the middle of a write that was never reported durable) and is cut off. Damage
//!   followed by a valid record cannot be a torn append, since every earlier append was
//!   fdatasync'ed before the next one was written: it is corruption of acknowledged entries,
//!   and opening fails with [`StoreError::Corrupt`] naming the offset rather than drop them.
//!   So does damage in any segment but the last. (The price: a power cut that persists a later
//!   page of one unsynced multi-page append but not an earlier page also reads as corruption;
//!   the member then needs its data directory wiped and rejoins from a snapshot. Losing
//!   acknowledged entries silently would be worse.)
//!
//! Locations of records are kept in memory (12 bytes per entry); entries are read with `pread`
//! and normally come from the page cache, since replication reads what was just written.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::warn;

use super::durable::fsync_path;
use super::error::StoreError;
use super::io_trace::{self, Op};

/// A new segment is started once the active one is larger than this.
pub(crate) const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A smaller segment size for crash tests that need rollovers (0: [`SEGMENT_BYTES`]).
static SEGMENT_BYTES_FOR_TESTS: AtomicU64 = AtomicU64::new(0);

/// Makes every log in this process start new segments past `bytes` instead of
/// [`SEGMENT_BYTES`], so that tests see rollovers. For tests only.
pub(crate) fn set_segment_bytes_for_tests(bytes: u64) {
    SEGMENT_BYTES_FOR_TESTS.store(bytes, Ordering::Relaxed);
}

fn segment_bytes() -> u64 {
    match SEGMENT_BYTES_FOR_TESTS.load(Ordering::Relaxed) {
        0 => SEGMENT_BYTES,
        n => n,
    }
}

const MAGIC: &[u8; 8] = b"KVWAL001";
const HEADER_BYTES: u64 = 16;
const EXTENSION: &str = "wal";

/// One segment file and where its records are.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// Index of the first record.
    first: u64,
    /// Offset and payload length of each record, in index order.
    records: Vec<(u64, u32)>,
    /// Bytes of valid data (header and whole records).
    len: u64,
}

impl Segment {
    /// One past the last index in this segment.
    fn end(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

/// The segment files of one log directory.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    /// Segments by first index; contiguous: each starts where the previous one ends.
    segments: BTreeMap<u64, Segment>,
    /// Indexes below this are purged (hidden even if still on disk).
    floor: u64,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, cutting off a torn tail. `floor` is the
    /// caller's durable purge point + 1 (0 when nothing was purged): indexes below it are hidden.
    pub(crate) fn open(dir: &Path, floor: u64) -> Result<Self, StoreError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create", dir, e))?;
            fsync_path(dir)?;
            if let Some(parent) = dir.parent() {
                fsync_path(parent)?;
            }
        }
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))? {
            let path = entry.map_err(|e| StoreError::io("list", dir, e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
                continue;
            }
            let first = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    what: "raft log segment name",
                    detail: path.display().to_string(),
                })?;
            firsts.push(first);
        }
        firsts.sort_unstable();

        // A segment followed by one that starts at or below the floor holds only purged
        // indexes: it is one whose unlink a crash undid. Delete it before checking that the
        // segments are contiguous (the gap it leaves would refuse to open).
        let stale: Vec<u64> = firsts
            .windows(2)
            .filter(|pair| pair[1] <= floor)
            .map(|pair| pair[0])
            .collect();
        if !stale.is_empty() {
            for first in &stale {
                let path = segment_path(dir, *first);
                warn!(segment = %path.display(), floor, "deleting a purged segment that a crash left behind");
                remove_file(&path)?;
            }
            fsync_path(dir)?;
            firsts.retain(|f| !stale.contains(f));
        }

        let mut segments = BTreeMap::new();
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let segment = read_segment(&segment_path(dir, first), first, is_last)?;
            if let Some(prev) = segments.values().last().map(|s: &Segment| s.end()) {
                if prev != first {
                    return Err(StoreError::Corrupt {
                        what: "raft log",
                        detail: format!(
                            "segment {first} does not start where the previous one ends ({prev})"
                        ),
                    });
                }
            }
            segments.insert(first, segment);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            segments,
            floor,
        })
    }

    /// Hides every index up to `upto` (a purge not yet durable: the segments stay).
    pub(crate) fn hide(&mut self, upto: u64) {
        self.floor = self.floor.max(upto + 1);
    }

    /// True when any segment file exists (even if all its records are hidden).
    pub(crate) fn has_segments(&self) -> bool {
        !self.segments.is_empty()
    }

    /// The first and last index stored (above the floor), if any.
    pub(crate) fn bounds(&self) -> Option<(u64, u64)> {
        let first = self.segments.values().next()?.first.max(self.floor);
        let end = self.segments.values().last()?.end();
        (first < end).then(|| (first, end - 1))
    }

    /// The payloads of indexes `start..end` that are stored, in order.
    pub(crate) fn read(&self, start: u64, end: Option<u64>) -> Result<Vec<Vec<u8>>, StoreError> {
        let start = start.max(self.floor);
        let mut out = Vec::new();
        for segment in self.segments.values() {
            if segment.end() <= start {
                continue;
            }
            if end.is_some_and(|end| segment.first >= end) {
                break;
            }
            let from = start.saturating_sub(segment.first) as usize;
            let to = end.map_or(segment.records.len(), |end| {
                (end.saturating_sub(segment.first) as usize).min(segment.records.len())
            });
            for &(offset, len) in segment.records.get(from..to).unwrap_or_default() {
                let mut buf = vec![0; len as usize];
                segment
                    .file
                    .read_exact_at(&mut buf, offset + 16)
                    .map_err(|e| StoreError::io("read", &segment.path, e))?;
                out.push(buf);
            }
        }
        Ok(out)
    }

    /// Writes `records` (index, payload), which must continue the log (or start it, when it is
    /// empty), to the active segment. Returns the file to [`Wal::sync`] before reporting them
    /// durable.
    ///
    /// Records below the floor are already purged (they are in a snapshot) and are skipped.
    pub(crate) fn append(&mut self, records: &[(u64, Vec<u8>)]) -> Result<SyncHandle, StoreError> {
        let skip = records.iter().take_while(|(i, _)| *i < self.floor).count();
        let records = &records[skip..];
        let Some(&(first_index, _)) = records.first() else {
            return Ok(SyncHandle(None));
        };
        if self.bounds().is_none() && !self.segments.is_empty() {
            // Every stored record is purged: the log starts over at `first_index`.
            let all: Vec<u64> = self.segments.keys().rev().copied().collect();
            for first in all {
                let segment = self.segments.remove(&first).expect("listed");
                remove_file(&segment.path)?;
            }
            fsync_path(&self.dir)?;
        }
        let continues = match self.segments.values().last() {
            Some(active) => active.end() == first_index,
            None => true,
        };
        if !continues {
            return Err(StoreError::Corrupt {
                what: "raft log append",
                detail: format!(
                    "entry {first_index} does not follow the last stored entry {:?} \
                     (segments {:?}, floor {})",
                    self.bounds().map(|(_, last)| last),
                    self.segments
                        .values()
                        .map(|s| (s.first, s.end()))
                        .collect::<Vec<_>>(),
                    self.floor
                ),
            });
        }
        let needs_segment = self
            .segments
            .values()
            .last()
            .is_none_or(|active| active.len >= segment_bytes());
        if needs_segment {
            let segment = create_segment(&self.dir, first_index)?;
            self.segments.insert(first_index, segment);
        }
        let active = self.segments.values_mut().last().expect("a segment exists");

        let mut buf = Vec::with_capacity(records.iter().map(|(_, p)| p.len() + 16).sum());
        let mut placed = Vec::with_capacity(records.len());
        let mut offset = active.len;
        for (i, (index, payload)) in records.iter().enumerate() {
            if *index != first_index + i as u64 {
                return Err(StoreError::Corrupt {
                    what: "raft log append",
                    detail: format!("entries are not contiguous at index {index}"),
                });
            }
            let len = u32::try_from(payload.len()).map_err(|_| StoreError::Corrupt {
                what: "raft log append",
                detail: format!("entry {index} is {} bytes, over 4 GiB", payload.len()),
            })?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&checksum(*index, payload).to_le_bytes());
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(payload);
            placed.push((offset, len));
            offset += 16 + u64::from(len);
        }
        active
            .file
            .write_all_at(&buf, active.len)
            .map_err(|e| StoreError::io("write", &active.path, e))?;
        active.len = offset;
        active.records.extend(placed);
        Ok(SyncHandle(Some((active.file.clone(), active.path.clone()))))
    }

    /// Removes every index from `from` on.
    ///
    /// Later segments go first, last one first, each unlink made durable (directory fsync)
    /// before the next step: whatever a power cut keeps is a prefix of the log, never a cut
    /// file followed by a segment whose unlink was lost (a gap that would not open).
    pub(crate) fn truncate(&mut self, from: u64) -> Result<(), StoreError> {
        let doomed: Vec<u64> = self.segments.range(from..).map(|(&f, _)| f).rev().collect();
        for first in doomed {
            let segment = self.segments.remove(&first).expect("listed");
            remove_file(&segment.path)?;
            fsync_path(&self.dir)?;
        }
        if let Some(segment) = self.segments.values_mut().last() {
            if segment.end() > from {
                let keep = (from - segment.first) as usize;
                let cut = segment.records[keep].0;
                io_trace::record(|| Op::SetLen(segment.path.clone(), cut));
                segment
                    .file
                    .set_len(cut)
                    .and_then(|()| segment.file.sync_data())
                    .map_err(|e| StoreError::io("truncate", &segment.path, e))?;
                segment.records.truncate(keep);
                segment.len = cut;
            }
        }
        Ok(())
    }

    /// Deletes the segments that hold only indexes up to `upto`, oldest first, and hides the
    /// rest of them. The caller has recorded the purge durably before, so a segment whose
    /// unlink a crash undoes is deleted again by [`Wal::open`].
    pub(crate) fn purge(&mut self, upto: u64) -> Result<(), StoreError> {
        self.floor = self.floor.max(upto + 1);
        let doomed: Vec<u64> = self
            .segments
            .values()
            .filter(|s| s.end() <= upto + 1)
            .map(|s| s.first)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        for first in doomed {
            let segment = self.segments.remove(&first).expect("listed");
            remove_file(&segment.path)?;
        }
        fsync_path(&self.dir)
    }

    /// Bytes of all segment files.
    pub(crate) fn disk_size(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    /// Bytes of the records not purged, each with its 16-byte frame: what the log would take if
    /// a purge cut segments exactly at the purge point. A purge deletes only whole segments, so
    /// the files hold up to one segment more; the space quota counts this (it drops as soon as
    /// a purge is applied).
    pub(crate) fn live_size(&self) -> u64 {
        self.segments
            .values()
            .map(|s| {
                let skip = self
                    .floor
                    .saturating_sub(s.first)
                    .min(s.records.len() as u64);
                s.records[skip as usize..]
                    .iter()
                    .map(|&(_, len)| u64::from(len) + 16)
                    .sum::<u64>()
            })
            .sum()
    }
}

/// The segment an append wrote to; [`SyncHandle::sync`] makes that append durable. Kept apart
/// from [`Wal`] so that the sync runs without holding the log's lock.
pub(crate) struct SyncHandle(Option<(Arc<File>, PathBuf)>);

impl SyncHandle {
    /// `fdatasync`s the segment.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        match &self.0 {
            // Test-only `--fault skip-log-fsync` (faults.rs): a power cut loses these entries.
            Some(_) if crate::faults::skip_log_fsync() => Ok(()),
            Some((file, path)) => file
                .sync_data()
                .map_err(|e| StoreError::io("fdatasync", path, e)),
            None => Ok(()),
        }
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{EXTENSION}"))
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    io_trace::record(|| Op::Remove(path.to_path_buf()));
    std::fs::remove_file(path).map_err(|e| StoreError::io("remove", path, e))
}

/// Creates an empty segment whose first record will be `first`, durably.
fn create_segment(dir: &Path, first: u64) -> Result<Segment, StoreError> {
    let path = segment_path(dir, first);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| StoreError::io("create", &path, e))?;
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    file.write_all(&header)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("write", &path, e))?;
    fsync_path(dir)?;
    Ok(Segment {
        path,
        file: Arc::new(file),
        first,
        records: Vec::new(),
        len: HEADER_BYTES,
    })
}

/// Reads a segment's records; cuts a torn tail off the last segment.
fn read_segment(path: &Path, first: u64, is_last: bool) -> Result<Segment, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| StoreError::io("stat", path, e))?
        .len();
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "raft log segment",
        detail: format!("{}: {detail}", path.display()),
    };
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut header = [0u8; HEADER_BYTES as usize];
    let header_ok = reader.read_exact(&mut header).is_ok() && &header[..8] == MAGIC;
    let mut records = Vec::new();
    let mut offset = HEADER_BYTES;
    let mut torn = None;
    if !header_ok {
        torn = Some(format!("bad header at offset 0 ({size} bytes)"));
        offset = 0;
    }
    while torn.is_none() && offset < size {
        let mut head = [0u8; 16];
        if reader.read_exact(&mut head).is_err() {
            torn = Some(format!("partial record header at offset {offset}"));
            break;
        }
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let index = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if offset + 16 + u64::from(len) > size {
            torn = Some(format!("record at offset {offset} runs past the end"));
            break;
        }
        let mut payload = vec![0; len as usize];
        if reader.read_exact(&mut payload).is_err() || checksum(index, &payload) != crc {
            torn = Some(format!("bad checksum at offset {offset}"));
            break;
        }
        let expected = first + records.len() as u64;
        if index != expected {
            return Err(corrupt(format!(
                "record at offset {offset} has index {index}, expected {expected}"
            )));
        }
        records.push((offset, len));
        offset += 16 + u64::from(len);
    }
    drop(reader);
    if let Some(why) = torn {
        if !is_last {
            return Err(corrupt(why));
        }
        // A torn append only ever damages the end of the file: the appends before it were
        // fdatasync'ed before it was written. A valid record after the damage is therefore
        // proof of damage to acknowledged records, which cutting would silently drop.
        let expected = first + records.len() as u64;
        if let Some((at, index)) = valid_record_after(&file, offset, size, expected)
            .map_err(|e| StoreError::io("read", path, e))?
        {
            return Err(corrupt(format!(
                "{why}, but a valid record (index {index}) follows at offset {at}: the log is \
                 damaged, not torn by a crash. Refusing to drop entries that were acknowledged; \
                 wipe this member's data directory so that it rejoins from a snapshot"
            )));
        }
        // An append that never completed (and so was never reported durable): cut it off.
        warn!(segment = %path.display(), %why, "cutting off a torn tail of the raft log");
        let keep = if header_ok { offset } else { 0 };
        file.set_len(keep)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io("truncate", path, e))?;
        if !header_ok {
            // Not even the header made it: the segment never held a record. Start it afresh.
            let mut header = [0u8; HEADER_BYTES as usize];
            header[..8].copy_from_slice(MAGIC);
            file.write_all_at(&header, 0)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io("write", path, e))?;
            offset = HEADER_BYTES;
        }
    }
    Ok(Segment {
        path: path.to_path_buf(),
        file: Arc::new(file),
        first,
        records,
        len: offset,
    })
}

/// The offset and index of the first valid record (whole, CRC matching, index at least
/// `min_index`) that starts after offset `bad`, if any. Reads the rest of the file: only called
/// when opening finds a damaged record in the last segment.
fn valid_record_after(
    file: &File,
    bad: u64,
    size: u64,
    min_index: u64,
) -> std::io::Result<Option<(u64, u64)>> {
    let from = bad + 1;
    if size < from + 16 {
        return Ok(None);
    }
    let mut rest = vec![0; (size - from) as usize];
    file.read_exact_at(&mut rest, from)?;
    // An index further on than one record per 16 bytes cannot be in this file.
    let max_index = min_index.saturating_add(rest.len() as u64 / 16);
    for at in 0..=rest.len() - 16 {
        let head = &rest[at..at + 16];
        let index = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if index < min_index || index > max_index {
            continue;
        }
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let Some(payload) = rest.get(at + 16..at + 16 + len) else {
            continue;
        };
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        if checksum(index, payload) == crc {
            return Ok(Some((from + at as u64, index)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64) -> (u64, Vec<u8>) {
        (index, format!("entry-{index}").into_bytes().repeat(3))
    }

    fn append(wal: &mut Wal, range: std::ops::Range<u64>) {
        let records: Vec<_> = range.map(rec).collect();
        wal.append(&records).unwrap().sync().unwrap();
    }

    fn read_all(wal: &Wal) -> Vec<u64> {
        let Some((first, last)) = wal.bounds() else {
            return Vec::new();
        };
        let got = wal.read(first, None).unwrap();
        assert_eq!(got.len() as u64, last - first + 1);
        for (i, payload) in got.iter().enumerate() {
            assert_eq!(payload, &rec(first + i as u64).1);
        }
        (first..=last).collect()
    }

    #[test]
    fn appends_survive_reopening_and_reads_take_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(wal.bounds(), None);
        append(&mut wal, 1..4);
        append(&mut wal, 4..10);
        assert_eq!(wal.read(3, Some(5)).unwrap(), vec![rec(3).1, rec(4).1]);
        assert_eq!(wal.read(8, None).unwrap().len(), 2);
        assert!(wal.read(10, None).unwrap().is_empty());
        drop(wal);
        let wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_all(&wal), (1..10).collect::<Vec<_>>());
    }

    #[test]
    fn appends_must_continue_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 5..7); // an empty log may start anywhere (after a purge)
        let err = wal.append(&[rec(9)]).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("does not follow"), "{err}");
        assert_eq!(read_all(&wal), vec![5, 6]);
    }

    #[test]
    fn truncate_cuts_the_tail_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1..5);
        // force more segments
        for start in [5u64, 9] {
            wal.segments.values_mut().last().unwrap().len = SEGMENT_BYTES;
            append(&mut wal, start..start + 4);
        }
        assert_eq!(wal.segments.len(), 3);
        wal.truncate(7).unwrap();
        assert_eq!(wal.segments.len(), 2);
        assert_eq!(read_all(&wal), (1..7).collect::<Vec<_>>());
        append(&mut wal, 7..9);
        drop(wal);
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_all(&wal), (1..9).collect::<Vec<_>>());
        wal.truncate(1).unwrap();
        assert_eq!(wal.bounds(), None);
        append(&mut wal, 1..3);
        assert_eq!(read_all(&Wal::open(dir.path(), 0).unwrap()), vec![1, 2]);
    }

    #[test]
    fn purge_drops_whole_segments_and_hides_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1..5);
        wal.segments.values_mut().last().unwrap().len = SEGMENT_BYTES;
        append(&mut wal, 5..9);
        let live = |range: std::ops::Range<u64>| -> u64 {
            range.map(|i| rec(i).1.len() as u64 + 16).sum()
        };
        assert_eq!(wal.live_size(), live(1..9));
        wal.purge(6).unwrap();
        assert_eq!(wal.segments.len(), 1, "the segment 1..=4 is gone");
        assert_eq!(read_all(&wal), vec![7, 8]);
        // The space quota counts what is above the purge point, not the segment left on disk.
        assert_eq!(wal.live_size(), live(7..9));
        assert!(wal.disk_size() > wal.live_size());
        // Reopened, the caller sets the floor from its purge record.
        let mut wal = Wal::open(dir.path(), 7).unwrap();
        assert_eq!(read_all(&wal), vec![7, 8]);
        // Purging everything leaves an empty log that continues after the purge point.
        wal.purge(8).unwrap();
        assert_eq!(wal.bounds(), None);
        append(&mut wal, 9..10);
        assert_eq!(read_all(&wal), vec![9]);
        // Records below the floor are skipped; a log whose records are all purged starts over.
        wal.purge(20).unwrap();
        append(&mut wal, 18..23);
        assert_eq!(read_all(&wal), vec![21, 22]);
        drop(wal);
        let wal = Wal::open(dir.path(), 21).unwrap();
        assert_eq!(read_all(&wal), vec![21, 22]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1..4);
        let path = segment_path(dir.path(), 1);
        drop(wal);

        // A half-written record at the end: cut off.
        let full = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - 5).unwrap();
        drop(file);
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_all(&wal), vec![1, 2]);
        append(&mut wal, 3..5);
        drop(wal);
        assert_eq!(
            read_all(&Wal::open(dir.path(), 0).unwrap()),
            vec![1, 2, 3, 4]
        );

        // A segment whose header never made it (a crash right after creating it) starts afresh.
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        wal.segments.values_mut().last().unwrap().len = SEGMENT_BYTES;
        append(&mut wal, 5..6);
        drop(wal);
        let newest = segment_path(dir.path(), 5);
        std::fs::write(&newest, b"KVW").unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_all(&wal), vec![1, 2, 3, 4]);
        append(&mut wal, 5..7);
        drop(wal);
        assert_eq!(
            read_all(&Wal::open(dir.path(), 0).unwrap()),
            vec![1, 2, 3, 4, 5, 6]
        );

        // A flipped byte inside an older segment: corruption, not silently dropped.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES as usize + 20] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let err = Wal::open(dir.path(), 0).unwrap_err();
        assert!(err.to_string().contains("bad checksum"), "{err}");
    }
    /// Issue #21, item 3: a flipped byte in the second of five records of the last segment is
    /// damage, not a torn append (valid, fdatasync'ed records follow it): opening must refuse
    /// and name the offset instead of cutting off records 2..=5.
    #[test]
    fn damage_followed_by_valid_records_in_the_last_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        for i in 1..6 {
            append(&mut wal, i..i + 1);
        }
        let second = wal.segments[&1].records[1].0;
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second as usize + 20] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();

        let err = Wal::open(dir.path(), 0).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{msg}");
        assert!(msg.contains(&format!("offset {second}")), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");

        // The same for a damaged header in front of valid records.
        let mut bytes = bytes.clone();
        bytes[second as usize + 20] ^= 0x01;
        bytes[0] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(dir.path(), 0).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    /// A torn append can leave garbage of any shape at the end; with no valid record after the
    /// damage it is still cut off.
    #[test]
    fn a_garbage_tail_without_valid_records_after_it_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1..4);
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let good = bytes.len();
        // A record header claiming 40 bytes, then zeros and noise (pages that never made it).
        bytes.extend_from_slice(&40u32.to_le_bytes());
        bytes.extend_from_slice(&[0xAB; 12]);
        bytes.extend(std::iter::repeat_n(0u8, 300));
        bytes.extend((0..200u32).map(|i| (i * 7) as u8));
        std::fs::write(&path, &bytes).unwrap();
        let wal = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(read_all(&wal), vec![1, 2, 3]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good as u64);
    }

    /// Issue #21, item 8: truncate unlinks later segments and makes the unlinks durable before
    /// it cuts the file that remains, so a power cut cannot keep the cut but lose an unlink
    /// (which would leave a gap that refuses to open).
    #[test]
    fn truncate_makes_its_unlinks_durable_before_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1..5);
        for start in [5u64, 9, 13] {
            wal.segments.values_mut().last().unwrap().len = SEGMENT_BYTES;
            append(&mut wal, start..start + 4);
        }
        let ((), ops) = io_trace::capture(|| wal.truncate(7).unwrap());
        let seg = |first| segment_path(dir.path(), first);
        let pos = |op: &Op| {
            ops.iter()
                .position(|o| o == op)
                .unwrap_or_else(|| panic!("{op:?} in {ops:?}"))
        };
        let cut = ops
            .iter()
            .position(|o| matches!(o, Op::SetLen(p, _) if *p == seg(5)))
            .unwrap_or_else(|| panic!("no cut in {ops:?}"));
        // Last segment first, each unlink durable before the next step.
        let (rm13, rm9) = (pos(&Op::Remove(seg(13))), pos(&Op::Remove(seg(9))));
        assert!(rm13 < rm9, "{ops:?}");
        for (rm, next) in [(rm13, rm9), (rm9, cut)] {
            assert!(
                ops[rm..next].contains(&Op::Fsync(dir.path().to_path_buf())),
                "no directory fsync between {:?} and {:?}: {ops:?}",
                ops[rm],
                ops[next]
            );
        }
        assert_eq!(read_all(&wal), (1..7).collect::<Vec<_>>());
    }

    /// Issue #21, item 8: segments wholly below the purge point that a power cut brought back
    /// (an unlink that never became durable) are deleted when the log opens, instead of
    /// stopping the member with a "does not start where the previous one ends" error.
    #[test]
    fn stale_segments_below_the_purge_point_are_deleted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 0).unwrap();
        append(&mut wal, 1..5);
        for start in [5u64, 9] {
            wal.segments.values_mut().last().unwrap().len = SEGMENT_BYTES;
            append(&mut wal, start..start + 4);
        }
        let oldest = std::fs::read(segment_path(dir.path(), 1)).unwrap();
        wal.purge(10).unwrap();
        assert_eq!(wal.segments.len(), 1);
        drop(wal);
        // The unlink of the oldest segment was lost, the one of the middle segment was not.
        std::fs::write(segment_path(dir.path(), 1), oldest).unwrap();

        let wal = Wal::open(dir.path(), 11).unwrap();
        assert_eq!(read_all(&wal), vec![11, 12]);
        assert!(
            !segment_path(dir.path(), 1).exists(),
            "stale segment deleted"
        );
    }
}
