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
//!    are caught.
//! 2. **The reader** ([`History::read`], [`History::from_file`]): parses and validates a whole
//!    history, and names the line of the first problem ([`HistoryError`]): bad JSON, an unknown
//!    `type` or `f`, a missing field, a completion without an invoke, a duplicate invoke or
//!    completion, a completion whose `f` or `key` differs from its invoke, or a completion that
//!    happened before its invoke.
//! 3. **The writer** ([`HistoryRecorder`], [`OpHandle`], [`write_event`]): what the harness
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

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize};

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// The operation an event belongs to: the `f` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// Read one key.
    Get,
    /// Write one key.
    Put,
    /// Compare-and-set one key: write `value` if the current value equals `expected`.
    Cas,
}

impl Function {
    /// The wire name: `get`, `put` or `cas`.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Get => "get",
            Function::Put => "put",
            Function::Cas => "cas",
        }
    }

    fn parse(s: &str) -> Option<Function> {
        match s {
            "get" => Some(Function::Get),
            "put" => Some(Function::Put),
            "cas" => Some(Function::Cas),
            _ => None,
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operation asked for: the arguments carried by its invoke.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Input {
    /// Read the key.
    Get,
    /// Set the key to `value`.
    Put {
        /// The value written.
        value: String,
    },
    /// Set the key to `value` if its current value is `expected` (`None`: if it is absent).
    Cas {
        /// The value compared with; `None` means "the key is absent".
        expected: Option<String>,
        /// The value written when the compare holds.
        value: String,
    },
}

impl Input {
    /// The function this input belongs to.
    pub fn function(&self) -> Function {
        match self {
            Input::Get => Function::Get,
            Input::Put { .. } => Function::Put,
            Input::Cas { .. } => Function::Cas,
        }
    }
}

/// What an operation was told: the result carried by its `ok` completion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Output {
    /// The value read; `None` when the key was absent.
    Get {
        /// The value, or `None` (JSON `null`) for an absent key.
        value: Option<String>,
    },
    /// The write was applied.
    Put,
    /// The compare ran; `succeeded` says whether it held (and so whether the write happened).
    Cas {
        /// Whether the compare held and the value was written.
        succeeded: bool,
    },
}

impl Output {
    /// The function this output belongs to.
    pub fn function(&self) -> Function {
        match self {
            Output::Get { .. } => Function::Get,
            Output::Put => Function::Put,
            Output::Cas { .. } => Function::Cas,
        }
    }
}

/// The `type` of an event and the data that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The operation starts.
    Invoke(Input),
    /// The operation completed and took effect (for a `cas`: the compare ran).
    Ok(Output),
    /// The operation certainly had no effect.
    Fail(Function),
    /// The outcome is unknown: it may take effect at any time after the invoke, or never.
    Info(Function),
}

impl EventKind {
    /// The wire name: `invoke`, `ok`, `fail` or `info`.
    pub fn type_str(&self) -> &'static str {
        match self {
            EventKind::Invoke(_) => "invoke",
            EventKind::Ok(_) => "ok",
            EventKind::Fail(_) => "fail",
            EventKind::Info(_) => "info",
        }
    }

    /// The function of the operation this event belongs to.
    pub fn function(&self) -> Function {
        match self {
            EventKind::Invoke(input) => input.function(),
            EventKind::Ok(output) => output.function(),
            EventKind::Fail(f) | EventKind::Info(f) => *f,
        }
    }
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The client (worker, process) that ran the operation.
    pub client: u64,
    /// The operation's id; `(client, op)` names one operation.
    pub op: u64,
    /// The key operated on.
    pub key: String,
    /// What happened.
    pub kind: EventKind,
    /// When, in nanoseconds on the run's monotonic clock. Meaningless on `info`.
    pub ts_ns: u64,
}

impl Event {
    /// The `f` field.
    pub fn function(&self) -> Function {
        self.kind.function()
    }
}

/// The wire shape of an event. `Option<Option<_>>` tells a missing field (`None`) from a
/// `null` one (`Some(None)`); unknown fields are ignored by serde's default.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    client: u64,
    op: u64,
    #[serde(rename = "type")]
    kind: String,
    f: String,
    key: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    expected: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    value: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    succeeded: Option<bool>,
    ts_ns: u64,
}

/// Deserializes a field that is present (possibly `null`) as `Some(..)`; a missing field falls
/// back to `#[serde(default)]`, i.e. `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl WireEvent {
    fn into_event(self, line: usize) -> Result<Event, HistoryError> {
        let f = Function::parse(&self.f).ok_or_else(|| HistoryError::UnknownFunction {
            line,
            value: self.f.clone(),
        })?;
        let shape = |kind, problem| HistoryError::Shape {
            line,
            kind,
            f,
            problem,
        };
        let kind = match self.kind.as_str() {
            "invoke" => EventKind::Invoke(match f {
                Function::Get => Input::Get,
                Function::Put => Input::Put {
                    value: self
                        .value
                        .ok_or(shape("invoke", "must carry \"value\""))?
                        .ok_or(shape("invoke", "must carry a string \"value\", not null"))?,
                },
                Function::Cas => Input::Cas {
                    expected: self
                        .expected
                        .ok_or(shape("invoke", "must carry \"expected\""))?,
                    value: self
                        .value
                        .ok_or(shape("invoke", "must carry \"value\""))?
                        .ok_or(shape("invoke", "must carry a string \"value\", not null"))?,
                },
            }),
            "ok" => EventKind::Ok(match f {
                Function::Get => Output::Get {
                    value: self.value.ok_or(shape(
                        "ok",
                        "must carry \"value\" (null when the key is absent)",
                    ))?,
                },
                Function::Put => Output::Put,
                Function::Cas => Output::Cas {
                    succeeded: self
                        .succeeded
                        .ok_or(shape("ok", "must carry \"succeeded\": true|false"))?,
                },
            }),
            "fail" => EventKind::Fail(f),
            "info" => EventKind::Info(f),
            other => {
                return Err(HistoryError::UnknownType {
                    line,
                    value: other.to_string(),
                })
            }
        };
        Ok(Event {
            client: self.client,
            op: self.op,
            key: self.key,
            kind,
            ts_ns: self.ts_ns,
        })
    }

    fn from_event(event: &Event) -> WireEvent {
        let (expected, value, succeeded) = match &event.kind {
            EventKind::Invoke(Input::Get) => (None, None, None),
            EventKind::Invoke(Input::Put { value }) => (None, Some(Some(value.clone())), None),
            EventKind::Invoke(Input::Cas { expected, value }) => {
                (Some(expected.clone()), Some(Some(value.clone())), None)
            }
            EventKind::Ok(Output::Get { value }) => (None, Some(value.clone()), None),
            EventKind::Ok(Output::Put) => (None, None, None),
            EventKind::Ok(Output::Cas { succeeded }) => (None, None, Some(*succeeded)),
            EventKind::Fail(_) | EventKind::Info(_) => (None, None, None),
        };
        WireEvent {
            client: event.client,
            op: event.op,
            kind: event.kind.type_str().to_string(),
            f: event.function().as_str().to_string(),
            key: event.key.clone(),
            expected,
            value,
            succeeded,
            ts_ns: event.ts_ns,
        }
    }
}

/// Parses one line of a history (`line` is only used in errors).
pub fn parse_event(text: &str, line: usize) -> Result<Event, HistoryError> {
    let wire: WireEvent =
        serde_json::from_str(text).map_err(|error| HistoryError::Json { line, error })?;
    wire.into_event(line)
}

/// Formats JSON the way the examples in the contract look: `{"a": 1, "b": 2}`.
struct SpacedFormatter;

impl serde_json::ser::Formatter for SpacedFormatter {
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// Writes one event as one line (with its trailing newline).
pub fn write_event<W: Write>(mut w: W, event: &Event) -> io::Result<()> {
    let mut buf = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, SpacedFormatter);
    WireEvent::from_event(event)
        .serialize(&mut ser)
        .map_err(io::Error::other)?;
    buf.push(b'\n');
    w.write_all(&buf)
}

/// Formats one event as its line (without the newline).
pub fn event_to_line(event: &Event) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail, and serde_json only emits UTF-8.
    write_event(&mut buf, event).expect("writing to a Vec");
    buf.pop();
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

// ---------------------------------------------------------------------------------------------
// The reader
// ---------------------------------------------------------------------------------------------

/// A validated history: events in file order, each with the line it came from.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: Vec<(usize, Event)>,
}

/// Where validation keeps one operation while it reads.
struct OpSeen {
    invoke_line: usize,
    invoke_ns: u64,
    f: Function,
    key_index: usize,
    completed_line: Option<usize>,
}

impl History {
    /// Reads and validates a history from JSON Lines. Blank lines are skipped.
    pub fn read<R: BufRead>(reader: R) -> Result<History, HistoryError> {
        let mut events = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line_no = i + 1;
            let text = line?;
            if text.trim().is_empty() {
                continue;
            }
            events.push((line_no, parse_event(&text, line_no)?));
        }
        History::from_lined_events(events)
    }

    /// Reads and validates a history file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<History, HistoryError> {
        History::read(BufReader::new(File::open(path)?))
    }

    /// Validates events built in memory; errors name the 1-based position of the event.
    pub fn from_events(events: impl IntoIterator<Item = Event>) -> Result<History, HistoryError> {
        History::from_lined_events(
            events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i + 1, e))
                .collect(),
        )
    }

    fn from_lined_events(events: Vec<(usize, Event)>) -> Result<History, HistoryError> {
        let mut keys: Vec<&str> = Vec::new();
        let mut key_ids: HashMap<&str, usize> = HashMap::new();
        let mut ops: HashMap<(u64, u64), OpSeen> = HashMap::new();
        for (line, event) in &events {
            let line = *line;
            let (client, op) = (event.client, event.op);
            let key_index = *key_ids.entry(event.key.as_str()).or_insert_with(|| {
                keys.push(event.key.as_str());
                keys.len() - 1
            });
            if let EventKind::Invoke(input) = &event.kind {
                if let Some(seen) = ops.get(&(client, op)) {
                    return Err(HistoryError::DuplicateInvoke {
                        line,
                        client,
                        op,
                        first_line: seen.invoke_line,
                    });
                }
                ops.insert(
                    (client, op),
                    OpSeen {
                        invoke_line: line,
                        invoke_ns: event.ts_ns,
                        f: input.function(),
                        key_index,
                        completed_line: None,
                    },
                );
                continue;
            }
            let kind = event.kind.type_str();
            let Some(seen) = ops.get_mut(&(client, op)) else {
                return Err(HistoryError::CompletionWithoutInvoke {
                    line,
                    kind,
                    client,
                    op,
                });
            };
            if let Some(first_line) = seen.completed_line {
                return Err(HistoryError::DuplicateCompletion {
                    line,
                    client,
                    op,
                    first_line,
                });
            }
            let mismatch = |field, invoked: String, completed: String| HistoryError::Mismatch {
                line,
                client,
                op,
                field,
                invoked,
                completed,
                invoke_line: seen.invoke_line,
            };
            if seen.f != event.function() {
                return Err(mismatch(
                    "f",
                    seen.f.to_string(),
                    event.function().to_string(),
                ));
            }
            if seen.key_index != key_index {
                return Err(mismatch(
                    "key",
                    format!("{:?}", keys[seen.key_index]),
                    format!("{:?}", event.key),
                ));
            }
            let timed = matches!(event.kind, EventKind::Ok(_) | EventKind::Fail(_));
            if timed && event.ts_ns < seen.invoke_ns {
                return Err(HistoryError::CompletionBeforeInvoke {
                    line,
                    client,
                    op,
                    ts_ns: event.ts_ns,
                    invoke_ns: seen.invoke_ns,
                });
            }
            seen.completed_line = Some(line);
        }
        Ok(History { events })
    }

    /// The events, in file order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().map(|(_, e)| e)
    }

    /// The events with their line numbers.
    pub fn lined_events(&self) -> &[(usize, Event)] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True for a history without events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Writes the history as JSON Lines.
    pub fn write<W: Write>(&self, mut w: W) -> io::Result<()> {
        for event in self.events() {
            write_event(&mut w, event)?;
        }
        w.flush()
    }

    /// Pairs invokes with completions (see [`Operations`]).
    pub fn operations(&self) -> Operations {
        // `None` marks an operation that turned out to be `fail`.
        let mut ops: Vec<Option<Operation>> = Vec::new();
        let mut failed = Vec::new();
        let mut open: HashMap<(u64, u64), usize> = HashMap::new();
        for event in self.events() {
            let id = (event.client, event.op);
            if let EventKind::Invoke(input) = &event.kind {
                open.insert(id, ops.len());
                ops.push(Some(Operation {
                    client: event.client,
                    op: event.op,
                    key: event.key.clone(),
                    input: input.clone(),
                    output: Outcome::Info,
                    call_ns: event.ts_ns,
                    return_ns: None,
                }));
                continue;
            }
            // Validation guarantees that the invoke came first.
            let Some(index) = open.remove(&id) else {
                continue;
            };
            match &event.kind {
                EventKind::Ok(output) => {
                    if let Some(op) = ops[index].as_mut() {
                        op.output = Outcome::Ok(output.clone());
                        op.return_ns = Some(event.ts_ns);
                    }
                }
                EventKind::Fail(f) => {
                    if let Some(op) = ops[index].take() {
                        failed.push(FailedOperation {
                            client: op.client,
                            op: op.op,
                            f: *f,
                            key: op.key,
                            call_ns: op.call_ns,
                            return_ns: event.ts_ns,
                        });
                    }
                }
                EventKind::Info(_) | EventKind::Invoke(_) => {}
            }
        }
        Operations {
            ops: ops.into_iter().flatten().collect(),
            failed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// How an operation ended, as far as the checker is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It completed with this result.
    Ok(Output),
    /// Unknown: it took effect at some time after its invoke, or never.
    Info,
}

/// One operation: an invoke paired with its completion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// The client that ran it.
    pub client: u64,
    /// Its op id.
    pub op: u64,
    /// The key.
    pub key: String,
    /// What it asked for (this also gives its function, see [`Operation::f`]).
    pub input: Input,
    /// What it was told.
    pub output: Outcome,
    /// The invoke's timestamp.
    pub call_ns: u64,
    /// The completion's timestamp; `None` for `info` (the operation may take effect at any
    /// time after `call_ns`).
    pub return_ns: Option<u64>,
}

impl Operation {
    /// The function (`f`).
    pub fn f(&self) -> Function {
        self.input.function()
    }

    /// True when the outcome is unknown.
    pub fn is_info(&self) -> bool {
        matches!(self.output, Outcome::Info)
    }
}

impl fmt::Display for Operation {
    /// `client 3 op 17  put("k1", "v5") -> ok  [123, 456]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| match v {
            Some(v) => format!("{v:?}"),
            None => "null".to_string(),
        };
        let call = match &self.input {
            Input::Get => format!("get({:?})", self.key),
            Input::Put { value } => format!("put({:?}, {value:?})", self.key),
            Input::Cas { expected, value } => {
                format!("cas({:?}, {} -> {value:?})", self.key, show(expected))
            }
        };
        let result = match &self.output {
            Outcome::Info => "info (unknown)".to_string(),
            Outcome::Ok(Output::Get { value }) => format!("ok {}", show(value)),
            Outcome::Ok(Output::Put) => "ok".to_string(),
            Outcome::Ok(Output::Cas { succeeded: true }) => "ok succeeded".to_string(),
            Outcome::Ok(Output::Cas { succeeded: false }) => "ok not-matched".to_string(),
        };
        let ret = match self.return_ns {
            Some(ns) => ns.to_string(),
            None => "∞".to_string(),
        };
        write!(
            f,
            "client {} op {}: {call} -> {result}  [{}, {ret}]",
            self.client, self.op, self.call_ns
        )
    }
}

/// An operation that completed with `fail`: it had no effect, so the checker ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedOperation {
    /// The client that ran it.
    pub client: u64,
    /// Its op id.
    pub op: u64,
    /// Its function.
    pub f: Function,
    /// The key.
    pub key: String,
    /// The invoke's timestamp.
    pub call_ns: u64,
    /// The `fail` completion's timestamp.
    pub return_ns: u64,
}

/// A history as operations: the ones that matter to the checker, in invoke order, and the
/// failed ones that were set aside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operations {
    /// `ok` and `info` operations (open ones are `info`), in invoke (file) order.
    pub ops: Vec<Operation>,
    /// `fail` operations.
    pub failed: Vec<FailedOperation>,
}

// ---------------------------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------------------------

/// Records a history while clients run. Cheap to clone (one shared log); `Send + Sync`.
///
/// Every event is stamped and written under one lock, so the output's line order is its
/// timestamp order, timestamps strictly increase, and op ids are unique across all clients.
/// The lock is never held across an `.await`, so the recorder is safe to use from async tasks.
/// Write errors do not interrupt the run: the first one is kept and returned by
/// [`HistoryRecorder::flush`].
#[derive(Clone)]
pub struct HistoryRecorder {
    shared: Arc<Shared>,
}

struct Shared {
    origin: Instant,
    state: Mutex<RecorderState>,
}

struct RecorderState {
    sink: Option<Box<dyn Write + Send>>,
    events: Vec<Event>,
    next_op: u64,
    last_ts: u64,
    error: Option<io::Error>,
}

impl HistoryRecorder {
    /// A recorder that writes each event to `sink` (and keeps a copy in memory).
    pub fn to_writer(sink: impl Write + Send + 'static) -> HistoryRecorder {
        HistoryRecorder::with_sink(Some(Box::new(sink)))
    }

    /// A recorder that creates (truncates) `path` and writes to it through a buffer.
    pub fn to_file(path: impl AsRef<Path>) -> Result<HistoryRecorder, HistoryError> {
        let file = File::create(path)?;
        Ok(HistoryRecorder::to_writer(BufWriter::new(file)))
    }

    /// A recorder that only keeps events in memory.
    pub fn in_memory() -> HistoryRecorder {
        HistoryRecorder::with_sink(None)
    }

    fn with_sink(sink: Option<Box<dyn Write + Send>>) -> HistoryRecorder {
        HistoryRecorder {
            shared: Arc::new(Shared {
                origin: Instant::now(),
                state: Mutex::new(RecorderState {
                    sink,
                    events: Vec::new(),
                    next_op: 0,
                    last_ts: 0,
                    error: None,
                }),
            }),
        }
    }

    /// Records the invoke of an operation by `client` on `key` and returns the handle that
    /// records its completion. Call it just *before* sending the request.
    pub fn invoke(&self, client: u64, key: impl Into<String>, input: Input) -> OpHandle {
        let key = key.into();
        let f = input.function();
        let op = self.shared.record(|state| {
            let op = state.next_op;
            state.next_op += 1;
            (
                op,
                Event {
                    client,
                    op,
                    key: key.clone(),
                    kind: EventKind::Invoke(input),
                    ts_ns: 0,
                },
            )
        });
        OpHandle {
            shared: Arc::clone(&self.shared),
            client,
            op,
            key,
            f,
            done: false,
        }
    }

    /// [`HistoryRecorder::invoke`] for a `get`.
    pub fn invoke_get(&self, client: u64, key: impl Into<String>) -> OpHandle {
        self.invoke(client, key, Input::Get)
    }

    /// [`HistoryRecorder::invoke`] for a `put`.
    pub fn invoke_put(
        &self,
        client: u64,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> OpHandle {
        self.invoke(
            client,
            key,
            Input::Put {
                value: value.into(),
            },
        )
    }

    /// [`HistoryRecorder::invoke`] for a `cas`; `expected: None` means "if the key is absent".
    pub fn invoke_cas(
        &self,
        client: u64,
        key: impl Into<String>,
        expected: Option<String>,
        value: impl Into<String>,
    ) -> OpHandle {
        self.invoke(
            client,
            key,
            Input::Cas {
                expected,
                value: value.into(),
            },
        )
    }

    /// A copy of every event recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared.lock().events.clone()
    }

    /// The events recorded so far as a validated [`History`].
    pub fn history(&self) -> Result<History, HistoryError> {
        History::from_events(self.events())
    }

    /// Flushes the sink; returns the first write error met so far, if any.
    pub fn flush(&self) -> Result<(), HistoryError> {
        let mut state = self.shared.lock();
        if let Some(err) = state.error.take() {
            return Err(err.into());
        }
        if let Some(sink) = state.sink.as_mut() {
            sink.flush()?;
        }
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RecorderState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters (at worst one event is missing from memory), so keep recording.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds an event under the lock, stamps it, stores it and writes it.
    fn record<T>(&self, build: impl FnOnce(&mut RecorderState) -> (T, Event)) -> T {
        let mut state = self.lock();
        let (result, mut event) = build(&mut state);
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Strictly increasing, so that ties never have to be interpreted.
        event.ts_ns = now.max(state.last_ts + 1);
        state.last_ts = event.ts_ns;
        if state.error.is_none() {
            if let Some(sink) = state.sink.as_mut() {
                if let Err(err) = write_event(sink, &event) {
                    state.error = Some(err);
                }
            }
        }
        state.events.push(event);
        result
    }
}

/// An operation in flight. Complete it exactly once with one of its methods; dropping it
/// uncompleted records `info` (outcome unknown), which is the truth for a request whose future
/// was cancelled.
pub struct OpHandle {
    shared: Arc<Shared>,
    client: u64,
    op: u64,
    key: String,
    f: Function,
    done: bool,
}

impl OpHandle {
    /// The op id the recorder assigned.
    pub fn op(&self) -> u64 {
        self.op
    }

    /// The client the operation was recorded for.
    pub fn client(&self) -> u64 {
        self.client
    }

    /// The operation's function.
    pub fn function(&self) -> Function {
        self.f
    }

    /// Records the completion `kind`.
    ///
    /// # Panics
    /// If `kind` is an invoke or belongs to another function: that is a bug in the harness.
    pub fn complete(mut self, kind: EventKind) {
        assert!(
            !matches!(kind, EventKind::Invoke(_)),
            "an operation cannot complete with an invoke"
        );
        assert_eq!(
            kind.function(),
            self.f,
            "client {} op {} is a {} but completes as a {}",
            self.client,
            self.op,
            self.f,
            kind.function()
        );
        self.write(kind);
    }

    /// `ok` for a `get` that read `value` (`None`: the key was absent).
    ///
    /// # Panics
    /// If the operation is not a `get`.
    pub fn ok_get(self, value: Option<String>) {
        self.complete(EventKind::Ok(Output::Get { value }));
    }

    /// `ok` for a `put`.
    ///
    /// # Panics
    /// If the operation is not a `put`.
    pub fn ok_put(self) {
        self.complete(EventKind::Ok(Output::Put));
    }

    /// `ok` for a `cas` whose compare ran; `succeeded` says whether it held.
    ///
    /// # Panics
    /// If the operation is not a `cas`.
    pub fn ok_cas(self, succeeded: bool) {
        self.complete(EventKind::Ok(Output::Cas { succeeded }));
    }

    /// `fail`: the operation certainly had no effect (e.g. refused before reaching the log).
    pub fn fail(self) {
        let f = self.f;
        self.complete(EventKind::Fail(f));
    }

    /// `info`: the outcome is unknown (e.g. a timeout after the request was sent).
    pub fn info(self) {
        let f = self.f;
        self.complete(EventKind::Info(f));
    }

    fn write(&mut self, kind: EventKind) {
        self.done = true;
        let (client, op, key) = (self.client, self.op, self.key.clone());
        self.shared.record(|_| {
            (
                (),
                Event {
                    client,
                    op,
                    key,
                    kind,
                    ts_ns: 0,
                },
            )
        });
    }
}

impl Drop for OpHandle {
    fn drop(&mut self) {
        if !self.done {
            let f = self.f;
            self.write(EventKind::Info(f));
        }
    }
}

impl fmt::Debug for OpHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpHandle")
            .field("client", &self.client)
            .field("op", &self.op)
            .field("key", &self.key)
            .field("f", &self.f)
            .finish()
    }
}

impl fmt::Debug for HistoryRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryRecorder").finish_non_exhaustive()
    }
}
