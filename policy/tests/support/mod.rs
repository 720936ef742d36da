//! Test fixtures made with real tools: keys and signatures come from
//! `openssl` and `gpg`, so what the tests verify is what those tools write.
//! A missing tool fails the test: interoperability is the point.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Runs a command, feeding `input`, and returns stdout; panics with stderr.
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Parameters of one GCP signature algorithm for openssl.
pub struct Alg {
    pub name: &'static str,
    pub genpkey: &'static [&'static str],
    pub digest: &'static str,
    pub pss: bool,
}

pub const ALGORITHMS: &[Alg] = &[
    Alg {
        name: "RSA_PSS_2048_SHA256",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        digest: "-sha256",
        pss: true,
    },
    Alg {
        name: "RSA_PSS_3072_SHA256",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
        digest: "-sha256",
        pss: true,
    },
    Alg {
        name: "RSA_PSS_4096_SHA256",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
        digest: "-sha256",
        pss: true,
    },
    Alg {
        name: "RSA_PSS_4096_SHA512",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
        digest: "-sha512",
        pss: true,
    },
    Alg {
        name: "RSA_SIGN_PKCS1_2048_SHA256",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        digest: "-sha256",
        pss: false,
    },
    Alg {
        name: "RSA_SIGN_PKCS1_3072_SHA256",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
        digest: "-sha256",
        pss: false,
    },
    Alg {
        name: "RSA_SIGN_PKCS1_4096_SHA256",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
        digest: "-sha256",
        pss: false,
    },
    Alg {
        name: "RSA_SIGN_PKCS1_4096_SHA512",
        genpkey: &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
        digest: "-sha512",
        pss: false,
    },
    Alg {
        name: "ECDSA_P256_SHA256",
        genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        digest: "-sha256",
        pss: false,
    },
    Alg {
        name: "ECDSA_P384_SHA384",
        genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        digest: "-sha384",
        pss: false,
    },
    Alg {
        name: "ECDSA_P521_SHA512",
        genpkey: &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        digest: "-sha512",
        pss: false,
    },
];

pub fn alg(name: &str) -> &'static Alg {
    ALGORITHMS.iter().find(|a| a.name == name).unwrap()
}

/// An openssl key pair on disk.
pub struct OpensslKey {
    pub alg: &'static Alg,
    pub private: PathBuf,
    pub public_pem: String,
}

impl OpensslKey {
    pub fn generate(dir: &Path, name: &str, alg: &'static Alg) -> OpensslKey {
        let private = dir.join(format!("{name}.key"));
        run(
            Command::new("openssl")
                .arg("genpkey")
                .args(alg.genpkey)
                .arg("-out")
                .arg(&private),
            None,
        );
        let public_pem = String::from_utf8(run(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private),
            None,
        ))
        .unwrap();
        OpensslKey {
            alg,
            private,
            public_pem,
        }
    }

    /// `openssl dgst -sign`, with PSS salt = digest length for PSS.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let mut cmd = Command::new("openssl");
        cmd.arg("dgst")
            .arg(self.alg.digest)
            .arg("-sign")
            .arg(&self.private);
        if self.alg.pss {
            // MGF1 uses the signature digest by default; salt = digest length.
            cmd.args([
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ]);
        }
        run(&mut cmd, Some(payload))
    }

    /// The key id GCP derives: sha256 of the DER SPKI, base64url unpadded.
    pub fn derived_id(&self) -> String {
        let der = run(
            Command::new("openssl").args(["pkey", "-pubin", "-outform", "DER"]),
            Some(self.public_pem.as_bytes()),
        );
        let digest = run(
            Command::new("openssl").args(["dgst", "-sha256", "-binary"]),
            Some(&der),
        );
        format!(
            "ni:///sha-256;{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        )
    }
}

/// A throwaway GnuPG home with one generated key.
pub struct GpgKey {
    pub home: PathBuf,
    pub fingerprint: String,
    pub armored_public: String,
}

impl GpgKey {
    pub fn generate(dir: &Path, name: &str, algo: &str) -> GpgKey {
        let home = dir.join(format!("gnupg-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let uid = format!("{name} <{name}@attestgate.test>");
        run(
            gpg(&home).args(["--quick-gen-key", &uid, algo, "sign", "never"]),
            None,
        );
        let colons = String::from_utf8(run(
            gpg(&home).args(["--with-colons", "--list-keys", &uid]),
            None,
        ))
        .unwrap();
        let fingerprint = colons
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_string();
        let armored_public = String::from_utf8(run(
            gpg(&home).args(["--armor", "--export", &fingerprint]),
            None,
        ))
        .unwrap();
        GpgKey {
            home,
            fingerprint,
            armored_public,
        }
    }

    /// `gpg --sign` (attached, compressed as gpg does by default).
    pub fn sign(&self, payload: &[u8], armor: bool) -> Vec<u8> {
        let mut cmd = gpg(&self.home);
        cmd.args(["--sign", "--local-user", &self.fingerprint]);
        if armor {
            cmd.arg("--armor");
        }
        run(&mut cmd, Some(payload))
    }
}

fn gpg(home: &Path) -> Command {
    let mut cmd = Command::new("gpg");
    cmd.env("GNUPGHOME", home).args([
        "--batch",
        "--yes",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    cmd
}

pub const NOTE: &str = "projects/test/notes/ci";
pub const REPO: &str = "registry.test:5000/team/app";

pub fn digest(seed: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(seed.as_bytes()))
    )
}

pub fn payload(repo: &str, digest: &str) -> Vec<u8> {
    attestgate_policy::payload::signature_payload(&format!("{repo}@{digest}"))
        .unwrap()
        .into_bytes()
}

pub fn pkix_attestor_yaml(name: &str, note: &str, keys: &[(&str, &OpensslKey)]) -> String {
    let mut out =
        format!("name: {name}\nuserOwnedGrafeasNote:\n  noteReference: {note}\n  publicKeys:\n");
    for (id, key) in keys {
        out.push_str(&format!("  - id: '{id}'\n    pkixPublicKey:\n      signatureAlgorithm: {}\n      publicKeyPem: |\n", key.alg.name));
        for line in key.public_pem.lines() {
            out.push_str(&format!("        {line}\n"));
        }
    }
    out
}

pub fn pgp_attestor_yaml(name: &str, note: &str, key: &GpgKey) -> String {
    let mut out = format!(
        "name: {name}\nuserOwnedGrafeasNote:\n  noteReference: {note}\n  publicKeys:\n  - id: {}\n    asciiArmoredPgpPublicKey: |\n",
        key.fingerprint
    );
    for line in key.armored_public.lines() {
        out.push_str(&format!("      {line}\n"));
    }
    out
}

/// A v1 occurrence (gcloud's `attestations list --format=json` element).
pub fn occurrence_v1(
    note: &str,
    resource: &str,
    payload: &[u8],
    signatures: &[(&str, &[u8])],
) -> serde_json::Value {
    let sigs: Vec<serde_json::Value> = signatures
        .iter()
        .map(|(id, sig)| serde_json::json!({"publicKeyId": id, "signature": B64.encode(sig)}))
        .collect();
    serde_json::json!({
        "name": format!("projects/test/occurrences/{}", B64.encode(&payload[..8.min(payload.len())])),
        "resourceUri": format!("https://{resource}"),
        "noteName": note,
        "kind": "ATTESTATION",
        "attestation": {"serializedPayload": B64.encode(payload), "signatures": sigs},
        "createTime": "2026-03-02T10:00:00.000000Z",
    })
}

/// A bundle directory under construction.
pub struct BundleDir {
    pub dir: tempfile::TempDir,
}

impl BundleDir {
    pub fn new() -> BundleDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("attestors")).unwrap();
        std::fs::create_dir_all(dir.path().join("attestations")).unwrap();
        BundleDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn policy(&self, yaml: &str) -> &Self {
        std::fs::write(self.path().join("policy.yaml"), yaml).unwrap();
        self
    }

    pub fn attestor(&self, file: &str, yaml: &str) -> &Self {
        std::fs::write(self.path().join("attestors").join(file), yaml).unwrap();
        self
    }

    pub fn attestations(&self, file: &str, value: &serde_json::Value) -> &Self {
        std::fs::write(
            self.path().join("attestations").join(file),
            serde_json::to_vec_pretty(value).unwrap(),
        )
        .unwrap();
        self
    }

    pub fn raw_attestations(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.path().join("attestations").join(file), text).unwrap();
        self
    }

    pub fn load(&self) -> attestgate_policy::Bundle {
        attestgate_policy::Bundle::load(self.path()).unwrap_or_else(|e| panic!("{e:#?}"))
    }
}

pub fn require_policy(attestors: &[&str]) -> String {
    format!(
        "defaultAdmissionRule:\n  evaluationMode: REQUIRE_ATTESTATION\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  requireAttestationsBy:\n{}",
        attestors
            .iter()
            .map(|a| format!("  - {a}\n"))
            .collect::<String>()
    )
}
