//! Command line. The names, flags and JSON fields are a contract: `bench/compare-etcd.sh` and CI
//! rely on them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::ArgPredicate;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::workload::Workload;

/// Closed-loop load generator for kvset and etcd: C requests in flight for a fixed duration after
/// a warm-up; reports ops/s, p50/p99/p99.9 latency and the CPU the server processes used.
///
/// Example: kvset-bench --target kvset --endpoints 127.0.0.1:7379,127.0.0.1:7380,127.0.0.1:7381
/// --workload put --concurrency 64 --duration 10s --output json
#[derive(Parser, Debug)]
#[command(name = "kvset-bench", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the markdown comparison table (kvset/etcd ratios per workload and concurrency) of
    /// results written with `--output json`, one JSON object per line.
    Table(TableArgs),
    /// Draw SVG charts of results written with `--output json`: for every workload,
    /// `<workload>-throughput.svg` (ops/s) and `<workload>-p99.svg` (p99 latency, ms) against
    /// concurrency, one line per system through the median of repeated runs.
    Chart(ChartArgs),
}

#[derive(Args, Debug)]
pub struct ChartArgs {
    /// A file of JSON lines (repeat for several; their rows are pooled).
    #[arg(long = "input", value_name = "FILE", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the SVG files (created if missing; files of the same name are replaced).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct TableArgs {
    /// Files of JSON lines (`-` for stdin).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// The system under load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    Kvset,
    Etcd,
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Kvset => "kvset",
            TargetKind::Etcd => "etcd",
        })
    }
}

/// How kvset is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvsetClientKind {
    /// Generated `kvset_proto` gRPC clients, one channel per endpoint (what etcd gets too).
    Raw,
    /// The `kvset_client::Client` SDK (leader following, retries, exactly-once sessions).
    Sdk,
}

impl KvsetClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KvsetClientKind::Raw => "raw",
            KvsetClientKind::Sdk => "sdk",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One human-readable line.
    Text,
    /// One JSON object on stdout (progress goes to stderr).
    Json,
}

/// When to load the keyspace before a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preload {
    /// For the workloads that read (everything but `put`), unless the sentinel key says this
    /// keyspace (same key count and value size) is already loaded.
    Auto,
    /// Always load first, whatever the workload.
    Always,
    /// Never.
    Never,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The system under load.
    #[arg(long, value_enum, default_value_t = TargetKind::Kvset)]
    pub target: TargetKind,
    /// Comma-separated client endpoints (host:port) of every member. Default: kvset-server
    /// local's (127.0.0.1:7379-7381) for kvset, 127.0.0.1:2379 for etcd.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// What each request does.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Requests in flight (closed loop: one worker per request).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// `watch` only: watchers of the prefix, spread round-robin over the members (the writers
    /// are `--concurrency`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub watchers: u64,
    /// `lease-keepalive` only: leases granted before the run and renewed round-robin during it
    /// (revoked at the end).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub leases: u64,
    /// How long to measure (`10s`, `500ms`, `1m`, or seconds). With --ops, the longest the
    /// measured part may take (default then 1h): the run ends at whichever comes first.
    #[arg(
        long,
        default_value = "10s",
        default_value_if("ops", ArgPredicate::IsPresent, "1h"),
        value_parser = parse_duration
    )]
    pub duration: Duration,
    /// Stop after this many requests in total, counted over every worker from the end of the
    /// warm-up (failed requests included, warm-up requests not), instead of after --duration.
    /// Closed-loop KV workloads only (not `watch` or `lease-keepalive`). With --warmup 0 and
    /// the `put` workload it writes exactly this many times (what `bench/footprint.sh` needs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,
    /// Load before measuring, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// `text` (one line) or `json` (one object).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Load the keyspace before running.
    #[arg(long, value_enum, default_value_t = Preload::Auto)]
    pub preload: Preload,
    /// Keys in the keyspace (each 16 bytes: `bench/0000000042`).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=9_999_999_999))]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(32..=1_048_576))]
    pub value_size: u64,
    /// Server process ids whose CPU time to measure (comma-separated). Default: the processes
    /// listening on the endpoints' ports, found through /proc/net/tcp and /proc/<pid>/fd.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// kvset only: raw gRPC clients or the SDK.
    #[arg(long, value_enum, default_value_t = KvsetClientKind::Raw)]
    pub kvset_client: KvsetClientKind,
    /// kvset raw client only: send a RequestId with every write (exactly-once, as the SDK does);
    /// `false` measures the server without its dedup bookkeeping.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub request_ids: bool,
    /// Deadline of one request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// TCP + HTTP/2 connect timeout per endpoint.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How long to wait for the cluster to have a leader and every endpoint to answer.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// Fail (exit 1) when more than this fraction of requests failed.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_rate: f64,
    /// Random seed (default: random); each worker derives its own.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Free text copied into the JSON (`label`), e.g. a server setting under test.
    #[arg(long)]
    pub label: Option<String>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

impl RunArgs {
    /// The endpoints, or the target's default ones.
    pub fn endpoints(&self) -> Vec<String> {
        let given: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if !given.is_empty() {
            return given;
        }
        match self.target {
            TargetKind::Kvset => kvset_client::DEFAULT_ENDPOINTS
                .split(',')
                .map(str::to_string)
                .collect(),
            TargetKind::Etcd => vec!["127.0.0.1:2379".to_string()],
        }
    }
}

/// `10s`, `500ms`, `1.5s`, `2m`, `1h`, or a bare number of seconds: the syntax of every kvset
/// command line ([`kvset_client::duration::parse`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    kvset_client::duration::parse(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn the_documented_command_line_parses() {
        let cli = Cli::try_parse_from([
            "kvset-bench",
            "--target",
            "etcd",
            "--endpoints",
            "127.0.0.1:2379,127.0.0.1:2380",
            "--workload",
            "get-stale",
            "--concurrency",
            "16",
            "--duration",
            "3s",
            "--warmup",
            "1s",
            "--output",
            "json",
        ])
        .unwrap();
        let run = cli.run;
        assert_eq!(run.target, TargetKind::Etcd);
        assert_eq!(run.workload, Workload::GetStale);
        assert_eq!(run.concurrency, 16);
        assert_eq!(run.endpoints().len(), 2);
        assert_eq!(run.output, OutputFormat::Json);
        assert_eq!(run.warmup, Duration::from_secs(1));

        let defaults = Cli::try_parse_from(["kvset-bench"]).unwrap().run;
        assert_eq!(defaults.endpoints().len(), 3);
        assert_eq!(defaults.keys, 100_000);
        assert_eq!(defaults.value_size, 128);
    }

    #[test]
    fn ops_bounds_the_run_and_lengthens_the_default_duration() {
        let run = Cli::try_parse_from(["kvset-bench", "--ops", "5000"])
            .unwrap()
            .run;
        assert_eq!(run.ops, Some(5000));
        assert_eq!(run.duration, Duration::from_secs(3600));
        let run = Cli::try_parse_from(["kvset-bench", "--ops", "5000", "--duration", "30s"])
            .unwrap()
            .run;
        assert_eq!(run.ops, Some(5000));
        assert_eq!(run.duration, Duration::from_secs(30));
        let run = Cli::try_parse_from(["kvset-bench"]).unwrap().run;
        assert_eq!(run.ops, None);
        assert_eq!(run.duration, Duration::from_secs(10));
        assert!(Cli::try_parse_from(["kvset-bench", "--ops", "0"]).is_err());
        assert!(Cli::try_parse_from(["kvset-bench", "--ops", "many"]).is_err());
    }

    #[test]
    fn table_is_a_subcommand() {
        let cli = Cli::try_parse_from(["kvset-bench", "table", "a.jsonl", "b.jsonl"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Table(t)) if t.files.len() == 2));
    }

    #[test]
    fn chart_is_a_subcommand_with_repeated_inputs() {
        let cli = Cli::try_parse_from([
            "kvset-bench",
            "chart",
            "--input",
            "a.jsonl",
            "--input",
            "b.jsonl",
            "--out-dir",
            "docs/bench",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Chart(c)) => {
                assert_eq!(
                    c.inputs,
                    [PathBuf::from("a.jsonl"), PathBuf::from("b.jsonl")]
                );
                assert_eq!(c.out_dir, PathBuf::from("docs/bench"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["kvset-bench", "chart", "--out-dir", "d"]).is_err());
        assert!(Cli::try_parse_from(["kvset-bench", "chart", "--input", "a.jsonl"]).is_err());
    }
}
