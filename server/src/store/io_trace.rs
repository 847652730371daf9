//! A record of the file-system operations whose order matters for crash safety, for unit tests.
//!
//! What a power cut keeps depends on the order of unlinks, truncations and fsyncs, and that
//! order cannot be observed by reading files back afterwards. So the store reports those
//! operations here, and a test runs code inside [`capture`] and checks the sequence (for
//! example: an unlinked segment's directory is fsynced before the next file is cut). Outside
//! `cargo test` of this crate [`record`] is an empty inline function and its closure is never
//! called, so production builds pay nothing.

use std::path::PathBuf;

/// One traced operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Op {
    /// `fsync`/`fdatasync` of a file or a directory.
    Fsync(PathBuf),
    /// `unlink` of a file.
    Remove(PathBuf),
    /// A file cut to a length (`ftruncate`).
    SetLen(PathBuf, u64),
}

/// What a test runs just before a traced operation happens (to play a concurrent actor).
#[cfg(test)]
type Hook = Box<dyn FnMut(&Op)>;

#[cfg(test)]
thread_local! {
    static TRACE: std::cell::RefCell<Option<Vec<Op>>> = const { std::cell::RefCell::new(None) };
    static HOOK: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
}

/// Records `op()` when the current thread runs inside [`capture`], after running the hook of
/// [`capture_with`] on it. Called just before the operation is done.
#[cfg(test)]
pub(crate) fn record(op: impl FnOnce() -> Op) {
    let tracing = TRACE.with(|t| t.borrow().is_some());
    if !tracing {
        return;
    }
    let op = op();
    HOOK.with(|h| {
        if let Some(hook) = h.borrow_mut().as_mut() {
            hook(&op);
        }
    });
    TRACE.with(|t| {
        if let Some(ops) = t.borrow_mut().as_mut() {
            ops.push(op);
        }
    });
}

/// Records nothing outside tests.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn record(_op: impl FnOnce() -> Op) {}

/// Runs `f` and returns what it returned with the operations it did on this thread.
#[cfg(test)]
pub(crate) fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<Op>) {
    capture_with(|_| {}, f)
}

/// [`capture`], running `hook` just before each traced operation (for example to delete the
/// file that is about to be fsynced, as a concurrent sled thread might).
#[cfg(test)]
pub(crate) fn capture_with<T>(
    hook: impl FnMut(&Op) + 'static,
    f: impl FnOnce() -> T,
) -> (T, Vec<Op>) {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    let out = f();
    HOOK.with(|h| h.borrow_mut().take());
    let ops = TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    (out, ops)
}
