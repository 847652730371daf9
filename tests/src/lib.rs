//! kvset's chaos harness: run clients against a cluster while injecting faults, record every
//! operation, and decide whether what the clients saw could have come from one correct,
//! linearizable register per key.
//!
//! The harness is split along the path a run's evidence travels:
//!
//! * [`history`] — the recorded history. A JSON Lines format that is a contract with external
//!   scripts (fields are added, never renamed), a validating reader that names the offending
//!   line, and a thread-safe recorder that stamps every event on one monotonic clock. The
//!   recorder stamps an invoke before the request is sent and a completion after the answer
//!   is received, so every recorded interval contains the real one; that is what lets a
//!   verdict on the recording speak for the system.
//! * [`checker`] — the linearizability checker: per-key partitioning, a Wing–Gong/Lowe search
//!   with memoization, and shrinking of a violation to a small window that is itself proven
//!   non-linearizable. Its verdict is three-valued: linearizable, violation, or inconclusive
//!   (the budget ran out), and inconclusive is never a pass.
//! * [`testkit`] — real-process clusters (`kvset-server` children on loopback) for the
//!   integration tests and the harness.
//! * [`chaos`] — the harness itself (`kvset-chaos run`): a backend that runs the cluster (local
//!   launcher, Docker, or a StatefulSet through kubectl) and knows how to hurt it; concurrent
//!   SDK clients that record every operation; a seeded nemesis that kills, restarts, freezes,
//!   partitions and wipes members one at a time and times the recovery; and the checks that
//!   judge the run — linearizability (the checker above), no acknowledged write lost, replicas
//!   converged, cluster healed — with a report (Markdown, JSON, and an HTML page that draws
//!   the run) and the evidence in one directory.
//! * `kvset-chaos` (the binary) — `kvset-chaos check HISTORY.jsonl` checks a recorded history,
//!   `kvset-chaos run --backend process --duration 60s --seed N` runs the harness; both exit
//!   0 for a pass, 1 for a violation, 2 for inconclusive or an error.
//!
//! What the format and the checker mean, and what they do not promise, is written down in
//! `docs/CHAOS.md`.

pub mod chaos;
pub mod checker;
pub mod history;
pub mod pki;
pub mod testkit;
pub mod tooling;
