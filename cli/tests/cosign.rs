//! `attestgate sign --cosign` end to end against a real distribution 2.8:
//! what it leaves in the registry is read back with curl and verified with
//! openssl alone, as `cosign verify --key` would read it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../registry/tests/support/registry.rs"]
mod registry;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use registry::{Registry, tool_available};
use sha2::Digest as _;

const REPO: &str = "team/app";

fn attestgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attestgate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn run(program: &str, args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `GET /v2/REPO/PATH` with curl, failing on any status but 2xx.
fn get(registry: &Registry, path: &str, accept: &str, auth: Option<&str>) -> Vec<u8> {
    let url = format!("http://{}/v2/{REPO}/{path}", registry.addr);
    curl(&["-fsS", "-H", accept, &url], auth, Path::new("/"))
}

/// curl with `args`, as `auth` (user:password) when given.
fn curl(args: &[&str], auth: Option<&str>, dir: &Path) -> Vec<u8> {
    let mut all = args.to_vec();
    if let Some(auth) = auth {
        all.extend(["-u", auth]);
    }
    run("curl", &all, dir)
}

/// An image pushed with curl (config + empty layer list); its digest.
fn push_image(registry: &Registry, dir: &Path, auth: Option<&str>) -> String {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    std::fs::write(dir.join("config.json"), config).unwrap();
    let base = format!("http://{}/v2/{REPO}", registry.addr);
    let uploads = format!("{base}/blobs/uploads/");
    let head = curl(
        &["-fsS", "-D", "-", "-o", "/dev/null", "-X", "POST", &uploads],
        auth,
        dir,
    );
    let head = String::from_utf8(head).unwrap();
    let location = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_string())
        })
        .unwrap();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("http://{}{location}", registry.addr)
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{separator}digest={}", sha256(config));
    let octets = "Content-Type: application/octet-stream";
    curl(
        &[
            "-fsS",
            "-X",
            "PUT",
            "-H",
            octets,
            "--data-binary",
            "@config.json",
            &put,
        ],
        auth,
        dir,
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
        sha256(config),
        config.len()
    );
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    let oci = "Content-Type: application/vnd.oci.image.manifest.v1+json";
    let tag = format!("{base}/manifests/v1");
    curl(
        &[
            "-fsS",
            "-X",
            "PUT",
            "-H",
            oci,
            "--data-binary",
            "@manifest.json",
            &tag,
        ],
        auth,
        dir,
    );
    sha256(manifest.as_bytes())
}

fn keys(dir: &Path) {
    run(
        "openssl",
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
        dir,
    );
    run(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
        dir,
    );
    for name in ["ec", "rsa"] {
        run(
            "openssl",
            &[
                "pkey",
                "-in",
                &format!("{name}.pem"),
                "-pubout",
                "-out",
                &format!("{name}.pub"),
            ],
            dir,
        );
    }
}

/// Every layer of the `.sig` manifest: (payload as fetched, signature).
fn layers(registry: &Registry, digest: &str, auth: Option<&str>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let manifest: serde_json::Value = serde_json::from_slice(&get(
        registry,
        &format!("manifests/{tag}"),
        "Accept: application/vnd.oci.image.manifest.v1+json",
        auth,
    ))
    .unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            assert_eq!(
                layer["mediaType"],
                "application/vnd.dev.cosign.simplesigning.v1+json"
            );
            let blob_digest = layer["digest"].as_str().unwrap();
            let payload = get(
                registry,
                &format!("blobs/{blob_digest}"),
                "Accept: */*",
                auth,
            );
            assert_eq!(sha256(&payload), blob_digest);
            let signature = base64::engine::general_purpose::STANDARD
                .decode(
                    layer["annotations"]["dev.cosignproject.cosign/signature"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
            (payload, signature)
        })
        .collect()
}

fn openssl_verifies(dir: &Path, public: &str, payload: &[u8], signature: &[u8]) -> bool {
    std::fs::write(dir.join("payload"), payload).unwrap();
    std::fs::write(dir.join("signature"), signature).unwrap();
    Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            public,
            "-signature",
            "signature",
            "payload",
        ])
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn sign_cosign_pushes_signatures_openssl_verifies() {
    if !tool_available("curl", "curl") {
        return;
    }
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    let digest = push_image(&registry, d, None);
    let url = format!("{}/{REPO}@{digest}", registry.addr);
    let sign = |key: &str, algorithm: &str| {
        attestgate(
            &[
                "sign",
                "--artifact-url",
                &url,
                "--key",
                d.join(key).to_str().unwrap(),
                "--algorithm",
                algorithm,
                "--cosign",
                "--plain-http",
            ],
            &[],
        )
    };
    let tag = format!("{}.sig", digest.replace(':', "-"));
    let first = sign("ec.pem", "ECDSA_P256_SHA256");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8(first.stdout).unwrap();
    let (printed_tag, printed_digest) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(printed_tag, format!("{}/{REPO}:{tag}", registry.addr));
    let manifest = get(
        &registry,
        &format!("manifests/{tag}"),
        "Accept: application/vnd.oci.image.manifest.v1+json",
        None,
    );
    assert_eq!(sha256(&manifest), printed_digest);
    // RSA PKCS#1 v1.5 is deterministic: the same signature twice adds nothing.
    let second = sign("rsa.pem", "RSA_SIGN_PKCS1_2048_SHA256");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let second_digest = String::from_utf8(second.stdout).unwrap();
    let again = sign("rsa.pem", "RSA_SIGN_PKCS1_2048_SHA256");
    assert!(again.status.success());
    assert_eq!(String::from_utf8(again.stdout).unwrap(), second_digest);
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing pushed"));

    let found = layers(&registry, &digest, None);
    assert_eq!(found.len(), 2);
    let expected = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{}/{REPO}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        registry.addr
    );
    for ((payload, signature), public) in found.iter().zip(["ec.pub", "rsa.pub"]) {
        assert_eq!(String::from_utf8(payload.clone()).unwrap(), expected);
        assert!(openssl_verifies(d, public, payload, signature), "{public}");
    }
    assert!(!openssl_verifies(d, "rsa.pub", &found[0].0, &found[0].1));

    // The registry gone: exit 2, as the other registry commands.
    registry.stop();
    let gone = sign("ec.pem", "ECDSA_P256_SHA256");
    assert_eq!(gone.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("unreachable"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

#[test]
fn sign_cosign_reads_a_docker_config_for_credentials() {
    if !tool_available("curl", "curl") {
        return;
    }
    let Some(registry) = Registry::start_with_htpasswd("ci", "pw") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keys(d);
    let digest = push_image(&registry, d, Some("ci:pw"));
    let config = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        registry.addr,
        base64::engine::general_purpose::STANDARD.encode("ci:pw")
    );
    std::fs::write(d.join("config.json"), config).unwrap();
    let url = format!("{}/{REPO}@{digest}", registry.addr);
    let key = d.join("ec.pem");
    let mut args = vec![
        "sign",
        "--cosign",
        "--artifact-url",
        &url,
        "--key",
        key.to_str().unwrap(),
        "--algorithm",
        "ECDSA_P256_SHA256",
        "--plain-http",
        &registry.addr,
    ];
    let refused = attestgate(&args, &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("credentials"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let config_path = d.join("config.json");
    args.extend(["--registry-credentials", config_path.to_str().unwrap()]);
    let signed = attestgate(&args, &[]);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let found = layers(&registry, &digest, Some("ci:pw"));
    assert_eq!(found.len(), 1);
    assert!(openssl_verifies(d, "ec.pub", &found[0].0, &found[0].1));
}

#[test]
fn sign_cosign_refuses_what_it_cannot_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(
        "openssl",
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
        d,
    );
    let key = d.join("ec.pem");
    let key = key.to_str().unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    for (url, needle) in [
        (format!("app@{digest}"), "name the registry"),
        ("reg.example/app:v1".to_string(), "@sha256"),
    ] {
        let out = attestgate(
            &[
                "sign",
                "--cosign",
                "--artifact-url",
                &url,
                "--key",
                key,
                "--algorithm",
                "ECDSA_P256_SHA256",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{url}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without --cosign an occurrence needs its note; with it, a note is refused.
    let url = format!("reg.example/app@{digest}");
    let plain = attestgate(
        &[
            "sign",
            "--artifact-url",
            &url,
            "--key",
            key,
            "--algorithm",
            "ECDSA_P256_SHA256",
        ],
        &[],
    );
    assert_eq!(plain.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&plain.stderr).contains("--note"));
    let both = attestgate(
        &[
            "sign",
            "--cosign",
            "--note",
            "projects/p/notes/n",
            "--artifact-url",
            &url,
            "--key",
            key,
            "--algorithm",
            "ECDSA_P256_SHA256",
        ],
        &[],
    );
    assert_eq!(both.status.code(), Some(2));
}
