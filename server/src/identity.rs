//! Who this replica is, and where its peers are.
//!
//! A StatefulSet gives every pod a stable name `<set>-<ordinal>` (`kv-0`, `kv-1`, …) and, behind
//! a headless Service, a stable DNS name `<set>-<ordinal>.<service>.<namespace>.svc.cluster.local`.
//! kvset builds everything on that: the ordinal is the Raft node id, ordinal 0 bootstraps the
//! cluster, and any member's address can be computed from its ordinal with an address template.
//! For local runs (the launcher, tests) an explicit list replaces the template, because loopback
//! members differ by port rather than by host name.

use std::collections::BTreeMap;
use std::fmt;

use crate::raft::{MemberNode, NodeId};

/// Errors in the identity configuration. Each message says what to set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "pod name {0:?} has no ordinal: expected <set>-<ordinal> such as kv-0. Set --pod-name / \
         POD_NAME (in Kubernetes, from the downward API: fieldRef metadata.name)"
    )]
    NoOrdinal(String),
    #[error(
        "pod name {0:?}: the set name before the ordinal must be a DNS label (lowercase letters, \
         digits and '-', starting with a letter)"
    )]
    BadSetName(String),
    #[error("member list entry {0:?}: expected NAME=CLIENT_ADDR/PEER_ADDR, e.g. kv-0=127.0.0.1:7379/127.0.0.1:7479")]
    BadMemberEntry(String),
    #[error("member list names {0} twice")]
    DuplicateMember(String),
    #[error(
        "member list entry {entry:?} belongs to set {found:?}, but this pod's set is {expected:?}"
    )]
    ForeignMember {
        entry: String,
        found: String,
        expected: String,
    },
    #[error(
        "address template {0:?} must contain {{ordinal}} so that members get distinct addresses"
    )]
    BadTemplate(String),
    #[error("no address known for {0}: it is missing from --peers")]
    UnknownMember(String),
}

/// A pod's StatefulSet identity, parsed from its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodIdentity {
    /// The StatefulSet name (`kv`).
    pub set: String,
    /// The ordinal (`0`); also the Raft node id.
    pub ordinal: NodeId,
}

impl PodIdentity {
    /// Parses `<set>-<ordinal>`. The ordinal is the digits after the last '-'.
    pub fn parse(name: &str) -> Result<Self, IdentityError> {
        let (set, ordinal) = name
            .rsplit_once('-')
            .ok_or_else(|| IdentityError::NoOrdinal(name.to_string()))?;
        let valid_ordinal = !ordinal.is_empty()
            && ordinal.bytes().all(|b| b.is_ascii_digit())
            && (ordinal == "0" || !ordinal.starts_with('0'));
        let ordinal: NodeId = match ordinal.parse() {
            Ok(n) if valid_ordinal => n,
            _ => return Err(IdentityError::NoOrdinal(name.to_string())),
        };
        if !is_dns_label(set) {
            return Err(IdentityError::BadSetName(name.to_string()));
        }
        Ok(Self {
            set: set.to_string(),
            ordinal,
        })
    }

    /// The Raft node id.
    pub fn node_id(&self) -> NodeId {
        self.ordinal
    }

    /// The pod name of another ordinal of the same set.
    pub fn sibling(&self, ordinal: NodeId) -> PodIdentity {
        PodIdentity {
            set: self.set.clone(),
            ordinal,
        }
    }
}

impl fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.set, self.ordinal)
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !s.ends_with('-')
}

/// Where members of the set can be reached.
#[derive(Clone, Debug)]
pub enum PeerDirectory {
    /// Kubernetes: addresses computed from the ordinal with templates. Placeholders: `{set}`,
    /// `{ordinal}`, `{service}`, `{namespace}`, `{client_port}`, `{peer_port}`.
    Template {
        client_template: String,
        peer_template: String,
        service: String,
        namespace: String,
        client_port: u16,
        peer_port: u16,
    },
    /// Local runs: an explicit list of members, by ordinal.
    Static(BTreeMap<NodeId, MemberNode>),
}

/// The Kubernetes default for the peer address template.
pub const DEFAULT_PEER_TEMPLATE: &str =
    "{set}-{ordinal}.{service}.{namespace}.svc.cluster.local:{peer_port}";
/// The Kubernetes default for the client address template.
pub const DEFAULT_CLIENT_TEMPLATE: &str =
    "{set}-{ordinal}.{service}.{namespace}.svc.cluster.local:{client_port}";

impl PeerDirectory {
    /// Checks a template directory: both templates must vary with the ordinal.
    pub fn template(
        client_template: &str,
        peer_template: &str,
        service: &str,
        namespace: &str,
        client_port: u16,
        peer_port: u16,
    ) -> Result<Self, IdentityError> {
        for t in [client_template, peer_template] {
            if !t.contains("{ordinal}") {
                return Err(IdentityError::BadTemplate(t.to_string()));
            }
        }
        Ok(Self::Template {
            client_template: client_template.to_string(),
            peer_template: peer_template.to_string(),
            service: service.to_string(),
            namespace: namespace.to_string(),
            client_port,
            peer_port,
        })
    }

    /// Parses an explicit member list: `kv-0=127.0.0.1:7379/127.0.0.1:7479,kv-1=…`.
    pub fn parse_static(list: &str, set: &str) -> Result<Self, IdentityError> {
        let mut members = BTreeMap::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || IdentityError::BadMemberEntry(entry.to_string());
            let (name, addrs) = entry.split_once('=').ok_or_else(bad)?;
            let (client, peer) = addrs.split_once('/').ok_or_else(bad)?;
            if client.is_empty() || peer.is_empty() {
                return Err(bad());
            }
            let id = PodIdentity::parse(name)?;
            if id.set != set {
                return Err(IdentityError::ForeignMember {
                    entry: entry.to_string(),
                    found: id.set,
                    expected: set.to_string(),
                });
            }
            let node = MemberNode {
                name: name.to_string(),
                client_addr: client.to_string(),
                peer_addr: peer.to_string(),
            };
            if members.insert(id.ordinal, node).is_some() {
                return Err(IdentityError::DuplicateMember(name.to_string()));
            }
        }
        Ok(Self::Static(members))
    }

    /// The address record of `member`.
    pub fn member(&self, member: &PodIdentity) -> Result<MemberNode, IdentityError> {
        match self {
            Self::Static(members) => members
                .get(&member.ordinal)
                .cloned()
                .ok_or_else(|| IdentityError::UnknownMember(member.to_string())),
            Self::Template {
                client_template,
                peer_template,
                service,
                namespace,
                client_port,
                peer_port,
            } => {
                let fill = |t: &str| {
                    t.replace("{set}", &member.set)
                        .replace("{ordinal}", &member.ordinal.to_string())
                        .replace("{service}", service)
                        .replace("{namespace}", namespace)
                        .replace("{client_port}", &client_port.to_string())
                        .replace("{peer_port}", &peer_port.to_string())
                };
                Ok(MemberNode {
                    name: member.to_string(),
                    client_addr: fill(client_template),
                    peer_addr: fill(peer_template),
                })
            }
        }
    }

    /// Members of the set to ask when joining, lowest ordinal first, excluding `me`. With a
    /// template the set's size is unknown, so the caller passes how many ordinals to try.
    pub fn join_candidates(&self, me: &PodIdentity, try_ordinals: NodeId) -> Vec<MemberNode> {
        match self {
            Self::Static(members) => members
                .iter()
                .filter(|(id, _)| **id != me.ordinal)
                .map(|(_, m)| m.clone())
                .collect(),
            Self::Template { .. } => (0..try_ordinals)
                .filter(|o| *o != me.ordinal)
                .filter_map(|o| self.member(&me.sibling(o)).ok())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statefulset_names() {
        assert_eq!(
            PodIdentity::parse("kv-0").unwrap(),
            PodIdentity {
                set: "kv".into(),
                ordinal: 0
            }
        );
        assert_eq!(
            PodIdentity::parse("my-db-12").unwrap(),
            PodIdentity {
                set: "my-db".into(),
                ordinal: 12
            }
        );
        assert_eq!(PodIdentity::parse("kv-12").unwrap().to_string(), "kv-12");
    }

    #[test]
    fn rejects_names_without_an_ordinal() {
        for bad in [
            "kv",
            "kv-",
            "kv-x",
            "-3",
            "kv-01",
            "kv--1",
            "kv-1a",
            "kv-99999999999999999999999",
        ] {
            assert!(
                matches!(
                    PodIdentity::parse(bad),
                    Err(IdentityError::NoOrdinal(_)) | Err(IdentityError::BadSetName(_))
                ),
                "{bad} accepted"
            );
        }
        let msg = PodIdentity::parse("myhost").unwrap_err().to_string();
        assert!(msg.contains("POD_NAME"), "{msg}");
        assert!(matches!(
            PodIdentity::parse("KV-0"),
            Err(IdentityError::BadSetName(_))
        ));
    }

    #[test]
    fn template_fills_kubernetes_dns_names() {
        let dir = PeerDirectory::template(
            DEFAULT_CLIENT_TEMPLATE,
            DEFAULT_PEER_TEMPLATE,
            "kv",
            "prod",
            7379,
            7479,
        )
        .unwrap();
        let me = PodIdentity::parse("kv-1").unwrap();
        let m = dir.member(&me.sibling(2)).unwrap();
        assert_eq!(m.name, "kv-2");
        assert_eq!(m.peer_addr, "kv-2.kv.prod.svc.cluster.local:7479");
        assert_eq!(m.client_addr, "kv-2.kv.prod.svc.cluster.local:7379");
        let names: Vec<_> = dir
            .join_candidates(&me, 3)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["kv-0", "kv-2"]);
        assert!(PeerDirectory::template("host:1", DEFAULT_PEER_TEMPLATE, "s", "n", 1, 2).is_err());
    }

    #[test]
    fn static_list_parses_and_validates() {
        let dir = PeerDirectory::parse_static(
            "kv-0=127.0.0.1:7379/127.0.0.1:7479, kv-1=127.0.0.1:7380/127.0.0.1:7480",
            "kv",
        )
        .unwrap();
        let m = dir.member(&PodIdentity::parse("kv-1").unwrap()).unwrap();
        assert_eq!(
            (m.client_addr.as_str(), m.peer_addr.as_str()),
            ("127.0.0.1:7380", "127.0.0.1:7480")
        );
        assert!(matches!(
            dir.member(&PodIdentity::parse("kv-5").unwrap()),
            Err(IdentityError::UnknownMember(_))
        ));
        assert!(matches!(
            PeerDirectory::parse_static("kv-0=a", "kv"),
            Err(IdentityError::BadMemberEntry(_))
        ));
        assert!(matches!(
            PeerDirectory::parse_static("kv-0=a/b,kv-0=c/d", "kv"),
            Err(IdentityError::DuplicateMember(_))
        ));
        assert!(matches!(
            PeerDirectory::parse_static("db-0=a/b", "kv"),
            Err(IdentityError::ForeignMember { .. })
        ));
    }
}
