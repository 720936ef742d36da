//! `attestgate sign --cosign` end to end against a real distribution 2.8
//! (Debian's docker-registry): the image is pushed and what the command
//! leaves in the registry is read back with raw HTTP requests
//! (`attestgate_e2e::layout::Raw`), and verified with openssl alone, as
//! `cosign verify --key` would read it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use attestgate_e2e::layout::{
    COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING, Keys, OCI_MANIFEST, Raw, b64, payload,
    sha256,
};
use attestgate_e2e::node::bin;
use attestgate_e2e::registry::Registry;
use base64::Engine as _;

const REPO: &str = "team/app";

fn attestgate(args: &[&str]) -> Output {
    Command::new(bin("attestgate")).args(args).output().unwrap()
}

/// `attestgate sign --cosign` of `url` with `key` (an `algorithm` key),
/// then `extra`.
fn sign(url: &str, key: &Path, algorithm: &str, extra: &[&str]) -> Output {
    let key = key.to_str().unwrap();
    let mut args = vec![
        "sign",
        "--cosign",
        "--artifact-url",
        url,
        "--key",
        key,
        "--algorithm",
        algorithm,
    ];
    args.extend(extra);
    attestgate(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every layer of the `.sig` manifest: (payload as fetched, signature).
async fn layers(raw: &Raw, digest: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&raw.get(&format!("manifests/{tag}"), OCI_MANIFEST).await).unwrap();
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    let mut found = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], COSIGN_SIMPLESIGNING);
        let blob_digest = layer["digest"].as_str().unwrap();
        let payload = raw.get(&format!("blobs/{blob_digest}"), "*/*").await;
        assert_eq!(sha256(&payload), blob_digest);
        let signature = base64::engine::general_purpose::STANDARD
            .decode(
                layer["annotations"][COSIGN_SIGNATURE_ANNOTATION]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        found.push((payload, signature));
    }
    found
}

#[tokio::test]
async fn sign_cosign_pushes_signatures_openssl_verifies() {
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let raw = Raw::new(&registry.addr, REPO, None);
    let keys = Keys::new();
    let ec = keys.make("ec", "ec");
    let rsa = keys.make("rsa", "rsa");
    let digest = raw.image("v1", "app").await;
    let url = format!("{}/{REPO}@{digest}", registry.addr);
    let plain = ["--plain-http"];
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let first = sign(&url, &ec, "ECDSA_P256_SHA256", &plain);
    assert!(first.status.success(), "{}", stderr(&first));
    let stdout = String::from_utf8(first.stdout).unwrap();
    let (printed_tag, printed_digest) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(printed_tag, format!("{}/{REPO}:{tag}", registry.addr));
    let manifest = raw.get(&format!("manifests/{tag}"), OCI_MANIFEST).await;
    assert_eq!(sha256(&manifest), printed_digest);
    // RSA PKCS#1 v1.5 is deterministic: the same signature twice adds nothing.
    let second = sign(&url, &rsa, "RSA_SIGN_PKCS1_2048_SHA256", &plain);
    assert!(second.status.success(), "{}", stderr(&second));
    let second_digest = String::from_utf8(second.stdout).unwrap();
    let again = sign(&url, &rsa, "RSA_SIGN_PKCS1_2048_SHA256", &plain);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), second_digest);
    assert!(stderr(&again).contains("nothing pushed"));

    let found = layers(&raw, &digest).await;
    assert_eq!(found.len(), 2);
    let expected = payload(&format!("{}/{REPO}", registry.addr), &digest);
    for ((payload, signature), public) in found.iter().zip(["ec", "rsa"]) {
        assert_eq!(
            String::from_utf8_lossy(payload),
            String::from_utf8_lossy(&expected)
        );
        assert!(keys.verifies(public, payload, signature), "{public}");
    }
    assert!(!keys.verifies("rsa", &found[0].0, &found[0].1));

    // The registry gone: exit 2, as the other registry commands.
    registry.stop();
    let gone = sign(&url, &ec, "ECDSA_P256_SHA256", &plain);
    assert_eq!(gone.status.code(), Some(2));
    assert!(stderr(&gone).contains("unreachable"), "{}", stderr(&gone));
}

#[tokio::test]
async fn sign_cosign_reads_a_docker_config_for_credentials() {
    let Some(registry) = Registry::start_with_htpasswd("ci", "pw") else {
        return;
    };
    let raw = Raw::new(&registry.addr, REPO, Some(("ci", "pw")));
    let keys = Keys::new();
    let ec = keys.make("ec", "ec");
    let digest = raw.image("v1", "app").await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.json");
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        registry.addr,
        b64(b"ci:pw")
    );
    std::fs::write(&config_path, config).unwrap();
    let url = format!("{}/{REPO}@{digest}", registry.addr);
    let mut extra = vec!["--plain-http", &registry.addr];
    let refused = sign(&url, &ec, "ECDSA_P256_SHA256", &extra);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("credentials"),
        "{}",
        stderr(&refused)
    );
    extra.extend(["--registry-credentials", config_path.to_str().unwrap()]);
    let signed = sign(&url, &ec, "ECDSA_P256_SHA256", &extra);
    assert!(signed.status.success(), "{}", stderr(&signed));
    let found = layers(&raw, &digest).await;
    assert_eq!(found.len(), 1);
    assert!(keys.verifies("ec", &found[0].0, &found[0].1));
}

#[test]
fn sign_cosign_refuses_what_it_cannot_place() {
    let keys = Keys::new();
    let ec = keys.make("ec", "ec");
    let digest = format!("sha256:{}", "a".repeat(64));
    for (url, needle) in [
        (format!("app@{digest}"), "name the registry"),
        ("reg.example/app:v1".to_string(), "@sha256"),
    ] {
        let out = sign(&url, &ec, "ECDSA_P256_SHA256", &[]);
        assert_eq!(out.status.code(), Some(2), "{url}");
        assert!(stderr(&out).contains(needle), "{url}: {}", stderr(&out));
    }
    // Without --cosign an occurrence needs its note; with it, a note is refused.
    let url = format!("reg.example/app@{digest}");
    let key = ec.to_str().unwrap();
    let plain = attestgate(&[
        "sign",
        "--artifact-url",
        &url,
        "--key",
        key,
        "--algorithm",
        "ECDSA_P256_SHA256",
    ]);
    assert_eq!(plain.status.code(), Some(2));
    assert!(stderr(&plain).contains("--note"));
    let both = sign(
        &url,
        &ec,
        "ECDSA_P256_SHA256",
        &["--note", "projects/p/notes/n"],
    );
    assert_eq!(both.status.code(), Some(2));
}
