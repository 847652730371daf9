//! One JSON object per line, appended by concurrent tasks and read back by the checks.
//!
//! The coordination workloads (watchers, lock clients, lease keepers) each write their own
//! evidence file next to `history.jsonl` (`watch.jsonl`, `locks.jsonl`, `leases.jsonl`; see
//! docs/CHAOS.md). They share this writer so that every file has the same properties: one
//! record per line, lines in the order they were recorded, each stamped with `ms` since the log
//! was opened, and write errors kept (the first one is returned by [`JsonlLog::flush`]) rather
//! than interrupting the run. The checks read the file back with [`read_jsonl`], so that a run
//! and a later `kvset-chaos check` of its directory judge exactly the same bytes.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why an evidence file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A line is not a record of the expected shape.
    #[error("{path}, line {line}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
}

/// An append-only JSON Lines file shared by tasks (cheap to clone).
#[derive(Clone)]
pub struct JsonlLog {
    inner: Arc<Mutex<Inner>>,
    origin: Instant,
}

struct Inner {
    sink: BufWriter<File>,
    error: Option<io::Error>,
}

impl JsonlLog {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> io::Result<JsonlLog> {
        Ok(JsonlLog {
            inner: Arc::new(Mutex::new(Inner {
                sink: BufWriter::new(File::create(path)?),
                error: None,
            })),
            origin: Instant::now(),
        })
    }

    /// Milliseconds since the log was opened (the `ms` stamps of its records).
    pub fn ms(&self) -> f64 {
        self.ms_at(Instant::now())
    }

    /// Milliseconds from the log's opening to `t` (0 before it).
    pub fn ms_at(&self, t: Instant) -> f64 {
        (t.saturating_duration_since(self.origin).as_secs_f64() * 1e3 * 1000.0).round() / 1000.0
    }

    /// Appends one record as one line.
    pub fn append<T: Serialize>(&self, record: &T) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.error.is_some() {
            return;
        }
        let result = serde_json::to_writer(&mut inner.sink, record)
            .map_err(io::Error::other)
            .and_then(|()| inner.sink.write_all(b"\n"));
        if let Err(e) = result {
            inner.error = Some(e);
        }
    }

    /// Flushes; returns the first write error met so far.
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        inner.sink.flush()
    }
}

impl std::fmt::Debug for JsonlLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlLog").finish_non_exhaustive()
    }
}

/// Reads every record of `path` (blank lines skipped).
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, JsonlError> {
    let io_err = |source| JsonlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_err)?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|source| JsonlError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

/// Parses records from text (the tests' planted histories).
pub fn parse_jsonl<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}
