//! Part 1, **events**: one line of a history, typed ([`Event`], [`EventKind`], [`Input`],
//! [`Output`]), so that a `get` completion without a value or a `cas` invoke without `expected`
//! cannot be represented.
//!
//! The wire shape is a private struct (`WireEvent`); converting in both directions is where
//! shape errors are caught. The one-line JSON form that the reader and the writer share lives
//! here too: [`parse_event`] reads a line, [`write_event`] and [`event_to_line`] write one the
//! way the contract's examples look.

use std::fmt;
use std::io::{self, Write};

use serde::{Deserialize, Deserializer, Serialize};

use super::HistoryError;

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
    /// On the `ok` of a `put` or of a `cas` that swapped: the store revision the write
    /// produced (the response header's revision), when the recorder knew it. Optional on the
    /// wire (`"revision"`), so histories written before it existed still read; the watch check
    /// uses it to relate writes to watch events.
    pub revision: Option<i64>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<i64>,
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
            revision: self.revision,
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
            revision: event.revision,
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
