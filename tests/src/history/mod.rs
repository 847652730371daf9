//! The chaos history: what every client asked for, when, and what it was told.
//!
//! A history is a JSON Lines file, one event per line. Every operation is an `invoke` event,
//! written just before the request leaves the client, followed by at most one completion,
//! written just after the answer arrives:
//!
//! ```text
//! {"client": 3, "op": 17, "type": "invoke", "f": "put", "key": "k1", "value": "v5", "ts_ns": 123}
//! {"client": 3, "op": 17, "type": "ok", "f": "put", "key": "k1", "ts_ns": 456}
//! ```
//!
//! The format is a contract with external scripts: fields are only ever added, never renamed,
//! and a reader ignores fields it does not know. `docs/CHAOS.md` is the reference; in short:
//!
//! * `client`, `op`: integers; the pair names one operation. Neither is reused.
//! * `type`: `invoke`, `ok`, `fail` (the operation certainly had no effect) or `info` (the
//!   outcome is unknown: it may take effect at any time after its invoke, or never; its
//!   `ts_ns` carries no meaning). An invoke with no completion at the end of the file is `info`.
//! * `f`: `get`, `put` or `cas`; `key`: a string.
//! * `value`: the value a `put` or `cas` invoke writes, and the value a `get` completion read
//!   (`null` when the key was absent). `expected`: the value a `cas` invoke compares with
//!   (`null` = "the key is absent"). `succeeded`: whether a `cas` completion's compare held.
//! * `ts_ns`: nanoseconds on one monotonic clock shared by every client of the run.
//!
//! This module has four parts, in the order a history travels:
//!
//! 1. **Events** ([`Event`], [`EventKind`], [`Input`], [`Output`]): typed, so that a `get`
//!    completion without a value or a `cas` invoke without `expected` cannot be represented.
//!    The wire shape is a private struct; conversion in both directions is where shape errors
//!    are caught. One line in, one line out: [`parse_event`], [`write_event`].
//! 2. **The reader** ([`History::read`], [`History::from_file`]): parses and validates a whole
//!    history, and names the line of the first problem ([`HistoryError`]): bad JSON, an unknown
//!    `type` or `f`, a missing field, a completion without an invoke, a duplicate invoke or
//!    completion, a completion whose `f` or `key` differs from its invoke, or a completion that
//!    happened before its invoke.
//! 3. **The writer** ([`HistoryRecorder`], [`OpHandle`]): what the harness
//!    records with. It hands out op ids and timestamps itself, under one lock, so the file's
//!    line order is its time order and every timestamp is distinct. The invoke is stamped when
//!    [`HistoryRecorder::invoke`] is called (call it *before* sending the request) and the
//!    completion when [`OpHandle`] is completed (call it *after* the answer arrived): the
//!    recorded interval then contains the real one, which is what makes a linearizability
//!    verdict on the recording sound. A handle dropped without a completion records `info`,
//!    so a request cancelled by a timeout is never mistaken for one that did not happen.
//! 4. **Operations** ([`History::operations`]): invoke and completion paired into one
//!    [`Operation`] with an interval, the shape the checker works on. `fail` operations are set
//!    aside (they had no effect), open operations become `info` with an unbounded return.

//!
//! Each part is a module of its own (`event.rs`, `reader.rs`, `writer.rs`, `operations.rs`,
//! plus `error.rs` for [`HistoryError`]); everything public is re-exported here, so callers
//! name `history::Event`, `history::HistoryRecorder`, ... whatever file it lives in.

mod error;
mod event;
mod operations;
mod reader;
mod writer;

pub use error::HistoryError;
pub use event::{
    event_to_line, parse_event, write_event, Event, EventKind, Function, Input, Output,
};
pub use operations::{FailedOperation, Operation, Operations, Outcome};
pub use reader::History;
pub use writer::{Completions, HistoryRecorder, OpHandle};
