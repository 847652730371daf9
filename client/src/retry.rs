//! The retry loop: one call, many attempts, until an answer or the deadline.
//!
//! # Shape of the loop
//!
//! Attempts are grouped in *rounds*. Within a round each endpoint is tried at most once, with no
//! pause in between, in the order `Registry::pick` gives for the call's `Route` (the known
//! leader first for writes, a follower first for stale reads, only the pinned member for a
//! pinned read). When every candidate of a round has failed, the loop sleeps with jittered
//! exponential backoff (`base * 2^round`, capped at `max`, uniformly drawn from the upper half
//! of that interval so clients that failed together do not retry together) and starts a new
//! round. A leader hint (`kvset-leader` on an `UNAVAILABLE` answer) is followed at once: it
//! makes the hinted endpoint the known leader, so it is the next attempt unless it already
//! failed in this round. This is how the client re-discovers the primary after a failover: the
//! hint if a member knows it, otherwise every other endpoint in turn.
//!
//! Each attempt is bounded by the request timeout (and by what is left of the deadline): it is
//! sent as the gRPC deadline, so the server can stop work, *and* enforced locally, so a silent
//! peer cannot hang the call. A retry is not started in the last 10 ms before the deadline (it
//! could only time out, and would hide the cause worth reporting): the loop waits out the
//! deadline instead.
//!
//! # What is retried
//!
//! `Safety` says what a repeat could do:
//!
//! - `Safety::Read`: nothing. Every transient failure is retried.
//! - `Safety::Write`: the write carries a `RequestId` that every attempt reuses, so the state
//!   machine applies it at most once and answers a repeat with the stored result. Every
//!   transient failure is retried. See [`crate::session`].
//! - `Safety::Mutation`: a membership change, which has no exactly-once token. It is retried
//!   only when the failed attempt provably did nothing: the connection could not be made, or a
//!   member refused it and named the leader. Any other failure is reported at once, marked as
//!   possibly applied.
//!
//! Final errors (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `NOT_FOUND`, unknown server errors)
//! are never retried.
//!
//! # How a call ends
//!
//! With the response; with the first final error; with [`Error::NotLeader`] when redirects are
//! off and a member refused with a hint (with [`Error::Unavailable`], possibly applied, when the
//! member instead forwarded the write and lost the leader's answer); or, at the deadline, with [`Error::Timeout`] if the
//! last attempt timed out and [`Error::Unavailable`] otherwise, both carrying the last cause.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::endpoint::Transport;

use crate::config::Config;
use crate::endpoint::{EndpointId, LeaderHint, Registry, Route};
use crate::error::{
    annotate, classify, human_duration, leader_hint, Cause, CauseKind, Error, Result, Verdict,
};
use crate::types::HasHeader;

/// A retry is not started with less time than this left before the call's deadline.
const MIN_ATTEMPT: Duration = Duration::from_millis(10);

/// What repeating a request could do; decides which failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// A read: always safe to repeat.
    Read,
    /// A write with a `RequestId`: repeats are answered from the server's memory.
    Write,
    /// A membership change without exactly-once protection.
    Mutation,
}

/// One call's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSpec {
    /// The RPC name, for logs.
    pub op: &'static str,
    pub safety: Safety,
    pub route: Route,
    /// The whole call's time budget.
    pub timeout: Duration,
    /// Stop after this many attempts (0: until the deadline).
    pub max_attempts: u32,
}

/// Jittered exponential backoff between retry rounds.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    round: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            round: 0,
        }
    }

    /// The pause before the next round: drawn from `[cap/2, cap]` with
    /// `cap = min(max, base * 2^round)`.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << self.round.min(20))
            .min(self.max);
        self.round = self.round.saturating_add(1);
        let half = cap / 2;
        half + (cap - half).mul_f64(rand::random::<f64>())
    }
}

/// Runs `attempt` against endpoints chosen by `spec.route` until it succeeds, fails finally, or
/// the deadline (or `spec.max_attempts`) is reached. `attempt` gets the channel and the
/// attempt's time budget (to set as the gRPC deadline) and must build a fresh request each
/// time. Returns the answer and the endpoint (`host:port`) that gave it.
pub(crate) async fn run<T, F, Fut>(
    registry: &Registry,
    config: &Config,
    spec: CallSpec,
    mut attempt: F,
) -> Result<(T, String)>
where
    F: FnMut(Transport, Duration) -> Fut,
    Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    T: HasHeader,
{
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_max);
    let mut round: HashSet<EndpointId> = HashSet::new();
    let mut tried: Vec<String> = Vec::new();
    let mut last: Option<Cause> = None;
    // The last failure that points at the TLS setup. Such failures are racy (a plain-text
    // client may see the TLS member's alert, or only a broken pipe), so when the call gives up
    // this cause is reported rather than a last one that is a bare transport failure (an
    // answer from a member, such as "no leader", is still reported as it is).
    let mut tls_cause: Option<Cause> = None;
    let mut reached_member = false;
    let mut maybe_delivered = false;
    let mut attempts = 0u32;

    loop {
        let now = Instant::now();
        // After a failed attempt, one with almost no time left could only time out, and would
        // then hide the cause worth reporting (and mark a write as possibly applied): wait out
        // the deadline instead, and give up.
        let exhausted = spec.max_attempts > 0 && attempts >= spec.max_attempts;
        if !exhausted && now < deadline && last.is_some() && deadline - now < MIN_ATTEMPT {
            tokio::time::sleep_until(deadline.into()).await;
            continue;
        }
        if now >= deadline || exhausted {
            let may_have_applied = spec.safety == Safety::Write && maybe_delivered;
            let bare_transport = last.as_ref().is_some_and(|c| {
                matches!(c.kind, CauseKind::Connect | CauseKind::Broken)
                    && !crate::tls::is_tls_message(&c.message)
            });
            if bare_transport && tls_cause.is_some() {
                last = tls_cause;
            }
            return Err(give_up(
                started,
                last,
                tried,
                reached_member,
                may_have_applied,
            ));
        }
        let Some(target) = registry.pick(spec.route, &round) else {
            let pause = backoff.next_pause().min(deadline - now);
            tracing::debug!(op = spec.op, pause = %human_duration(pause), "every endpoint failed this round; backing off");
            tokio::time::sleep(pause).await;
            round.clear();
            continue;
        };
        round.insert(target);
        let (channel, endpoint) = match registry.channel(target) {
            Ok(pair) => pair,
            Err((endpoint, message)) => {
                // No channel can be made for this address (TLS cannot be set up for it):
                // nothing was sent.
                tracing::debug!(op = spec.op, endpoint = %endpoint, cause = %message, "no channel");
                if !tried.contains(&endpoint) {
                    tried.push(endpoint.clone());
                }
                registry.on_failure(target, CauseKind::Connect, None);
                attempts += 1;
                last = Some(Cause {
                    endpoint,
                    kind: CauseKind::Connect,
                    code: tonic::Code::Unavailable,
                    message,
                });
                continue;
            }
        };
        if !tried.contains(&endpoint) {
            tried.push(endpoint.clone());
        }
        let budget = config.request_timeout.min(deadline - now);
        attempts += 1;

        let (verdict, hint): (Verdict, Option<LeaderHint>) = match tokio::time::timeout(
            budget,
            attempt(channel, budget),
        )
        .await
        {
            Ok(Ok(response)) => {
                let message = response.into_inner();
                if let Err(e) = registry.check_cluster(target, message.header()) {
                    // A member of another cluster: its answer is no answer for this client.
                    registry.on_failure(target, CauseKind::Refused, None);
                    tracing::warn!(op = spec.op, endpoint = %endpoint, error = %e, "refused an answer from another cluster");
                    return Err(e);
                }
                registry.on_success(target, message.header());
                if attempts > 1 {
                    tracing::debug!(op = spec.op, endpoint = %endpoint, attempts, "succeeded after retries");
                }
                return Ok((message, endpoint));
            }
            Ok(Err(status)) => (classify(&endpoint, &status), leader_hint(&status)),
            Err(_elapsed) => (
                Verdict::Transient(Cause {
                    endpoint: endpoint.clone(),
                    kind: CauseKind::TimedOut,
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("no answer within {}", human_duration(budget)),
                }),
                None,
            ),
        };

        let cause = match verdict {
            Verdict::Final(error) => {
                tracing::debug!(op = spec.op, endpoint = %endpoint, %error, "final error");
                return Err(error);
            }
            Verdict::Transient(cause) => annotate(cause, registry.tls_mode()),
        };
        tracing::debug!(
            op = spec.op,
            endpoint = %endpoint,
            attempt = attempts,
            kind = ?cause.kind,
            cause = %cause.message,
            hint = ?hint,
            "attempt failed"
        );
        let refused_with_hint = cause.kind == CauseKind::Refused && hint.is_some();
        if cause.kind == CauseKind::OutcomeUnknown && hint.is_some() && !config.follow_leader {
            // Redirects are off, so the call ends here; but this attempt may have been applied
            // (a forwarded write whose answer was lost), which "not the leader" would deny.
            registry.on_failure(target, cause.kind, hint.as_ref());
            return Err(Error::Unavailable {
                endpoints: tried,
                last_cause: cause,
                reached_member: true,
                may_have_applied: spec.safety != Safety::Read,
            });
        }
        if refused_with_hint && !config.follow_leader {
            registry.on_failure(target, cause.kind, hint.as_ref());
            if spec.safety == Safety::Write && maybe_delivered {
                // This refusal did nothing, but an earlier attempt of this write may have:
                // "not the leader" alone would suggest it is safe to send it elsewhere.
                return Err(Error::Unavailable {
                    endpoints: tried,
                    last_cause: cause,
                    reached_member: true,
                    may_have_applied: true,
                });
            }
            return Err(Error::NotLeader {
                endpoint,
                leader: hint,
            });
        }
        if cause.kind != CauseKind::Connect {
            reached_member = true;
            maybe_delivered = true;
        }
        if spec.safety == Safety::Mutation && cause.kind != CauseKind::Connect && !refused_with_hint
        {
            registry.on_failure(target, cause.kind, hint.as_ref());
            return Err(match cause.kind {
                CauseKind::Broken => Error::Transport {
                    endpoint,
                    message: cause.message,
                },
                CauseKind::TimedOut => Error::Timeout {
                    after: started.elapsed(),
                    last_cause: Some(cause),
                    may_have_applied: true,
                },
                _ => Error::Unavailable {
                    endpoints: tried,
                    last_cause: cause,
                    reached_member: true,
                    may_have_applied: true,
                },
            });
        }
        // A hint makes the hinted endpoint the known leader, which `pick` tries next (unless
        // it already failed in this round or is cooling down after a failed connect).
        registry.on_failure(target, cause.kind, hint.as_ref());
        if crate::tls::is_tls_message(&cause.message) {
            tls_cause = Some(cause.clone());
        }
        last = Some(cause);
    }
}

fn give_up(
    started: Instant,
    last: Option<Cause>,
    tried: Vec<String>,
    reached_member: bool,
    may_have_applied: bool,
) -> Error {
    match last {
        Some(cause) if cause.kind != CauseKind::TimedOut => Error::Unavailable {
            endpoints: tried,
            last_cause: cause,
            reached_member,
            may_have_applied,
        },
        last => Error::Timeout {
            after: started.elapsed(),
            last_cause: last,
            may_have_applied,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let caps = [100, 200, 400, 800, 1000, 1000];
        for cap in caps {
            let p = b.next_pause();
            let cap = Duration::from_millis(cap);
            assert!(
                p >= cap / 2 && p <= cap,
                "{p:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        // Many rounds never overflow.
        for _ in 0..100 {
            assert!(b.next_pause() <= Duration::from_millis(1000));
        }
    }
}
