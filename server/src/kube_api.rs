//! Where a member reaches the Kubernetes API when it is told to (`--kube-api`), for both the
//! cluster record (`cluster_record`, a ConfigMap) and the set's desired size (`replicas`, the
//! StatefulSet). Its own module because both of those use it and one of them uses the other:
//! with the type here, both look down at it.

/// Why a `--kube-api` value is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid --kube-api {0:?}: expected http://HOST:PORT (e.g. `kubectl proxy`'s \
     http://127.0.0.1:8001); inside a pod leave it unset"
)]
pub struct KubeApiError(String);

/// A Kubernetes API reached directly instead of through the pod's in-cluster endpoint
/// (`--kube-api`): a member running outside a pod behind `kubectl proxy`, which adds the
/// credentials itself, or a test's fake API server. Plain `http://` only: there is no CA or
/// token to use outside a pod, and a proxy on the loopback needs neither.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeApi {
    /// `http://host:port`.
    pub url: String,
    /// The namespace the set's objects live in (`--namespace`).
    pub namespace: String,
}

impl KubeApi {
    /// `url` must be `http://host:port` (a trailing `/` is dropped).
    pub fn new(url: &str, namespace: &str) -> Result<Self, KubeApiError> {
        let url = url.trim_end_matches('/');
        match url.strip_prefix("http://") {
            Some(authority) if !authority.is_empty() && !authority.contains('/') => Ok(Self {
                url: url.to_string(),
                namespace: namespace.to_string(),
            }),
            _ => Err(KubeApiError(url.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_http_kube_api_is_accepted() {
        let api = KubeApi::new("http://127.0.0.1:8001/", "ns").unwrap();
        assert_eq!(api.url, "http://127.0.0.1:8001");
        for bad in [
            "https://10.0.0.1:443",
            "127.0.0.1:8001",
            "http://",
            "http://h:1/api",
        ] {
            let err = KubeApi::new(bad, "ns").unwrap_err();
            assert!(
                err.to_string().contains("expected http://HOST:PORT"),
                "{err}"
            );
        }
    }
}
