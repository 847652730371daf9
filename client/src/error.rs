//! Typed errors, and the classification of one failed attempt.
//!
//! kvset reports errors as gRPC status codes (see `proto/kvset/v1/kvset.proto`). The SDK turns
//! every failure into one [`Error`] variant whose message says what to do next; callers match
//! on the variant, humans read the message.
//!
//! Two layers meet here:
//!
//! - **One attempt** fails with a [`tonic::Status`]. [`classify`] decides whether that failure is
//!   *final* (the answer will not change if asked again: `INVALID_ARGUMENT`,
//!   `FAILED_PRECONDITION`, `NOT_FOUND`, an unknown server error) or *transient* (no leader
//!   right now, connection refused, no answer in time). A transient failure becomes a [`Cause`],
//!   which also records *how far the request got* ([`CauseKind`]): a request that never left the
//!   client cannot have been applied, one that timed out may have been.
//! - **The whole call** ends, after the retry loop gave up, with [`Error::Unavailable`] or
//!   [`Error::Timeout`] carrying the last cause, and with `may_have_applied` set when a write
//!   could have been applied by an attempt whose answer was lost.
//!
//! A failed compare in a transaction is not an error: it is the `succeeded: false` result of the
//! transaction (and `Ok(false)` from [`crate::Client::cas`]).

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::endpoint::LeaderHint;

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a kvset call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a server limit (key size, value size, range limit,
    /// operations per transaction), or the SDK refused it before sending. Nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A cluster operation is not allowed in the current membership (for example a removal that
    /// would break quorum). Nothing was changed.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),

    /// The cluster's authorization policy does not let this client's identity do this (gRPC
    /// `PERMISSION_DENIED`). The message names the identity, the permission missing and what
    /// its roles grant. Nothing was read or written; retrying will not help until the policy
    /// changes or another identity is used.
    #[error("{0}")]
    PermissionDenied(String),

    /// The member could not establish who this client is (gRPC `UNAUTHENTICATED`): a bearer
    /// token that is not one of the cluster's, or a malformed one. Nothing was done. Check the
    /// token ([`crate::ClientBuilder::token`], `--token`, `KVSET_TOKEN`).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// A cluster operation named a member that does not exist, or a lease operation (or a put
    /// with a lease) named a lease that does not exist (expired or revoked). (A missing key is
    /// not an error: [`crate::Client::get`] returns `Ok(None)`.)
    #[error("not found: {0}")]
    NotFound(String),

    /// The revision a read asked for, or a watch needed next, was compacted: the history at and
    /// below `compact_revision` is forgotten. Read again without a revision (or at one above
    /// `compact_revision`) and start a new watch from that read's revision + 1. A watch stream
    /// ends with this error when the server cancels its watcher for compaction.
    #[error(
        "the history at and below revision {compact_revision} is compacted (forgotten): read at \
         a newer revision (or without one), and start watches from that read's revision + 1"
    )]
    Compacted {
        /// The compact revision the server named: history at and below it is gone.
        compact_revision: i64,
    },

    /// A read or watch asked for a revision the server cannot serve for another reason than
    /// compaction: a revision that does not exist yet (above the current revision). The
    /// message is the server's. Nothing was read.
    #[error("revision out of range: {0}")]
    RevisionOutOfRange(String),

    /// A `NOSPACE` alarm is active: a member's store passed its space quota, and the cluster
    /// refuses requests that grow the data (puts, transactions with a put, adding a member) with
    /// `RESOURCE_EXHAUSTED` until an operator frees space and runs `kvsetctl alarm disarm`.
    /// Nothing was written; reads and deletes still work. The message names the member, its
    /// usage and quota, and the way out.
    #[error("no space: {0}")]
    NoSpace(String),

    /// No member could serve the call before the retry deadline: members were unreachable or
    /// answered `UNAVAILABLE` (no leader known, shutting down).
    #[error("{}", unavailable_message(endpoints, last_cause, *reached_member, *may_have_applied))]
    Unavailable {
        /// Every endpoint the call tried, in the order first tried.
        endpoints: Vec<String>,
        /// Why the last attempt failed.
        last_cause: Cause,
        /// True when at least one member answered (as opposed to none being reachable at all).
        reached_member: bool,
        /// True for a write when an attempt may have reached the leader: the write may or may
        /// not have been applied. Always false for reads.
        may_have_applied: bool,
    },

    /// The call did not complete within its deadline; the last attempt got no answer in time.
    #[error("{}", timeout_message(*after, last_cause.as_ref(), *may_have_applied))]
    Timeout {
        /// How long the call ran before giving up.
        after: Duration,
        /// Why the last attempt failed, when an attempt was made.
        last_cause: Option<Cause>,
        /// True for a write that may or may not have been applied.
        may_have_applied: bool,
    },

    /// The member is not the leader and the client was built with redirects off
    /// ([`crate::ClientBuilder::follow_leader`]`(false)`).
    #[error("{}", not_leader_message(endpoint, leader.as_ref()))]
    NotLeader {
        /// The endpoint that refused.
        endpoint: String,
        /// The leader it named, if it knows one.
        leader: Option<LeaderHint>,
    },

    /// The connection broke while a non-retryable request (a membership change) was in flight.
    /// The change may or may not have been applied.
    #[error("transport error at {endpoint}: {message}; the change may or may not have been applied, check `kvsetctl members list`")]
    Transport {
        /// The endpoint the request went to.
        endpoint: String,
        /// What went wrong.
        message: String,
    },

    /// An endpoint string could not be parsed.
    #[error("invalid endpoint {input:?}: {reason}")]
    InvalidEndpoint {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The member answered with an error the SDK does not map to a more specific variant.
    #[error("{}", server_message(endpoint, *code, message))]
    Server {
        /// The endpoint that answered.
        endpoint: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },

    /// The member's answer broke the API contract (for example a pagination cursor that does not
    /// advance, or a snapshot stream whose checksum does not match its data). Indicates a server
    /// bug, a version mismatch or a damaged transfer.
    #[error("unexpected answer from {endpoint}: {message}")]
    Protocol {
        /// The endpoint that answered.
        endpoint: String,
        /// What was wrong with the answer.
        message: String,
    },

    /// The TLS settings cannot be used: a CA, certificate or key file is missing or holds no
    /// usable PEM, or the endpoints and the TLS settings contradict each other. Detected when
    /// the client is built.
    #[error("invalid TLS configuration: {0}")]
    TlsConfig(String),

    /// A backup file cannot be read, or is not a valid kvset backup: bad magic bytes, a newer
    /// format, a damaged header, or data whose length or SHA-256 does not match the header.
    #[error("{path}: {message}")]
    Backup {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// A member answered as part of another cluster than the one this client first talked to
    /// (its response header carries a different cluster id): two clusters answer behind the
    /// same endpoints, e.g. a kv-0 that lost its volume and started a cluster of its own. The
    /// answer was refused; a write sent there was not applied to the expected cluster.
    #[error(
        "{endpoint} answered as a member of cluster {got}, but this client talks to cluster \
         {expected}; refusing its answer. Two clusters answer behind these endpoints: check \
         `kvsetctl status` on each member and remove the stray one"
    )]
    ClusterMismatch {
        /// The cluster id of the first answer this client got.
        expected: String,
        /// The cluster id this member answered with.
        got: String,
        /// The endpoint that answered.
        endpoint: String,
    },

    /// A local file could not be written (a backup being saved). Nothing was left behind.
    #[error("cannot write {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        message: String,
    },
}

impl Error {
    /// True when a write that failed with this error may nevertheless have been applied: the
    /// caller must not assume either outcome (read the key back, or make the next write
    /// conditional with a compare). False means the write was not applied: it was refused
    /// (`InvalidArgument`, `FailedPrecondition`, `NotFound`, `NotLeader`) or never reached a
    /// member. Meaningless for reads.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::Unavailable {
                may_have_applied, ..
            }
            | Error::Timeout {
                may_have_applied, ..
            } => *may_have_applied,
            // An unexpected server error or answer does not say how far the write got.
            Error::Transport { .. } | Error::Server { .. } | Error::Protocol { .. } => true,
            _ => false,
        }
    }

    /// True for [`Error::Unavailable`] and [`Error::Timeout`]: the cluster could not answer in
    /// time, and asking again later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    /// True for errors caused by the request itself (bad argument or endpoint): retrying the
    /// same request cannot help.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidArgument(_)
                | Error::InvalidEndpoint { .. }
                | Error::TlsConfig(_)
                | Error::Backup { .. }
                | Error::RevisionOutOfRange(_)
        )
    }
}

/// How far a failed attempt got, which decides whether a write may have been applied and
/// whether a non-idempotent request may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseKind {
    /// The request was never sent: no connection could be made (refused, DNS failure, connect
    /// timeout), the TLS handshake failed, or the connection closed while the request was
    /// still queued on it.
    Connect,
    /// A member answered and refused: `UNAVAILABLE` (no leader, shutting down, not the leader),
    /// `ABORTED` or `RESOURCE_EXHAUSTED`.
    Refused,
    /// The attempt got no answer in time (the client's timer or `DEADLINE_EXCEEDED`).
    TimedOut,
    /// The connection broke while the request was in flight.
    Broken,
    /// A member took the request and cannot say whether it was applied: it forwarded the write
    /// to the leader and lost the leader's answer (`UNAVAILABLE` with `kvset-outcome: unknown`).
    OutcomeUnknown,
}

/// Why one attempt failed; kept by the retry loop and reported when it gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The endpoint (`host:port`) the attempt went to.
    pub endpoint: String,
    /// How far the attempt got.
    pub kind: CauseKind,
    /// The gRPC code of the failure.
    pub code: tonic::Code,
    /// A short human-readable description ("connection refused", the server's message, …).
    pub message: String,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.endpoint, self.message)
    }
}

fn unavailable_message(
    endpoints: &[String],
    last: &Cause,
    reached_member: bool,
    may_have_applied: bool,
) -> String {
    let mut msg = if reached_member
        && (crate::tls::is_tls_message(&last.message) || last.kind == CauseKind::OutcomeUnknown)
    {
        // The message carries its own advice.
        format!(
            "kvset cluster unavailable: last answer from {}: {} (tried {})",
            last.endpoint,
            last.message,
            endpoints.join(", ")
        )
    } else if reached_member {
        format!(
            "kvset cluster unavailable: last answer from {}: {} (tried {}); the cluster may be \
             electing a leader or may have lost quorum, check `kvsetctl status`",
            last.endpoint,
            last.message,
            endpoints.join(", ")
        )
    } else if crate::tls::is_tls_message(&last.message) {
        // The message carries its own advice.
        format!(
            "no kvset member answered at {}: {}",
            endpoints.join(", "),
            last.message
        )
    } else {
        format!(
            "no kvset member answered at {}: {}; is the cluster running? (kvset-server local)",
            endpoints.join(", "),
            last.message
        )
    };
    if may_have_applied {
        msg.push_str("; the write may or may not have been applied");
    }
    msg
}

fn timeout_message(after: Duration, last: Option<&Cause>, may_have_applied: bool) -> String {
    let mut msg = format!("timed out after {}", human_duration(after));
    if let Some(cause) = last {
        msg.push_str(&format!(" (last attempt: {cause})"));
    }
    msg.push_str("; raise the timeout or check `kvsetctl status`");
    if may_have_applied {
        msg.push_str("; the write may or may not have been applied");
    }
    msg
}

fn not_leader_message(endpoint: &str, leader: Option<&LeaderHint>) -> String {
    match leader {
        Some(hint) => {
            format!("{endpoint} is not the leader; the leader is {hint} (redirects are disabled)")
        }
        None => format!("{endpoint} is not the leader and knows no leader right now; retry later"),
    }
}

fn server_message(endpoint: &str, code: tonic::Code, message: &str) -> String {
    match code {
        tonic::Code::Unimplemented if message.is_empty() => {
            format!("{endpoint} does not serve the kvset API; is it a kvset member's client port?")
        }
        tonic::Code::Unimplemented => format!(
            "{endpoint} does not serve the kvset API ({message}); is it a kvset member's client \
             port?"
        ),
        _ => format!("{endpoint} answered {code:?}: {message}"),
    }
}

/// Renders a duration the way people write it: `750ms`, `2s`, `1.5s`.
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// What the retry loop should do with one failed attempt.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Transient: another attempt (here or elsewhere) may succeed.
    Transient(Cause),
    /// Final: report this error.
    Final(Error),
}

/// What a server's RESOURCE_EXHAUSTED message says when a NOSPACE alarm refused the request.
const NOSPACE_MARKER: &str = "NOSPACE alarm";

/// Classifies the failure of one attempt at `endpoint`.
pub(crate) fn classify(endpoint: &str, status: &tonic::Status) -> Verdict {
    use tonic::Code;
    let message = status.message().to_string();
    let cause = |kind: CauseKind, message: String| {
        Verdict::Transient(Cause {
            endpoint: endpoint.to_string(),
            kind,
            code: status.code(),
            message,
        })
    };
    // A status produced by the client's own transport carries the underlying error as its
    // source; a status the server sent has none.
    if let Some(source) = StdError::source(status) {
        // A failed TLS handshake (untrusted certificate, missing client certificate, a
        // plain-text member): the member never read a request, so nothing was sent. It may
        // surface on the first request rather than at connect time (TLS 1.3 reports a refused
        // client certificate after the client's side of the handshake has finished).
        if let Some(message) = crate::tls::describe_tls_failure(source) {
            return cause(CauseKind::Connect, message);
        }
        // hyper cancels the requests still queued on a connection that closes: they were never
        // written, so they cannot have been applied.
        if chain_any(source, |e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
        }) {
            return cause(CauseKind::Connect, CLOSED_BEFORE_SENT.to_string());
        }
        if chain_has::<tonic::ConnectError>(source) {
            return cause(CauseKind::Connect, describe_transport(source, &message));
        }
        return match status.code() {
            Code::DeadlineExceeded | Code::Cancelled if is_timeout(source) => {
                cause(CauseKind::TimedOut, "no answer in time".to_string())
            }
            _ => cause(CauseKind::Broken, describe_transport(source, &message)),
        };
    }
    // A member that forwarded a write and lost the leader's answer says so: unlike a refusal,
    // the write may have been applied.
    let outcome_unknown = status
        .metadata()
        .get(kvset_proto::OUTCOME_METADATA_KEY)
        .is_some_and(|v| v == kvset_proto::OUTCOME_UNKNOWN);
    if outcome_unknown {
        return cause(
            CauseKind::OutcomeUnknown,
            non_empty(message, "the write's outcome is unknown"),
        );
    }
    match status.code() {
        Code::OutOfRange => Verdict::Final(out_of_range(message)),
        Code::InvalidArgument => Verdict::Final(Error::InvalidArgument(message)),
        Code::FailedPrecondition => Verdict::Final(Error::FailedPrecondition(message)),
        Code::NotFound => Verdict::Final(Error::NotFound(message)),
        Code::PermissionDenied => Verdict::Final(Error::PermissionDenied(message)),
        Code::Unauthenticated => Verdict::Final(Error::Unauthenticated(message)),
        // The NOSPACE alarm: final until an operator acts (retrying cannot help).
        Code::ResourceExhausted if message.contains(NOSPACE_MARKER) => {
            Verdict::Final(Error::NoSpace(message))
        }
        Code::Unavailable | Code::Aborted | Code::ResourceExhausted => {
            cause(CauseKind::Refused, non_empty(message, "unavailable"))
        }
        // A tonic server answers CANCELLED ("Timeout expired") when the gRPC deadline passes.
        Code::DeadlineExceeded | Code::Cancelled => {
            cause(CauseKind::TimedOut, non_empty(message, "deadline exceeded"))
        }
        // tonic reports a connection that died mid-request without a source in a few paths;
        // its messages name the transport.
        Code::Unknown | Code::Internal if looks_like_transport(&message) => {
            cause(CauseKind::Broken, message)
        }
        code => Verdict::Final(Error::Server {
            endpoint: endpoint.to_string(),
            code,
            message,
        }),
    }
}

/// The error for an `OUT_OF_RANGE` answer: [`Error::Compacted`] when the message names the
/// compact revision, [`Error::RevisionOutOfRange`] otherwise.
pub(crate) fn out_of_range(message: String) -> Error {
    match compact_revision_in(&message) {
        Some(compact_revision) => Error::Compacted { compact_revision },
        None => Error::RevisionOutOfRange(message),
    }
}

/// The compact revision named in a server message ("... compacted; the compact revision is
/// 42 ..."): the first number after the words "compact revision".
pub(crate) fn compact_revision_in(message: &str) -> Option<i64> {
    const MARKER: &str = "compact revision";
    let lower = message.to_ascii_lowercase();
    let mut rest = &lower[..];
    while let Some(at) = rest.find(MARKER) {
        rest = &rest[at + MARKER.len()..];
        // Allow a few connecting characters: "is 42", ": 42", "= 42", " (42)".
        let tail = rest.trim_start_matches([' ', ':', '=', '(']);
        let tail = tail.strip_prefix("is ").unwrap_or(tail).trim_start();
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<i64>() {
            return Some(n);
        }
    }
    None
}

/// The `kvset-leader` hint of a refusal, when the member set one.
pub(crate) fn leader_hint(status: &tonic::Status) -> Option<LeaderHint> {
    let value = status.metadata().get(kvset_proto::LEADER_METADATA_KEY)?;
    LeaderHint::parse(value.to_str().ok()?)
}

fn non_empty(message: String, fallback: &str) -> String {
    if message.is_empty() {
        fallback.to_string()
    } else {
        message
    }
}

fn looks_like_transport(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "transport error",
        "h2 protocol error",
        "connection",
        "broken pipe",
        "not ready",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

fn chain_has<E: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    chain_any(err, |e| e.is::<E>())
}

fn chain_any(
    err: &(dyn StdError + 'static),
    mut pred: impl FnMut(&(dyn StdError + 'static)) -> bool,
) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if pred(e) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The cause of a request that was still queued when its connection closed.
pub(crate) const CLOSED_BEFORE_SENT: &str = "the connection closed before the request was sent";

/// How the client talks to members, for advice in failure messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plain text.
    Plain,
    /// TLS, presenting a client certificate or not.
    Tls { identity: bool },
}

/// Adds advice to a failed attempt's cause when the likely reason is the TLS setup: a member
/// that closes the connection right after the handshake (it requires a client certificate and
/// got none), or a member whose answer is not plain-text HTTP/2 (it serves TLS).
pub(crate) fn annotate(mut cause: Cause, mode: TlsMode) -> Cause {
    match mode {
        TlsMode::Tls { identity: false } if cause.message == CLOSED_BEFORE_SENT => {
            cause.message = "TLS: the member closed the connection after the handshake, before \
                             the request was sent; a member that requires client certificates \
                             does this when none is presented: pass --cert and --key \
                             (TlsOptions::identity)"
                .to_string();
        }
        // A TLS server answers a plain-text HTTP/2 preface with a TLS record (`0x15 0x03 …` or
        // `0x16 0x03 …`), whose first bytes, read as an HTTP/2 frame header, give a length far
        // above the maximum frame size: that and only that is the TLS sign. Any other HTTP/2
        // error (a reset stream such as "stream no longer needed", a GOAWAY) came from a
        // member that speaks plain-text HTTP/2 fine, and is reported as what it is.
        TlsMode::Plain
            if cause.kind != CauseKind::Refused
                && cause.message.contains("frame with invalid size") =>
        {
            cause.message = format!(
                "TLS? the member's answer is not plain-text HTTP/2 ({}); if the members serve \
                 TLS, pass --cacert with the CA that signed their certificates (TlsOptions)",
                cause.message
            );
        }
        _ => {}
    }
    cause
}

fn is_timeout(err: &(dyn StdError + 'static)) -> bool {
    if chain_has::<tonic::TimeoutExpired>(err) {
        return true;
    }
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// A short description of a transport failure: "connection refused", "dns error: failed to
/// lookup address information: …", "connection reset".
fn describe_transport(err: &(dyn StdError + 'static), status_message: &str) -> String {
    use std::io::ErrorKind;
    let mut io: Option<&std::io::Error> = None;
    let mut innermost = err;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<std::io::Error>() {
            io = Some(found);
        }
        innermost = e;
        cur = e.source();
    }
    if let Some(io) = io {
        let known = match io.kind() {
            ErrorKind::ConnectionRefused => Some("connection refused"),
            ErrorKind::ConnectionReset => Some("connection reset"),
            ErrorKind::ConnectionAborted => Some("connection aborted"),
            ErrorKind::TimedOut => Some("connect timed out"),
            ErrorKind::BrokenPipe => Some("broken pipe"),
            ErrorKind::AddrNotAvailable => Some("address not available"),
            _ => None,
        };
        if let Some(known) = known {
            return known.to_string();
        }
    }
    let inner = innermost.to_string();
    if status_message.is_empty() || inner.contains(status_message) {
        inner
    } else {
        format!("{status_message}: {inner}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statuses_are_classified() {
        let final_err = |s: tonic::Status| match classify("h:1", &s) {
            Verdict::Final(e) => e,
            other => panic!("expected final, got {other:?}"),
        };
        assert!(matches!(
            final_err(tonic::Status::invalid_argument("key too large")),
            Error::InvalidArgument(m) if m == "key too large"
        ));
        assert!(matches!(
            final_err(tonic::Status::failed_precondition("quorum")),
            Error::FailedPrecondition(_)
        ));
        assert!(matches!(
            final_err(tonic::Status::not_found("no member 7")),
            Error::NotFound(_)
        ));
        assert!(matches!(
            final_err(tonic::Status::internal("bug")),
            Error::Server {
                code: tonic::Code::Internal,
                ..
            }
        ));
        match classify("h:1", &tonic::Status::unavailable("no leader")) {
            Verdict::Transient(c) => {
                assert_eq!(c.kind, CauseKind::Refused);
                assert_eq!(c.message, "no leader");
            }
            other => panic!("{other:?}"),
        }
        match classify("h:1", &tonic::Status::deadline_exceeded("")) {
            Verdict::Transient(c) => assert_eq!(c.kind, CauseKind::TimedOut),
            other => panic!("{other:?}"),
        }
        // The NOSPACE alarm is final (only an operator clears it) and says nothing was written.
        let nospace = final_err(tonic::Status::resource_exhausted(
            "write refused: NOSPACE alarm raised by kv-1: its store used 61.2 MiB of a 60.0 MiB \
             quota",
        ));
        assert!(matches!(&nospace, Error::NoSpace(m) if m.contains("kv-1")));
        assert!(!nospace.may_have_applied());
        // Any other RESOURCE_EXHAUSTED stays a transient refusal.
        assert!(matches!(
            classify("h:1", &tonic::Status::resource_exhausted("busy")),
            Verdict::Transient(_)
        ));
    }

    #[test]
    fn out_of_range_names_the_compact_revision_or_not() {
        let final_err = |s: tonic::Status| match classify("h:1", &s) {
            Verdict::Final(e) => e,
            other => panic!("expected final, got {other:?}"),
        };
        let e = final_err(tonic::Status::out_of_range(
            "revision 7 was compacted; the compact revision is 42: read at a newer revision",
        ));
        assert!(
            matches!(
                e,
                Error::Compacted {
                    compact_revision: 42
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("42"), "{e}");
        let e = final_err(tonic::Status::out_of_range(
            "revision 99 is in the future; the current revision is 12",
        ));
        assert!(
            matches!(e, Error::RevisionOutOfRange(ref m) if m.contains("99")),
            "{e:?}"
        );
        assert_eq!(compact_revision_in("Compact revision: 5"), Some(5));
        assert_eq!(compact_revision_in("compact revision (17)"), Some(17));
        assert_eq!(compact_revision_in("no compact revision yet"), None);
        assert_eq!(
            compact_revision_in("compact revision unknown, compact revision is 3"),
            Some(3)
        );
    }

    #[test]
    fn an_unknown_outcome_is_not_a_refusal() {
        let mut s = tonic::Status::unavailable("kv-1 forwarded the write; its answer was lost");
        s.metadata_mut().insert(
            kvset_proto::LEADER_METADATA_KEY,
            "kv-0=127.0.0.1:7379".parse().unwrap(),
        );
        s.metadata_mut().insert(
            kvset_proto::OUTCOME_METADATA_KEY,
            kvset_proto::OUTCOME_UNKNOWN.parse().unwrap(),
        );
        match classify("h:1", &s) {
            Verdict::Transient(c) => assert_eq!(c.kind, CauseKind::OutcomeUnknown),
            other => panic!("{other:?}"),
        }
        assert!(leader_hint(&s).is_some(), "the hint is still there");
        let e = Error::Unavailable {
            endpoints: vec!["h:1".into()],
            last_cause: Cause {
                endpoint: "h:1".into(),
                kind: CauseKind::OutcomeUnknown,
                code: tonic::Code::Unavailable,
                message: s.message().into(),
            },
            reached_member: true,
            may_have_applied: true,
        };
        assert!(!e.to_string().contains("electing a leader"), "{e}");
        assert!(
            e.to_string().contains("may or may not have been applied"),
            "{e}"
        );
    }

    #[test]
    fn hint_is_read_from_metadata() {
        let mut s = tonic::Status::unavailable("not leader");
        s.metadata_mut().insert(
            kvset_proto::LEADER_METADATA_KEY,
            "kv-0=127.0.0.1:7379".parse().unwrap(),
        );
        let hint = leader_hint(&s).unwrap();
        assert_eq!(hint.name, "kv-0");
        assert_eq!(hint.endpoint.as_deref(), Some("127.0.0.1:7379"));
    }

    #[test]
    fn tls_setup_failures_get_advice() {
        let cause = |kind: CauseKind, message: &str| Cause {
            endpoint: "h:1".into(),
            kind,
            code: tonic::Code::Unavailable,
            message: message.into(),
        };
        // TLS without a client certificate, connection closed before the request left.
        let c = annotate(
            cause(CauseKind::Connect, CLOSED_BEFORE_SENT),
            TlsMode::Tls { identity: false },
        );
        assert!(c.message.contains("--cert and --key"), "{}", c.message);
        assert!(crate::tls::is_tls_message(&c.message));
        // With a certificate, or in plain text, that is just a closed connection.
        for mode in [TlsMode::Tls { identity: true }, TlsMode::Plain] {
            let c = annotate(cause(CauseKind::Connect, CLOSED_BEFORE_SENT), mode);
            assert_eq!(c.message, CLOSED_BEFORE_SENT);
        }
        // Plain text that got a TLS record back.
        let garbled = "h2 protocol error: http2 error: connection error detected: frame with \
                       invalid size";
        let c = annotate(cause(CauseKind::Broken, garbled), TlsMode::Plain);
        assert!(c.message.contains("--cacert"), "{}", c.message);
        assert!(c.message.contains(garbled), "{}", c.message);
        let e = Error::Unavailable {
            endpoints: vec!["h:1".into()],
            last_cause: c,
            reached_member: true,
            may_have_applied: false,
        };
        assert!(
            !e.to_string().contains("electing a leader"),
            "the TLS advice replaces the generic one: {e}"
        );
        let c = annotate(
            cause(CauseKind::Broken, garbled),
            TlsMode::Tls { identity: true },
        );
        assert_eq!(c.message, garbled);
        // A genuine HTTP/2 error from a plain-text member (here a reset stream, as a member
        // that stops mid-request sends) is not a TLS problem and keeps its own message.
        let reset =
            "h2 protocol error: http2 error: stream error received: stream no longer needed";
        let c = annotate(cause(CauseKind::Broken, reset), TlsMode::Plain);
        assert_eq!(c.message, reset);
        assert!(!crate::tls::is_tls_message(&c.message));
    }

    #[test]
    fn messages_are_actionable() {
        let cause = Cause {
            endpoint: "127.0.0.1:7380".into(),
            kind: CauseKind::Connect,
            code: tonic::Code::Unavailable,
            message: "connection refused".into(),
        };
        let e = Error::Unavailable {
            endpoints: vec!["127.0.0.1:7379".into(), "127.0.0.1:7380".into()],
            last_cause: cause.clone(),
            reached_member: false,
            may_have_applied: false,
        };
        assert_eq!(
            e.to_string(),
            "no kvset member answered at 127.0.0.1:7379, 127.0.0.1:7380: connection refused; \
             is the cluster running? (kvset-server local)"
        );
        let t = Error::Timeout {
            after: Duration::from_millis(1500),
            last_cause: Some(cause),
            may_have_applied: true,
        };
        assert!(t
            .to_string()
            .starts_with("timed out after 1.5s (last attempt: 127.0.0.1:7380"));
        assert!(t.may_have_applied());
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(2)), "2s");
    }
}
