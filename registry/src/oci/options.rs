//! How to reach registries (SPEC §8 `registries`, `registry_timeout`,
//! `registry_credentials`) and how much a download may cost.

use std::time::Duration;

#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    /// User name and password (or token as password), sent as HTTP Basic
    /// and to a token service when the registry asks for one.
    Basic { username: String, password: String },
    /// A bearer token used as is.
    Bearer(String),
}

// Secrets stay out of logs and error messages.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `host` or `host:port` entries reached over plain HTTP (tests,
    /// registries on 127.0.0.1); everything else is HTTPS.
    pub plain_http: Vec<String>,
    /// Connecting, and each wait for data, gives up after this long.
    pub timeout: Duration,
    pub credentials: Credentials,
    /// PEM certificates trusted beside the platform's roots.
    pub extra_ca_pem: Vec<Vec<u8>>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            plain_http: Vec::new(),
            timeout: Duration::from_secs(30),
            credentials: Credentials::Anonymous,
            extra_ca_pem: Vec::new(),
        }
    }
}

impl RegistryOptions {
    /// Whether `registry` (`host` or `host:port`) is listed for plain HTTP;
    /// a bare host in the list covers every port of it.
    pub fn is_plain_http(&self, registry: &str) -> bool {
        let host = registry
            .strip_prefix('[')
            .and_then(|v6| v6.split(']').next())
            .or_else(|| registry.rsplit_once(':').map(|(host, _)| host))
            .unwrap_or(registry);
        self.plain_http.iter().any(|entry| {
            entry == registry || entry == host || entry.trim_matches(['[', ']']) == host
        })
    }

    pub(crate) fn http_client(&self) -> Result<reqwest::Client, String> {
        let mut certificates = Vec::new();
        for pem in &self.extra_ca_pem {
            let bundle = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("an extra CA certificate is not PEM: {e}"))?;
            // A file of anything else parses as no certificate at all, which
            // would leave the operator wondering why the CA is not trusted.
            if bundle.is_empty() {
                return Err("an extra CA file holds no PEM certificate".into());
            }
            certificates.extend(bundle);
        }
        reqwest::Client::builder()
            .connect_timeout(self.timeout)
            .read_timeout(self.timeout)
            .tls_certs_merge(certificates)
            .user_agent(concat!("attestgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))
    }
}

/// Caps on what one artifact may make us read and write, checked against
/// what the manifest declares before anything is fetched and again while
/// bytes arrive (a registry may lie about sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_manifest: u64,
    pub max_layers: usize,
    pub max_blob: u64,
    /// All files of the artifact together, as written out.
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest: 4 << 20,
            max_layers: 4096,
            max_blob: 16 << 20,
            max_total: 80 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_matches_host_or_host_and_port() {
        let options = RegistryOptions {
            plain_http: vec!["127.0.0.1:5000".into(), "localhost".into(), "[::1]".into()],
            ..RegistryOptions::default()
        };
        assert!(options.is_plain_http("127.0.0.1:5000"));
        assert!(!options.is_plain_http("127.0.0.1:5001"));
        assert!(!options.is_plain_http("127.0.0.1"));
        assert!(options.is_plain_http("localhost:1234"));
        assert!(options.is_plain_http("localhost"));
        assert!(options.is_plain_http("[::1]:5000"));
        assert!(!options.is_plain_http("registry.example"));
    }

    #[test]
    fn credentials_do_not_print_secrets() {
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok".into())).contains("tok"));
    }
}
