//! TLS settings: the CA bundle that signed the members' certificates, and optionally a client
//! certificate for clusters that require one (`kvset-server --tls-client-ca`).
//!
//! A client speaks TLS to every member or to none: with [`TlsOptions`] set on the
//! [`crate::ClientBuilder`] (or an endpoint given as `https://host:port`), every endpoint is
//! dialed over `https`, including the addresses the client learns from the cluster (leader
//! hints, membership listings), which are plain `host:port`. The server name checked against a
//! member's certificate is the endpoint's host (a DNS name or an IP address), so the members'
//! certificates must name the addresses clients use: the pods' DNS names, the Service name, or
//! the IPs.
//!
//! The PEM files are read once, when the client is built. A client built after a certificate
//! rotation picks up the new files; a long-lived client keeps the CA it was built with (a CA
//! bundle that holds both the old and the new CA covers a rotation).

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};

/// PEM text, from a file or in memory.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file, read when the client is built.
    File(PathBuf),
    /// The PEM text itself.
    Bytes(Vec<u8>),
}

impl Pem {
    /// PEM from a file.
    pub fn file(path: impl Into<PathBuf>) -> Pem {
        Pem::File(path.into())
    }

    /// PEM text in memory.
    pub fn bytes(pem: impl Into<Vec<u8>>) -> Pem {
        Pem::Bytes(pem.into())
    }

    /// Where the PEM comes from, for messages.
    fn describe(&self, what: &str) -> String {
        match self {
            Pem::File(path) => format!("{what} {}", path.display()),
            Pem::Bytes(_) => format!("the in-memory {what}"),
        }
    }

    fn load(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::File(path) => std::fs::read(path).map_err(|e| {
                Error::TlsConfig(format!("cannot read {what} {}: {e}", path.display()))
            }),
            Pem::Bytes(bytes) => Ok(bytes.clone()),
        }
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            // Never print key material.
            Pem::Bytes(bytes) => write!(f, "Bytes(<{} bytes>)", bytes.len()),
        }
    }
}

impl From<PathBuf> for Pem {
    fn from(path: PathBuf) -> Pem {
        Pem::File(path)
    }
}

impl From<&Path> for Pem {
    fn from(path: &Path) -> Pem {
        Pem::File(path.to_path_buf())
    }
}

impl From<Vec<u8>> for Pem {
    fn from(bytes: Vec<u8>) -> Pem {
        Pem::Bytes(bytes)
    }
}

impl From<&[u8]> for Pem {
    fn from(bytes: &[u8]) -> Pem {
        Pem::Bytes(bytes.to_vec())
    }
}

impl From<&str> for Pem {
    /// PEM *text* (not a path: use [`Pem::file`] or a `PathBuf` for a file).
    fn from(text: &str) -> Pem {
        Pem::Bytes(text.as_bytes().to_vec())
    }
}

impl From<String> for Pem {
    /// PEM *text* (not a path).
    fn from(text: String) -> Pem {
        Pem::Bytes(text.into_bytes())
    }
}

/// A client certificate and its private key, presented to members that require client
/// certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate chain (PEM), leaf first.
    pub cert: Pem,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Pem,
}

/// TLS settings of a client; see the [module docs](self).
///
/// ```no_run
/// # async fn demo() -> kvset_client::Result<()> {
/// use kvset_client::{Client, Pem, TlsOptions};
/// let client = Client::builder()
///     .endpoints(["kv-0.kv.kvset.svc:7379"])
///     .tls(TlsOptions::new(Pem::file("/etc/kvset/ca.pem"))
///         .identity(Pem::file("/etc/kvset/client.pem"), Pem::file("/etc/kvset/client.key")))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The CA bundle (PEM, one or more certificates) the members' certificates must chain to.
    pub ca: Pem,
    /// A client certificate and key, for clusters that require client certificates.
    pub identity: Option<TlsIdentity>,
}

impl TlsOptions {
    /// TLS that trusts the CA bundle `ca`, without a client certificate.
    pub fn new(ca: impl Into<Pem>) -> TlsOptions {
        TlsOptions {
            ca: ca.into(),
            identity: None,
        }
    }

    /// Presents this client certificate and key.
    pub fn identity(mut self, cert: impl Into<Pem>, key: impl Into<Pem>) -> TlsOptions {
        self.identity = Some(TlsIdentity {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Reads and checks the PEM material and builds tonic's configuration. Fails with
    /// [`Error::TlsConfig`] when a file cannot be read or holds no usable certificate or key.
    pub(crate) fn client_config(&self) -> Result<ClientTlsConfig> {
        let ca = self.ca.load("CA bundle")?;
        certificates(&ca, &self.ca.describe("CA bundle"))?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
        if let Some(identity) = &self.identity {
            let cert = identity.cert.load("client certificate")?;
            certificates(&cert, &identity.cert.describe("client certificate"))?;
            let key = identity.key.load("client key")?;
            PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                Error::TlsConfig(format!(
                    "{} holds no usable PEM private key: {e}",
                    identity.key.describe("client key")
                ))
            })?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        // Let tonic check the whole set now (for example a key that does not match the
        // certificate), so a bad configuration fails when the client is built, not per call.
        Endpoint::from_static("https://localhost")
            .tls_config(config.clone())
            .map_err(|e| {
                Error::TlsConfig(format!(
                    "the certificates cannot be used: {}",
                    error_chain(&e)
                ))
            })?;
        Ok(config)
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<usize> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::TlsConfig(format!("{what} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::TlsConfig(format!(
            "{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs.len())
}

/// An error and its sources, joined with `: `.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = inner.source();
    }
    parts.join(": ")
}

/// Describes a TLS failure found in `err`'s source chain, with advice; `None` when the failure
/// is not about TLS.
pub(crate) fn describe_tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let found = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = found {
            return Some(tls_advice(tls));
        }
        cur = e.source();
    }
    // h2 passes a connection's I/O error on to its streams as text, so a rustls error that
    // ended the connection is only recognisable by its message there.
    let text = error_chain(err);
    ALERT_TEXTS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, error)| tls_advice(error))
}

/// rustls messages as h2 relays them, and the errors they stand for.
const ALERT_TEXTS: &[(&str, rustls::Error)] = &[
    (
        "received fatal alert: CertificateRequired",
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
    ),
    (
        "received fatal alert: BadCertificate",
        rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
    ),
    (
        "received fatal alert: UnknownCA",
        rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
    ),
    (
        "received fatal alert: CertificateUnknown",
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateUnknown),
    ),
    (
        "received fatal alert: DecryptError",
        rustls::Error::AlertReceived(rustls::AlertDescription::DecryptError),
    ),
];

/// Every message starts with "TLS" (see [`is_tls_message`]).
fn tls_advice(e: &rustls::Error) -> String {
    use rustls::AlertDescription as Alert;
    match e {
        rustls::Error::InvalidCertificate(_) => format!(
            "TLS handshake failed: {e}; is --cacert (TlsOptions::ca) the CA that signed the \
             members' certificates, and do they name this address?"
        ),
        rustls::Error::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::AccessDenied,
        ) => format!(
            "TLS handshake failed: {e}; the member requires a client certificate signed by \
             its client CA: pass --cert and --key (TlsOptions::identity)"
        ),
        rustls::Error::InvalidMessage(_) => format!(
            "TLS handshake failed: {e}; is the member serving TLS? (without TLS, leave out \
             --cacert and use host:port or http://host:port)"
        ),
        _ => format!("TLS handshake failed: {e}"),
    }
}

/// True for a cause message about TLS that carries its own advice ([`describe_tls_failure`],
/// `error::annotate`).
pub(crate) fn is_tls_message(message: &str) -> bool {
    message.starts_with("TLS ") || message.starts_with("TLS:") || message.starts_with("TLS?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_material_is_refused_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("kvset-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = TlsOptions::new(Pem::file(&missing))
            .client_config()
            .unwrap_err();
        assert!(matches!(e, Error::TlsConfig(_)), "{e:?}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = TlsOptions::new(Pem::file(&junk))
            .client_config()
            .unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");

        let e = TlsOptions::new("also not a certificate")
            .client_config()
            .unwrap_err();
        assert!(e.to_string().contains("in-memory CA bundle"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_material_is_not_printed() {
        let opts = TlsOptions::new("ca").identity("cert", "-----BEGIN PRIVATE KEY-----secret");
        let shown = format!("{opts:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("bytes>"), "{shown}");
    }

    #[test]
    fn tls_failures_are_explained() {
        let e = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let msg = describe_tls_failure(&io).unwrap();
        assert!(is_tls_message(&msg));
        assert!(msg.contains("--cert and --key"), "{msg}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(describe_tls_failure(&plain).is_none());
        // As h2 relays it to a stream: text only.
        let relayed = std::io::Error::other("transport error: received fatal alert: UnknownCA");
        let msg = describe_tls_failure(&relayed).unwrap();
        assert!(msg.contains("--cert and --key"), "{msg}");
    }
}
