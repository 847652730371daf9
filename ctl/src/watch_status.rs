//! `kvsetctl status --watch`: the member table, redrawn every `--interval` until interrupted
//! (or `--count` frames), so that a user can watch leadership move — `kubectl delete pod kv-0`,
//! a rolling update, a scale — and kv-0 take it back.
//!
//! - Table output: each frame is a header line (`Every 1s: kvsetctl status    12:03:04 UTC`)
//!   and the table of `kvsetctl status`. On a terminal the screen is cleared before each frame
//!   (like `watch(1)`); into a pipe or file the frames follow each other, separated by a blank
//!   line, so the output can be read back.
//! - `-o json`: one compact JSON object per frame and line (JSON lines), the `status -o json`
//!   object plus `"time_unix_ms"`, for scripts (`| jq`).
//!
//! Frames are written as they are made; the clock is a parameter so tests can fix it. An
//! unreachable cluster is a frame like any other (every member `unknown`), not the end of the
//! watch: the point is to see it come back.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvset_client::Client;
use serde_json::Value;

use crate::output::{render_status, status_json};
use crate::OutputFormat;

/// What the watch does.
pub struct WatchOptions {
    /// Time between the starts of two frames.
    pub interval: Duration,
    /// Stop after this many frames (None: until `stop` resolves).
    pub count: Option<u64>,
    pub format: OutputFormat,
    /// Clear the screen before each table frame (stdout is a terminal).
    pub clear: bool,
}

/// `HH:MM:SS UTC` of `t`.
pub fn clock_text(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `1s`, `2s`, `500ms`: the interval as it was most likely written.
pub fn format_interval(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// One frame of the watch, as text.
pub fn frame(status: &kvset_client::ClusterStatus, opts: &WatchOptions, now: SystemTime) -> String {
    match opts.format {
        OutputFormat::Json => {
            let mut v = status_json(status);
            let ms = now
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            if let Value::Object(map) = &mut v {
                map.insert("time_unix_ms".into(), ms.into());
            }
            format!("{v}\n")
        }
        OutputFormat::Table => {
            let interval = format_interval(opts.interval);
            format!(
                "Every {interval}: kvsetctl status    {}\n\n{}",
                clock_text(now),
                render_status(status, OutputFormat::Table)
            )
        }
    }
}

/// Runs the watch: a frame now, then one every `interval`, until `count` frames were written
/// or `stop` resolves. Returns how many frames were written.
pub async fn watch(
    client: &Client,
    opts: &WatchOptions,
    out: &mut dyn Write,
    now: &dyn Fn() -> SystemTime,
    stop: impl Future<Output = ()>,
) -> std::io::Result<u64> {
    tokio::pin!(stop);
    let mut frames = 0u64;
    loop {
        let started = tokio::time::Instant::now();
        let status = tokio::select! {
            s = client.status_all() => s,
            _ = &mut stop => return Ok(frames),
        };
        let text = frame(&status, opts, now());
        if opts.clear && matches!(opts.format, OutputFormat::Table) {
            // Cursor home, clear the screen.
            out.write_all(b"\x1b[H\x1b[2J")?;
        } else if frames > 0 && matches!(opts.format, OutputFormat::Table) {
            out.write_all(b"\n")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        frames += 1;
        if opts.count.is_some_and(|n| frames >= n) {
            return Ok(frames);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(started + opts.interval) => {}
            _ = &mut stop => return Ok(frames),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_utc_time_of_day() {
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 13 + 60 * 5 + 9);
        assert_eq!(clock_text(t), "13:05:09 UTC");
        assert_eq!(format_interval(Duration::from_secs(1)), "1s");
        assert_eq!(format_interval(Duration::from_millis(250)), "250ms");
    }
}
