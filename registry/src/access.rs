//! How a node program reaches any registry it is sent to (SPEC §8, §11):
//! plain HTTP only for the hosts the configuration names, a CA file only
//! for its own host, and credentials from the request that asked, else from
//! the docker `config.json` the configuration names, for that host only.
//!
//! Files are read once, when the program starts, so a lookup never waits
//! on the disk and a missing file is an error at start-up, not a silent
//! anonymous request later.

use std::path::PathBuf;
use std::time::Duration;

use crate::oci::{Credentials, RegistryOptions};

#[derive(Clone, Default)]
pub struct Registries {
    plain_http: Vec<String>,
    /// PEM certificates by the `HOST[:PORT]` they are for.
    ca: Vec<(String, Vec<u8>)>,
    docker_config: Option<(PathBuf, Vec<u8>)>,
    timeout: Duration,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("plain_http", &self.plain_http)
            .field(
                "ca_for",
                &self.ca.iter().map(|(h, _)| h).collect::<Vec<_>>(),
            )
            .field(
                "docker_config",
                &self.docker_config.as_ref().map(|(p, _)| p),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Registries {
    /// Reads the CA files and the credentials file; the error names the
    /// file that could not be read.
    pub fn load(
        plain_http: Vec<String>,
        extra_ca: &[(String, PathBuf)],
        credentials: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Registries, String> {
        let mut ca = Vec::new();
        for (host, path) in extra_ca {
            let pem = std::fs::read(path)
                .map_err(|e| format!("registries.\"{host}\".ca_file {}: {e}", path.display()))?;
            ca.push((host.clone(), pem));
        }
        let docker_config = match credentials {
            Some(path) => {
                let json = std::fs::read(&path)
                    .map_err(|e| format!("registry_credentials {}: {e}", path.display()))?;
                // Checked now, so that a broken file is a start-up error.
                Credentials::from_docker_config(&json, "")
                    .map_err(|e| format!("registry_credentials {}: {e}", path.display()))?;
                Some((path, json))
            }
            None => None,
        };
        Ok(Registries {
            plain_http,
            ca,
            docker_config,
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The options for one request to `registry` (`HOST[:PORT]`):
    /// `credentials` when the request brought some, else the credentials
    /// file's entry for that registry.
    pub fn options_for(
        &self,
        registry: &str,
        credentials: Option<Credentials>,
    ) -> Result<RegistryOptions, String> {
        let credentials = match (credentials, &self.docker_config) {
            (Some(given), _) => given,
            (None, Some((path, json))) => {
                // Docker Hub's API host is not the name config.json files
                // key it by.
                let names: &[&str] = if registry == "registry-1.docker.io" {
                    &["registry-1.docker.io", "index.docker.io", "docker.io"]
                } else {
                    &[registry]
                };
                let mut found = Credentials::Anonymous;
                for name in names {
                    found = Credentials::from_docker_config(json, name)
                        .map_err(|e| format!("registry_credentials {}: {e}", path.display()))?;
                    if found != Credentials::Anonymous {
                        break;
                    }
                }
                found
            }
            (None, None) => Credentials::Anonymous,
        };
        Ok(RegistryOptions {
            plain_http: self.plain_http.clone(),
            timeout: self.timeout,
            credentials,
            extra_ca_pem: self
                .ca
                .iter()
                .filter(|(host, _)| host == registry)
                .map(|(_, pem)| pem.clone())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_registry_gets_its_own_ca_and_credentials_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"PEM").unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            br#"{"auths":{"a.test":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let registries = Registries::load(
            vec!["127.0.0.1:5000".into()],
            &[("a.test".into(), ca)],
            Some(config),
            Duration::from_secs(5),
        )
        .unwrap();
        let a = registries.options_for("a.test", None).unwrap();
        assert_eq!(a.extra_ca_pem, vec![b"PEM".to_vec()]);
        assert!(matches!(a.credentials, Credentials::Basic { .. }));
        let b = registries.options_for("b.test", None).unwrap();
        assert!(b.extra_ca_pem.is_empty());
        assert_eq!(b.credentials, Credentials::Anonymous);
        assert!(b.is_plain_http("127.0.0.1:5000"));
        // What the request brought wins.
        let given = registries
            .options_for("a.test", Some(Credentials::Bearer("t".into())))
            .unwrap();
        assert_eq!(given.credentials, Credentials::Bearer("t".into()));
        // Docker Hub, by the name `docker login` writes.
        let hub = dir.path().join("hub.json");
        std::fs::write(
            &hub,
            br#"{"auths":{"https://index.docker.io/v1/":{"username":"h","password":"p"}}}"#,
        )
        .unwrap();
        let hub = Registries::load(vec![], &[], Some(hub), Duration::from_secs(5)).unwrap();
        assert!(matches!(
            hub.options_for("registry-1.docker.io", None)
                .unwrap()
                .credentials,
            Credentials::Basic { .. }
        ));
        let missing = Registries::load(
            vec![],
            &[],
            Some(dir.path().join("nope.json")),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(missing.contains("nope.json"), "{missing}");
    }
}
