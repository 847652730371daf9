//! The JSON form of a transaction that `kvsetctl txn` reads.
//!
//! ```json
//! {
//!   "compare": [{"key": "a", "target": "value", "op": "=", "value": "x"}],
//!   "success": [{"put": {"key": "a", "value": "y"}}],
//!   "failure": [{"get": {"key": "a"}}]
//! }
//! ```
//!
//! - `compare[]`: `key`; `target` one of `value` (default), `version`, `create_revision`
//!   (`create`), `mod_revision` (`mod`), `exists`; `op` one of `=` (`==`, `eq`), `!=` (`ne`),
//!   `>` (`gt`), `<` (`lt`); `value` a string for `value`, an integer for the revision
//!   targets, a boolean for `exists`.
//! - operations: `{"put": {"key", "value", "prev_kv"?}}`,
//!   `{"delete": {"key", "range_end"? (or "end"), "prefix"?, "prev_kv"?}}`,
//!   `{"range": {"key", "end"?, "prefix"?, "limit"?, "keys_only"?}}` (only `key`: that key;
//!   `end: ""`: to the last key), `{"get": {"key"}}`.
//!
//! All three lists are optional. Unknown fields are errors, so a typo does not silently change
//! what the transaction does.

use serde::Deserialize;
use serde_json::Value;

use kvset_client::{Compare, CompareOp, CompareOperand, KeyRange, Txn, TxnOp};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnSpec {
    #[serde(default)]
    compare: Vec<CompareSpec>,
    #[serde(default)]
    success: Vec<OpSpec>,
    #[serde(default)]
    failure: Vec<OpSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareSpec {
    key: String,
    #[serde(default)]
    target: Option<String>,
    op: String,
    value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum OpSpec {
    Put(PutSpec),
    Delete(DeleteSpec),
    Range(RangeSpec),
    Get(GetSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSpec {
    key: String,
    value: String,
    #[serde(default)]
    prev_kv: bool,
    /// Attach the key to this lease (0 or absent: none).
    #[serde(default)]
    lease: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteSpec {
    key: String,
    #[serde(default, alias = "end")]
    range_end: Option<String>,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    prev_kv: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeSpec {
    #[serde(default)]
    key: String,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    keys_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetSpec {
    key: String,
}

/// Parses the JSON form into a [`Txn`]. The error says what is wrong and where.
pub fn parse_txn_json(text: &str) -> Result<Txn, String> {
    let spec: TxnSpec = serde_json::from_str(text).map_err(|e| format!("invalid txn JSON: {e}"))?;
    let compares = spec
        .compare
        .iter()
        .enumerate()
        .map(|(i, c)| compare(c).map_err(|e| format!("compare[{i}]: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let ops = |list: Vec<OpSpec>, branch: &str| -> Result<Vec<TxnOp>, String> {
        list.into_iter()
            .enumerate()
            .map(|(i, op)| operation(op).map_err(|e| format!("{branch}[{i}]: {e}")))
            .collect()
    };
    Ok(Txn {
        compares,
        success: ops(spec.success, "success")?,
        failure: ops(spec.failure, "failure")?,
    })
}

fn compare(c: &CompareSpec) -> Result<Compare, String> {
    let op = match c.op.trim().to_ascii_lowercase().as_str() {
        "=" | "==" | "eq" => CompareOp::Equal,
        "!=" | "ne" => CompareOp::NotEqual,
        ">" | "gt" => CompareOp::Greater,
        "<" | "lt" => CompareOp::Less,
        other => return Err(format!("unknown op {other:?}; use =, !=, > or <")),
    };
    let target = c.target.as_deref().unwrap_or("value").to_ascii_lowercase();
    let number = || -> Result<i64, String> {
        match &c.value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("target {target:?} needs an integer value"))
    };
    let operand = match target.as_str() {
        "value" => match &c.value {
            Value::String(s) => CompareOperand::Value(s.clone().into_bytes()),
            _ => return Err("target \"value\" needs a string value".into()),
        },
        "version" => CompareOperand::Version(number()?),
        "create_revision" | "create" => CompareOperand::CreateRevision(number()?),
        "mod_revision" | "mod" => CompareOperand::ModRevision(number()?),
        "exists" => {
            if !matches!(op, CompareOp::Equal | CompareOp::NotEqual) {
                return Err("target \"exists\" allows only = and !=".into());
            }
            match &c.value {
                Value::Bool(b) => CompareOperand::Exists(*b),
                _ => return Err("target \"exists\" needs true or false".into()),
            }
        }
        other => {
            return Err(format!(
            "unknown target {other:?}; use value, version, create_revision, mod_revision or exists"
        ))
        }
    };
    Ok(Compare {
        key: c.key.clone().into_bytes(),
        op,
        operand,
    })
}

fn operation(op: OpSpec) -> Result<TxnOp, String> {
    Ok(match op {
        OpSpec::Put(p) => TxnOp::Put {
            key: p.key.into_bytes(),
            value: p.value.into_bytes(),
            prev_kv: p.prev_kv,
            lease: p.lease,
        },
        OpSpec::Delete(d) => {
            let range = match (d.prefix, d.range_end) {
                (true, Some(_)) => return Err("delete: use either prefix or range_end".into()),
                (true, None) => KeyRange::prefix(d.key),
                (false, Some(end)) => KeyRange::range(d.key, end),
                (false, None) => KeyRange::key(d.key),
            };
            TxnOp::Delete {
                range,
                prev_kv: d.prev_kv,
            }
        }
        OpSpec::Range(r) => {
            let range = match (r.prefix, r.end) {
                (true, Some(_)) => return Err("range: use either prefix or end".into()),
                (true, None) => KeyRange::prefix(r.key),
                (false, Some(end)) => KeyRange::range(r.key, end),
                (false, None) => KeyRange::key(r.key),
            };
            TxnOp::Range {
                range,
                limit: r.limit,
                keys_only: r.keys_only,
            }
        }
        OpSpec::Get(g) => TxnOp::get(g.key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let txn = parse_txn_json(
            r#"{"compare":[{"key":"a","target":"value","op":"=","value":"x"}],
                "success":[{"put":{"key":"a","value":"y"}}],
                "failure":[{"get":{"key":"a"}}]}"#,
        )
        .unwrap();
        assert_eq!(txn.compares, vec![Compare::value("a").equal("x")]);
        assert_eq!(txn.success, vec![TxnOp::put("a", "y")]);
        assert_eq!(txn.failure, vec![TxnOp::get("a")]);
    }

    #[test]
    fn parses_targets_ops_and_operations() {
        let txn = parse_txn_json(
            r#"{"compare":[
                  {"key":"a","target":"version","op":">","value":3},
                  {"key":"b","target":"mod","op":"lt","value":"10"},
                  {"key":"c","target":"exists","op":"=","value":false}],
                "success":[
                  {"delete":{"key":"p/","prefix":true,"prev_kv":true}},
                  {"delete":{"key":"a","end":"c"}},
                  {"range":{"key":"m","end":"","keys_only":true,"limit":5}}]}"#,
        )
        .unwrap();
        assert_eq!(
            txn.compares,
            vec![
                Compare::version("a").greater(3),
                Compare::mod_revision("b").less(10),
                Compare::absent("c"),
            ]
        );
        assert_eq!(
            txn.success[0],
            TxnOp::Delete {
                range: KeyRange::prefix("p/"),
                prev_kv: true
            }
        );
        assert_eq!(
            txn.success[1],
            TxnOp::delete_range(KeyRange::range("a", "c"))
        );
        assert_eq!(
            txn.success[2],
            TxnOp::Range {
                range: KeyRange::starting_at("m"),
                limit: 5,
                keys_only: true
            }
        );
        assert!(txn.failure.is_empty());
    }

    #[test]
    fn rejects_mistakes_with_a_location() {
        let err = |s: &str| parse_txn_json(s).unwrap_err();
        assert!(err("{").starts_with("invalid txn JSON"));
        assert!(err(r#"{"compares":[]}"#).contains("unknown field"));
        assert!(err(r#"{"compare":[{"key":"a","op":"~","value":"x"}]}"#)
            .starts_with("compare[0]: unknown op"));
        assert!(
            err(r#"{"compare":[{"key":"a","target":"version","op":"=","value":"x"}]}"#)
                .contains("needs an integer")
        );
        assert!(
            err(r#"{"compare":[{"key":"a","target":"exists","op":">","value":true}]}"#)
                .contains("only = and !=")
        );
        assert!(
            err(r#"{"success":[{"delete":{"key":"a","prefix":true,"end":"b"}}]}"#)
                .starts_with("success[0]")
        );
        assert!(err(r#"{"failure":[{"put":{"key":"a"}}]}"#).contains("missing field"));
    }
}
