//! Part 2, **the reader**: [`History::read`] and [`History::from_file`] parse and validate a
//! whole history, and name the line of the first problem ([`HistoryError`]): bad JSON, an
//! unknown `type` or `f`, a missing field, a completion without an invoke, a duplicate invoke or
//! completion, a completion whose `f` or `key` differs from its invoke, or a completion that
//! happened before its invoke.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use super::{parse_event, write_event, Event, EventKind, Function, HistoryError};

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
}
