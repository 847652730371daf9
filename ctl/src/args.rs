//! `kvsetctl`'s command line (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use kvset_client::DEFAULT_ENDPOINTS;

/// Text appended to `kvsetctl --help`.
pub const AFTER_HELP: &str = "\
Keys and values are UTF-8 on the command line. In output, bytes that are not valid UTF-8 are
shown as \\xNN (JSON output adds key_hex / value_hex with the exact bytes).

Exit codes:
  0  success
  1  not found (get of a missing key, unknown member, unknown or expired lease) or
     compare failed (cas, txn)
  2  invalid input: usage error, bad txn JSON, bad TLS files, the server answered
     INVALID_ARGUMENT, a revision above the current one; snapshot inspect: the file is
     not a valid backup (damaged)
  3  unavailable or timed out: no leader, members unreachable, deadline passed;
     health: an endpoint is not SERVING
  4  any other error (snapshot save: a damaged stream, the file cannot be written;
     lock: the lock's lease was lost while CMD ran)
  5  permission denied: the cluster's authorization policy does not let this identity
     do it (PERMISSION_DENIED; see `kvsetctl auth whoami` / `auth check KEY`); nothing
     was written
  6  compacted: the revision asked for (get/range --rev, watch --rev, compact) is at or
     below the compact revision; read again without --rev
  lock NAME -- CMD exits with CMD's exit code once the lock was taken

Environment:
  KVSET_ENDPOINTS  comma-separated endpoints (default 127.0.0.1:7379,127.0.0.1:7380,127.0.0.1:7381)
  KVSET_CACERT     --cacert: CA bundle (PEM) of the members' certificates; turns TLS on
  KVSET_CERT       --cert: client certificate (PEM), when members require one
  KVSET_KEY        --key: the client certificate's private key (PEM)
  KVSET_TOKEN      --token: bearer token for clusters with an authorization policy";

/// Command-line client for kvset: reads and writes keys through the primary, shows the
/// cluster's status and changes its membership.
#[derive(Debug, Clone, Parser)]
#[command(name = "kvsetctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Comma-separated member endpoints: host:port, http://host:port, https://host:port (needs
    /// --cacert), or a DNS name (port 7379)
    #[arg(
        long,
        env = "KVSET_ENDPOINTS",
        default_value = DEFAULT_ENDPOINTS,
        global = true,
        value_name = "LIST"
    )]
    pub endpoints: String,

    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,

    /// Read consistency for get and range: linearizable (via the leader) or stale (local read)
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable, global = true)]
    pub consistency: ConsistencyArg,

    /// Send reads to this member only: a name (kv-1) or host:port
    #[arg(long, global = true, value_name = "MEMBER")]
    pub member: Option<String>,

    /// Deadline for the command, retries included (e.g. 500ms, 5s, 1m)
    #[arg(
        long,
        global = true,
        value_parser = parse_duration,
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub timeout: Duration,

    /// Speak TLS to the members, trusting this CA bundle (PEM) for their certificates
    #[arg(long, env = "KVSET_CACERT", global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM) for members that require one (with --key and --cacert)
    #[arg(
        long,
        env = "KVSET_CERT",
        global = true,
        value_name = "FILE",
        requires_all = ["tls_key", "cacert"]
    )]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert
    // (Its id is not `key`: that is the KEY argument of put, get, del and cas.)
    #[arg(
        id = "tls_key",
        long = "key",
        env = "KVSET_KEY",
        global = true,
        value_name = "FILE",
        requires = "cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Bearer token to identify as (`token:NAME` in the cluster's authorization policy), for
    /// clients that cannot present a TLS client certificate
    #[arg(
        long,
        env = "KVSET_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// The command
    #[command(subcommand)]
    pub command: Command,
}

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text and aligned tables.
    Table,
    /// One JSON document (formats documented in client/README.md).
    Json,
}

/// `--consistency linearizable|stale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// Confirmed with the leader; never stale.
    Linearizable,
    /// Served from the contacted member's state; may be stale.
    Stale,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Set KEY to VALUE
    Put {
        /// The key
        key: String,
        /// The value
        value: String,
        /// Also print the previous value
        #[arg(long)]
        prev_kv: bool,
        /// Attach the key to this lease (from `kvsetctl lease grant`); the key is deleted when
        /// the lease ends
        #[arg(long, value_name = "ID", value_parser = parse_lease_id)]
        lease: Option<i64>,
    },
    /// Print the value of KEY (exit 1 if it does not exist)
    Get {
        /// The key
        key: String,
        /// Read KEY as it was at revision N (exit 6 if N was compacted)
        #[arg(long, value_name = "N", value_parser = parse_revision)]
        rev: Option<i64>,
    },
    /// Delete KEY, every key under the prefix KEY (--prefix), or [KEY, END) (--range-end)
    Del {
        /// The key, the prefix, or the start of the range
        key: String,
        /// Delete every key that starts with KEY
        #[arg(long, conflicts_with = "range_end")]
        prefix: bool,
        /// Delete every key in [KEY, END)
        #[arg(long, value_name = "END")]
        range_end: Option<String>,
        /// Also print the deleted keys
        #[arg(long)]
        prev_kv: bool,
    },
    /// List keys in [START, END) (all keys without arguments) or under --prefix
    Range {
        /// First key (inclusive); omit for the first key
        start: Option<String>,
        /// End key (exclusive); omit for the last key
        end: Option<String>,
        /// List every key that starts with P (instead of START/END)
        #[arg(long, value_name = "P", conflicts_with_all = ["start", "end"])]
        prefix: Option<String>,
        /// Show at most N keys
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Leave values out
        #[arg(long)]
        keys_only: bool,
        /// List the keys as they were at revision N (exit 6 if N was compacted)
        #[arg(long, value_name = "N", value_parser = parse_revision)]
        rev: Option<i64>,
    },
    /// Print the changes to KEY (or every key under the prefix KEY) as they happen.
    ///
    /// Runs until interrupted (Ctrl-C, exit 0) or until N events were printed (--count N).
    /// Survives failovers: the watch resumes on another member from the revision after the
    /// last one printed, so no event is lost or printed twice. Table output: one line per
    /// event, `PUT KEY VALUE` or `DELETE KEY`. With -o json, one JSON object per line:
    /// {"type":"PUT"|"DELETE","key","value","mod_revision","create_revision","version","lease"}
    /// (with --prev-kv also "prev_kv"). Exit 5 when the history the watch needs was compacted.
    Watch {
        /// The key, or the prefix with --prefix
        key: String,
        /// Watch every key that starts with KEY (an empty KEY, "", watches every key)
        #[arg(long)]
        prefix: bool,
        /// Start at revision N (replaying the history from there); default: changes from now
        #[arg(long, value_name = "N", value_parser = parse_revision)]
        rev: Option<i64>,
        /// Also print each key's previous value
        #[arg(long)]
        prev_kv: bool,
        /// Exit after N events
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Grant, revoke, renew and inspect leases (keys that vanish when their lease ends)
    Lease {
        /// The lease command
        #[command(subcommand)]
        command: LeaseCommand,
    },
    /// Run CMD while holding the lock NAME, then release it.
    ///
    /// Waits (first come, first served) until the lock is free, runs CMD with
    /// KVSET_LOCK_KEY and KVSET_LOCK_REV set (the lock key and its create revision, to fence
    /// writes with a txn compare on create_revision), releases the lock when CMD exits and
    /// exits with CMD's exit code. If the lock's lease is lost while CMD runs (the cluster was
    /// unreachable for longer than --ttl), CMD is killed and kvsetctl exits 4.
    Lock {
        /// The lock's name; its keys live under NAME/
        name: String,
        /// The command and its arguments (after --)
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
        /// TTL of the lock's lease in seconds: how long the lock outlives a kvsetctl that
        /// died without releasing it
        #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = parse_ttl)]
        ttl: i64,
    },
    /// Campaign in the election NAME with VALUE, or, without VALUE, observe it.
    ///
    /// With VALUE: waits until elected, prints the leader's value, and holds the leadership
    /// until interrupted (Ctrl-C: resigns, exit 0). Without VALUE: prints the leader's value
    /// each time the leader or its value changes, until interrupted. -o json prints one JSON
    /// key-value object per line.
    Elect {
        /// The election's name; candidates' keys live under NAME/
        name: String,
        /// The value to proclaim as leader; omit to observe
        value: Option<String>,
        /// TTL of the campaign's lease in seconds
        #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = parse_ttl)]
        ttl: i64,
    },
    /// Who the cluster takes this client for, and what it may do
    Auth {
        /// The auth command
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Forget the history at and below revision REV (reads and watches below it then fail
    /// with exit 6)
    Compact {
        /// The revision; at most the current one (see `kvsetctl status`)
        #[arg(value_parser = parse_revision)]
        rev: i64,
    },
    /// Compare-and-swap: set KEY to NEW if its value is EXPECTED (exit 1 if not).
    ///
    /// `kvsetctl cas KEY EXPECTED NEW` swaps when the current value equals EXPECTED (an empty
    /// EXPECTED, "", means "exists with an empty value"). `kvsetctl cas --absent KEY NEW`
    /// swaps only when KEY does not exist.
    Cas {
        /// The key
        key: String,
        /// EXPECTED then NEW, or only NEW with --absent
        #[arg(value_name = "EXPECTED|NEW", num_args = 1..=2, required = true)]
        values: Vec<String>,
        /// Swap only if the key does not exist (then give only NEW)
        #[arg(long)]
        absent: bool,
    },
    /// Run a transaction described in JSON (from FILE, or stdin when FILE is absent or -).
    ///
    /// Format: {"compare":[{"key":"a","target":"value","op":"=","value":"x"}],
    /// "success":[{"put":{"key":"a","value":"y"}}], "failure":[{"get":{"key":"a"}}]}.
    /// Targets: value, version, create_revision, mod_revision, exists. Ops: = != > <.
    /// Operations: put {key,value,prev_kv,lease}, delete {key,range_end,prefix,prev_kv},
    /// range {key,end,prefix,limit,keys_only}, get {key}. Exit 1 when the compares failed.
    Txn {
        /// JSON file; stdin when absent or -
        file: Option<PathBuf>,
    },
    /// Show every member: name, ordinal, endpoint, role, term, applied index, lag, health.
    ///
    /// With --watch, redraw the table every --interval until interrupted (Ctrl-C) or --count
    /// frames, to watch leadership move during a pod deletion, a rolling update or a scale;
    /// with `-o json --watch`, one JSON object per line (JSON lines) instead.
    Status {
        /// Redraw every --interval until interrupted
        #[arg(long)]
        watch: bool,
        /// Time between two frames of --watch (500ms, 1s, 2s …)
        #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "watch")]
        interval: Duration,
        /// Stop --watch after this many frames
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// Check each endpoint's gRPC health (grpc.health.v1): readiness, or liveness with --liveness.
    ///
    /// Asks each endpoint once, all at once, within --timeout (at most 5 s each). Exit 0 when
    /// every endpoint answers SERVING, 3 otherwise. A container health check of one member:
    /// `kvsetctl health --endpoint 127.0.0.1:7379 --timeout 2s`.
    Health {
        /// Check these endpoints instead of --endpoints (repeatable, or comma-separated)
        #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
        endpoint: Vec<String>,
        /// Check the `liveness` service (the process answers) instead of `readiness` (joined,
        /// knows a leader, caught up)
        #[arg(long)]
        liveness: bool,
    },
    /// List and change the membership
    Members {
        /// The membership command
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Back up the cluster to a file, or check a backup file
    Snapshot {
        /// The snapshot command
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// List or disarm alarms (NOSPACE: a member's store passed its space quota)
    Alarm {
        /// The alarm command
        #[command(subcommand)]
        command: AlarmCommand,
    },
}

/// `kvsetctl auth ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuthCommand {
    /// Print the identity the cluster established for this client (from --token or the TLS
    /// client certificate; `anonymous` without either) and its roles
    Whoami,
    /// Print what this identity may do with KEY (or the range / prefix): read, write, admin.
    /// Exits 0 either way: the answer is the output
    Check {
        /// The key, or the first key of a range
        key: String,
        /// Check every key with the prefix KEY
        #[arg(long, conflicts_with = "range_end")]
        prefix: bool,
        /// Check the range [KEY, END)
        #[arg(long, value_name = "END")]
        range_end: Option<String>,
    },
}

/// `kvsetctl lease ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL_SECONDS and print its id alone (-o json: {"id","ttl"})
    Grant {
        /// Time to live in seconds
        #[arg(value_name = "TTL_SECONDS", value_parser = parse_ttl)]
        ttl: i64,
    },
    /// Revoke a lease, deleting every key attached to it (exit 1 if it does not exist)
    Revoke {
        /// The lease id
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Keep a lease alive until interrupted, printing each renewal (exit 1 when it is gone)
    KeepAlive {
        /// The lease id
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Print a lease's remaining and granted TTL (exit 1 if it does not exist)
    Ttl {
        /// The lease id
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Also list the keys attached to it
        #[arg(long)]
        keys: bool,
    },
    /// List every lease
    List,
}

/// `kvsetctl alarm ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum AlarmCommand {
    /// List the active alarms
    List,
    /// Clear every alarm, so that writes are taken again.
    ///
    /// Free space first (delete keys, or grow the member's volume): a member still over its
    /// space quota raises NOSPACE again at its next check. See docs/OPERATIONS.md, "Space quota
    /// and the NOSPACE alarm".
    Disarm {
        /// Clear only the alarms raised by this member (kv-N, or its ordinal); the others stay
        #[arg(long, value_name = "MEMBER")]
        member: Option<String>,
    },
}

/// `kvsetctl snapshot ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a consistent snapshot from the leader into FILE, verified, written atomically.
    ///
    /// The leader builds a snapshot of everything applied when the request arrives and
    /// streams it with a SHA-256 checksum; the data is checked (size and checksum) before
    /// FILE is written (a temporary file in the same directory, fsynced, then renamed over
    /// FILE). A damaged stream is an error and leaves no file. Restore it with
    /// `kvset-server restore FILE` (docs/OPERATIONS.md). For a large store raise --timeout,
    /// which bounds the whole transfer.
    Save {
        /// The backup file to write (replaced if it exists)
        file: PathBuf,
    },
    /// Read and verify a backup file offline, and print its header (exit 2 if it is not a
    /// valid backup, for example damaged or truncated)
    Inspect {
        /// The backup file
        file: PathBuf,
    },
}

/// `kvsetctl members ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum MembersCommand {
    /// List voters and learners
    List,
    /// Add a member as a learner (waits until it has caught up unless --no-wait)
    Add {
        /// Member name, e.g. kv-3
        name: String,
        /// Raft node id; defaults to the ordinal at the end of NAME
        #[arg(long)]
        id: Option<u64>,
        /// host:port where clients reach it
        #[arg(long, value_name = "HOST:PORT")]
        client_addr: String,
        /// host:port where peers reach it
        #[arg(long, value_name = "HOST:PORT")]
        peer_addr: String,
        /// Return once the learner is added, without waiting for it to catch up
        #[arg(long)]
        no_wait: bool,
    },
    /// Promote a caught-up learner to voter
    Promote {
        /// Member name (kv-3) or id (3)
        member: String,
    },
    /// Remove a member (the highest ordinal unless --any-order)
    Remove {
        /// Member name (kv-2) or id (2)
        member: String,
        /// Allow removing a member that is not the highest ordinal (repair)
        #[arg(long)]
        any_order: bool,
    },
}

/// Parses a `--timeout`: the duration syntax of [`kvset_client::duration::parse`] (`500ms`,
/// `5s`, `1.5s`, `2m`, `1h`, or a bare number of seconds), and it must be above zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = kvset_client::duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(d)
}

/// Parses a TTL in seconds: a positive integer.
pub fn parse_ttl(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a TTL: give the time to live in whole seconds, 1 or more"
        )),
    }
}

/// Parses a revision: a positive integer.
pub fn parse_revision(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a revision: give a positive integer (see `kvsetctl status` or a \
             response header's revision)"
        )),
    }
}

/// Parses a lease id: the decimal id `kvsetctl lease grant` prints, or hex with `0x` (as in
/// lock and election keys).
pub fn parse_lease_id(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => t.parse::<i64>().ok(),
    };
    match parsed {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a lease id: give the positive id `kvsetctl lease grant` printed \
             (decimal, or hex with 0x)"
        )),
    }
}

/// The ordinal at the end of a member name: `kv-3` -> 3.
pub fn ordinal_of(name: &str) -> Option<u64> {
    name.rsplit_once('-')?.1.parse().ok()
}
