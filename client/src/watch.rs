//! Watches: a `Stream` of the changes to a key, a range or a prefix that survives failovers.
//!
//! [`crate::Client::watch`] creates a watcher on one member (the known leader first, then any
//! other: every member serves watches from its own applied state) and returns a
//! [`WatchStream`] of [`WatchBatch`]es, each holding the events of one or more whole revisions
//! in revision order.
//!
//! # Resuming without loss or repeats
//!
//! The stream remembers the next revision it owes the caller: the revision after the last one
//! it delivered (or, for a watch created "from now", the revision after the one the member
//! said it created the watcher at; progress notifications move it too). When the gRPC stream
//! breaks (the member died, was partitioned, restarted, or the connection reset), the stream
//! re-creates the watcher from exactly that revision on another member, through the retry loop
//! of every other call ([`crate::retry`]: the leader hint first, then every endpoint, with
//! jittered backoff). Events below that revision that a member sends again are dropped, so the
//! caller sees every revision of its range once, in order, across any number of reconnects.
//!
//! The stream ends in two ways only:
//!
//! - with [`Error::Compacted`] when the member cancels the watcher because the revision it
//!   needs next was compacted (the history is gone: re-read the state and watch again from the
//!   read's revision + 1), and
//! - with the error of a failed re-creation: a final one (the member refused the request, e.g.
//!   `UNIMPLEMENTED` from an old server) at once; an unavailable cluster only after
//!   [`WatchOptions::reconnect_timeout`] when one is set (by default the stream keeps trying,
//!   like etcd's watch).
//!
//! Dropping the stream stops the watcher: the stream owns the gRPC call, and dropping it resets
//! the HTTP/2 stream, which the member sees as the end of its watchers. No task is left behind.
//!
//! # A member that is behind
//!
//! A follower serves a watch from what it has applied, so after a failover to a lagging
//! follower the events may come later than from the leader, never out of order. A member may
//! refuse a watcher that starts past its applied revision (`OUT_OF_RANGE` without a compact
//! revision, or a cancel without one): the stream treats that as "try again" (another member,
//! or the same once it caught up), not as the end.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::Stream;
use kvset_proto::v1 as pb;
use kvset_proto::v1::watch_client::WatchClient;

use crate::client::Client;
use crate::endpoint::Route;
use crate::error::{compact_revision_in, Error, Result};
use crate::range::KeyRange;
use crate::retry::{self, Backoff, CallSpec, Safety};
use crate::types::{HasHeader, Header, KeyValue};

/// What to watch and how. Build with [`WatchOptions::key`], [`WatchOptions::prefix`] or
/// [`WatchOptions::range`], then the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// The keys: one key, `[start, end)` (an empty end: to the last key), or a prefix.
    pub keys: KeyRange,
    /// The first revision to deliver; 0 (the default): only changes after the watcher is
    /// created.
    pub start_revision: i64,
    /// Events carry the key's previous version.
    pub prev_kv: bool,
    /// Leave out PUT events.
    pub no_put: bool,
    /// Leave out DELETE events.
    pub no_delete: bool,
    /// Ask the member for progress notifications: an idle watcher gets an empty
    /// [`WatchBatch`] every `--watch-progress-interval` saying how far it is delivered.
    pub progress_notify: bool,
    /// How long the stream tries to re-create a broken watcher before it ends with the last
    /// error. `None` (the default): it keeps trying as long as it is polled.
    pub reconnect_timeout: Option<Duration>,
}

impl WatchOptions {
    /// Watch one key.
    pub fn key(key: impl AsRef<[u8]>) -> WatchOptions {
        WatchOptions::range(KeyRange::key(key))
    }

    /// Watch every key that starts with `prefix` (the empty prefix: every key).
    pub fn prefix(prefix: impl AsRef<[u8]>) -> WatchOptions {
        WatchOptions::range(KeyRange::prefix(prefix))
    }

    /// Watch a key, a range or a prefix.
    pub fn range(keys: KeyRange) -> WatchOptions {
        WatchOptions {
            keys,
            start_revision: 0,
            prev_kv: false,
            no_put: false,
            no_delete: false,
            progress_notify: false,
            reconnect_timeout: None,
        }
    }

    /// Deliver from this revision on (a past one replays the history from there).
    pub fn start_revision(mut self, revision: i64) -> WatchOptions {
        self.start_revision = revision;
        self
    }

    /// Events carry the key's previous version.
    pub fn prev_kv(mut self) -> WatchOptions {
        self.prev_kv = true;
        self
    }

    /// Leave out PUT events.
    pub fn no_put(mut self) -> WatchOptions {
        self.no_put = true;
        self
    }

    /// Leave out DELETE events.
    pub fn no_delete(mut self) -> WatchOptions {
        self.no_delete = true;
        self
    }

    /// Ask for progress notifications (empty batches) while idle.
    pub fn progress_notify(mut self) -> WatchOptions {
        self.progress_notify = true;
        self
    }

    /// Give up re-creating a broken watcher after this long.
    pub fn reconnect_timeout(mut self, timeout: Duration) -> WatchOptions {
        self.reconnect_timeout = Some(timeout);
        self
    }

    /// The create request that starts delivering at `start_revision`.
    pub(crate) fn create_request(&self, start_revision: i64) -> Result<pb::WatchCreateRequest> {
        if self.start_revision < 0 {
            return Err(Error::InvalidArgument(format!(
                "watch start revision {} is negative; give 1 or more, or 0 for changes from now",
                self.start_revision
            )));
        }
        let (key, range_end, prefix) = self.keys.watch_fields()?;
        let mut filters = Vec::new();
        if self.no_put {
            filters.push(pb::watch_create_request::Filter::Noput as i32);
        }
        if self.no_delete {
            filters.push(pb::watch_create_request::Filter::Nodelete as i32);
        }
        Ok(pb::WatchCreateRequest {
            key,
            range_end,
            prefix,
            start_revision,
            progress_notify: self.progress_notify,
            filters,
            prev_kv: self.prev_kv,
            watch_id: 0,
        })
    }
}

/// The kind of a change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The key was set (created or overwritten).
    #[default]
    Put,
    /// The key was deleted (by a delete, or because its lease ended).
    Delete,
}

impl EventType {
    /// `PUT` or `DELETE`, as in `kvsetctl watch` output.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Put => "PUT",
            EventType::Delete => "DELETE",
        }
    }
}

/// One change to one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchEvent {
    /// PUT or DELETE.
    pub kind: EventType,
    /// PUT: the key after the change, with its metadata. DELETE: the key, and as
    /// `mod_revision` the revision of the delete (the other fields 0).
    pub kv: KeyValue,
    /// The key before the change, when asked for ([`WatchOptions::prev_kv`]) and it existed.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    pub(crate) fn from_pb(e: pb::Event) -> WatchEvent {
        WatchEvent {
            kind: if e.r#type == pb::event::EventType::Delete as i32 {
                EventType::Delete
            } else {
                EventType::Put
            },
            kv: e.kv.map(KeyValue::from).unwrap_or_default(),
            prev_kv: e.prev_kv.map(KeyValue::from),
        }
    }
}

/// The events of one or more whole revisions, in revision order; or, with no events, a
/// progress notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchBatch {
    /// The member that sent it.
    pub header: Header,
    /// Every change of the watched keys up to this revision has been delivered.
    pub revision: i64,
    /// The events; empty for a progress notification.
    pub events: Vec<WatchEvent>,
}

impl WatchBatch {
    /// True for a progress notification (no events).
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
    }
}

/// The stream [`crate::Client::watch`] returns. See the [module docs](crate::watch).
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchBatch>> + Send>>,
    next: Arc<AtomicI64>,
    reconnects: Arc<AtomicU64>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("next_revision", &self.next_revision())
            .field("reconnects", &self.reconnects())
            .finish()
    }
}

impl WatchStream {
    /// The next revision the stream will deliver: everything below it was delivered (or is
    /// not in the watched range). A caller that stops and wants to resume later watches again
    /// from here.
    pub fn next_revision(&self) -> i64 {
        self.next.load(Ordering::SeqCst)
    }

    /// How many times the watcher was re-created after its stream broke.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::SeqCst)
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// An open gRPC watch stream with one watcher on it.
struct Conn {
    responses: tonic::Streaming<pb::WatchResponse>,
    /// Kept so the request side stays open: a member may end the watchers of a stream whose
    /// client half-closed.
    _requests: mpsc::UnboundedSender<pb::WatchRequest>,
    watch_id: i64,
    endpoint: String,
    /// A response that arrived with (or instead of) the creation, to handle first.
    pending: Option<pb::WatchResponse>,
    /// True once something arrived after the creation (resets the reconnect backoff).
    delivered: bool,
}

/// What one attempt to create the watcher got.
struct Opened {
    header: Option<pb::ResponseHeader>,
    outcome: Outcome,
}

enum Outcome {
    /// The watcher exists; the connection's endpoint is filled in by the caller.
    Created(Box<Conn>),
    Compacted(i64),
}

impl HasHeader for Opened {
    fn header(&self) -> Option<&pb::ResponseHeader> {
        self.header.as_ref()
    }
}

/// The stream's state between items.
struct State {
    client: Client,
    opts: WatchOptions,
    /// The next revision to deliver (see the module docs).
    next: Arc<AtomicI64>,
    conn: Option<Conn>,
    backoff: Backoff,
    done: bool,
    reconnects: Arc<AtomicU64>,
}

impl Client {
    /// Creates a watcher and returns the stream of its events; see the
    /// [`watch` module](crate::watch) for how it resumes across failovers. Returns once a
    /// member has created the watcher, so every change after this returns is delivered.
    /// Fails like any call when no member can create the watcher within the retry deadline
    /// (or [`WatchOptions::reconnect_timeout`]). A `start_revision` that is already compacted
    /// is reported by the stream: its only item is [`Error::Compacted`] (members create the
    /// watcher, then cancel it).
    pub async fn watch(&self, opts: WatchOptions) -> Result<WatchStream> {
        let create = opts.create_request(opts.start_revision)?;
        // The first creation fails like any call when no member answers within the deadline.
        let (conn, header_revision) = match open(self, &opts, create, false).await? {
            (Outcome::Compacted(c), _, _) => {
                return Err(Error::Compacted {
                    compact_revision: c,
                })
            }
            (created, endpoint, header_revision) => (conn_of(created, endpoint), header_revision),
        };
        let next = if opts.start_revision > 0 {
            opts.start_revision
        } else {
            // "From now": the member created the watcher at its current revision.
            header_revision.saturating_add(1).max(1)
        };
        let next = Arc::new(AtomicI64::new(next));
        let reconnects = Arc::new(AtomicU64::new(0));
        let state = State {
            reconnects: reconnects.clone(),
            backoff: Backoff::new(self.config().backoff_base, self.config().backoff_max),
            client: self.clone(),
            opts,
            next: next.clone(),
            conn: Some(conn),
            done: false,
        };
        let inner = futures::stream::unfold(state, |mut st| async move {
            let item = st.next_item().await?;
            Some((item, st))
        });
        Ok(WatchStream {
            inner: Box::pin(inner),
            next,
            reconnects,
        })
    }
}

fn conn_of(outcome: Outcome, endpoint: String) -> Conn {
    match outcome {
        Outcome::Created(conn) => Conn { endpoint, ..*conn },
        Outcome::Compacted(_) => unreachable!("handled by the callers"),
    }
}

/// Creates the watcher on some member through the retry loop. Returns what happened, the
/// endpoint, and the revision of the creation's header.
/// With `persist`, an unavailable cluster starts another round of attempts instead of failing
/// (unless [`WatchOptions::reconnect_timeout`] is set).
async fn open(
    client: &Client,
    opts: &WatchOptions,
    create: pb::WatchCreateRequest,
    persist: bool,
) -> Result<(Outcome, String, i64)> {
    let config = client.config();
    let mut rounds = 0u32;
    loop {
        let timeout = opts.reconnect_timeout.unwrap_or(config.retry_deadline);
        let spec = CallSpec {
            op: "watch",
            safety: Safety::Read,
            route: Route::Leader,
            timeout,
            max_attempts: 0,
        };
        let result = retry::run(client.registry(), config, spec, |ch, _t| {
            let create = create.clone();
            async move { create_watcher(ch, create).await }
        })
        .await;
        match result {
            Ok((opened, endpoint)) => {
                let revision = opened.header.as_ref().map_or(0, |h| h.revision);
                return Ok((opened.outcome, endpoint, revision));
            }
            // By default a watch outlives any outage: start another round of attempts.
            Err(e) if persist && e.is_unavailable() && opts.reconnect_timeout.is_none() => {
                rounds += 1;
                tracing::debug!(error = %e, rounds, "watch: no member could create the watcher yet; still trying");
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt: opens the gRPC stream, sends the create request and waits for the answer.
async fn create_watcher(
    ch: crate::endpoint::Transport,
    create: pb::WatchCreateRequest,
) -> std::result::Result<tonic::Response<Opened>, tonic::Status> {
    let (requests, rx) = mpsc::unbounded();
    requests
        .unbounded_send(pb::WatchRequest {
            request: Some(pb::watch_request::Request::CreateRequest(create)),
        })
        .expect("the receiver is alive");
    // No gRPC deadline: it would end the stream. The retry loop bounds this attempt, and the
    // channel's HTTP/2 keep-alive detects a dead member afterwards.
    let mut responses = WatchClient::new(ch).watch(rx).await?.into_inner();
    let first = responses.message().await?.ok_or_else(|| {
        tonic::Status::unavailable("the watch stream closed before the watcher was created")
    })?;
    let header = first.header.clone();
    if first.canceled {
        if first.compact_revision > 0 {
            return Ok(tonic::Response::new(Opened {
                header,
                outcome: Outcome::Compacted(first.compact_revision),
            }));
        }
        // Refused by the authorization policy: final (every member holds the same policy).
        if first.cancel_reason.starts_with(PERMISSION_DENIED_REASON) {
            return Err(tonic::Status::permission_denied(first.cancel_reason));
        }
        // Refused without a compact revision (a member behind the start revision, a watcher
        // limit): worth another attempt, here or elsewhere.
        return Err(tonic::Status::unavailable(format!(
            "the member refused the watcher: {}",
            if first.cancel_reason.is_empty() {
                "no reason given"
            } else {
                &first.cancel_reason
            }
        )));
    }
    let watch_id = first.watch_id;
    let pending = (!first.created || !first.events.is_empty()).then_some(first);
    Ok(tonic::Response::new(Opened {
        header,
        outcome: Outcome::Created(Box::new(Conn {
            responses,
            _requests: requests,
            watch_id,
            endpoint: String::new(),
            pending,
            delivered: false,
        })),
    }))
}

/// How a member's refusal of a watcher by its authorization policy begins.
const PERMISSION_DENIED_REASON: &str = "permission denied:";

/// What the stream does with one response of its watcher.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Deliver this batch (its events are all at or above the next revision).
    Deliver(WatchBatch),
    /// Nothing to deliver (a duplicate, or progress nobody asked to see).
    Skip,
    /// The watcher was cancelled because its next revision was compacted.
    Compacted(i64),
    /// The watcher was cancelled for another reason: re-create it.
    Reconnect(String),
}

/// Decides what to do with `resp`, and advances `next`. Pure, so the resume rules are unit
/// tested without a server.
pub(crate) fn step(resp: pb::WatchResponse, next: &mut i64, show_progress: bool) -> Step {
    if resp.canceled {
        let compact = if resp.compact_revision > 0 {
            Some(resp.compact_revision)
        } else {
            compact_revision_in(&resp.cancel_reason)
        };
        return match compact {
            Some(c) => Step::Compacted(c),
            None => Step::Reconnect(format!(
                "the member cancelled the watcher: {}",
                if resp.cancel_reason.is_empty() {
                    "no reason given"
                } else {
                    &resp.cancel_reason
                }
            )),
        };
    }
    let header = Header::from_pb(resp.header);
    let events: Vec<WatchEvent> = resp
        .events
        .into_iter()
        .map(WatchEvent::from_pb)
        .filter(|e| e.revision() >= *next)
        .collect();
    if let Some(last) = events.last() {
        *next = last.revision() + 1;
        return Step::Deliver(WatchBatch {
            revision: last.revision().max(header.revision),
            header,
            events,
        });
    }
    // No new events: a progress notification (or a response of repeats only). Its header
    // revision says every change up to it was sent.
    if resp.created || header.revision < *next - 1 || header.revision == 0 {
        return Step::Skip;
    }
    *next = header.revision + 1;
    if show_progress {
        Step::Deliver(WatchBatch {
            revision: header.revision,
            header,
            events: Vec::new(),
        })
    } else {
        Step::Skip
    }
}

impl State {
    /// The next item of the stream; `None` once it ended.
    async fn next_item(&mut self) -> Option<Result<WatchBatch>> {
        loop {
            if self.done {
                return None;
            }
            let Some(conn) = self.conn.as_mut() else {
                match self.reconnect().await {
                    Ok(()) => continue,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            };
            let received = match conn.pending.take() {
                Some(resp) => Ok(Some(resp)),
                None => conn.responses.message().await,
            };
            let resp = match received {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    self.broken("the member ended the watch stream".to_string());
                    continue;
                }
                Err(status) => {
                    self.broken(format!("{:?}: {}", status.code(), status.message()));
                    continue;
                }
            };
            if resp.watch_id != conn.watch_id {
                continue;
            }
            conn.delivered = true;
            let mut next = self.next.load(Ordering::SeqCst);
            let step = step(resp, &mut next, self.opts.progress_notify);
            self.next.store(next, Ordering::SeqCst);
            match step {
                Step::Deliver(batch) => return Some(Ok(batch)),
                Step::Skip => {}
                Step::Compacted(compact_revision) => {
                    self.done = true;
                    return Some(Err(Error::Compacted { compact_revision }));
                }
                Step::Reconnect(why) => self.broken(why),
            }
        }
    }

    /// Forgets a broken connection (and the member as leader).
    fn broken(&mut self, why: String) {
        if let Some(conn) = self.conn.take() {
            tracing::debug!(endpoint = %conn.endpoint, cause = %why, next = self.next.load(Ordering::SeqCst), "watch stream broke; re-creating the watcher");
            self.client.registry().on_stream_broken(&conn.endpoint);
            if conn.delivered {
                self.backoff = Backoff::new(
                    self.client.config().backoff_base,
                    self.client.config().backoff_max,
                );
            }
        }
    }

    /// Re-creates the watcher from the next revision, after a pause when the last connection
    /// broke before delivering anything (so a member that accepts and drops at once is not
    /// hammered).
    async fn reconnect(&mut self) -> Result<()> {
        tokio::time::sleep(self.backoff.next_pause()).await;
        let next = self.next.load(Ordering::SeqCst);
        let create = self.opts.create_request(next)?;
        match open(&self.client, &self.opts, create, true).await? {
            (Outcome::Compacted(c), _, _) => Err(Error::Compacted {
                compact_revision: c,
            }),
            (created, endpoint, _) => {
                tracing::debug!(endpoint = %endpoint, next, "watch re-created");
                self.reconnects.fetch_add(1, Ordering::SeqCst);
                self.conn = Some(conn_of(created, endpoint));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, rev: i64) -> pb::Event {
        pb::Event {
            r#type: pb::event::EventType::Put as i32,
            kv: Some(pb::KeyValue {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    fn resp(revision: i64, events: Vec<pb::Event>) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                revision,
                ..Default::default()
            }),
            watch_id: 1,
            events,
            ..Default::default()
        }
    }

    #[test]
    fn events_advance_the_next_revision_and_repeats_are_dropped() {
        let mut next = 5;
        let Step::Deliver(b) = step(resp(6, vec![put("a", 5), put("b", 6)]), &mut next, false)
        else {
            panic!("expected a batch")
        };
        assert_eq!(b.events.len(), 2);
        assert_eq!((b.revision, next), (6, 7));
        // A member re-sends revision 6 after a resume: only 7 is new.
        let Step::Deliver(b) = step(resp(7, vec![put("b", 6), put("c", 7)]), &mut next, false)
        else {
            panic!("expected a batch")
        };
        assert_eq!(
            b.events.iter().map(|e| e.revision()).collect::<Vec<_>>(),
            [7]
        );
        assert_eq!(next, 8);
        // Only repeats: nothing to deliver, nothing moves.
        assert_eq!(
            step(resp(7, vec![put("c", 7)]), &mut next, false),
            Step::Skip
        );
        assert_eq!(next, 8);
    }

    #[test]
    fn progress_moves_the_next_revision_and_shows_when_asked() {
        let mut next = 8;
        assert_eq!(step(resp(20, vec![]), &mut next, false), Step::Skip);
        assert_eq!(next, 21);
        match step(resp(30, vec![]), &mut next, true) {
            Step::Deliver(b) => assert!(b.is_progress() && b.revision == 30),
            other => panic!("{other:?}"),
        }
        assert_eq!(next, 31);
        // A progress from a member that is behind never moves it back.
        assert_eq!(step(resp(25, vec![]), &mut next, true), Step::Skip);
        assert_eq!(next, 31);
    }

    #[test]
    fn cancels_are_compaction_or_reconnect() {
        let mut next = 3;
        let compacted = pb::WatchResponse {
            canceled: true,
            compact_revision: 42,
            ..resp(50, vec![])
        };
        assert_eq!(step(compacted, &mut next, false), Step::Compacted(42));
        let in_words = pb::WatchResponse {
            canceled: true,
            cancel_reason: "revision 3 compacted; the compact revision is 9".into(),
            ..resp(50, vec![])
        };
        assert_eq!(step(in_words, &mut next, false), Step::Compacted(9));
        let other = pb::WatchResponse {
            canceled: true,
            cancel_reason: "member shutting down".into(),
            ..resp(50, vec![])
        };
        assert!(
            matches!(step(other, &mut next, false), Step::Reconnect(m) if m.contains("shutting down"))
        );
        assert_eq!(next, 3);
    }

    #[test]
    fn create_requests_check_their_input() {
        let r = WatchOptions::prefix("app/")
            .prev_kv()
            .no_delete()
            .create_request(12)
            .unwrap();
        assert_eq!(
            (r.key, r.prefix, r.start_revision),
            (b"app/".to_vec(), true, 12)
        );
        assert!(r.prev_kv);
        assert_eq!(
            r.filters,
            [pb::watch_create_request::Filter::Nodelete as i32]
        );
        assert!(WatchOptions::key("").create_request(0).is_err());
        let from_m = WatchOptions::range(KeyRange::starting_at("m"))
            .create_request(0)
            .unwrap();
        assert_eq!((from_m.key, from_m.range_end), (b"m".to_vec(), vec![0]));
        let all = WatchOptions::range(KeyRange::all())
            .create_request(0)
            .unwrap();
        assert!(all.prefix && all.key.is_empty());
        assert!(WatchOptions::key("k")
            .start_revision(-1)
            .create_request(0)
            .is_err());
    }
}
