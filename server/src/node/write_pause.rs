//! Holding new writes while leadership moves.
//!
//! A leader that hands leadership over stops taking new writes first: appends would renew the
//! followers' lease and keep the target a few entries behind (see [`super::leadership`]). More
//! than one hand-off can overlap on one leader (kv-0 asking for leadership back while the
//! leader is leaving on SIGTERM, or two transfer requests), so pauses are **counted**: writes
//! flow again only when the last pause ends, not when the first one does.

use std::time::Duration;

use tokio::sync::watch;

/// The gate new writes pass on this member.
pub struct WriteGate {
    /// How many pauses are alive.
    pauses: watch::Sender<usize>,
}

impl Default for WriteGate {
    fn default() -> Self {
        Self {
            pauses: watch::Sender::new(0),
        }
    }
}

impl WriteGate {
    /// Holds new writes until the returned pause (and every other) is dropped.
    pub fn pause(&self) -> WritePause<'_> {
        self.pauses.send_modify(|n| *n += 1);
        WritePause { gate: self }
    }

    /// True while at least one pause is alive.
    pub fn is_paused(&self) -> bool {
        *self.pauses.borrow() > 0
    }

    /// Waits until no pause is alive, or `timeout` passed (then lets the write through: it
    /// goes to whoever leads by then, through the usual forwarding).
    pub async fn wait_open(&self, timeout: Duration) {
        let mut pauses = self.pauses.subscribe();
        let _ = tokio::time::timeout(timeout, pauses.wait_for(|n| *n == 0)).await;
    }
}

/// While alive, new writes on this member wait. Dropping it lets them through once no other
/// pause is alive.
pub struct WritePause<'a> {
    gate: &'a WriteGate,
}

impl Drop for WritePause<'_> {
    fn drop(&mut self) {
        self.gate.pauses.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overlapping_pauses_hold_writes_until_the_last_one_ends() {
        let gate = WriteGate::default();
        assert!(!gate.is_paused());
        let first = gate.pause();
        let second = gate.pause();
        drop(first);
        assert!(
            gate.is_paused(),
            "the first transfer ended while the second still runs: writes must stay paused"
        );
        let waited = tokio::time::timeout(
            Duration::from_millis(200),
            gate.wait_open(Duration::from_secs(60)),
        )
        .await;
        assert!(waited.is_err(), "a write got through a live pause");
        drop(second);
        assert!(!gate.is_paused());
        tokio::time::timeout(
            Duration::from_secs(5),
            gate.wait_open(Duration::from_secs(60)),
        )
        .await
        .expect("writes flow once every pause ended");
        // The gate is reusable.
        let third = gate.pause();
        assert!(gate.is_paused());
        drop(third);
        assert!(!gate.is_paused());
    }
}
