//! The public `kvset.v1.Watch` service: streams of changes, served by any member from its own
//! applied state.
//!
//! # How a watcher reads
//!
//! Every watcher reads the revision history (`store/history.rs`) itself: from its next revision
//! up to the applied revision, a bounded batch of whole revisions at a time, and then waits for
//! the state machine to publish a newer applied revision. There is no separate in-memory event
//! feed that the apply path pushes into, so:
//!
//! - **Nothing is dropped and nothing holds the member's memory.** A slow client fills its
//!   stream's small response buffer; its watchers then wait to send and simply fall behind,
//!   reading the history later. The apply path never waits for a watcher.
//! - **Catching up and following are the same code.** A watcher that starts at an old revision
//!   reads history until it reaches the applied revision, then waits; etcd's "unsynced" and
//!   "synced" watcher groups are one loop here.
//! - **All events of one revision go out together**, because the history read never splits a
//!   revision, and revisions go out in order.
//! - **Compaction ends a watcher cleanly.** A watcher whose next revision was compacted (it
//!   fell more than the retention behind, or a snapshot install on this follower moved the
//!   compact revision past it) is cancelled with the compact revision, never silently skipped
//!   ahead.
//!
//! The price is one history read per watcher per new revision; reads hit sled's cache, and a
//! watcher of a quiet prefix reads only the changes it then throws away. Limits keep the number
//! of watchers bounded (`--max-watchers-per-stream`, `--max-watchers`); a create beyond a limit
//! is answered created + canceled with a reason naming the flag.
//!
//! # The stream
//!
//! One task per stream reads the client's requests (create, cancel, progress); one task per
//! watcher reads history and sends. They share the stream's bounded response channel. When the
//! client goes away, or the member shuts down, the stream task stops every watcher.

use super::authz;
use crate::auth::{Caller, Need};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvset_proto::v1::watch_create_request::Filter;
use kvset_proto::v1::watch_request::Request as WatchOp;
use kvset_proto::v1::watch_server::Watch;
use kvset_proto::v1::{event::EventType, WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;
use crate::store::{KeyRange, StoreError};

/// Responses a stream buffers before its watchers wait (and fall behind into the history).
const STREAM_BUFFER: usize = 16;
/// Events one history read collects at most (whole revisions, so a big revision can exceed it).
const MAX_EVENTS_PER_READ: usize = 1_000;
/// How often a stream checks whether the member is shutting down.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

/// The response stream of one Watch call.
pub type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

/// Serves `kvset.v1.Watch` on one member.
#[derive(Clone)]
pub struct WatchService {
    node: Arc<Node>,
    /// Watchers running on this member, over all streams.
    active: Arc<AtomicUsize>,
}

impl WatchService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let rx = self.serve_stream(caller, request.into_inner())?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

impl WatchService {
    /// Serves one stream of watch requests: the responses come out of the returned receiver.
    /// What `Watch` does with a gRPC stream, open to other front ends (etcd's Watch).
    /// `caller`: who opened the stream; each watch it creates needs read on its range.
    pub(crate) fn serve_stream<S>(
        &self,
        caller: Option<Caller>,
        inbound: S,
    ) -> Result<mpsc::Receiver<Result<WatchResponse, Status>>, Status>
    where
        S: tokio_stream::Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        self.node.check_serving()?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = StreamTask {
            node: self.node.clone(),
            active: self.active.clone(),
            tx,
            watchers: HashMap::new(),
            next_id: 1,
            caller,
        };
        tokio::spawn(stream.run(inbound));
        Ok(rx)
    }
}

/// One running watcher, as its stream knows it.
struct Running {
    task: JoinHandle<()>,
    /// Every change up to this revision in the watcher's range was sent.
    delivered: Arc<AtomicI64>,
}

/// A slot in the member-wide watcher count, given back when the watcher ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The task that serves one Watch stream's requests.
struct StreamTask {
    /// Who opened the stream (see [`crate::auth`]).
    caller: Option<Caller>,
    node: Arc<Node>,
    active: Arc<AtomicUsize>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: HashMap<i64, Running>,
    next_id: i64,
}

impl StreamTask {
    async fn run<S>(mut self, mut inbound: S)
    where
        S: tokio_stream::Stream<Item = Result<WatchRequest, Status>> + Unpin,
    {
        use tokio_stream::StreamExt;
        let mut shutdown_poll = tokio::time::interval(SHUTDOWN_POLL);
        loop {
            tokio::select! {
                message = inbound.next() => match message {
                    Some(Ok(request)) => {
                        if !self.handle(request).await {
                            break;
                        }
                    }
                    Some(Err(_)) | None => break,
                },
                _ = self.tx.closed() => break,
                _ = shutdown_poll.tick() => {
                    if self.node.is_shutting_down() {
                        let _ = self
                            .tx
                            .send(Err(Status::unavailable(format!(
                                "{} is shutting down; watch again on another member from the \
                                 last revision received + 1",
                                self.node.name()
                            ))))
                            .await;
                        break;
                    }
                }
            }
        }
        for (_, w) in self.watchers.drain() {
            w.task.abort();
        }
    }

    /// Handles one request; false when the client is gone.
    async fn handle(&mut self, request: WatchRequest) -> bool {
        self.watchers.retain(|_, w| !w.task.is_finished());
        let response = match request.request {
            Some(WatchOp::CreateRequest(create)) => self.create(create),
            Some(WatchOp::CancelRequest(cancel)) => match self.watchers.remove(&cancel.watch_id) {
                Some(w) => {
                    w.task.abort();
                    Some(WatchResponse {
                        header: Some(self.node.header(w.delivered.load(Ordering::SeqCst))),
                        watch_id: cancel.watch_id,
                        canceled: true,
                        cancel_reason: "canceled by the client".into(),
                        ..Default::default()
                    })
                }
                None => None,
            },
            Some(WatchOp::ProgressRequest(_)) => {
                let revision = self
                    .watchers
                    .values()
                    .map(|w| w.delivered.load(Ordering::SeqCst))
                    .min()
                    .unwrap_or_else(|| self.node.state_machine().revision());
                Some(WatchResponse {
                    header: Some(self.node.header(revision)),
                    watch_id: -1,
                    ..Default::default()
                })
            }
            None => None,
        };
        match response {
            Some(r) => self.tx.send(Ok(r)).await.is_ok(),
            None => true,
        }
    }

    /// Starts a watcher, or says why not (created + canceled, with the reason).
    fn create(&mut self, create: WatchCreateRequest) -> Option<WatchResponse> {
        let current = self.node.state_machine().revision();
        let refuse = |id: i64, reason: String| {
            Some(WatchResponse {
                header: Some(self.node.header(current)),
                watch_id: id,
                created: true,
                canceled: true,
                cancel_reason: reason,
                ..Default::default()
            })
        };
        let id = match create.watch_id {
            0 => {
                while self.watchers.contains_key(&self.next_id) {
                    self.next_id += 1;
                }
                self.next_id
            }
            id if id < 0 => {
                return refuse(
                    id,
                    format!("watch id {id} is negative; use 0 or a positive id"),
                )
            }
            id if self.watchers.contains_key(&id) => {
                return refuse(
                    id,
                    format!("watch id {id} is in use on this stream; pick another or 0"),
                )
            }
            id => id,
        };
        let range = match watched_range(&create) {
            Ok(range) => range,
            Err(reason) => return refuse(id, reason),
        };
        if let Err(denied) = authz::check(
            &self.node,
            self.caller.as_ref(),
            &[Need::Read(range.clone())],
        ) {
            return refuse(id, denied.message().to_string());
        }
        let limits = self.node.config().watch;
        if self.watchers.len() >= limits.max_per_stream {
            return refuse(
                id,
                format!(
                    "this stream already has {} watchers, the most --max-watchers-per-stream allows; \
                     cancel one or open another stream",
                    self.watchers.len()
                ),
            );
        }
        if self.active.fetch_add(1, Ordering::SeqCst) >= limits.max_per_member {
            self.active.fetch_sub(1, Ordering::SeqCst);
            return refuse(
                id,
                format!(
                    "{} already serves {} watchers, the most --max-watchers allows; watch on \
                     another member or cancel watchers",
                    self.node.name(),
                    limits.max_per_member
                ),
            );
        }
        let slot = Slot(self.active.clone());
        let start = if create.start_revision > 0 {
            create.start_revision
        } else {
            current + 1
        };
        let delivered = Arc::new(AtomicI64::new(start - 1));
        let watcher = Watcher {
            node: self.node.clone(),
            id,
            range,
            next: start,
            prev_kv: create.prev_kv,
            no_put: create.filters.contains(&(Filter::Noput as i32)),
            no_delete: create.filters.contains(&(Filter::Nodelete as i32)),
            progress_notify: create.progress_notify,
            tx: self.tx.clone(),
            delivered: delivered.clone(),
        };
        let created = WatchResponse {
            header: Some(self.node.header(start - 1)),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        // The created answer goes out before the first event: the watcher task is spawned only
        // once it is queued.
        let tx = self.tx.clone();
        let task = tokio::spawn(async move {
            let _slot = slot;
            if tx.send(Ok(created)).await.is_ok() {
                watcher.run().await;
            }
        });
        self.watchers.insert(id, Running { task, delivered });
        None
    }
}

/// The key range a create asks for, or why it is malformed.
fn watched_range(create: &WatchCreateRequest) -> Result<KeyRange, String> {
    if create.prefix && !create.range_end.is_empty() {
        return Err("range_end must be empty when prefix is set".into());
    }
    if create.prefix {
        return Ok(KeyRange::prefix(&create.key));
    }
    if create.key.is_empty() {
        return Err(
            "key is empty: name a key, or set prefix (an empty prefix watches every key)".into(),
        );
    }
    if create.range_end.is_empty() {
        Ok(KeyRange::single(&create.key))
    } else if create.range_end == [0] {
        // etcd's "every key from `key` on"
        Ok(KeyRange::span(&create.key, b""))
    } else {
        Ok(KeyRange::span(&create.key, &create.range_end))
    }
}

/// One watcher's loop; see the module docs.
struct Watcher {
    node: Arc<Node>,
    id: i64,
    range: KeyRange,
    /// The next revision to deliver.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    delivered: Arc<AtomicI64>,
}

impl Watcher {
    async fn run(mut self) {
        let mut applied = self.node.state_machine().subscribe_revision();
        let progress_every = self.node.config().watch.progress_interval;
        let mut progress_due = tokio::time::Instant::now() + progress_every;
        loop {
            // Read everything up to the applied revision, a batch at a time.
            loop {
                let sm = self.node.state_machine().clone();
                let (from, range, prev_kv) = (self.next, self.range.clone(), self.prev_kv);
                let read = tokio::task::spawn_blocking(move || {
                    sm.changes(from, &range, MAX_EVENTS_PER_READ, prev_kv)
                })
                .await;
                let changes = match read {
                    Ok(Ok(changes)) => changes,
                    Ok(Err(StoreError::Compacted {
                        compact_revision, ..
                    })) => {
                        self.cancel(
                            compact_revision,
                            format!(
                                "revision {} is compacted (compact revision {compact_revision}); \
                                 read the current state and watch again from its revision + 1",
                                self.next
                            ),
                        )
                        .await;
                        return;
                    }
                    Ok(Err(e)) => {
                        if !e.is_deterministic() {
                            self.node.fail_stop(format!("reading the history: {e}"));
                        }
                        self.cancel(
                            0,
                            format!("{}: reading the history failed: {e}", self.node.name()),
                        )
                        .await;
                        return;
                    }
                    Err(e) => {
                        self.cancel(0, format!("watch task failed: {e}")).await;
                        return;
                    }
                };
                for (revision, mut events) in changes.revisions {
                    events.retain(|e| {
                        let put = e.r#type == EventType::Put as i32;
                        !(put && self.no_put || !put && self.no_delete)
                    });
                    if events.is_empty() {
                        continue;
                    }
                    let response = WatchResponse {
                        header: Some(self.node.header(revision)),
                        watch_id: self.id,
                        events,
                        ..Default::default()
                    };
                    if self.tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                    progress_due = tokio::time::Instant::now() + progress_every;
                }
                self.next = changes.through + 1;
                self.delivered.store(changes.through, Ordering::SeqCst);
                let applied_now = *applied.borrow_and_update();
                if changes.through >= applied_now {
                    break;
                }
            }
            // Then wait for a newer revision (or send progress when idle).
            let next = self.next;
            tokio::select! {
                alive = async { applied.wait_for(|r| *r >= next).await.is_ok() } => {
                    if !alive {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(progress_due), if self.progress_notify => {
                    let progress = WatchResponse {
                        header: Some(self.node.header(self.next - 1)),
                        watch_id: self.id,
                        ..Default::default()
                    };
                    if self.tx.send(Ok(progress)).await.is_err() {
                        return;
                    }
                    progress_due = tokio::time::Instant::now() + progress_every;
                }
            }
        }
    }

    async fn cancel(&self, compact_revision: i64, reason: String) {
        let _ = self
            .tx
            .send(Ok(WatchResponse {
                header: Some(self.node.header(self.next - 1)),
                watch_id: self.id,
                canceled: true,
                compact_revision,
                cancel_reason: reason,
                ..Default::default()
            }))
            .await;
    }
}
