//! Throwaway certificate authorities for TLS tests: certificates are generated on the fly with
//! rcgen, so no key material lives in the repository and every test run uses fresh keys.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// A self-signed CA that issues member and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with `name` as its common name.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `ip` (and `localhost`), usable as server and client certificate;
    /// returns (certificate PEM, key PEM).
    pub fn leaf(&self, ip: IpAddr) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string()]).expect("leaf parameters");
        params.subject_alt_names.push(SanType::IpAddress(ip));
        self.sign(params)
    }

    /// A client certificate with no address in it; returns (certificate PEM, key PEM).
    pub fn client(&self, name: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signed certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `pem` to `dir/name` and returns the path.
pub fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write PEM file");
    path
}
