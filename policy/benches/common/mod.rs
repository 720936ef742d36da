//! Fixtures shared by the benchmarks: keys made in-process with the same
//! RustCrypto primitives openssl interoperates with (the test suite proves
//! that interoperability), and bundles built from their text forms.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use attestgate_policy::Bundle;
use attestgate_policy::parse::parse_attestors;
use attestgate_policy::payload::signature_payload;
use base64::Engine as _;
use rsa::pkcs8::EncodePublicKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};

pub const NOTE: &str = "projects/bench/notes/ci";

pub fn digest(i: u64) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(i.to_be_bytes()))
    )
}

type Signer = Box<dyn Fn(&[u8]) -> Vec<u8>>;

pub struct Key {
    pub algorithm: &'static str,
    pub public_pem: String,
    signer: Signer,
}

impl Key {
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        (self.signer)(payload)
    }
}

pub fn rsa_pkcs1_2048() -> Key {
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private);
    Key {
        algorithm: "RSA_SIGN_PKCS1_2048_SHA256",
        public_pem,
        signer: Box::new(move |m| signer.sign(m).to_vec()),
    }
}

pub fn rsa_pss_2048() -> Key {
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    let signer = rsa::pss::SigningKey::<sha2::Sha256>::new_with_salt_len(private, 32);
    Key {
        algorithm: "RSA_PSS_2048_SHA256",
        public_pem,
        signer: Box::new(move |m| signer.sign_with_rng(&mut rand::thread_rng(), m).to_vec()),
    }
}

pub fn ecdsa_p256() -> Key {
    let private = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let public_pem = private
        .verifying_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    Key {
        algorithm: "ECDSA_P256_SHA256",
        public_pem,
        signer: Box::new(move |m| {
            let sig: p256::ecdsa::Signature = private.sign(m);
            sig.to_der().as_bytes().to_vec()
        }),
    }
}

pub fn attestor_yaml(name: &str, key: &Key) -> String {
    let pem: String = key
        .public_pem
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    format!(
        "name: {name}\nuserOwnedGrafeasNote:\n  noteReference: {NOTE}\n  publicKeys:\n  - pkixPublicKey:\n      signatureAlgorithm: {}\n      publicKeyPem: |\n{pem}",
        key.algorithm
    )
}

pub const REPO: &str = "registry.example/team/app";

pub fn occurrence_json(key: &Key, key_id: &str, digest: &str) -> String {
    let payload = signature_payload(&format!("{REPO}@{digest}")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        r#"{{"name":"projects/bench/occurrences/{digest}","resourceUri":"https://{REPO}@{digest}","noteName":"{NOTE}","kind":"ATTESTATION","attestation":{{"serializedPayload":"{}","signatures":[{{"publicKeyId":"{key_id}","signature":"{}"}}]}}}}"#,
        b64.encode(payload.as_bytes()),
        b64.encode(key.sign(payload.as_bytes())),
    )
}

pub const POLICY: &str = "defaultAdmissionRule:\n  evaluationMode: REQUIRE_ATTESTATION\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  requireAttestationsBy: [projects/bench/attestors/ci]\n";

/// A bundle whose default rule requires one attestor using `key`, holding
/// a valid attestation for `digest(0)` and `extra` attestations for other
/// digests (signed once and reused: loading does not verify).
pub fn bundle(key: &Key, extra: u64) -> Bundle {
    let attestors = parse_attestors(&attestor_yaml("projects/bench/attestors/ci", key)).unwrap();
    let key_id = attestors[0].public_keys[0].id.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("attestations")).unwrap();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(dir.path().join("attestations/all.json")).unwrap(),
    );
    use std::io::Write as _;
    write!(out, "[{}", occurrence_json(key, &key_id, &digest(0))).unwrap();
    let template = occurrence_json(key, &key_id, &digest(1));
    let d1 = digest(1);
    for i in 1..=extra {
        write!(out, ",\n{}", template.replace(&d1, &digest(i))).unwrap();
    }
    out.write_all(b"]").unwrap();
    out.flush().unwrap();
    drop(out);
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    std::fs::create_dir_all(dir.path().join("attestors")).unwrap();
    std::fs::write(
        dir.path().join("attestors/ci.yaml"),
        attestor_yaml("projects/bench/attestors/ci", key),
    )
    .unwrap();
    let bundle = Bundle::load(dir.path()).unwrap();
    assert!(bundle.warnings().is_empty());
    bundle
}
