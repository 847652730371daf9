//! Rendering of command results: pure functions from SDK values to text.
//!
//! Nothing here does I/O, so golden tests can build SDK values with struct literals and compare
//! the output byte for byte. Every renderer returns the complete text, ending in a newline
//! (or empty).
//!
//! # Bytes
//!
//! Keys and values are bytes. Text output shows valid UTF-8 as is and every byte that is not
//! part of valid UTF-8 as `\xNN` ([`display_bytes`]); table cells additionally escape control
//! characters so one key stays on one line ([`cell`]). JSON output carries the same display
//! string, plus a `<field>_hex` field with the exact bytes in hex when they are not UTF-8
//! ([`kv_json`]).
//!
//! # JSON shapes (stable; documented in client/README.md)
//!
//! - header: `{"cluster_id","member","ordinal","role","term","revision"}`
//! - key-value: `{"key","value","create_revision","mod_revision","version","lease"}` (+
//!   `key_hex`, `value_hex`)
//! - `put`: `{"header","prev_kv"}`; `get`: `{"header","kv"}` (`kv` null when absent);
//!   `del`: `{"header","deleted","prev_kvs"}`; `range`: `{"header","kvs","count","more"}`;
//!   `cas`: `{"header","succeeded","current"}`; `txn`: `{"header","succeeded","responses"}`;
//!   `status`: `{"leader","members":[{"name","ordinal","endpoint","role","term","applied",
//!   "revision","lag","voter","reachable","ready","healthy","error","state_hash"}],
//!   "alarms":[{"alarm","member","member_id","usage_bytes","quota_bytes"}],
//!   "membership":{"mode","desired_replicas"},"authorization","compact_revision"}`;
//!   `auth whoami`: `{"identity","roles","authorization"}`;
//!   `auth check`: `{"identity","key","read","write","admin"}`;
//!   `alarm list` / `alarm disarm`: `{"alarms":[…as in status…]}`;
//!   `members`: `{"members":[{"id","name","client_addr","peer_addr","voter"}]}`;
//!   `health`: `{"service","healthy","endpoints":[{"endpoint","status","error"}]}`;
//!   `snapshot save` / `snapshot inspect`: `{"file","header","cluster_id","member","revision",
//!   "last_log_index","last_log_term","keys","size_bytes","format","sha256"}`;
//!   `compact`: `{"compact_revision"}`;
//!   `lease grant`: `{"id","ttl"}`; `lease revoke`: `{"id","header"}`;
//!   `lease ttl`: `{"id","ttl","granted_ttl","keys"}` (`keys` only with `--keys`);
//!   `lease list`: `{"leases":[{"id","granted_ttl","keys"}]}`.
//! - One compact object per line, as things happen: `watch`:
//!   `{"type","key","value","mod_revision","create_revision","version","lease"}` (+ `prev_kv`
//!   with `--prev-kv`); `lease keep-alive`: `{"id","ttl"}`; `elect`: a key-value.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Map, Value};

use kvset_client::{
    Alarm, AlarmKind, AuthCheck, ClusterStatus, DeleteResponse, EndpointHealth, GetResponse,
    Header, KeyValue, LeaseGrant, LeaseStatus, LeaseTimeToLive, Member, PutResponse, RangePage,
    SnapshotInfo, TxnOpResponse, TxnResponse, WatchEvent, WhoAmI,
};

use crate::args::OutputFormat;

/// Shows bytes as text: valid UTF-8 as is, other bytes as `\xNN`.
pub fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Like [`display_bytes`], with control characters escaped (`\n`, `\t`, `\u{1b}`) so the text
/// fits in one table cell.
pub fn cell(bytes: &[u8]) -> String {
    let shown = display_bytes(bytes);
    if !shown.chars().any(char::is_control) {
        return shown;
    }
    shown
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn put_bytes(map: &mut Map<String, Value>, field: &str, bytes: &[u8]) {
    map.insert(field.to_string(), Value::String(display_bytes(bytes)));
    if std::str::from_utf8(bytes).is_err() {
        map.insert(format!("{field}_hex"), Value::String(hex(bytes)));
    }
}

/// A key-value as JSON.
pub fn kv_json(kv: &KeyValue) -> Value {
    let mut map = Map::new();
    put_bytes(&mut map, "key", &kv.key);
    put_bytes(&mut map, "value", &kv.value);
    map.insert("create_revision".into(), json!(kv.create_revision));
    map.insert("mod_revision".into(), json!(kv.mod_revision));
    map.insert("version".into(), json!(kv.version));
    map.insert("lease".into(), json!(kv.lease));
    Value::Object(map)
}

fn opt_kv_json(kv: Option<&KeyValue>) -> Value {
    kv.map_or(Value::Null, kv_json)
}

/// A response header as JSON.
pub fn header_json(h: &Header) -> Value {
    json!({
        "cluster_id": h.cluster_id,
        "member": h.member,
        "ordinal": h.ordinal,
        "role": h.role.as_str(),
        "term": h.term,
        "revision": h.revision,
    })
}

fn json_text(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("a Value always serializes");
    s.push('\n');
    s
}

/// Aligns rows under a header; columns are separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            let pad = widths[i] - c.chars().count();
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `put`: `OK` (and the previous value when asked for).
pub fn render_put(resp: &PutResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "header": header_json(&resp.header),
            "prev_kv": opt_kv_json(resp.prev_kv.as_ref()),
        })),
        OutputFormat::Table => match &resp.prev_kv {
            Some(prev) => format!("OK\nprevious value: {}\n", display_bytes(&prev.value)),
            None => "OK\n".to_string(),
        },
    }
}

/// `get`: the value (nothing when absent; the caller reports "not found").
pub fn render_get(resp: &GetResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "header": header_json(&resp.header),
            "kv": opt_kv_json(resp.kv.as_ref()),
        })),
        OutputFormat::Table => match &resp.kv {
            Some(kv) => format!("{}\n", display_bytes(&kv.value)),
            None => String::new(),
        },
    }
}

/// `del`: the number of deleted keys (and the keys when asked for).
pub fn render_delete(resp: &DeleteResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "header": header_json(&resp.header),
            "deleted": resp.deleted,
            "prev_kvs": resp.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut out = format!("{}\n", resp.deleted);
            if !resp.prev_kvs.is_empty() {
                out.push_str(&kv_table(&resp.prev_kvs, false));
            }
            out
        }
    }
}

fn kv_table(kvs: &[KeyValue], keys_only: bool) -> String {
    if keys_only {
        let rows: Vec<Vec<String>> = kvs.iter().map(|kv| vec![cell(&kv.key)]).collect();
        table(&["KEY"], &rows)
    } else {
        let rows: Vec<Vec<String>> = kvs
            .iter()
            .map(|kv| vec![cell(&kv.key), cell(&kv.value)])
            .collect();
        table(&["KEY", "VALUE"], &rows)
    }
}

/// `range`: the keys read over all pages; `last` is the last page (for header, count, more).
pub fn render_range(
    kvs: &[KeyValue],
    last: &RangePage,
    keys_only: bool,
    format: OutputFormat,
) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "header": header_json(&last.header),
            "kvs": kvs.iter().map(kv_json).collect::<Vec<_>>(),
            "count": last.count,
            "more": last.more,
        })),
        OutputFormat::Table => {
            let mut out = kv_table(kvs, keys_only);
            if last.more {
                let _ = writeln!(
                    out,
                    "({} of {} keys shown; raise --limit for more)",
                    kvs.len(),
                    last.count
                );
            }
            out
        }
    }
}

/// `cas`: `OK`, or `FAILED` with the current value.
pub fn render_cas(resp: &TxnResponse, current: Option<&KeyValue>, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "header": header_json(&resp.header),
            "succeeded": resp.succeeded,
            "current": opt_kv_json(current),
        })),
        OutputFormat::Table if resp.succeeded => "OK\n".to_string(),
        OutputFormat::Table => match current {
            Some(kv) => format!("FAILED: the current value is {:?}\n", cell(&kv.value)),
            None => "FAILED: the key does not exist\n".to_string(),
        },
    }
}

/// The current value of a key read by the failure branch of a `cas` transaction.
pub fn cas_current(resp: &TxnResponse) -> Option<&KeyValue> {
    resp.responses.iter().find_map(|r| match r {
        TxnOpResponse::Range { kvs, .. } => kvs.first(),
        _ => None,
    })
}

fn op_json(op: &TxnOpResponse) -> Value {
    match op {
        TxnOpResponse::Put { prev_kv } => {
            json!({ "put": { "prev_kv": opt_kv_json(prev_kv.as_ref()) } })
        }
        TxnOpResponse::Delete { deleted, prev_kvs } => json!({
            "delete": { "deleted": deleted, "prev_kvs": prev_kvs.iter().map(kv_json).collect::<Vec<_>>() }
        }),
        TxnOpResponse::Range { kvs, more, count } => json!({
            "range": { "kvs": kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": more, "count": count }
        }),
    }
}

/// `txn`: `SUCCESS` or `FAILURE`, then one block per operation result.
pub fn render_txn(resp: &TxnResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "header": header_json(&resp.header),
            "succeeded": resp.succeeded,
            "responses": resp.responses.iter().map(op_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut out = if resp.succeeded {
                "SUCCESS\n"
            } else {
                "FAILURE\n"
            }
            .to_string();
            for op in &resp.responses {
                out.push('\n');
                match op {
                    TxnOpResponse::Put { prev_kv: None } => out.push_str("put: OK\n"),
                    TxnOpResponse::Put { prev_kv: Some(p) } => {
                        let _ = writeln!(out, "put: OK (previous value {:?})", cell(&p.value));
                    }
                    TxnOpResponse::Delete { deleted, .. } => {
                        let _ = writeln!(out, "delete: {deleted}");
                    }
                    TxnOpResponse::Range { kvs, .. } => {
                        let _ = writeln!(out, "range: {} key(s)", kvs.len());
                        if !kvs.is_empty() {
                            out.push_str(&kv_table(kvs, false));
                        }
                    }
                }
            }
            out
        }
    }
}

/// `status -o json`: `{"leader": "kv-0", "members": [{"name": "kv-0", "ordinal": 0,
/// "endpoint": "127.0.0.1:7379", "role": "leader", "term": 2, "applied": 17, "healthy": true,
/// ...}]}`. Unknown numbers are `null`; an unreachable member has role `"unknown"` and
/// `healthy: false`.
pub fn status_json(status: &ClusterStatus) -> Value {
    json!({
        "alarms": alarms_json(&status.alarms),
        "membership": {
            "mode": status.membership_mode,
            "desired_replicas": status.desired_replicas,
        },
        "authorization": status.authorization,
        "compact_revision": status.compact_revision,
        "leader": status.leader,
        "members": status.members.iter().map(|m| json!({
            "name": m.name,
            "ordinal": m.ordinal,
            "endpoint": m.endpoint,
            "role": m.role.as_str(),
            "term": m.term,
            "applied": m.applied,
            "revision": m.revision,
            "lag": m.lag,
            "voter": m.voter,
            "reachable": m.reachable,
            "ready": m.ready,
            "healthy": m.healthy,
            "error": m.error,
            "state_hash": m.state_hash,
        })).collect::<Vec<_>>(),
    })
}

/// The JSON form of alarms: `[{"alarm": "NOSPACE", "member": "kv-1", "member_id": 1,
/// "usage_bytes": …, "quota_bytes": …}]`.
fn alarms_json(alarms: &[Alarm]) -> Value {
    Value::Array(
        alarms
            .iter()
            .map(|a| {
                json!({
                    "alarm": a.kind.name(),
                    "member": a.member_name,
                    "member_id": a.member_id,
                    "usage_bytes": a.usage_bytes,
                    "quota_bytes": a.quota_bytes,
                })
            })
            .collect(),
    )
}

/// The `membership: manual` note: the members do not follow the set's size (no source, or it
/// cannot be read), so scaling down needs `kvsetctl members remove`.
fn membership_note(status: &ClusterStatus) -> Option<String> {
    (status.membership_mode.as_deref() == Some("manual")).then(|| {
        "membership: manual (the set's size is not known: members that stop stay members; after \
         scaling down, remove the departed ones with `kvsetctl members remove`)"
            .to_string()
    })
}

/// One line per alarm: what it is and the way out.
fn alarm_line(a: &Alarm) -> String {
    match a.kind {
        AlarmKind::NoSpace => format!(
            "ALARM NOSPACE raised by {}: its store used {} of a {} quota; writes that add data \
             are refused. Delete keys or grow its volume, then `kvsetctl alarm disarm` \
             (docs/OPERATIONS.md, \"Space quota and the NOSPACE alarm\")",
            a.member_name,
            human_bytes(a.usage_bytes),
            human_bytes(a.quota_bytes)
        ),
        other => format!("ALARM {} raised by {}", other.name(), a.member_name),
    }
}

/// `61.2 MiB` (IEC units, one decimal; `512 B` below a KiB).
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// `alarm list` and `alarm disarm`: one line per active alarm, or `no alarms`.
pub fn render_alarms(alarms: &[Alarm], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({ "alarms": alarms_json(alarms) })),
        OutputFormat::Table if alarms.is_empty() => "no alarms\n".to_string(),
        OutputFormat::Table => alarms.iter().map(|a| alarm_line(a) + "\n").collect(),
    }
}

/// Appends one line per problem after a blank line (nothing when there are none).
fn push_problems(out: &mut String, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    out.push('\n');
    for p in problems {
        out.push_str(p);
        out.push('\n');
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `status`: a table of members, then the reason for each unreachable one.
pub fn render_status(status: &ClusterStatus, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&status_json(status)),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = status
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone().unwrap_or_else(|| "?".into()),
                        or_dash(m.ordinal),
                        m.endpoint.clone(),
                        m.role.as_str().to_string(),
                        or_dash(m.term),
                        or_dash(m.applied),
                        or_dash(m.revision),
                        or_dash(m.lag),
                        m.healthy.to_string(),
                    ]
                })
                .collect();
            let mut out = table(
                &[
                    "NAME", "ORDINAL", "ENDPOINT", "ROLE", "TERM", "APPLIED", "REVISION", "LAG",
                    "HEALTHY",
                ],
                &rows,
            );
            let problems: Vec<String> = status
                .members
                .iter()
                .filter_map(|m| {
                    let who = m.name.as_deref().unwrap_or("?");
                    match (&m.error, m.reachable && !m.ready) {
                        (Some(e), _) => Some(format!("{who} ({}): {e}", m.endpoint)),
                        (None, true) => Some(format!(
                            "{who} ({}): answered but is not ready (joining, catching up, or no leader)",
                            m.endpoint
                        )),
                        _ => None,
                    }
                })
                .collect();
            let problems: Vec<String> = membership_note(status)
                .into_iter()
                .chain(status.alarms.iter().map(alarm_line))
                .chain(problems)
                .collect();
            if let Some(authorization) = &status.authorization {
                let _ = writeln!(out, "authorization: {authorization}");
            }
            push_problems(&mut out, &problems);
            out
        }
    }
}

/// `members`: the membership.
pub fn render_members(members: &[Member], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "members": members.iter().map(|m| json!({
                "id": m.id,
                "name": m.name,
                "client_addr": m.client_addr,
                "peer_addr": m.peer_addr,
                "voter": m.voter,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = members
                .iter()
                .map(|m| {
                    vec![
                        m.id.to_string(),
                        m.name.clone(),
                        m.client_addr.clone(),
                        m.peer_addr.clone(),
                        if m.voter { "voter" } else { "learner" }.to_string(),
                    ]
                })
                .collect();
            table(&["ID", "NAME", "CLIENT_ADDR", "PEER_ADDR", "KIND"], &rows)
        }
    }
}

/// `health -o json`: `{"service": "readiness", "healthy": true, "endpoints": [{"endpoint":
/// "127.0.0.1:7379", "status": "SERVING", "error": null}]}`. `healthy` is true when every
/// endpoint answered `SERVING`.
pub fn health_json(checks: &[EndpointHealth], service: &str) -> Value {
    json!({
        "service": service,
        "healthy": checks.iter().all(EndpointHealth::is_serving),
        "endpoints": checks.iter().map(|c| json!({
            "endpoint": c.endpoint,
            "status": c.status.as_str(),
            "error": c.error,
        })).collect::<Vec<_>>(),
    })
}

/// `health`: one row per endpoint, then the reason for each check that got no status.
pub fn render_health(checks: &[EndpointHealth], service: &str, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&health_json(checks, service)),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = checks
                .iter()
                .map(|c| {
                    vec![
                        c.endpoint.clone(),
                        c.service.clone(),
                        c.status.as_str().to_string(),
                    ]
                })
                .collect();
            let mut out = table(&["ENDPOINT", "SERVICE", "STATUS"], &rows);
            let problems: Vec<String> = checks
                .iter()
                .filter_map(|c| Some(format!("{}: {}", c.endpoint, c.error.as_deref()?)))
                .collect();
            push_problems(&mut out, &problems);
            out
        }
    }
}

/// `snapshot save` / `snapshot inspect -o json`: `{"file", "header", "cluster_id", "member",
/// "revision", "last_log_index", "last_log_term", "keys", "size_bytes", "format", "sha256"}`
/// (`cluster_id` and `member` repeat the header's, for scripts).
pub fn snapshot_json(info: &SnapshotInfo, file: &Path) -> Value {
    json!({
        "file": file.display().to_string(),
        "header": header_json(&info.header),
        "cluster_id": info.header.cluster_id,
        "member": info.header.member,
        "revision": info.revision,
        "last_log_index": info.last_log_index,
        "last_log_term": info.last_log_term,
        "keys": info.keys,
        "size_bytes": info.size_bytes,
        "format": info.format,
        "sha256": info.sha256,
    })
}

/// `snapshot save` / `snapshot inspect`: one `field  value` line per field of the backup's
/// header, with the field names of the JSON form.
pub fn render_snapshot(info: &SnapshotInfo, file: &Path, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&snapshot_json(info, file)),
        OutputFormat::Table => {
            let fields = [
                ("file", file.display().to_string()),
                ("cluster_id", info.header.cluster_id.clone()),
                ("member", info.header.member.clone()),
                ("revision", info.revision.to_string()),
                ("last_log_index", info.last_log_index.to_string()),
                ("last_log_term", info.last_log_term.to_string()),
                ("keys", info.keys.to_string()),
                ("size_bytes", info.size_bytes.to_string()),
                ("format", info.format.to_string()),
                ("sha256", info.sha256.clone()),
            ];
            let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            fields.iter().fold(String::new(), |mut out, (k, v)| {
                let _ = writeln!(out, "{k:width$}  {v}");
                out
            })
        }
    }
}

/// `watch`: one line per event. Table: `PUT KEY VALUE` / `DELETE KEY` (with `prev_kv`:
/// `(previous: VALUE)`). JSON: one compact object per line.
pub fn render_watch_event(event: &WatchEvent, prev_kv: bool, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let mut map = Map::new();
            map.insert("type".into(), json!(event.kind.as_str()));
            if let Value::Object(kv) = kv_json(&event.kv) {
                map.extend(kv);
            }
            if prev_kv {
                map.insert("prev_kv".into(), opt_kv_json(event.prev_kv.as_ref()));
            }
            let mut s = Value::Object(map).to_string();
            s.push('\n');
            s
        }
        OutputFormat::Table => {
            let mut line = format!("{} {}", event.kind.as_str(), cell(&event.kv.key));
            if event.kind == kvset_client::EventType::Put {
                let _ = write!(line, " {}", cell(&event.kv.value));
            }
            if prev_kv {
                match &event.prev_kv {
                    Some(p) => {
                        let _ = write!(line, " (previous: {})", cell(&p.value));
                    }
                    None => line.push_str(" (no previous value)"),
                }
            }
            line.push('\n');
            line
        }
    }
}

/// `compact`: the compact revision after the call.
pub fn render_compact(compact_revision: i64, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({ "compact_revision": compact_revision })),
        OutputFormat::Table => {
            format!("compacted: history at and below revision {compact_revision} is gone\n")
        }
    }
}

/// `auth whoami`: the identity, its roles and the member's authorization setting.
pub fn render_whoami(who: &WhoAmI, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "identity": who.identity,
            "roles": who.roles,
            "authorization": who.authorization,
        })),
        OutputFormat::Table => {
            let roles = if who.roles.is_empty() {
                "(none)".to_string()
            } else {
                who.roles.join(", ")
            };
            format!(
                "identity: {}
roles: {roles}
authorization: {}
",
                who.identity, who.authorization
            )
        }
    }
}

/// `auth check KEY`: what the identity may do with KEY.
pub fn render_auth_check(check: &AuthCheck, key: &str, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "identity": check.identity,
            "key": key,
            "read": check.read,
            "write": check.write,
            "admin": check.admin,
        })),
        OutputFormat::Table => {
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            format!(
                "identity: {}
read: {}
write: {}
admin: {}
",
                check.identity,
                yes_no(check.read),
                yes_no(check.write),
                yes_no(check.admin)
            )
        }
    }
}

/// `lease grant`: the id alone (JSON: `{"id","ttl"}`).
pub fn render_lease_grant(grant: &LeaseGrant, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({ "id": grant.id, "ttl": grant.ttl })),
        OutputFormat::Table => format!("{}\n", grant.id),
    }
}

/// `lease revoke`.
pub fn render_lease_revoke(id: i64, header: &Header, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({ "id": id, "header": header_json(header) })),
        OutputFormat::Table => format!("lease {id} revoked\n"),
    }
}

/// `lease keep-alive`: one line per renewal.
pub fn render_keep_alive(id: i64, ttl: i64, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => format!("{}\n", json!({ "id": id, "ttl": ttl })),
        OutputFormat::Table => format!("lease {id} kept alive, TTL {ttl}s\n"),
    }
}

/// `lease ttl`.
pub fn render_lease_ttl(t: &LeaseTimeToLive, keys: bool, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let mut v = json!({ "id": t.id, "ttl": t.ttl, "granted_ttl": t.granted_ttl });
            if keys {
                v["keys"] = Value::Array(
                    t.keys
                        .iter()
                        .map(|k| Value::String(display_bytes(k)))
                        .collect(),
                );
            }
            json_text(&v)
        }
        OutputFormat::Table => {
            let mut out = format!(
                "lease {} expires in {}s (granted {}s)\n",
                t.id, t.ttl, t.granted_ttl
            );
            if keys {
                let shown: Vec<String> = t.keys.iter().map(|k| cell(k)).collect();
                let _ = writeln!(
                    out,
                    "keys: {}",
                    if shown.is_empty() {
                        "(none)".to_string()
                    } else {
                        shown.join(", ")
                    }
                );
            }
            out
        }
    }
}

/// `lease list`.
pub fn render_leases(leases: &[LeaseStatus], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => json_text(&json!({
            "leases": leases
                .iter()
                .map(|l| json!({ "id": l.id, "granted_ttl": l.granted_ttl, "keys": l.keys }))
                .collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = leases
                .iter()
                .map(|l| {
                    vec![
                        l.id.to_string(),
                        format!("{}s", l.granted_ttl),
                        l.keys.to_string(),
                    ]
                })
                .collect();
            table(&["ID", "GRANTED_TTL", "KEYS"], &rows)
        }
    }
}

/// `elect`: one line per leader value (JSON: a compact key-value object).
pub fn render_leader(kv: &KeyValue, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => format!("{}\n", kv_json(kv)),
        OutputFormat::Table => format!("{}\n", display_bytes(&kv.value)),
    }
}
