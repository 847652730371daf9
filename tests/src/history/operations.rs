//! Part 4, **operations**: [`History::operations`] pairs each invoke with its completion into
//! one [`Operation`] with an interval, the shape the checker works on. `fail` operations are set
//! aside (they had no effect), open operations become `info` with an unbounded return.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{EventKind, Function, History, Input, Output};

impl History {
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
