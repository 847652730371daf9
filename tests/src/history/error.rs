//! Why a history could not be read, validated or written: one error type for every part of the
//! history module, each variant naming the line (or event position) of the problem.

use std::io;

use super::Function;

/// Why a history could not be read, validated or written.
///
/// `line` is the 1-based line number in the file, or the 1-based position of the event for a
/// history built in memory.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading or writing the history failed. (The cause is part of the message rather than
    /// a `source()`, so that error chains print it once.)
    #[error("history I/O: {0}")]
    Io(io::Error),
    /// A line is not a JSON object of the expected shape (bad JSON, a missing or mistyped field).
    #[error("line {line}: {error}")]
    Json {
        /// Where.
        line: usize,
        /// The parser's explanation.
        error: serde_json::Error,
    },
    /// `type` is not one of `invoke`, `ok`, `fail`, `info`.
    #[error("line {line}: unknown type {value:?} (expected invoke, ok, fail or info)")]
    UnknownType {
        /// Where.
        line: usize,
        /// What the line said.
        value: String,
    },
    /// `f` is not one of `get`, `put`, `cas`.
    #[error("line {line}: unknown f {value:?} (expected get, put or cas)")]
    UnknownFunction {
        /// Where.
        line: usize,
        /// What the line said.
        value: String,
    },
    /// A field that this kind of event must carry is missing or `null` where it may not be.
    #[error("line {line}: a {kind} {f} event {problem}")]
    Shape {
        /// Where.
        line: usize,
        /// `invoke`, `ok`, ...
        kind: &'static str,
        /// The event's function.
        f: Function,
        /// What is wrong, e.g. `must carry "value"`.
        problem: &'static str,
    },
    /// A completion names an operation that was never invoked (on an earlier line).
    #[error("line {line}: {kind} for client {client} op {op}, which was never invoked")]
    CompletionWithoutInvoke {
        /// Where.
        line: usize,
        /// `ok`, `fail` or `info`.
        kind: &'static str,
        /// The client.
        client: u64,
        /// The op id.
        op: u64,
    },
    /// A second invoke with a (client, op) pair already used.
    #[error("line {line}: client {client} op {op} is invoked again (first invoked on line {first_line})")]
    DuplicateInvoke {
        /// Where.
        line: usize,
        /// The client.
        client: u64,
        /// The op id.
        op: u64,
        /// Where the first invoke was.
        first_line: usize,
    },
    /// A second completion of one operation.
    #[error("line {line}: client {client} op {op} completes again (first completed on line {first_line})")]
    DuplicateCompletion {
        /// Where.
        line: usize,
        /// The client.
        client: u64,
        /// The op id.
        op: u64,
        /// Where the first completion was.
        first_line: usize,
    },
    /// A completion whose `f` or `key` differs from its invoke's.
    #[error("line {line}: client {client} op {op}: completion has {field} {completed}, but the invoke on line {invoke_line} has {invoked}")]
    Mismatch {
        /// Where.
        line: usize,
        /// The client.
        client: u64,
        /// The op id.
        op: u64,
        /// `f` or `key`.
        field: &'static str,
        /// The invoke's value of the field (quoted for keys).
        invoked: String,
        /// The completion's value of the field.
        completed: String,
        /// Where the invoke was.
        invoke_line: usize,
    },
    /// An `ok` or `fail` completion stamped earlier than its invoke.
    #[error("line {line}: client {client} op {op} completes at ts_ns {ts_ns}, before its invoke at {invoke_ns}")]
    CompletionBeforeInvoke {
        /// Where.
        line: usize,
        /// The client.
        client: u64,
        /// The op id.
        op: u64,
        /// The completion's timestamp.
        ts_ns: u64,
        /// The invoke's timestamp.
        invoke_ns: u64,
    },
}

impl From<io::Error> for HistoryError {
    fn from(error: io::Error) -> Self {
        HistoryError::Io(error)
    }
}
