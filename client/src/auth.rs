//! Who the cluster takes this client for, and what it may do: `kvsetctl auth whoami` and
//! `kvsetctl auth check`.
//!
//! A member identifies a client by its bearer token ([`crate::ClientBuilder::token`]) or its TLS
//! client certificate, else as `anonymous`, and checks every request against its authorization
//! policy; a refused request fails with [`crate::Error::PermissionDenied`] and writes nothing.
//! These calls let a client find out before it tries.

use kvset_proto::v1 as pb;
use kvset_proto::v1::auth_client::AuthClient;

use crate::client::{request, Client};
use crate::endpoint::Route;
use crate::error::Result;
use crate::range::KeyRange;
use crate::retry::{self, Safety};

/// The identity a member established for this client, and its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    /// `cn:NAME`, `san:NAME`, `token:NAME` or `anonymous`.
    pub identity: String,
    /// The roles the policy binds to it (empty when authorization is off).
    pub roles: Vec<String>,
    /// The member's authorization setting: `off`, or `on (…)` naming the policy file.
    pub authorization: String,
}

/// What this client may do with a key or range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCheck {
    /// The identity checked (this client's).
    pub identity: String,
    /// It may read every key of the range.
    pub read: bool,
    /// It may write every key of the range.
    pub write: bool,
    /// It holds the admin permission (membership, backups, compaction, alarms, lease
    /// administration).
    pub admin: bool,
}

impl Client {
    /// The identity the cluster takes this client for, and the roles bound to it.
    pub async fn who_am_i(&self) -> Result<WhoAmI> {
        let spec = self.spec(
            "who_am_i",
            Safety::Read,
            Route::Leader,
            self.config().retry_deadline,
        );
        let (resp, _) = retry::run(self.registry(), self.config(), spec, |ch, t| async move {
            AuthClient::new(ch)
                .who_am_i(request(pb::WhoAmIRequest {}, t))
                .await
        })
        .await?;
        Ok(WhoAmI {
            identity: resp.identity,
            roles: resp.roles,
            authorization: resp.authorization,
        })
    }

    /// What this client may do with `keys`.
    pub async fn auth_check(&self, keys: &KeyRange) -> Result<AuthCheck> {
        let selector = keys.range_request();
        let message = pb::AuthCheckRequest {
            key: selector.start,
            range_end: selector.end,
            prefix: selector.prefix,
        };
        let spec = self.spec(
            "auth_check",
            Safety::Read,
            Route::Leader,
            self.config().retry_deadline,
        );
        let (resp, _) = retry::run(self.registry(), self.config(), spec, |ch, t| {
            let message = message.clone();
            async move { AuthClient::new(ch).check(request(message, t)).await }
        })
        .await?;
        Ok(AuthCheck {
            identity: resp.identity,
            read: resp.read,
            write: resp.write,
            admin: resp.admin,
        })
    }
}
