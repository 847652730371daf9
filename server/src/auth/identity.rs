//! Who is calling: an identity as the policy names it, and the caller a request carries.

use std::fmt;
use std::str::FromStr;

/// An identity as bindings name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identity {
    /// A TLS client certificate's subject common name (`cn:NAME`).
    Cn(String),
    /// A TLS client certificate's subject alternative name, URI or DNS (`san:NAME`).
    San(String),
    /// A bearer token's name from the tokens file (`token:NAME`).
    Token(String),
    /// A client that presented neither (`anonymous`).
    Anonymous,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Cn(n) => write!(f, "cn:{n}"),
            Identity::San(n) => write!(f, "san:{n}"),
            Identity::Token(n) => write!(f, "token:{n}"),
            Identity::Anonymous => f.write_str("anonymous"),
        }
    }
}

impl FromStr for Identity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "anonymous" {
            return Ok(Identity::Anonymous);
        }
        let named = |kind: fn(String) -> Identity, name: &str| {
            if name.is_empty() || name.chars().any(char::is_control) {
                Err(format!(
                    "identity {s:?}: the name after the colon is empty or has control characters"
                ))
            } else {
                Ok(kind(name.to_string()))
            }
        };
        match s.split_once(':') {
            Some(("cn", name)) => named(Identity::Cn, name),
            Some(("san", name)) => named(Identity::San, name),
            Some(("token", name)) => named(Identity::Token, name),
            _ => Err(format!(
                "identity {s:?}: write cn:NAME, san:NAME, token:NAME or anonymous"
            )),
        }
    }
}

/// Who sent a request, as the member that received it established. Set by the port's
/// interceptor (see [`super::client_port`], [`super::peer_port`]), never from what a client
/// claims in its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client on the client port.
    Client(Identity),
    /// Another member on the peer port, passing on a request of `Identity` it received and
    /// authorized already (a write forwarded to the leader).
    Forwarded(Identity),
    /// Another member on the peer port, acting for itself (joining, leaving, raising an alarm).
    Member,
}

impl Caller {
    /// The identity to report (a member acts as itself).
    pub fn describe(&self) -> String {
        match self {
            Caller::Client(id) | Caller::Forwarded(id) => id.to_string(),
            Caller::Member => "a member of the cluster".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_names() {
        for name in [
            "cn:operator",
            "san:spiffe://x/y",
            "token:app",
            "anonymous",
            "cn:a:b",
        ] {
            let id: Identity = name.parse().unwrap();
            assert_eq!(id.to_string(), name);
        }
        for bad in ["user:x", "cn:", "operator", "token:\n"] {
            assert!(bad.parse::<Identity>().is_err(), "{bad}");
        }
    }
}
