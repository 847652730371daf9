//! Part 3, **the writer**: [`HistoryRecorder`] and [`OpHandle`], what the harness records with.
//!
//! The recorder hands out op ids and timestamps itself, under one lock, so the file's line order
//! is its time order and every timestamp is distinct. The invoke is stamped when
//! [`HistoryRecorder::invoke`] is called (call it *before* sending the request) and the
//! completion when [`OpHandle`] is completed (call it *after* the answer arrived): the recorded
//! interval then contains the real one, which is what makes a linearizability verdict on the
//! recording sound. A handle dropped without a completion records `info`, so a request cancelled
//! by a timeout is never mistaken for one that did not happen.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{write_event, Event, EventKind, Function, History, HistoryError, Input, Output};

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
    counts: Completions,
}

/// How many operations completed so far, by outcome (a cheap tally for progress displays).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completions {
    /// Completed and took effect.
    pub ok: u64,
    /// Certainly had no effect.
    pub fail: u64,
    /// Outcome unknown.
    pub info: u64,
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
                    counts: Completions::default(),
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
                    revision: None,
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

    /// How many operations completed so far, by outcome, without copying the events.
    pub fn completions(&self) -> Completions {
        self.shared.lock().counts
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
        match event.kind {
            EventKind::Invoke(_) => {}
            EventKind::Ok(_) => state.counts.ok += 1,
            EventKind::Fail(_) => state.counts.fail += 1,
            EventKind::Info(_) => state.counts.info += 1,
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
        self.write(kind, None);
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

    /// [`OpHandle::ok_put`] recording the revision the put produced (its header's revision).
    ///
    /// # Panics
    /// If the operation is not a `put`.
    pub fn ok_put_at(mut self, revision: i64) {
        assert_eq!(self.f, Function::Put, "ok_put_at on a {}", self.f);
        self.write(EventKind::Ok(Output::Put), Some(revision));
    }

    /// [`OpHandle::ok_cas`] recording the revision of the answer: the revision the write
    /// produced when it swapped (recorded only then).
    ///
    /// # Panics
    /// If the operation is not a `cas`.
    pub fn ok_cas_at(mut self, succeeded: bool, revision: i64) {
        assert_eq!(self.f, Function::Cas, "ok_cas_at on a {}", self.f);
        let revision = succeeded.then_some(revision);
        self.write(EventKind::Ok(Output::Cas { succeeded }), revision);
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

    fn write(&mut self, kind: EventKind, revision: Option<i64>) {
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
                    revision,
                },
            )
        });
    }
}

impl Drop for OpHandle {
    fn drop(&mut self) {
        if !self.done {
            let f = self.f;
            self.write(EventKind::Info(f), None);
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
