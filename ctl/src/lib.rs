//! `kvsetctl`, the command-line client, as a library.
//!
//! `kvsetctl` is its own crate, built on the public API of the `kvset-client` SDK and nothing
//! else of it, so that the SDK does not carry clap, a log subscriber or `anyhow` into the
//! programs that embed it. The binary (`src/main.rs`) only calls [`main`]. Everything else
//! lives here so that tests can drive it without spawning a process:
//!
//! - [`args`]: the command line ([`Cli`], parsed with clap derive; `Cli::try_parse_from` in
//!   tests).
//! - [`execute`]: runs one parsed command against the cluster and returns an [`Outcome`]: the
//!   text for stdout and stderr and the [`Exit`] code. It never prints and never exits.
//! - [`output`]: pure renderers from SDK values to text (tables or JSON); golden tests call
//!   them directly.
//! - [`txn_json`]: the JSON form of `kvsetctl txn`.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | not found (get of a missing key, unknown member, unknown or expired lease) or compare failed (`cas`, `txn`) |
//! | 2 | invalid input: usage, bad txn JSON, bad TLS files, `INVALID_ARGUMENT` from the server, a revision above the current one; `snapshot inspect`: not a valid backup |
//! | 3 | unavailable or timed out; `health`: an endpoint is not `SERVING` |
//! | 4 | any other error (`snapshot save`: a damaged stream, the file cannot be written; a write refused by a `NOSPACE` alarm, `RESOURCE_EXHAUSTED`; `lock`: the lock's lease was lost while CMD ran) |
//! | 5 | compacted: the revision asked for (`get`/`range --rev`, `watch --rev`, `compact`) is at or below the compact revision |
//!
//! `lock NAME -- CMD` exits with CMD's exit code once it ran (128 + the signal number when a
//! signal ended it). `watch`, `lease keep-alive` and `elect` run until interrupted (Ctrl-C),
//! which is a success (exit 0).
//!
//! # Live output
//!
//! `watch`, `lease keep-alive` and `elect` print as things happen: [`execute_live`] writes
//! their lines to a writer as they come (the binary passes stdout), and [`execute`] collects
//! them into [`Outcome::stdout`] for tests.
//!
//! Errors go to stderr as one line, `error: <message>`, in both output formats.

pub mod args;
mod live;
pub mod output;
#[cfg(test)]
mod tests;
pub mod txn_json;
pub mod watch_status;

use std::io::{Read, Write};
use std::time::Duration;

use futures::TryStreamExt;

pub use args::{
    AlarmCommand, AuthCommand, Cli, Command, ConsistencyArg, LeaseCommand, MembersCommand,
    OutputFormat, SnapshotCommand,
};

use kvset_client::{
    parse_endpoint_list, Client, Compare, Consistency, Error, KeyRange, Member, Pem, RangeOptions,
    RangePage, ReadOptions, Snapshot, TlsOptions, Txn, TxnOp, WriteOptions, LIVENESS, READINESS,
};

/// `kvsetctl`'s exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Ok,
    /// 1: not found (missing key, unknown member) or compare failed.
    NotFound,
    /// 2: invalid input.
    InvalidInput,
    /// 3: unavailable or timed out.
    Unavailable,
    /// 4: any other error.
    Other,
    /// 5: the authorization policy does not allow it (`PERMISSION_DENIED`).
    PermissionDenied,
    /// 6: the revision asked for was compacted.
    Compacted,
    /// The exit code of the command `kvsetctl lock` ran.
    Command(u8),
}

impl Exit {
    /// The exit code for an SDK error.
    pub fn for_error(e: &Error) -> Exit {
        match e {
            Error::InvalidArgument(_)
            | Error::InvalidEndpoint { .. }
            | Error::TlsConfig(_)
            | Error::Backup { .. }
            | Error::RevisionOutOfRange(_) => Exit::InvalidInput,
            Error::Compacted { .. } => Exit::Compacted,
            Error::PermissionDenied(_) => Exit::PermissionDenied,
            Error::NotFound(_) => Exit::NotFound,
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::NotLeader { .. } => {
                Exit::Unavailable
            }
            _ => Exit::Other,
        }
    }

    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::NotFound => 1,
            Exit::InvalidInput => 2,
            Exit::Unavailable => 3,
            Exit::Other => 4,
            Exit::PermissionDenied => 5,
            Exit::Compacted => 6,
            Exit::Command(code) => code,
        }
    }
}

/// What one command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for stdout.
    pub stdout: String,
    /// Text for stderr.
    pub stderr: String,
    /// The exit status.
    pub exit: Exit,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            exit: Exit::Ok,
        }
    }

    fn with(stdout: String, exit: Exit, stderr: String) -> Outcome {
        Outcome {
            stdout,
            stderr,
            exit,
        }
    }

    fn error(e: &Error) -> Outcome {
        Outcome::with(String::new(), Exit::for_error(e), format!("error: {e}\n"))
    }

    fn invalid(message: impl std::fmt::Display) -> Outcome {
        Outcome::with(
            String::new(),
            Exit::InvalidInput,
            format!("error: {message}\n"),
        )
    }
}

/// Builds the client `kvsetctl` uses: the command's `--timeout` is the retry deadline, and
/// bounds each attempt and connect too; `--cacert` (with `--cert` / `--key`) turns TLS on.
pub fn client_for(cli: &Cli) -> Result<Client, Error> {
    let timeout = cli.timeout;
    Client::builder()
        .endpoints([cli.endpoints.as_str()])
        .retry_deadline(timeout)
        .request_timeout(timeout.min(Duration::from_secs(5)))
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .tls_options(tls_options(cli))
        .token(cli.token.clone().unwrap_or_default())
        .build()
}

/// The TLS settings of `--cacert`, `--cert` and `--key` (clap makes `--cert` and `--key` come
/// together, with `--cacert`).
pub fn tls_options(cli: &Cli) -> Option<TlsOptions> {
    let ca = cli.cacert.as_ref()?;
    let mut tls = TlsOptions::new(Pem::file(ca));
    if let (Some(cert), Some(key)) = (&cli.cert, &cli.tls_key) {
        tls = tls.identity(Pem::file(cert), Pem::file(key));
    }
    Some(tls)
}

fn read_options(cli: &Cli, rev: Option<i64>) -> ReadOptions {
    ReadOptions {
        consistency: match cli.consistency {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            ConsistencyArg::Stale => Consistency::Stale,
        },
        member: cli.member.clone(),
        timeout: None,
        revision: rev.unwrap_or(0),
    }
}

/// Runs one command. `stdin` is read only by `txn` without a file. The lines of `watch`,
/// `lease keep-alive` and `elect` are collected into [`Outcome::stdout`].
pub async fn execute(cli: &Cli, stdin: &mut dyn Read) -> Outcome {
    let mut live = Vec::new();
    let mut outcome = execute_live(cli, stdin, &mut live).await;
    if !live.is_empty() {
        let mut stdout = String::from_utf8_lossy(&live).into_owned();
        stdout.push_str(&outcome.stdout);
        outcome.stdout = stdout;
    }
    outcome
}

/// Like [`execute`], but `watch`, `lease keep-alive` and `elect` write their lines to `live`
/// as they happen (flushed after each), so they can run until interrupted.
pub async fn execute_live(cli: &Cli, stdin: &mut dyn Read, live: &mut dyn Write) -> Outcome {
    // Offline: needs neither endpoints nor TLS settings.
    if let Command::Snapshot {
        command: SnapshotCommand::Inspect { file },
    } = &cli.command
    {
        return inspect(file, cli.output).await;
    }
    let client = match client_for(cli) {
        Ok(c) => c,
        Err(e) => return Outcome::error(&e),
    };
    let result = match &cli.command {
        Command::Watch { .. } | Command::Elect { .. } | Command::Lock { .. } => {
            live::run(cli, &client, live).await
        }
        Command::Lease {
            command: LeaseCommand::KeepAlive { id },
        } => live::keep_alive(&client, *id, cli.output, live).await,
        _ => run(cli, &client, stdin).await,
    };
    match result {
        Ok(outcome) => outcome,
        Err(e) => Outcome::error(&e),
    }
}

async fn run(cli: &Cli, client: &Client, stdin: &mut dyn Read) -> Result<Outcome, Error> {
    let fmt = cli.output;
    Ok(match &cli.command {
        Command::Put {
            key,
            value,
            prev_kv,
            lease,
        } => {
            let opts = WriteOptions {
                prev_kv: *prev_kv,
                timeout: None,
                lease: lease.unwrap_or(0),
            };
            let resp = client.put_with(key, value, &opts).await?;
            Outcome::ok(output::render_put(&resp, fmt))
        }
        Command::Get { key, rev } => {
            let resp = client.get_response(key, &read_options(cli, *rev)).await?;
            let text = output::render_get(&resp, fmt);
            match resp.kv {
                Some(_) => Outcome::ok(text),
                None => Outcome::with(text, Exit::NotFound, format!("not found: {key:?}\n")),
            }
        }
        Command::Del {
            key,
            prefix,
            range_end,
            prev_kv,
        } => {
            let range = match (prefix, range_end) {
                (true, _) => KeyRange::prefix(key),
                (false, Some(end)) => KeyRange::range(key, end),
                (false, None) => KeyRange::key(key),
            };
            let opts = WriteOptions {
                prev_kv: *prev_kv,
                ..WriteOptions::default()
            };
            let resp = client.delete_with(range, &opts).await?;
            Outcome::ok(output::render_delete(&resp, fmt))
        }
        Command::Range {
            start,
            end,
            prefix,
            limit,
            keys_only,
            rev,
        } => {
            let range = match (prefix, start, end) {
                (Some(p), _, _) => KeyRange::prefix(p),
                (None, None, _) => KeyRange::all(),
                (None, Some(s), None) => KeyRange::starting_at(s),
                (None, Some(s), Some(e)) => KeyRange::range(s, e),
            };
            let opts = RangeOptions {
                read: read_options(cli, *rev),
                limit: *limit,
                keys_only: *keys_only,
                ..RangeOptions::default()
            };
            let pages: Vec<RangePage> = client.pages(range, opts).try_collect().await?;
            let kvs: Vec<_> = pages.iter().flat_map(|p| p.kvs.iter().cloned()).collect();
            let last = pages.last().cloned().unwrap_or_default();
            Outcome::ok(output::render_range(&kvs, &last, *keys_only, fmt))
        }
        Command::Cas {
            key,
            values,
            absent,
        } => {
            let (expected, new) = match (absent, values.as_slice()) {
                (true, [new]) => (None, new),
                (false, [expected, new]) => (Some(expected.as_bytes()), new),
                (true, _) => {
                    return Ok(Outcome::invalid(
                        "with --absent give only KEY and NEW: kvsetctl cas --absent KEY NEW",
                    ))
                }
                (false, _) => return Ok(Outcome::invalid(
                    "give KEY EXPECTED NEW, or --absent KEY NEW to swap only if KEY does not exist",
                )),
            };
            let compare = match expected {
                None => Compare::absent(key),
                Some(v) => Compare::value(key).equal(v),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, new)])
                .or_else([TxnOp::get(key)]);
            let resp = client.txn(txn).await?;
            let text = output::render_cas(&resp, output::cas_current(&resp), fmt);
            if resp.succeeded {
                Outcome::ok(text)
            } else {
                Outcome::with(text, Exit::NotFound, String::new())
            }
        }
        Command::Txn { file } => {
            let text = match file.as_deref() {
                Some(path) if path.as_os_str() != "-" => match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) => {
                        return Ok(Outcome::invalid(format!(
                            "cannot read {}: {e}",
                            path.display()
                        )))
                    }
                },
                _ => {
                    let mut t = String::new();
                    if let Err(e) = stdin.read_to_string(&mut t) {
                        return Ok(Outcome::invalid(format!("cannot read stdin: {e}")));
                    }
                    t
                }
            };
            let txn = match txn_json::parse_txn_json(&text) {
                Ok(t) => t,
                Err(e) => return Ok(Outcome::invalid(e)),
            };
            let resp = client.txn(txn).await?;
            let text = output::render_txn(&resp, fmt);
            if resp.succeeded {
                Outcome::ok(text)
            } else {
                Outcome::with(text, Exit::NotFound, String::new())
            }
        }
        Command::Status { watch: true, .. } => {
            // Streams its frames: see `main` and [`watch_status`]. Here (in process), the
            // frames are collected.
            let mut out = Vec::new();
            let opts = watch_status::WatchOptions {
                clear: false,
                ..watch_options(cli).expect("a --watch command")
            };
            let _ = watch_status::watch(
                client,
                &opts,
                &mut out,
                &std::time::SystemTime::now,
                std::future::pending(),
            )
            .await;
            Outcome::ok(String::from_utf8_lossy(&out).into_owned())
        }
        Command::Status { .. } => {
            let status = client.status_all().await;
            let text = output::render_status(&status, fmt);
            if status.reachable() == 0 {
                let endpoints = client.endpoints().join(", ");
                let mut causes: Vec<&str> = status
                    .members
                    .iter()
                    .filter_map(|m| m.error.as_deref())
                    .collect();
                causes.dedup();
                let cause = match causes.as_slice() {
                    [one] => format!(": {one}"),
                    _ => String::new(),
                };
                Outcome::with(
                    text,
                    Exit::Unavailable,
                    format!(
                        "error: no kvset member answered at {endpoints}{cause}; is the cluster running? (kvset-server local)\n"
                    ),
                )
            } else {
                Outcome::ok(text)
            }
        }
        Command::Health { endpoint, liveness } => {
            let service = if *liveness { LIVENESS } else { READINESS };
            let endpoints: Vec<String> = if endpoint.is_empty() {
                client.endpoints()
            } else {
                match parse_endpoint_list(&endpoint.join(",")) {
                    Ok(list) => list.iter().map(|a| a.authority().to_string()).collect(),
                    Err(e) => return Ok(Outcome::error(&e)),
                }
            };
            let checks = client.health_of_each(&endpoints, service).await;
            let text = output::render_health(&checks, service, fmt);
            let failing = checks.iter().filter(|c| !c.is_serving()).count();
            if failing == 0 {
                Outcome::ok(text)
            } else {
                Outcome::with(
                    text,
                    Exit::Unavailable,
                    format!(
                        "error: {failing} of {} endpoint(s) not SERVING for {service:?}\n",
                        checks.len()
                    ),
                )
            }
        }
        Command::Members { command } => members(command, client, fmt).await?,
        Command::Compact { rev } => match client.compact(*rev).await {
            Ok(compacted) => Outcome::ok(output::render_compact(compacted, fmt)),
            Err(Error::Compacted { compact_revision }) => Outcome::with(
                String::new(),
                Exit::Compacted,
                format!(
                    "error: revision {rev} is already compacted (the compact revision is \
                     {compact_revision}); compact at a higher revision, at most the current one\n"
                ),
            ),
            Err(e) => return Err(e),
        },
        Command::Lease { command } => lease(command, client, fmt).await?,
        Command::Auth { command } => match command {
            AuthCommand::Whoami => {
                Outcome::ok(output::render_whoami(&client.who_am_i().await?, fmt))
            }
            AuthCommand::Check {
                key,
                prefix,
                range_end,
            } => {
                let keys = match (prefix, range_end) {
                    (true, _) => KeyRange::prefix(key),
                    (false, Some(end)) => KeyRange::range(key, end),
                    (false, None) => KeyRange::key(key),
                };
                let check = client.auth_check(&keys).await?;
                Outcome::ok(output::render_auth_check(&check, key, fmt))
            }
        },
        // Run by `execute_live`.
        Command::Watch { .. } | Command::Elect { .. } | Command::Lock { .. } => {
            return Ok(Outcome::invalid("this command runs through execute_live"))
        }
        Command::Snapshot { command } => match command {
            SnapshotCommand::Save { file } => {
                let info = client.save_snapshot(file).await?;
                Outcome::ok(output::render_snapshot(&info, file, fmt))
            }
            SnapshotCommand::Inspect { file } => inspect(file, fmt).await,
        },
        Command::Alarm { command } => match command {
            AlarmCommand::List => Outcome::ok(output::render_alarms(&client.alarms().await?, fmt)),
            AlarmCommand::Disarm { member } => {
                let member = match member {
                    None => None,
                    Some(m) => match m.parse::<u64>().ok().or_else(|| args::ordinal_of(m)) {
                        Some(id) => Some(id),
                        None => {
                            return Ok(Outcome::invalid(format!(
                                "--member {m:?}: name a member as kv-N or by its ordinal"
                            )))
                        }
                    },
                };
                let before = client.alarms().await?;
                let after = match member {
                    None => client.disarm_alarms().await?,
                    Some(id) => client.disarm_member_alarms(id).await?,
                };
                let mut text = output::render_alarms(&after, fmt);
                if fmt == OutputFormat::Table {
                    let cleared = before.len().saturating_sub(after.len());
                    let left = if after.is_empty() {
                        String::new()
                    } else {
                        format!("; {} still active", after.len())
                    };
                    text = format!(
                        "disarmed {cleared} alarm(s){left}; a member still over its quota raises \
                         NOSPACE again at its next check (see `kvsetctl alarm list`)\n"
                    );
                }
                Outcome::ok(text)
            }
        },
    })
}

/// `snapshot inspect FILE`: reads and verifies a backup file, offline.
async fn inspect(file: &std::path::Path, fmt: OutputFormat) -> Outcome {
    let path = file.to_path_buf();
    match tokio::task::spawn_blocking(move || Snapshot::load(&path)).await {
        Ok(Ok(snapshot)) => Outcome::ok(output::render_snapshot(&snapshot.info, file, fmt)),
        Ok(Err(e)) => Outcome::error(&e),
        Err(e) => Outcome::with(
            String::new(),
            Exit::Other,
            format!("error: reading {} failed: {e}\n", file.display()),
        ),
    }
}

async fn members(
    command: &MembersCommand,
    client: &Client,
    fmt: OutputFormat,
) -> Result<Outcome, Error> {
    let members = match command {
        MembersCommand::List => client.members().await?,
        MembersCommand::Add {
            name,
            id,
            client_addr,
            peer_addr,
            no_wait,
        } => {
            let Some(id) = id.or_else(|| args::ordinal_of(name)) else {
                return Ok(Outcome::invalid(format!(
                    "cannot derive an id from {name:?}; pass --id"
                )));
            };
            let member = Member {
                id,
                name: name.clone(),
                client_addr: client_addr.clone(),
                peer_addr: peer_addr.clone(),
                voter: false,
            };
            client.add_learner(member, !no_wait).await?
        }
        MembersCommand::Promote { member } => {
            let id = member_id(client, member).await?;
            client.promote(id).await?
        }
        MembersCommand::Remove { member, any_order } => {
            let id = member_id(client, member).await?;
            client.remove(id, *any_order).await?
        }
    };
    Ok(Outcome::ok(output::render_members(&members, fmt)))
}

async fn lease(
    command: &LeaseCommand,
    client: &Client,
    fmt: OutputFormat,
) -> Result<Outcome, Error> {
    Ok(match command {
        LeaseCommand::Grant { ttl } => {
            Outcome::ok(output::render_lease_grant(&client.grant(*ttl).await?, fmt))
        }
        LeaseCommand::Revoke { id } => {
            let header = client.revoke(*id).await?;
            Outcome::ok(output::render_lease_revoke(*id, &header, fmt))
        }
        LeaseCommand::Ttl { id, keys } => {
            let ttl = client.time_to_live(*id, *keys).await?;
            Outcome::ok(output::render_lease_ttl(&ttl, *keys, fmt))
        }
        LeaseCommand::List => Outcome::ok(output::render_leases(&client.leases().await?, fmt)),
        LeaseCommand::KeepAlive { .. } => {
            Outcome::invalid("lease keep-alive runs through execute_live")
        }
    })
}

/// Resolves `3` or `kv-3` to a member id, by the current membership for names.
async fn member_id(client: &Client, member: &str) -> Result<u64, Error> {
    if let Ok(id) = member.parse::<u64>() {
        return Ok(id);
    }
    let members = client.members().await?;
    members
        .iter()
        .find(|m| m.name == member)
        .map(|m| m.id)
        .ok_or_else(|| {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            Error::NotFound(format!(
                "no member named {member:?}; members are: {}",
                names.join(", ")
            ))
        })
}

/// The `kvsetctl` entry point: parses the command line, runs the command on a
/// single-threaded runtime, prints, and returns the exit code. `RUST_LOG=debug` shows every
/// attempt and retry on stderr.
/// The options of `status --watch`, when that is the command.
fn watch_options(cli: &Cli) -> Option<watch_status::WatchOptions> {
    match &cli.command {
        Command::Status {
            watch: true,
            interval,
            count,
        } => Some(watch_status::WatchOptions {
            interval: *interval,
            count: *count,
            format: cli.output,
            clear: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        }),
        _ => None,
    }
}

/// `status --watch` in the binary: frames go to stdout as they are made, until Ctrl-C or
/// --count.
async fn watch_to_stdout(cli: &Cli, opts: watch_status::WatchOptions) -> Exit {
    let client = match client_for(cli) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{}", Outcome::error(&e).stderr);
            return Exit::for_error(&e);
        }
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut stdout = std::io::stdout();
    match watch_status::watch(
        &client,
        &opts,
        &mut stdout,
        &std::time::SystemTime::now,
        stop,
    )
    .await
    {
        Ok(_) => Exit::Ok,
        // A closed pipe (`| head`) ends the watch quietly.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => {
            eprintln!("error: writing the status: {e}");
            Exit::Other
        }
    }
}

pub fn main() -> std::process::ExitCode {
    use clap::Parser;
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(Exit::Other.code());
        }
    };
    if let Some(opts) = watch_options(&cli) {
        return std::process::ExitCode::from(runtime.block_on(watch_to_stdout(&cli, opts)).code());
    }
    let outcome = runtime.block_on(execute_live(
        &cli,
        &mut std::io::stdin(),
        &mut std::io::stdout(),
    ));
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    std::process::ExitCode::from(outcome.exit.code())
}
