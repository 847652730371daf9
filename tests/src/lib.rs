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
//! * `kvset-chaos` (the binary) — `kvset-chaos check HISTORY.jsonl` checks a recorded history;
//!   exit code 0 linearizable, 1 violation, 2 inconclusive or error.
//!
//! What the format and the checker mean, and what they do not promise, is written down in
//! `docs/CHAOS.md`.

pub mod checker;
pub mod history;
pub mod testkit;
