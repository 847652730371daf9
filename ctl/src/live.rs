//! The commands that run until something happens: `watch`, `lease keep-alive`, `elect` and
//! `lock`. Their lines go to the `live` writer as they happen, flushed one by one, so a pipe
//! (`kvsetctl watch -o json k | jq`) sees each event at once. Ctrl-C ends `watch`,
//! `keep-alive` and `elect` with exit 0 (`elect` resigns first); `lock` passes it on to CMD
//! (which is in the same process group) and waits for CMD before releasing the lock.

use std::io::Write;

use futures::StreamExt;
use kvset_client::{Client, Election, Error, KeepAliveStatus, Lock, WatchOptions};

use crate::args::{Cli, Command, OutputFormat};
use crate::output::{display_bytes, render_keep_alive, render_leader, render_watch_event};
use crate::{Exit, Outcome};

/// Writes one piece of live output. A closed pipe (`| head -1`) is not an error: it ends the
/// command like an interrupt.
fn emit(live: &mut dyn Write, text: &str) -> bool {
    live.write_all(text.as_bytes()).is_ok() && live.flush().is_ok()
}

/// Ends a command that was interrupted or whose reader went away: success.
fn stopped() -> Outcome {
    Outcome::with(String::new(), Exit::Ok, String::new())
}

pub(crate) async fn run(
    cli: &Cli,
    client: &Client,
    live: &mut dyn Write,
) -> Result<Outcome, Error> {
    let fmt = cli.output;
    match &cli.command {
        Command::Watch {
            key,
            prefix,
            rev,
            prev_kv,
            count,
        } => watch(client, key, *prefix, *rev, *prev_kv, *count, fmt, live).await,
        Command::Elect { name, value, ttl } => {
            let election = Election::new(client, name).ttl(*ttl);
            match value {
                Some(value) => campaign(&election, value, fmt, live).await,
                None => observe(&election, fmt, live).await,
            }
        }
        Command::Lock { name, command, ttl } => lock(client, name, command, *ttl).await,
        _ => Ok(Outcome::invalid("not a live command")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch(
    client: &Client,
    key: &str,
    prefix: bool,
    rev: Option<i64>,
    prev_kv: bool,
    count: Option<u64>,
    fmt: OutputFormat,
    live: &mut dyn Write,
) -> Result<Outcome, Error> {
    let mut opts = if prefix {
        WatchOptions::prefix(key)
    } else {
        WatchOptions::key(key)
    };
    opts = opts.start_revision(rev.unwrap_or(0));
    if prev_kv {
        opts = opts.prev_kv();
    }
    let mut events = client.watch(opts).await?;
    let mut printed = 0u64;
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let batch = tokio::select! {
            _ = &mut interrupted => return Ok(stopped()),
            batch = events.next() => batch,
        };
        let Some(batch) = batch else {
            return Ok(stopped());
        };
        for event in batch?.events {
            if !emit(live, &render_watch_event(&event, prev_kv, fmt)) {
                return Ok(stopped());
            }
            printed += 1;
            if count == Some(printed) {
                return Ok(stopped());
            }
        }
    }
}

pub(crate) async fn keep_alive(
    client: &Client,
    id: i64,
    fmt: OutputFormat,
    live: &mut dyn Write,
) -> Result<Outcome, Error> {
    let mut task = client.keep_alive(id);
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let status = tokio::select! {
            _ = &mut interrupted => return Ok(stopped()),
            status = task.changed() => status,
        };
        match status {
            KeepAliveStatus::Starting => {}
            KeepAliveStatus::Alive { ttl, .. } => {
                if !emit(live, &render_keep_alive(id, ttl, fmt)) {
                    return Ok(stopped());
                }
            }
            KeepAliveStatus::Expired => {
                return Ok(Outcome::with(
                    String::new(),
                    Exit::NotFound,
                    format!("error: lease {id} does not exist: it expired or was revoked\n"),
                ))
            }
            KeepAliveStatus::Failed(message) => {
                return Ok(Outcome::with(
                    String::new(),
                    Exit::Other,
                    format!("error: keeping lease {id} alive failed: {message}\n"),
                ))
            }
        }
    }
}

async fn campaign(
    election: &Election,
    value: &str,
    fmt: OutputFormat,
    live: &mut dyn Write,
) -> Result<Outcome, Error> {
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let leadership = tokio::select! {
        // Dropping the campaign withdraws the candidacy (its lease is revoked).
        _ = &mut interrupted => return Ok(stopped()),
        won = election.campaign(value) => won?,
    };
    let kv = kvset_client::KeyValue {
        key: leadership.key().to_vec(),
        value: value.as_bytes().to_vec(),
        create_revision: leadership.revision(),
        mod_revision: leadership.revision(),
        version: 1,
        lease: leadership.lease_id(),
    };
    if !emit(live, &render_leader(&kv, fmt)) {
        leadership.resign().await?;
        return Ok(stopped());
    }
    tokio::select! {
        _ = &mut interrupted => {
            leadership.resign().await?;
            Ok(stopped())
        }
        lost = leadership.lost() => Ok(Outcome::with(
            String::new(),
            Exit::Other,
            format!("error: lost the leadership: the campaign's lease ended ({lost:?})\n"),
        )),
    }
}

async fn observe(
    election: &Election,
    fmt: OutputFormat,
    live: &mut dyn Write,
) -> Result<Outcome, Error> {
    let mut leaders = std::pin::pin!(election.observe());
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let next = tokio::select! {
            _ = &mut interrupted => return Ok(stopped()),
            next = leaders.next() => next,
        };
        match next {
            None => return Ok(stopped()),
            Some(kv) => {
                if !emit(live, &render_leader(&kv?, fmt)) {
                    return Ok(stopped());
                }
            }
        }
    }
}

async fn lock(client: &Client, name: &str, command: &[String], ttl: i64) -> Result<Outcome, Error> {
    let Some((program, args)) = command.split_first() else {
        return Ok(Outcome::invalid(
            "give the command to run after --: kvsetctl lock NAME -- CMD [ARGS...]",
        ));
    };
    let lock = Lock::new(client, name).ttl(ttl);
    let guard = tokio::select! {
        // Interrupted while waiting: CMD never ran (the shell's code for SIGINT).
        _ = tokio::signal::ctrl_c() => return Ok(Outcome::with(
            String::new(),
            Exit::Command(130),
            format!("interrupted while waiting for the lock {name:?}; {program:?} did not run\n"),
        )),
        guard = lock.lock() => guard?,
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .env("KVSET_LOCK_KEY", display_bytes(guard.key()))
        .env("KVSET_LOCK_REV", guard.revision().to_string())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            guard.unlock().await?;
            return Ok(Outcome::with(
                String::new(),
                Exit::Command(code),
                format!("error: cannot run {program:?}: {e}\n"),
            ));
        }
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            // CMD got the interrupt too (same process group): wait for it to end.
            _ = tokio::signal::ctrl_c() => {}
            lost = guard.lost() => {
                let _ = child.kill().await;
                return Ok(Outcome::with(
                    String::new(),
                    Exit::Other,
                    format!(
                        "error: lost the lock {name:?} while {program:?} ran (its lease ended: \
                         {lost:?}); {program:?} was killed\n"
                    ),
                ));
            }
        }
    };
    let mut stderr = String::new();
    if let Err(e) = guard.unlock().await {
        stderr = format!(
            "warning: releasing the lock failed ({e}); it is released when its lease expires \
             (--ttl)\n"
        );
    }
    let code = match &status {
        Ok(s) => exit_code(s),
        Err(e) => {
            stderr.push_str(&format!("error: waiting for {program:?} failed: {e}\n"));
            Exit::Other.code()
        }
    };
    Ok(Outcome::with(String::new(), Exit::Command(code), stderr))
}

/// A process's exit status as a shell reports it: its code, or 128 + the signal that ended it.
fn exit_code(status: &std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code.clamp(0, 255)).unwrap_or(255);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from((128 + signal).clamp(0, 255)).unwrap_or(255);
        }
    }
    Exit::Other.code()
}
