//! The watchers: `--watchers N` long-lived watches on the contended keys that follow the
//! cluster through every fault, recording what they are delivered into `watch.jsonl` for the
//! watch check ([`super::watch_check`]).
//!
//! # Why raw streams and a resume of our own
//!
//! The watch is where etcd found most of its consistency bugs: events lost, duplicated or
//! reordered around reconnects, partitions and compaction. To catch those in the *server*, the
//! watcher must be as simple as possible and its resume rule explicit: one gRPC `Watch` stream
//! per watcher, one create on the prefix of the contended keys, and after anything that ends
//! the stream — an error, the member killed, a stream that stays silent (a frozen member), a
//! cancel — a new stream on the *next* member, created from the revision after the last one
//! delivered. The server's answers are recorded as they come; judging them is the check's job.
//! A watcher also moves on by itself every [`ROTATE_EVERY`] (a stream closed cleanly, a resume
//! on the next member), so that resumes happen on every member — one that has just come back
//! from a fault and is catching up included — not only on those a fault hit.
//!
//! # Knowing how far a watcher got
//!
//! Events say how far a watcher got only when something changes. So every second the watcher
//! asks for progress (`WatchProgressRequest`); the answer's revision means "everything up to
//! here was sent", which both extends its coverage and proves the stream alive: a stream that
//! answers nothing for three seconds is given up and resumed elsewhere. At the end of the run
//! [`Watchers::finish`] tells every watcher the cluster's final revision; each keeps asking for
//! progress until it is delivered up to it, records `end` and stops.
//!
//! Every loop here is bounded: a watcher stops at [`Watchers::finish`] (or when its own
//! deadline passes), and [`Watchers::finish`] itself waits a bounded time before aborting.

use std::time::{Duration, Instant};

use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::watch_client::WatchClient;
use kvset_proto::v1::watch_request::Request as WatchOp;
use kvset_proto::v1::{
    event::EventType, Consistency, GetRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::backend::MemberInfo;
use super::jsonl::JsonlLog;
use super::watch_check::WatchRecord;

/// The prefix every watcher watches: the contended keys `k0..` (and nothing else the run
/// writes starts with it).
pub const WATCH_PREFIX: &str = "k";

/// How long a stream may stay silent after a progress request before it is given up.
const SILENCE: Duration = Duration::from_secs(3);
/// How often a watcher asks for progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a watcher stays on one member before it moves on by itself.
const ROTATE_EVERY: Duration = Duration::from_secs(5);

/// A lazily connecting channel to `member`.
pub fn channel(member: &MemberInfo) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{}", member.endpoint))
        .map(|e| {
            e.connect_timeout(Duration::from_millis(500))
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(1))
                .connect_lazy()
        })
        .map_err(|e| format!("bad endpoint {} for {}: {e}", member.endpoint, member.name))
}

/// The cluster's current revision, by a linearizable read on the first member that answers
/// (each tried in turn until `timeout`).
pub async fn current_revision(members: &[MemberInfo], timeout: Duration) -> Option<i64> {
    let deadline = Instant::now() + timeout;
    let channels: Vec<Channel> = members.iter().filter_map(|m| channel(m).ok()).collect();
    let mut i = 0usize;
    while Instant::now() < deadline && !channels.is_empty() {
        let mut kv = KvClient::new(channels[i % channels.len()].clone());
        let read = kv.get(GetRequest {
            key: WATCH_PREFIX.into(),
            consistency: Consistency::Linearizable as i32,
            revision: 0,
        });
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(2), read).await {
            if let Some(h) = resp.into_inner().header {
                return Some(h.revision);
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The running watchers.
pub struct Watchers {
    log: JsonlLog,
    target: watch::Sender<Option<i64>>,
    tasks: Vec<JoinHandle<()>>,
    /// The revision the watchers started from.
    pub start_revision: i64,
}

impl Watchers {
    /// Starts `count` watchers on `members` from `start_revision`, recording into `log`. They
    /// run until [`Watchers::finish`], and never past `lifetime`.
    pub fn start(
        members: &[MemberInfo],
        count: usize,
        start_revision: i64,
        log: JsonlLog,
        lifetime: Duration,
    ) -> Result<Watchers, String> {
        let channels = members.iter().map(channel).collect::<Result<Vec<_>, _>>()?;
        let (target, target_rx) = watch::channel(None);
        let deadline = Instant::now() + lifetime;
        let tasks = (0..count)
            .map(|id| {
                let w = Watcher {
                    id: id as u64,
                    members: members.to_vec(),
                    channels: channels.clone(),
                    log: log.clone(),
                    target: target_rx.clone(),
                    deadline,
                };
                tokio::spawn(w.run(start_revision))
            })
            .collect();
        Ok(Watchers {
            log,
            target,
            tasks,
            start_revision,
        })
    }

    /// Tells every watcher to catch up with `final_revision` and stop; waits at most
    /// `timeout`, then aborts the rest. Returns the harness errors (watchers that did not
    /// finish, a log that could not be written).
    pub async fn finish(self, final_revision: i64, timeout: Duration) -> Vec<String> {
        let _ = self.target.send(Some(final_revision));
        let mut errors = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        for (i, task) in self.tasks.into_iter().enumerate() {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                errors.push(format!(
                    "watcher {i} did not catch up with revision {final_revision} within \
                     {timeout:?}"
                ));
            }
        }
        if let Err(e) = self.log.flush() {
            errors.push(format!("writing watch.jsonl: {e}"));
        }
        errors
    }
}

struct Watcher {
    id: u64,
    members: Vec<MemberInfo>,
    channels: Vec<Channel>,
    log: JsonlLog,
    target: watch::Receiver<Option<i64>>,
    deadline: Instant,
}

/// Why one stream ended.
enum StreamEnd {
    /// Caught up with the target: done.
    Done,
    /// Broke, went silent or was canceled: resume (from `next`) elsewhere.
    Resume(String),
}

impl Watcher {
    async fn run(mut self, start_revision: i64) {
        // `through`: every revision up to it delivered.
        let mut through = start_revision - 1;
        let mut member = self.id as usize % self.members.len();
        while Instant::now() < self.deadline {
            match self.stream(member, &mut through).await {
                StreamEnd::Done => return,
                StreamEnd::Resume(error) => {
                    self.log.append(&WatchRecord::Error {
                        watcher: self.id,
                        member: self.members[member].name.clone(),
                        error,
                        ms: self.log.ms(),
                    });
                }
            }
            member = (member + 1) % self.members.len();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.log.append(&WatchRecord::Error {
            watcher: self.id,
            member: self.members[member].name.clone(),
            error: "gave up: the watcher's lifetime ran out".into(),
            ms: self.log.ms(),
        });
    }

    /// One stream on `member`, from `through + 1`.
    async fn stream(&mut self, member: usize, through: &mut i64) -> StreamEnd {
        let (tx, rx) = mpsc::channel::<WatchRequest>(4);
        let create = WatchRequest {
            request: Some(WatchOp::CreateRequest(WatchCreateRequest {
                key: WATCH_PREFIX.into(),
                prefix: true,
                start_revision: *through + 1,
                progress_notify: true,
                ..Default::default()
            })),
        };
        if tx.send(create).await.is_err() {
            return StreamEnd::Resume("the request channel closed".into());
        }
        let mut client = WatchClient::new(self.channels[member].clone());
        let opened = tokio::time::timeout(
            SILENCE,
            client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(status)) => return StreamEnd::Resume(format!("open: {status}")),
            Err(_) => return StreamEnd::Resume(format!("open: no answer in {SILENCE:?}")),
        };
        self.log.append(&WatchRecord::Open {
            watcher: self.id,
            member: self.members[member].name.clone(),
            prefix: WATCH_PREFIX.into(),
            start_revision: *through + 1,
            ms: self.log.ms(),
        });
        let opened = Instant::now();
        let mut heard = Instant::now();
        let mut asked: Option<Instant> = None;
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            if let Some(target) = *self.target.borrow() {
                if *through >= target {
                    self.log.append(&WatchRecord::End {
                        watcher: self.id,
                        revision: *through,
                        ms: self.log.ms(),
                    });
                    return StreamEnd::Done;
                }
            }
            if Instant::now() >= self.deadline {
                return StreamEnd::Resume("the watcher's lifetime ran out".into());
            }
            tokio::select! {
                message = stream.message() => {
                    heard = Instant::now();
                    asked = None;
                    match message {
                        Ok(Some(resp)) => {
                            if let Some(end) = self.handle(resp, through) {
                                return end;
                            }
                        }
                        Ok(None) => return StreamEnd::Resume("the server ended the stream".into()),
                        Err(status) => return StreamEnd::Resume(status.to_string()),
                    }
                }
                _ = tick.tick() => {
                    if self.target.borrow().is_none() && opened.elapsed() >= ROTATE_EVERY {
                        return StreamEnd::Resume("moving on to the next member".into());
                    }
                    if asked.is_some_and(|a| a.elapsed() >= SILENCE)
                        || (asked.is_none() && heard.elapsed() >= SILENCE * 2)
                    {
                        return StreamEnd::Resume(format!("silent for {SILENCE:?}"));
                    }
                    if asked.is_none() {
                        let progress = WatchRequest {
                            request: Some(WatchOp::ProgressRequest(WatchProgressRequest {})),
                        };
                        if tx.try_send(progress).is_ok() {
                            asked = Some(Instant::now());
                        }
                    }
                }
            }
        }
    }

    /// Records one response; `Some` when the stream must end.
    fn handle(&mut self, resp: WatchResponse, through: &mut i64) -> Option<StreamEnd> {
        if resp.canceled {
            self.log.append(&WatchRecord::Canceled {
                watcher: self.id,
                compact_revision: resp.compact_revision,
                reason: resp.cancel_reason.clone(),
                ms: self.log.ms(),
            });
            if resp.compact_revision > *through + 1 {
                // The revisions up to the compaction are gone: resume from the oldest kept
                // one (the check sees the gap and asks nothing of it).
                *through = resp.compact_revision - 1;
            }
            return Some(StreamEnd::Resume(format!(
                "canceled: {} (compact revision {})",
                resp.cancel_reason, resp.compact_revision
            )));
        }
        if resp.created {
            return None;
        }
        let revision = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        if resp.events.is_empty() {
            if revision > *through {
                *through = revision;
                self.log.append(&WatchRecord::Progress {
                    watcher: self.id,
                    revision,
                    ms: self.log.ms(),
                });
            }
            return None;
        }
        let ms = self.log.ms();
        for e in &resp.events {
            let kv = e.kv.clone().unwrap_or_default();
            let put = e.r#type == EventType::Put as i32;
            self.log.append(&WatchRecord::Event {
                watcher: self.id,
                revision: kv.mod_revision,
                event: if put { "put" } else { "delete" }.into(),
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                value: put.then(|| String::from_utf8_lossy(&kv.value).into_owned()),
                ms,
            });
            *through = (*through).max(kv.mod_revision);
        }
        None
    }
}
