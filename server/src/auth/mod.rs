//! Who may do what: client identities, the policy that binds them to roles, and the check every
//! RPC makes before it reads or writes anything.
//!
//! **Off unless configured.** Without `--auth-policy` nothing changes: every caller may do
//! everything, and the member says `authorization: off` at start-up and in `Status`. With a
//! policy, every RPC of the client port is checked (see `api::authz` for what each needs).
//!
//! **Identity** is established by the port a request arrived on, never taken from what the
//! request claims:
//! - the client port ([`client_port`]): a bearer token (`authorization: Bearer …`, checked
//!   against the digests of `--auth-tokens`) if the client sent one; else the TLS client
//!   certificate's subject CN (`cn:NAME`) or SAN (`san:NAME`, with `--auth-cert-identity san`);
//!   else `anonymous`. A token that is not ours is `UNAUTHENTICATED`, never anonymous: a typo in
//!   a token must not quietly downgrade a client.
//! - the peer port ([`peer_port`]), which in a secured cluster only members reach (mutual TLS):
//!   a request another member forwards carries the identity that member established, and was
//!   authorized there, once, before it was forwarded; a member's own requests (joining,
//!   leaving, alarms) act as the member. This is why, with a policy, members send every
//!   member-to-member request to the peer port (see `Node::member_channel`): the identity
//!   travels over the mutually authenticated channel, and a client that writes identity
//!   metadata on the client port gains nothing.
//!
//! **Policy and tokens are reloaded** when their content changes (a ConfigMap or Secret update
//! swaps the mounted file): a file with an error is logged and ignored, the previous policy
//! stays. At start-up an unusable file stops the member: starting with no policy, or an empty
//! one, would open or close everything by surprise.

mod identity;
mod policy;
mod tokens;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

pub use identity::{Caller, Identity};
pub use policy::{Grants, Policy, Role};
pub use tokens::Tokens;

use crate::store::KeyRange;

/// The metadata key that carries a forwarded request's identity on the peer port.
pub const FORWARDED_IDENTITY_KEY: &str = "kvset-forwarded-identity-bin";

/// Errors loading the policy or tokens file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{file}: line {line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("reading {file}: {reason}")]
    Read { file: String, reason: String },
}

impl AuthError {
    pub(crate) fn at(file: &str, line: usize, message: impl Into<String>) -> Self {
        AuthError::Line {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// Which name of a client certificate identifies its holder (`--auth-cert-identity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertIdentity {
    /// The subject's common name: `cn:NAME`.
    #[default]
    Cn,
    /// The first URI subject alternative name, else the first DNS one: `san:NAME` (a
    /// certificate with neither is identified by its CN).
    San,
}

impl std::str::FromStr for CertIdentity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cn" => Ok(CertIdentity::Cn),
            "san" => Ok(CertIdentity::San),
            other => Err(format!("--auth-cert-identity {other:?}: use cn or san")),
        }
    }
}

/// Where the policy comes from (`--auth-policy`, `--auth-tokens`, `--auth-cert-identity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    pub policy: PathBuf,
    pub tokens: Option<PathBuf>,
    pub cert_identity: CertIdentity,
}

/// A permission a request may lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    /// The metric label and the word in messages.
    pub fn label(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

/// One thing a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Read every key of the range.
    Read(KeyRange),
    /// Write every key of the range.
    Write(KeyRange),
    /// The admin permission, for the named operation.
    Admin(&'static str),
    /// Write permission on some key, for the named operation (granting or keeping a lease alive:
    /// a lease is only good for attaching keys one may write).
    SomeWrite(&'static str),
}

/// A request refused for want of a permission.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "permission denied: {identity} may not {what}: {granted}; bind a role that grants it in the \
     authorization policy (--auth-policy), or call with another identity"
)]
pub struct Denied {
    /// Who asked.
    pub identity: String,
    /// The permission missing.
    pub permission: Permission,
    /// The operation and keys, in words.
    what: String,
    /// What the identity's roles grant, in words.
    granted: String,
}

/// The loaded policy and tokens, and the digest of the files they came from.
struct Loaded {
    policy: Policy,
    tokens: Tokens,
    digest: [u8; 32],
}

/// The member's authorizer: off, or a policy kept current with its files.
pub struct Authorizer {
    settings: Option<AuthSettings>,
    loaded: RwLock<Arc<Loaded>>,
    /// The last reload's error, until a reload succeeds (shown in `Status`).
    reload_error: Mutex<Option<String>>,
    /// Identities of client certificates already seen, by certificate.
    cert_names: Mutex<HashMap<Vec<u8>, Identity>>,
}

/// Certificates whose identity is remembered; beyond that the cache starts over.
const CERT_CACHE_ENTRIES: usize = 1024;

impl Authorizer {
    /// No policy: everything is allowed.
    pub fn off() -> Arc<Self> {
        Arc::new(Self {
            settings: None,
            loaded: RwLock::new(Arc::new(Loaded {
                policy: Policy::default(),
                tokens: Tokens::default(),
                digest: [0; 32],
            })),
            reload_error: Mutex::new(None),
            cert_names: Mutex::new(HashMap::new()),
        })
    }

    /// Loads the policy (and tokens) of `settings`; `None` is [`Authorizer::off`].
    pub fn load(settings: Option<AuthSettings>) -> Result<Arc<Self>, AuthError> {
        let Some(settings) = settings else {
            return Ok(Self::off());
        };
        let loaded = read_files(&settings)?;
        Ok(Arc::new(Self {
            settings: Some(settings),
            loaded: RwLock::new(Arc::new(loaded)),
            reload_error: Mutex::new(None),
            cert_names: Mutex::new(HashMap::new()),
        }))
    }

    /// True when a policy is enforced.
    pub fn is_on(&self) -> bool {
        self.settings.is_some()
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.read().expect("auth lock").clone()
    }

    /// `off`, or `on` with the files, their sizes and a failed reload if there is one.
    pub fn describe(&self) -> String {
        let Some(settings) = &self.settings else {
            return "off".to_string();
        };
        let loaded = self.current();
        let (roles, bindings) = loaded.policy.size();
        let mut text = format!(
            "on (policy {}: {roles} roles, {bindings} bindings",
            settings.policy.display()
        );
        if let Some(tokens) = &settings.tokens {
            text.push_str(&format!(
                "; tokens {}: {}",
                tokens.display(),
                loaded.tokens.len()
            ));
        }
        text.push(')');
        if let Some(e) = self.reload_error.lock().expect("auth lock").as_ref() {
            text.push_str(&format!(
                "; the last reload failed, the policy above stays: {e}"
            ));
        }
        text
    }

    /// Re-reads the files when their content changed; keeps the current policy when the new
    /// one is unusable. True when a new policy was taken.
    pub fn reload_if_changed(&self) -> bool {
        let Some(settings) = &self.settings else {
            return false;
        };
        let digest = match files_digest(settings) {
            Ok(d) => d,
            Err(e) => return self.reload_failed(e),
        };
        if digest == self.current().digest {
            return false;
        }
        match read_files(settings) {
            Ok(loaded) => {
                let (roles, bindings) = loaded.policy.size();
                *self.loaded.write().expect("auth lock") = Arc::new(loaded);
                *self.reload_error.lock().expect("auth lock") = None;
                tracing::info!(roles, bindings, "reloaded the authorization policy");
                true
            }
            Err(e) => self.reload_failed(e),
        }
    }

    fn reload_failed(&self, e: AuthError) -> bool {
        let mut last = self.reload_error.lock().expect("auth lock");
        let message = e.to_string();
        if last.as_deref() != Some(message.as_str()) {
            tracing::error!(error = %message, "the new authorization policy is unusable; keeping the previous one");
        }
        *last = Some(message);
        false
    }

    /// Polls the files for changes until the process ends.
    pub async fn watch(self: Arc<Self>) {
        if !self.is_on() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            self.reload_if_changed();
        }
    }

    /// The identity of a client-port request (see the module docs).
    pub fn identify<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        if let Some(value) = request.metadata().get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Status::unauthenticated(
                        "malformed authorization metadata: send `authorization: Bearer TOKEN`",
                    )
                })?;
            if self.settings.as_ref().is_some_and(|s| s.tokens.is_none()) {
                return Err(Status::unauthenticated(
                    "this member takes no bearer tokens (it runs without --auth-tokens); \
                     authenticate with a TLS client certificate, or call without a token",
                ));
            }
            return match self.current().tokens.name_of(token) {
                Some(name) => Ok(Identity::Token(name.to_string())),
                None => Err(Status::unauthenticated(
                    "the bearer token is not one of this cluster's (--auth-tokens); check the \
                     token you pass with --token or KVSET_TOKEN",
                )),
            };
        }
        let certs = request.peer_certs();
        let Some(cert) = certs.as_ref().and_then(|c| c.first()) else {
            return Ok(Identity::Anonymous);
        };
        let der = cert.as_ref();
        if let Some(id) = self.cert_names.lock().expect("auth lock").get(der) {
            return Ok(id.clone());
        }
        let mode = self
            .settings
            .as_ref()
            .map(|s| s.cert_identity)
            .unwrap_or_default();
        let id = certificate_identity(der, mode).ok_or_else(|| {
            Status::unauthenticated(
                "the client certificate names no subject CN or SAN to identify its holder by",
            )
        })?;
        let mut cache = self.cert_names.lock().expect("auth lock");
        if cache.len() >= CERT_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(der.to_vec(), id.clone());
        Ok(id)
    }

    /// What `identity` may do under the current policy (everything when authorization is off).
    pub fn grants(&self, identity: &Identity) -> Grants {
        if !self.is_on() {
            return Grants {
                roles: Vec::new(),
                read: vec![KeyRange::prefix(b"")],
                write: vec![KeyRange::prefix(b"")],
                admin: true,
            };
        }
        self.current().policy.grants(identity)
    }

    /// Whether `caller` has everything `needs` asks for. A request without a caller (which no
    /// port's interceptor let through) is refused when authorization is on.
    pub fn check(&self, caller: Option<&Caller>, needs: &[Need]) -> Result<(), Denied> {
        if !self.is_on() {
            return Ok(());
        }
        let identity = match caller {
            Some(Caller::Client(id)) => id,
            Some(Caller::Forwarded(_)) | Some(Caller::Member) => return Ok(()),
            None => {
                return Err(Denied {
                    identity: "an unidentified caller".into(),
                    permission: Permission::Admin,
                    what: "call this member (the request reached no port's identity check)".into(),
                    granted: "it holds no role".into(),
                })
            }
        };
        let grants = self.current().policy.grants(identity);
        for need in needs {
            let (ok, permission, what) = match need {
                Need::Read(range) => (
                    Grants::covers(&grants.read, range),
                    Permission::Read,
                    format!("read {}", describe_range(range)),
                ),
                Need::Write(range) => (
                    Grants::covers(&grants.write, range),
                    Permission::Write,
                    format!("write {}", describe_range(range)),
                ),
                Need::Admin(op) => (grants.admin, Permission::Admin, format!("{op} (admin)")),
                Need::SomeWrite(op) => (
                    !grants.write.is_empty(),
                    Permission::Write,
                    format!("{op} (needs write on some key)"),
                ),
            };
            if !ok {
                return Err(Denied {
                    identity: identity.to_string(),
                    permission,
                    what,
                    granted: describe_grants(&grants, permission),
                });
            }
        }
        Ok(())
    }
}

/// The interceptor of the client port: stamps every request with the [`Caller`] it proved
/// to be (identity from token or certificate), or refuses it as `UNAUTHENTICATED`.
pub fn client_port(
    authorizer: Arc<Authorizer>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let caller = if authorizer.is_on() {
            Caller::Client(authorizer.identify(&request)?)
        } else {
            Caller::Client(Identity::Anonymous)
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The interceptor of the client services on the peer port: a forwarded request's identity
/// from [`FORWARDED_IDENTITY_KEY`], else the calling member itself.
pub fn peer_port() -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    |mut request: Request<()>| {
        let caller = match request.metadata().get_bin(FORWARDED_IDENTITY_KEY) {
            Some(value) => {
                let bytes = value.to_bytes().map_err(|_| {
                    Status::invalid_argument("malformed forwarded identity metadata")
                })?;
                let identity = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.parse::<Identity>().ok())
                    .ok_or_else(|| {
                        Status::invalid_argument("malformed forwarded identity metadata")
                    })?;
                Caller::Forwarded(identity)
            }
            None => Caller::Member,
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Marks `forwarded` (a request this member passes on to another member's peer port) with the
/// identity of the client that sent `original`.
pub fn carry_identity<A, B>(original: &Request<A>, forwarded: &mut Request<B>) {
    let identity = match original.extensions().get::<Caller>() {
        Some(Caller::Client(id)) | Some(Caller::Forwarded(id)) => id,
        _ => return,
    };
    forwarded.metadata_mut().insert_bin(
        FORWARDED_IDENTITY_KEY,
        tonic::metadata::MetadataValue::from_bytes(identity.to_string().as_bytes()),
    );
}

/// Copies the caller of `from` onto `to` (a request built in-process from another one, as the
/// etcd API does when it calls the kvset services).
pub fn same_caller<A, B>(from: &Request<A>, mut to: Request<B>) -> Request<B> {
    if let Some(caller) = from.extensions().get::<Caller>() {
        to.extensions_mut().insert(caller.clone());
    }
    to
}

fn read_file(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|e| AuthError::Read {
        file: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn files_digest(settings: &AuthSettings) -> Result<[u8; 32], AuthError> {
    let mut hash = Sha256::new();
    hash.update(read_file(&settings.policy)?.as_bytes());
    if let Some(tokens) = &settings.tokens {
        hash.update([0]);
        hash.update(read_file(tokens)?.as_bytes());
    }
    Ok(hash.finalize().into())
}

fn read_files(settings: &AuthSettings) -> Result<Loaded, AuthError> {
    let policy_text = read_file(&settings.policy)?;
    let policy = Policy::parse(&settings.policy.display().to_string(), &policy_text)?;
    let tokens = match &settings.tokens {
        Some(path) => Tokens::parse(&path.display().to_string(), &read_file(path)?)?,
        None => Tokens::default(),
    };
    Ok(Loaded {
        policy,
        tokens,
        digest: files_digest(settings)?,
    })
}

/// The identity a client certificate (DER) carries, by `mode`.
fn certificate_identity(der: &[u8], mode: CertIdentity) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if mode == CertIdentity::San {
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            use x509_parser::extensions::GeneralName;
            let names = &san.value.general_names;
            let uri = names.iter().find_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            });
            let dns = names.iter().find_map(|n| match n {
                GeneralName::DNSName(d) => Some(*d),
                _ => None,
            });
            if let Some(name) = uri.or(dns) {
                return Some(Identity::San(name.to_string()));
            }
        }
    }
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(Identity::Cn(cn.to_string()))
}

/// A key range in words: `key "a"`, `keys with prefix "app/"`, `keys ["a", "b")`.
pub fn describe_range(range: &KeyRange) -> String {
    let show = |b: &[u8]| format!("\"{}\"", b.escape_ascii());
    match &range.end {
        None if range.start.is_empty() => "every key".to_string(),
        None => format!("keys from {} on", show(&range.start)),
        Some(end) if *end == [range.start.as_slice(), &[0]].concat() => {
            format!("key {}", show(&range.start))
        }
        Some(end) if KeyRange::prefix(&range.start).end.as_ref() == Some(end) => {
            format!("keys with prefix {}", show(&range.start))
        }
        Some(end) => format!("keys [{}, {})", show(&range.start), show(end)),
    }
}

fn describe_grants(grants: &Grants, permission: Permission) -> String {
    let roles = if grants.roles.is_empty() {
        "it holds no role".to_string()
    } else {
        format!("its roles ({})", grants.roles.join(", "))
    };
    let spans = match permission {
        Permission::Read => &grants.read,
        Permission::Write => &grants.write,
        Permission::Admin if grants.roles.is_empty() => return roles,
        Permission::Admin => return format!("{roles} do not include admin"),
    };
    if spans.is_empty() {
        return format!("{roles} grant no {}", permission.label());
    }
    let list: Vec<String> = spans.iter().map(describe_range).collect();
    format!(
        "{roles} grant {} on {}",
        permission.label(),
        list.join(", ")
    )
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests;
