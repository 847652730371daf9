//! The watch check: what the watchers were delivered (`watch.jsonl`), judged against the
//! history of the writes (`history.jsonl`).
//!
//! # The evidence
//!
//! Each watcher ([`super::watchers`]) watches the contended keys' prefix from the revision the
//! run started at, and writes what it sees as [`WatchRecord`]s: `open` (a watch created on a
//! member from a start revision; the first one and every resume), `event` (one per event, with
//! its revision, key and value), `progress` (the server said everything up to a revision was
//! delivered), `error` (the stream broke or went silent: the watcher resumes on another
//! member), `canceled` (the server ended the watch, e.g. with a compact revision), `end` (the
//! watcher caught up with the cluster's final revision and stopped).
//!
//! The writers record, on the `ok` of every put and of every compare-and-swap that swapped, the
//! revision the write produced (`revision` in the history). Values are unique per write, so an
//! event names the write it claims to be.
//!
//! # What must hold
//!
//! A watcher's *coverage* is made of segments: each `open` from start revision `S` to the
//! highest revision the segment delivered or was told it had delivered (events, progress, `end`).
//! A resume opens at the revision after the previous segment's, so segments join; only a
//! compaction (the server cancelled the watch with a compact revision) may leave a gap, and a
//! gap without one is itself a violation (revisions skipped, e.g. a lost last event before a
//! resume). The check then asks what the segments cover.
//!
//! 1. **Order.** Event revisions strictly increase over the watcher's whole life, across
//!    resumes; an event below its segment's start revision was not asked for. (A duplicate
//!    delivery or a reordering shows here first.)
//! 2. **Nothing that did not happen.** Every event is a PUT of a value some write wrote to that
//!    key; not one reported as certainly not applied (`fail`, or a `cas` whose compare failed);
//!    at the revision that write's response carried, when the history has it. A DELETE cannot
//!    happen (the workload deletes nothing under the prefix).
//! 3. **Exactly once.** No write is delivered twice.
//! 4. **Nothing lost.** Every acknowledged write whose revision lies in a segment was delivered,
//!    at that revision, with its value. A write whose outcome is unknown has no revision; it
//!    must be delivered iff it happened, and it is known to have happened when a read returned
//!    its value (the final reads included) or a compare-and-swap expecting its value swapped —
//!    so a watcher that covered the whole run (first segment opened at the start revision, no
//!    gaps, ended at the final revision) must have delivered every such write. An unknown write
//!    delivered though no read saw it is accepted: it may have been overwritten before anyone
//!    read it, and the watch is then the only witness.
//! 5. **Agreement.** Two watchers that both cover a revision were delivered the same change at
//!    it (or both nothing).
//!
//! The check is inconclusive when no watcher covered a single acknowledged write.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::checks::{CheckResult, CheckStatus};
use crate::history::{Event, EventKind, Input, Output};

/// One line of `watch.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WatchRecord {
    /// A watch created (the first, or a resume).
    Open {
        /// The watcher (0..`--watchers`).
        watcher: u64,
        /// The member it was created on.
        member: String,
        /// The key prefix watched.
        prefix: String,
        /// The first revision asked for.
        start_revision: i64,
        /// Milliseconds since the log opened.
        ms: f64,
    },
    /// One event.
    Event {
        /// The watcher.
        watcher: u64,
        /// The event's revision (its key's mod revision).
        revision: i64,
        /// `put` or `delete`.
        event: String,
        /// The key.
        key: String,
        /// The value (`put`), else `null`.
        value: Option<String>,
        /// Milliseconds since the log opened.
        ms: f64,
    },
    /// The server said every change up to `revision` was delivered.
    Progress {
        /// The watcher.
        watcher: u64,
        /// The revision.
        revision: i64,
        /// Milliseconds since the log opened.
        ms: f64,
    },
    /// The stream broke, or stayed silent: the watcher resumes elsewhere.
    Error {
        /// The watcher.
        watcher: u64,
        /// The member it was on.
        member: String,
        /// What happened.
        error: String,
        /// Milliseconds since the log opened.
        ms: f64,
    },
    /// The server ended the watch.
    Canceled {
        /// The watcher.
        watcher: u64,
        /// The compact revision, when the next revision was compacted (else 0).
        compact_revision: i64,
        /// Why, as the server said.
        reason: String,
        /// Milliseconds since the log opened.
        ms: f64,
    },
    /// The watcher caught up with the final revision and stopped.
    End {
        /// The watcher.
        watcher: u64,
        /// Everything up to this revision was delivered.
        revision: i64,
        /// Milliseconds since the log opened.
        ms: f64,
    },
}

impl WatchRecord {
    /// The watcher the record belongs to.
    pub fn watcher(&self) -> u64 {
        match self {
            WatchRecord::Open { watcher, .. }
            | WatchRecord::Event { watcher, .. }
            | WatchRecord::Progress { watcher, .. }
            | WatchRecord::Error { watcher, .. }
            | WatchRecord::Canceled { watcher, .. }
            | WatchRecord::End { watcher, .. } => *watcher,
        }
    }
}

/// How a write ended, with what the check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Acknowledged, at this revision (`None`: the history did not record it).
    Acked(Option<i64>),
    /// Certainly not applied (`fail`, or a `cas` whose compare failed).
    NotApplied,
    /// Unknown.
    Unknown,
}

#[derive(Debug, Clone)]
struct Write {
    key: String,
    value: String,
    fate: Fate,
}

/// The writes of a history, by (key, value), and the values reads saw.
#[derive(Debug, Default)]
struct Writes {
    by_value: HashMap<(String, String), Vec<usize>>,
    all: Vec<Write>,
    seen: HashSet<(String, String)>,
}

impl Writes {
    fn of(events: &[Event], prefix: &str) -> Writes {
        let mut w = Writes::default();
        let mut open: HashMap<(u64, u64), (String, Input)> = HashMap::new();
        let mut index: HashMap<(u64, u64), usize> = HashMap::new();
        for e in events.iter().filter(|e| e.key.starts_with(prefix)) {
            let id = (e.client, e.op);
            match &e.kind {
                EventKind::Invoke(input) => {
                    if let Input::Put { value } | Input::Cas { value, .. } = input {
                        index.insert(id, w.all.len());
                        w.by_value
                            .entry((e.key.clone(), value.clone()))
                            .or_default()
                            .push(w.all.len());
                        w.all.push(Write {
                            key: e.key.clone(),
                            value: value.clone(),
                            fate: Fate::Unknown,
                        });
                    }
                    open.insert(id, (e.key.clone(), input.clone()));
                }
                EventKind::Ok(output) => {
                    let Some((key, input)) = open.remove(&id) else {
                        continue;
                    };
                    let slot = index.remove(&id);
                    match (output, &input) {
                        (Output::Get { value: Some(v) }, _) => {
                            w.seen.insert((key, v.clone()));
                        }
                        (Output::Put, _) => {
                            if let Some(i) = slot {
                                w.all[i].fate = Fate::Acked(e.revision);
                            }
                        }
                        (Output::Cas { succeeded }, Input::Cas { expected, .. }) => {
                            if let Some(i) = slot {
                                w.all[i].fate = if *succeeded {
                                    Fate::Acked(e.revision)
                                } else {
                                    Fate::NotApplied
                                };
                            }
                            if let (true, Some(x)) = (*succeeded, expected) {
                                w.seen.insert((key, x.clone()));
                            }
                        }
                        _ => {}
                    }
                }
                EventKind::Fail(_) => {
                    open.remove(&id);
                    if let Some(i) = index.remove(&id) {
                        w.all[i].fate = Fate::NotApplied;
                    }
                }
                EventKind::Info(_) => {
                    open.remove(&id);
                    index.remove(&id);
                }
            }
        }
        w
    }

    fn find(&self, key: &str, value: &str) -> Option<&Write> {
        let ids = self.by_value.get(&(key.to_string(), value.to_string()))?;
        // Unique values: at most one. Were one reused, the most favourable reading wins.
        ids.iter()
            .map(|&i| &self.all[i])
            .max_by_key(|w| match w.fate {
                Fate::Acked(_) => 2,
                Fate::Unknown => 1,
                Fate::NotApplied => 0,
            })
    }
}

/// One watcher's life, reassembled from its records.
#[derive(Debug, Default)]
struct WatcherLife {
    /// (start, through) per segment; `through < start` when nothing was delivered.
    segments: Vec<(i64, i64)>,
    /// (revision, key, event, value) in delivery order.
    events: Vec<(i64, String, String, Option<String>)>,
    ended: bool,
    resumes: usize,
    problems: Vec<String>,
    /// The server cancelled the current segment because the history it needed next was
    /// compacted: the next segment may start past a gap.
    compacted: bool,
}

impl WatcherLife {
    fn covers(&self, revision: i64) -> bool {
        self.segments
            .iter()
            .any(|&(s, t)| s <= revision && revision <= t)
    }

    /// First segment at or before `start`, no gaps, and ended.
    fn complete(&self, start: i64) -> bool {
        self.ended
            && self.segments.first().is_some_and(|&(s, _)| s <= start)
            && self.segments.windows(2).all(|w| w[1].0 <= w[0].1 + 1)
    }
}

fn lives(records: &[WatchRecord]) -> BTreeMap<u64, WatcherLife> {
    let mut out: BTreeMap<u64, WatcherLife> = BTreeMap::new();
    for r in records {
        let life = out.entry(r.watcher()).or_default();
        match r {
            WatchRecord::Open { start_revision, .. } => {
                if let Some(&(_, through)) = life.segments.last() {
                    life.resumes += 1;
                    // A resume starts right after what was delivered; only a compaction may
                    // leave a gap. A later start skipped revisions nobody delivered to it.
                    if *start_revision > through + 1 && !life.compacted {
                        life.problems.push(format!(
                            "resumed at revision {start_revision} but only revisions up to \
                             {through} were delivered: revisions {}..={} were skipped",
                            through + 1,
                            start_revision - 1
                        ));
                    }
                }
                life.compacted = false;
                life.segments.push((*start_revision, *start_revision - 1));
            }
            WatchRecord::Event {
                revision,
                event,
                key,
                value,
                ..
            } => {
                match life.segments.last_mut() {
                    Some(seg) => {
                        if *revision < seg.0 {
                            life.problems.push(format!(
                                "delivered revision {revision} ({key}) on a watch opened at {}",
                                seg.0
                            ));
                        }
                        seg.1 = seg.1.max(*revision);
                    }
                    None => life
                        .problems
                        .push(format!("event at revision {revision} before any open")),
                }
                life.events
                    .push((*revision, key.clone(), event.clone(), value.clone()));
            }
            WatchRecord::Progress { revision, .. } | WatchRecord::End { revision, .. } => {
                if let Some(seg) = life.segments.last_mut() {
                    seg.1 = seg.1.max(*revision);
                }
                if matches!(r, WatchRecord::End { .. }) {
                    life.ended = true;
                }
            }
            WatchRecord::Canceled {
                compact_revision, ..
            } => life.compacted |= *compact_revision > 0,
            WatchRecord::Error { .. } => {}
        }
    }
    out
}

/// The watch check's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchFindings {
    /// Watchers in the log.
    pub watchers: usize,
    /// Events delivered, over all watchers.
    pub events: usize,
    /// Resumes (opens after the first), over all watchers.
    pub resumes: usize,
    /// Acknowledged writes some watcher's coverage required.
    pub required: usize,
    /// Watchers that covered the whole run.
    pub complete: usize,
    /// What went wrong (empty: pass), at most a few per kind.
    pub violations: Vec<String>,
}

impl WatchFindings {
    /// The check result.
    pub fn result(&self) -> CheckResult {
        let (status, summary) = if let Some(first) = self.violations.first() {
            (
                CheckStatus::Fail,
                format!("{} violation(s); first: {first}", self.violations.len()),
            )
        } else if self.required == 0 {
            (
                CheckStatus::Inconclusive,
                format!(
                    "{} watcher(s) covered no acknowledged write ({} events)",
                    self.watchers, self.events
                ),
            )
        } else {
            (
                CheckStatus::Pass,
                format!(
                    "{} watcher(s), {} events, {} resumes: every acknowledged write delivered \
                     once, in order, nothing extra ({} of {} covered the whole run)",
                    self.watchers, self.events, self.resumes, self.complete, self.watchers
                ),
            )
        };
        CheckResult {
            name: "watch",
            status,
            summary,
        }
    }
}

/// Judges the watchers' records against the history's events (see the module docs).
pub fn check_watch(events: &[Event], records: &[WatchRecord]) -> WatchFindings {
    let prefix = records
        .iter()
        .find_map(|r| match r {
            WatchRecord::Open { prefix, .. } => Some(prefix.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let writes = Writes::of(events, &prefix);
    let lives = lives(records);
    let run_start = lives
        .values()
        .filter_map(|l| l.segments.first().map(|s| s.0))
        .min()
        .unwrap_or(0);
    let mut f = WatchFindings {
        watchers: lives.len(),
        ..WatchFindings::default()
    };
    let mut required: HashSet<usize> = HashSet::new();
    // revision → (watcher, key, value) of the first watcher delivering it.
    let mut at_revision: BTreeMap<i64, (u64, String, Option<String>)> = BTreeMap::new();

    for (&id, life) in &lives {
        let mut found: Vec<String> = Vec::new();
        let mut v = |msg: String| found.push(format!("watcher {id}: {msg}"));
        f.events += life.events.len();
        f.resumes += life.resumes;
        for p in &life.problems {
            v(p.clone());
        }
        // 1. Order.
        for w in life.events.windows(2) {
            if w[1].0 <= w[0].0 {
                v(format!(
                    "revision {} ({} = {:?}) delivered after revision {} ({}): {}",
                    w[1].0,
                    w[1].1,
                    w[1].3,
                    w[0].0,
                    w[0].1,
                    if w[1].0 == w[0].0 {
                        "a duplicate"
                    } else {
                        "out of order"
                    }
                ));
            }
        }
        // 2. and 3. Every event is a write that happened, once, at its revision.
        let mut delivered: HashMap<(String, String), i64> = HashMap::new();
        for (rev, key, kind, value) in &life.events {
            if !key.starts_with(&prefix) {
                v(format!(
                    "revision {rev}: key {key:?} is outside the prefix {prefix:?}"
                ));
                continue;
            }
            match at_revision.get(rev) {
                Some((other, k, val)) if (k, val) != (key, value) => v(format!(
                    "revision {rev} is {key} = {value:?} here but {k} = {val:?} for watcher {other}"
                )),
                Some(_) => {}
                None => {
                    at_revision.insert(*rev, (id, key.clone(), value.clone()));
                }
            }
            let Some(value) = value.as_ref().filter(|_| kind == "put") else {
                v(format!(
                    "revision {rev}: a {kind} of {key} that no one made"
                ));
                continue;
            };
            match writes.find(key, value) {
                None => v(format!(
                    "revision {rev}: {key} = {value:?} was never written"
                )),
                Some(w) => match w.fate {
                    Fate::NotApplied => v(format!(
                        "revision {rev}: {key} = {value:?} was reported as not applied"
                    )),
                    Fate::Acked(Some(r)) if r != *rev => v(format!(
                        "{key} = {value:?} delivered at revision {rev}, but the write produced \
                         revision {r}"
                    )),
                    _ => {}
                },
            }
            if let Some(first) = delivered.insert((key.clone(), value.clone()), *rev) {
                v(format!(
                    "{key} = {value:?} delivered twice (revisions {first} and {rev})"
                ));
            }
        }
        // 4. Nothing lost.
        for (i, w) in writes.all.iter().enumerate() {
            let Fate::Acked(Some(r)) = w.fate else {
                continue;
            };
            if !life.covers(r) {
                continue;
            }
            required.insert(i);
            if !delivered.contains_key(&(w.key.clone(), w.value.clone())) {
                v(format!(
                    "acknowledged {} = {:?} at revision {r} was never delivered (covered {})",
                    w.key,
                    w.value,
                    segments_text(&life.segments)
                ));
            }
        }
        if life.complete(run_start) {
            f.complete += 1;
            for w in &writes.all {
                let kv = (w.key.clone(), w.value.clone());
                if w.fate == Fate::Unknown
                    && writes.seen.contains(&kv)
                    && !delivered.contains_key(&kv)
                {
                    v(format!(
                        "{} = {:?} (outcome unknown) was read, so it happened, but was never \
                         delivered",
                        w.key, w.value
                    ));
                }
            }
        }
        f.violations.extend(found);
    }
    // 5. Agreement: what one watcher saw at a revision another covering it must have seen.
    for (&id, life) in &lives {
        let own: HashSet<i64> = life.events.iter().map(|e| e.0).collect();
        for (rev, (other, key, value)) in &at_revision {
            if *other != id && life.covers(*rev) && !own.contains(rev) {
                f.violations.push(format!(
                    "watcher {id}: revision {rev} ({key} = {value:?}, delivered to watcher \
                     {other}) is in its coverage but was never delivered"
                ));
            }
        }
    }
    f.required = required.len();
    f.violations.dedup();
    f
}

fn segments_text(segments: &[(i64, i64)]) -> String {
    segments
        .iter()
        .map(|(s, t)| format!("{s}..={t}"))
        .collect::<Vec<_>>()
        .join(", ")
}
