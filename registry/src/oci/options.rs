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

impl Credentials {
    /// The credentials a docker `config.json` (SPEC §11
    /// `registry_credentials`, as `docker login` and kubelet's credential
    /// files write it) holds for `registry` (`host` or `host:port`):
    /// `auth` (base64 `user:password`), or `username` and `password`, or a
    /// `registrytoken`; anonymous when it names the registry not at all.
    pub fn from_docker_config(json: &[u8], registry: &str) -> Result<Credentials, String> {
        use base64::Engine as _;
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            auths: std::collections::BTreeMap<String, Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
            registrytoken: Option<String>,
        }
        let file: File =
            serde_json::from_slice(json).map_err(|e| format!("not a docker config.json: {e}"))?;
        // Keys are written `host`, `https://host` or `https://host/v1/`.
        let host_of = |key: &str| {
            let key = key
                .strip_prefix("https://")
                .or_else(|| key.strip_prefix("http://"))
                .unwrap_or(key);
            key.split('/').next().unwrap_or(key).to_string()
        };
        let Some(entry) = file
            .auths
            .iter()
            .find(|(key, _)| host_of(key) == registry)
            .map(|(_, entry)| entry)
        else {
            return Ok(Credentials::Anonymous);
        };
        if let Some(token) = &entry.registrytoken {
            return Ok(Credentials::Bearer(token.clone()));
        }
        if let Some(auth) = &entry.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("auths.{registry}.auth is not base64: {e}"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("auths.{registry}.auth is not text"))?;
            let Some((username, password)) = decoded.split_once(':') else {
                return Err(format!("auths.{registry}.auth is not user:password"));
            };
            return Ok(Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        match (&entry.username, &entry.password) {
            (Some(username), Some(password)) => Ok(Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => Err(format!(
                "auths.{registry} has neither auth, username and password, nor registrytoken"
            )),
        }
    }
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

    /// The HTTP client for these options, built once per thread: building
    /// one reads the system's CA store, a third of an unchanged poll's CPU,
    /// and a kept client keeps its connections for the next poll. Per
    /// thread, because a client's connections live on the runtime that made
    /// them, and a runtime's threads end with it: a client never outlives
    /// the runtime it is used on.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, String> {
        type Clients = Vec<((Duration, Vec<Vec<u8>>), reqwest::Client)>;
        thread_local! {
            static CLIENTS: std::cell::RefCell<Clients> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // A handful of option sets on a thread; past that, build anew
        // rather than grow.
        const KEPT: usize = 8;
        let key = (self.timeout, self.extra_ca_pem.clone());
        let kept = CLIENTS.with(|clients| {
            clients
                .borrow()
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, client)| client.clone())
        });
        if let Some(client) = kept {
            return Ok(client);
        }
        let client = self.build_http_client()?;
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if clients.len() < KEPT {
                clients.push((key, client.clone()));
            }
        });
        Ok(client)
    }

    fn build_http_client(&self) -> Result<reqwest::Client, String> {
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

#[cfg(test)]
mod docker_config {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_docker_config_gives_the_credentials_of_the_registry_it_names() {
        let json = br#"{"auths": {
            "https://reg.example:5000/v1/": {"auth": "dXNlcjpwYXNzOndvcmQ="},
            "other.example": {"username": "u", "password": "p"},
            "token.example": {"registrytoken": "t0k"}
        }}"#;
        let basic = |u: &str, p: &str| Credentials::Basic {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(
            Credentials::from_docker_config(json, "reg.example:5000"),
            Ok(basic("user", "pass:word"))
        );
        assert_eq!(
            Credentials::from_docker_config(json, "other.example"),
            Ok(basic("u", "p"))
        );
        assert_eq!(
            Credentials::from_docker_config(json, "token.example"),
            Ok(Credentials::Bearer("t0k".into()))
        );
        assert_eq!(
            Credentials::from_docker_config(json, "reg.example"),
            Ok(Credentials::Anonymous)
        );
        let bad = br#"{"auths": {"x": {"auth": "bm9jb2xvbg=="}}}"#;
        assert!(Credentials::from_docker_config(bad, "x").is_err());
        assert!(Credentials::from_docker_config(b"nope", "x").is_err());
    }
}
