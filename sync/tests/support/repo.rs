//! A TUF repository of a bundle, published with the registry crate's own
//! code and keys openssl makes: what the switch test and the fleet
//! benchmark sync from.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use attestgate_registry::tuf::{self, InitOptions, PemKey, PublishOptions, PublishReport};

const DAY: Duration = Duration::from_secs(86_400);

pub const ALLOW: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";
pub const DENY: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";

fn ec_key(path: &Path) -> PemKey {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(path)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PemKey::from_file(path).unwrap()
}

fn public_pem(private: &Path) -> String {
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(private)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// An attestor resource as gcloud prints it, with one ECDSA key; the
/// description is there so that one attestor can change alone.
pub fn attestor_yaml(name: &str, description: &str, public_pem: &str) -> String {
    let mut yaml = format!(
        "name: projects/fleet/attestors/{name}\ndescription: {description}\nuserOwnedGrafeasNote:\n  noteReference: projects/fleet/notes/{name}\n  publicKeys:\n  - id: {name}-key\n    pkixPublicKey:\n      signatureAlgorithm: ECDSA_P256_SHA256\n      publicKeyPem: |\n"
    );
    for line in public_pem.lines() {
        yaml.push_str(&format!("        {line}\n"));
    }
    yaml
}

pub struct Publisher {
    pub work: PathBuf,
    signing: Vec<PemKey>,
    /// A public key to put into attestors (any valid one will do).
    pub attestor_pem: String,
}

impl Publisher {
    /// Keys for every role under `work/keys`, and `work/repo` at its first
    /// root, nothing published yet.
    pub async fn new(work: &Path) -> Publisher {
        let keys = work.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let root = ec_key(&keys.join("root.pem"));
        let targets = ec_key(&keys.join("targets.pem"));
        let snapshot = ec_key(&keys.join("snapshot.pem"));
        let timestamp = ec_key(&keys.join("timestamp.pem"));
        let publisher = Publisher {
            work: work.to_path_buf(),
            signing: vec![targets.clone(), snapshot.clone(), timestamp.clone()],
            attestor_pem: public_pem(&keys.join("targets.pem")),
        };
        tuf::init(
            &publisher.repo(),
            &InitOptions {
                root_keys: vec![root],
                root_threshold: 1,
                targets_keys: vec![targets],
                targets_threshold: 1,
                snapshot_keys: vec![snapshot],
                timestamp_keys: vec![timestamp],
                expires: 365 * DAY,
            },
        )
        .await
        .unwrap();
        publisher
    }

    pub fn repo(&self) -> PathBuf {
        self.work.join("repo")
    }

    pub fn bundle(&self) -> PathBuf {
        self.work.join("bundle")
    }

    /// The root a node is installed with.
    pub fn trust_root(&self) -> PathBuf {
        self.repo().join("metadata/1.root.json")
    }

    /// Replaces the bundle directory with `policy` and `files` (bundle
    /// path, content).
    pub fn write_bundle(&self, policy: &str, files: &[(String, String)]) {
        let bundle = self.bundle();
        let _ = std::fs::remove_dir_all(&bundle);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("policy.yaml"), policy).unwrap();
        for (path, content) in files {
            let path = bundle.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }

    /// Signs the bundle as the repository's next version.
    pub async fn publish(&self) -> PublishReport {
        tuf::publish(
            &self.repo(),
            &self.bundle(),
            &PublishOptions {
                keys: self.signing.clone(),
                expires: 30 * DAY,
                timestamp_expires: 7 * DAY,
            },
        )
        .await
        .unwrap()
    }
}
