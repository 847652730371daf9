//! The policy file (`--auth-policy`): roles with key permissions, and which identity holds
//! which roles.
//!
//! ```yaml
//! roles:
//!   app:      { read: ["app/"], write: ["app/"] }   # key prefixes; "" means every key
//!   reports:  { read: [{ from: "r/2026", to: "r/2027" }] }   # or ranges [from, to)
//!   admin:    { read: [""], write: [""], admin: true }
//! bindings:                 # identity -> roles
//!   cn:operator: [admin]
//!   token:app: [app]
//!   anonymous: [reports]
//! ```
//!
//! The file is checked whole when it is loaded (at start-up, and on every change while the
//! member runs): unknown fields, a binding to a role that does not exist, a malformed identity or
//! an empty range are errors that name the line, and a file with an error is not used at all. A
//! partial policy would be worse than none: a typo in one binding must not silently leave that
//! identity with nothing (or, worse, keep a grant the operator meant to take away).
//!
//! Permissions only ever grant: an identity's rights are the union of its roles', so the order
//! of roles and bindings never matters.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::identity::Identity;
use super::AuthError;
use crate::store::KeyRange;

/// A loaded, checked policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    roles: BTreeMap<String, Role>,
    bindings: BTreeMap<Identity, Vec<String>>,
}

/// What one role grants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Role {
    /// Key ranges the role may read (Get, Range, Txn compares and reads, watches).
    pub read: Vec<KeyRange>,
    /// Key ranges the role may write (Put, Delete, Txn writes).
    pub write: Vec<KeyRange>,
    /// Membership changes, backups, compaction, alarms and lease administration.
    pub admin: bool,
}

/// What an identity may do: the union of its roles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grants {
    /// The roles bound to the identity, in name order.
    pub roles: Vec<String>,
    pub read: Vec<KeyRange>,
    pub write: Vec<KeyRange>,
    pub admin: bool,
}

impl Grants {
    /// True when every key of `want` is in one of `spans` (together they may cover it).
    pub fn covers(spans: &[KeyRange], want: &KeyRange) -> bool {
        if want
            .end
            .as_deref()
            .is_some_and(|end| end <= want.start.as_slice())
        {
            return true; // an empty range touches no key
        }
        let mut sorted: Vec<&KeyRange> = spans.iter().collect();
        sorted.sort_by(|a, b| a.start.cmp(&b.start));
        // `covered_to`: every key in [want.start, covered_to) is granted.
        let mut covered_to = want.start.clone();
        for span in sorted {
            if span.start > covered_to {
                break; // a gap at covered_to: later spans start even further on
            }
            match &span.end {
                None => return true,
                Some(end) if *end > covered_to => covered_to = end.clone(),
                Some(_) => {}
            }
            if want.end.as_ref().is_some_and(|end| covered_to >= *end) {
                return true;
            }
        }
        false
    }
}

impl Policy {
    /// Parses and checks the policy text of `file` (the name is used in errors only).
    pub fn parse(file: &str, text: &str) -> Result<Policy, AuthError> {
        if text.trim().is_empty() {
            return Ok(Policy::default());
        }
        let raw: RawPolicy = serde_norway::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            AuthError::at(file, line, strip_location(&e.to_string()))
        })?;
        let mut roles = BTreeMap::new();
        for (name, raw_role) in raw.roles {
            let line = line_of(text, &name);
            if !valid_name(&name) {
                return Err(AuthError::at(
                    file,
                    line,
                    format!("role name {name:?}: use letters, digits, '-', '_' or '.'"),
                ));
            }
            let span = |s: RawSpan| {
                s.into_range()
                    .map_err(|m| AuthError::at(file, line, format!("role {name}: {m}")))
            };
            let role = Role {
                read: raw_role
                    .read
                    .into_iter()
                    .map(span)
                    .collect::<Result<_, _>>()?,
                write: raw_role
                    .write
                    .into_iter()
                    .map(span)
                    .collect::<Result<_, _>>()?,
                admin: raw_role.admin,
            };
            roles.insert(name, role);
        }
        let mut bindings = BTreeMap::new();
        for (who, names) in raw.bindings {
            let line = line_of(text, &who);
            let identity: Identity = who
                .parse()
                .map_err(|e: String| AuthError::at(file, line, e))?;
            for role in &names {
                if !roles.contains_key(role) {
                    let known: Vec<&str> = roles.keys().map(String::as_str).collect();
                    return Err(AuthError::at(
                        file,
                        line,
                        format!(
                            "binding {who}: no role named {role:?} (roles: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
            let mut names = names;
            names.sort();
            names.dedup();
            bindings.insert(identity, names);
        }
        Ok(Policy { roles, bindings })
    }

    /// The number of roles and of bindings, for start-up logs and status.
    pub fn size(&self) -> (usize, usize) {
        (self.roles.len(), self.bindings.len())
    }

    /// What `identity` may do (nothing when it is bound to no role).
    pub fn grants(&self, identity: &Identity) -> Grants {
        let mut grants = Grants::default();
        for name in self.bindings.get(identity).into_iter().flatten() {
            let Some(role) = self.roles.get(name) else {
                continue;
            };
            grants.roles.push(name.clone());
            grants.read.extend(role.read.iter().cloned());
            grants.write.extend(role.write.iter().cloned());
            grants.admin |= role.admin;
        }
        grants
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    bindings: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    read: Vec<RawSpan>,
    #[serde(default)]
    write: Vec<RawSpan>,
    #[serde(default)]
    admin: bool,
}

/// A permission's keys: a prefix (`"app/"`; `""` is every key) or a range.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSpan {
    Prefix(String),
    Range(RawRange),
}

/// `{ from: "a", to: "m" }`: the keys in `[from, to)`; an empty `to` means "to the last key".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    from: String,
    #[serde(default)]
    to: String,
}

impl RawSpan {
    fn into_range(self) -> Result<KeyRange, String> {
        match self {
            RawSpan::Prefix(p) => Ok(KeyRange::prefix(p.as_bytes())),
            RawSpan::Range(RawRange { from, to }) => {
                if !to.is_empty() && to <= from {
                    return Err(format!(
                        "range {{from: {from:?}, to: {to:?}}} is empty: `to` must sort after \
                         `from` (or be \"\" for \"to the last key\")"
                    ));
                }
                Ok(KeyRange::span(from.as_bytes(), to.as_bytes()))
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The 1-based line where `needle` first appears as a mapping key, for errors found after
/// parsing (the YAML parser's own errors carry their line; the checks made on the parsed
/// value do not).
fn line_of(text: &str, needle: &str) -> usize {
    let as_key = |line: &str| {
        let t = line
            .trim_start()
            .trim_start_matches('"')
            .trim_start_matches('\'');
        t.starts_with(needle)
            && t[needle.len()..]
                .trim_start_matches(['"', '\''])
                .starts_with(':')
    };
    text.lines()
        .position(as_key)
        .or_else(|| text.lines().position(|l| l.contains(needle)))
        .map_or(1, |i| i + 1)
}

/// serde's message without the " at line L column C" the error already carries as a location.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
roles:
  app:      { read: ["app/"], write: ["app/"] }
  readonly: { read: [""] }
  admin:    { read: [""], write: [""], admin: true }
  reports:  { read: [{ from: "r/a", to: "r/m" }] }
bindings:
  cn:operator: [admin]
  token:app: [app]
  anonymous: [readonly]
  san:spiffe://kvset/reports: [reports, readonly]
"#;

    fn key(k: &str) -> KeyRange {
        KeyRange::single(k.as_bytes())
    }

    #[test]
    fn the_issue_example_parses_and_grants_the_union_of_roles() {
        let p = Policy::parse("policy.yaml", EXAMPLE).unwrap();
        assert_eq!(p.size(), (4, 4));
        let app = p.grants(&Identity::Token("app".into()));
        assert_eq!(app.roles, ["app"]);
        assert!(Grants::covers(&app.write, &key("app/x")));
        assert!(!Grants::covers(&app.write, &key("apq")));
        assert!(!app.admin);
        let reports = p.grants(&Identity::San("spiffe://kvset/reports".into()));
        assert_eq!(reports.roles, ["readonly", "reports"]);
        assert!(Grants::covers(&reports.read, &key("zzz")));
        assert!(reports.write.is_empty());
        assert!(p.grants(&Identity::Cn("operator".into())).admin);
        assert_eq!(
            p.grants(&Identity::Cn("stranger".into())),
            Grants::default()
        );
    }

    #[test]
    fn coverage_needs_every_key_of_the_range() {
        let prefix = |p: &str| KeyRange::prefix(p.as_bytes());
        let span = |a: &str, b: &str| KeyRange::span(a.as_bytes(), b.as_bytes());
        let grants = [prefix("app/"), span("b", "d")];
        assert!(Grants::covers(&grants, &prefix("app/")));
        assert!(Grants::covers(&grants, &prefix("app/sub/")));
        // a range crossing the prefix's end
        assert!(!Grants::covers(&grants, &span("app/", "apq")));
        assert!(!Grants::covers(&grants, &prefix("ap")));
        // adjacent spans together cover a range neither covers alone
        let adjacent = [span("a", "c"), span("c", "e")];
        assert!(Grants::covers(&adjacent, &span("b", "d")));
        assert!(!Grants::covers(
            &[span("a", "c"), span("c\0", "e")],
            &span("b", "d")
        ));
        // "to the last key" needs an unbounded grant
        assert!(!Grants::covers(&grants, &span("b", "")));
        assert!(Grants::covers(&[prefix("")], &span("b", "")));
        assert!(Grants::covers(&[prefix("")], &KeyRange::span(b"", b"")));
        // an empty range touches nothing
        assert!(Grants::covers(&[], &span("d", "b")));
        assert!(!Grants::covers(&[], &key("a")));
    }

    #[test]
    fn errors_name_the_line_and_what_to_change() {
        let cases = [
            (
                "roles:\n  app: { read: [\"a\"], wrte: [\"a\"] }\n",
                2,
                "wrte",
            ),
            (
                "roles:\n  app: { read: [\"a\"] }\nbindings:\n  token:app: [ap]\n",
                4,
                "no role named \"ap\"",
            ),
            (
                "roles:\n  app: { read: [\"a\"] }\nbindings:\n  user:app: [app]\n",
                4,
                "cn:NAME",
            ),
            (
                "roles:\n  app: { read: [{from: \"m\", to: \"a\"}] }\n",
                2,
                "is empty",
            ),
            ("roles:\n  \"a b\": { read: [\"a\"] }\n", 2, "role name"),
            ("rolez: {}\n", 1, "rolez"),
            ("roles:\n  app: { read: \"a\" }\n", 2, ""),
        ];
        for (text, line, says) in cases {
            let err = Policy::parse("p.yaml", text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("p.yaml: line {line}: ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_empty_file_is_a_policy_that_grants_nothing() {
        let p = Policy::parse("p.yaml", "{}\n").unwrap();
        assert_eq!(p.grants(&Identity::Anonymous), Grants::default());
    }
}
