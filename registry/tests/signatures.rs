//! Registry signatures (SPEC §11) against a real distribution 2.8: the
//! fixtures are laid out by this test from the published formats (cosign's
//! `.sig` layout, sigstore bundle v0.3, the OCI referrers fallback tag)
//! with raw HTTP requests and signatures openssl makes; what `lookup`
//! brings back is verified with openssl and with attestgate's own keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/registry.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use attestgate_policy::verify::{PkixKey, SignatureAlgorithm};
use attestgate_policy::{Digest, RegistrySignature};
use attestgate_registry::oci::{Credentials, RegistryOptions};
use attestgate_registry::signatures::{
    self, COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIMPLESIGNING, CriAuth, Lookup, SIGSTORE_BUNDLE_V03,
    SignatureLimits, credentials_from_cri, index_children, lookup, push_cosign, resolve,
};
use base64::Engine as _;
use serde_json::json;
use sha2::Digest as _;
use support::Registry;

const REPO: &str = "team/app";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Pushes blobs and manifests as any client would, with nothing of ours
/// between the test and the registry.
struct Raw {
    client: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Raw {
    fn new(registry: &Registry, auth: Option<(&str, &str)>) -> Raw {
        Raw {
            client: reqwest::Client::new(),
            base: format!("http://{}/v2/{REPO}", registry.addr),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    fn with_auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((u, p)) => request.basic_auth(u, Some(p)),
            None => request,
        }
    }

    async fn blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let begun = self
            .with_auth(self.client.post(format!("{}/blobs/uploads/", self.base)))
            .send()
            .await
            .unwrap();
        assert_eq!(begun.status(), 202, "upload start");
        let location = begun.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!(
                "{}{location}",
                self.base.split("/v2/").next().unwrap_or_default()
            )
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = self
            .with_auth(
                self.client
                    .put(format!("{location}{separator}digest={digest}"))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.to_vec()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.status(),
            201,
            "blob upload: {}",
            put.text().await.unwrap()
        );
        digest
    }

    /// PUTs `manifest` under `reference` (a tag, or None for its digest).
    async fn manifest(&self, reference: Option<&str>, media_type: &str, manifest: &[u8]) -> String {
        let digest = sha256(manifest);
        let reference = reference.unwrap_or(&digest);
        let put = self
            .with_auth(
                self.client
                    .put(format!("{}/manifests/{reference}", self.base))
                    .header("content-type", media_type)
                    .body(manifest.to_vec()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.status(),
            201,
            "manifest {reference}: {}",
            put.text().await.unwrap()
        );
        digest
    }

    async fn get(&self, path: &str, accept: &str) -> Vec<u8> {
        let response = self
            .with_auth(
                self.client
                    .get(format!("{}/{path}", self.base))
                    .header("accept", accept),
            )
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "GET {path}");
        response.bytes().await.unwrap().to_vec()
    }

    /// A small image (config + one layer) under `tag`; its digest.
    async fn image(&self, tag: &str, seed: &str) -> Digest {
        let config = json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}, "seed": seed}).to_string();
        let layer = format!("layer of {seed}").into_bytes();
        let config_digest = self.blob(config.as_bytes()).await;
        let layer_digest = self.blob(&layer).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}]
        })
        .to_string();
        Digest::parse(
            &self
                .manifest(Some(tag), OCI_MANIFEST, manifest.as_bytes())
                .await,
        )
        .unwrap()
    }

    /// A `.sig` manifest of `layers` (payload, annotation value) under
    /// cosign's tag for `digest`, in `media_type`'s flavour.
    async fn sig(
        &self,
        digest: &Digest,
        layers: &[(Vec<u8>, String)],
        media_type: &str,
    ) -> Vec<u8> {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (payload, annotation) in layers {
            let d = self.blob(payload).await;
            diff_ids.push(d.clone());
            descriptors.push(json!({
                "mediaType": COSIGN_SIMPLESIGNING,
                "size": payload.len(),
                "digest": d,
                "annotations": {COSIGN_SIGNATURE_ANNOTATION: annotation}
            }));
        }
        let config = json!({"architecture":"","created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":diff_ids},"config":{}}).to_string();
        let config_digest = self.blob(config.as_bytes()).await;
        let config_type = if media_type == DOCKER_MANIFEST {
            DOCKER_CONFIG
        } else {
            OCI_CONFIG
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest},
            "layers": descriptors
        })
        .to_string()
        .into_bytes();
        let tag = format!("{}.sig", digest.as_str().replace(':', "-"));
        self.manifest(Some(&tag), media_type, &manifest).await;
        manifest
    }

    /// A referrer manifest (bundle layer, empty config, `subject`) pushed
    /// by digest; its descriptor for the fallback index.
    async fn referrer(&self, subject: &Digest, bundle: &[u8]) -> serde_json::Value {
        let empty = self.blob(b"{}").await;
        let layer = self.blob(bundle).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SIGSTORE_BUNDLE_V03,
            "config": {"mediaType": EMPTY, "digest": empty, "size": 2},
            "layers": [{"mediaType": SIGSTORE_BUNDLE_V03, "digest": layer, "size": bundle.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.as_str(), "size": 1},
            "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"}
        })
        .to_string()
        .into_bytes();
        let digest = self.manifest(None, OCI_MANIFEST, &manifest).await;
        json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(), "artifactType": SIGSTORE_BUNDLE_V03})
    }

    /// The fallback index of `digest` (tag `sha256-<hex>`) listing `descriptors`.
    async fn fallback_index(&self, digest: &Digest, descriptors: Vec<serde_json::Value>) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
            .to_string();
        let tag = digest.as_str().replace(':', "-");
        self.manifest(Some(&tag), OCI_INDEX, index.as_bytes()).await;
    }
}

/// Key pairs made by openssl, signatures made and checked by openssl.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn openssl(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `name.pem` (private) and `name.pub` (PKIX); `kind` is `ec`
    /// (ecparam, SEC1), `ec8` (genpkey, PKCS#8) or `rsa`.
    fn make(&self, name: &str, kind: &str) -> PathBuf {
        let private = format!("{name}.pem");
        match kind {
            "ec" => self.openssl(
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &private,
                ],
                None,
            ),
            "ec8" => self.openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &private,
                ],
                None,
            ),
            _ => self.openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    &private,
                ],
                None,
            ),
        };
        self.openssl(
            &[
                "pkey",
                "-in",
                &private,
                "-pubout",
                "-out",
                &format!("{name}.pub"),
            ],
            None,
        );
        self.dir.path().join(private)
    }

    fn public_pem(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.pub"))).unwrap()
    }

    fn sign(&self, name: &str, data: &[u8]) -> Vec<u8> {
        self.openssl(
            &["dgst", "-sha256", "-sign", &format!("{name}.pem")],
            Some(data),
        )
    }

    fn verifies(&self, name: &str, data: &[u8], signature: &[u8]) -> bool {
        let sig = self.dir.path().join("check.sig");
        std::fs::write(&sig, signature).unwrap();
        Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                &format!("{name}.pub"),
                "-signature",
            ])
            .arg(&sig)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(data)?;
                child.wait()
            })
            .is_ok_and(|s| s.success())
    }

    fn pkix(&self, name: &str, algorithm: &str) -> PkixKey {
        PkixKey::from_pem(
            &self.public_pem(name),
            SignatureAlgorithm::parse(algorithm).unwrap(),
        )
        .unwrap()
    }
}

/// cosign's simple-signing payload, written out from its published shape.
fn payload(docker_reference: &str, digest: &Digest) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{docker_reference}\"}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
    )
    .into_bytes()
}

fn statement(digest: &Digest) -> Vec<u8> {
    let hex = digest.as_str().trim_start_matches("sha256:");
    format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#
    )
    .into_bytes()
}

/// DSSE's pre-authentication encoding, from the DSSE protocol text.
fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn bundle(media_type: &str, statement: &[u8], signature: &[u8]) -> Vec<u8> {
    json!({
        "mediaType": media_type,
        "verificationMaterial": {"publicKey": {"hint": "aGludA=="}},
        "dsseEnvelope": {
            "payload": b64(statement),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": b64(signature), "keyid": ""}]
        }
    })
    .to_string()
    .into_bytes()
}

fn options(registry: &Registry) -> RegistryOptions {
    RegistryOptions {
        plain_http: vec![registry.addr.clone()],
        timeout: Duration::from_secs(10),
        ..RegistryOptions::default()
    }
}

fn cosign_of(found: &Lookup) -> Vec<(Vec<u8>, Vec<u8>)> {
    found
        .signatures
        .iter()
        .filter_map(|s| match s {
            RegistrySignature::Cosign { payload, signature } => {
                Some((payload.clone(), signature.clone()))
            }
            RegistrySignature::Dsse { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn cosign_layers_and_a_bundle_referrer_are_found_and_verify() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let raw = Raw::new(&registry, None);
    let keys = Keys::new();
    keys.make("a", "ec");
    keys.make("b", "ec8");
    keys.make("c", "rsa");
    let image = raw.image("v1", "app").await;
    let other = raw.image("other", "other").await;
    let reference = format!("{}/{REPO}", registry.addr);
    let signed = payload(&reference, &image);
    let layers: Vec<(Vec<u8>, String)> = ["a", "b", "c"]
        .iter()
        .map(|k| (signed.clone(), b64(&keys.sign(k, &signed))))
        .collect();
    raw.sig(&image, &layers, OCI_MANIFEST).await;
    // The bundle, and a decoy: a referrer of another image listed in this
    // image's fallback index, and an SBOM that is no signature at all.
    let statement = statement(&image);
    let signed_pae = pae("application/vnd.in-toto+json", &statement);
    assert_eq!(
        signed_pae,
        attestgate_policy::registry::pae("application/vnd.in-toto+json", &statement)
    );
    let dsse_sig = keys.sign("a", &signed_pae);
    let real = raw
        .referrer(&image, &bundle(SIGSTORE_BUNDLE_V03, &statement, &dsse_sig))
        .await;
    let decoy = raw
        .referrer(&other, &bundle(SIGSTORE_BUNDLE_V03, &statement, &dsse_sig))
        .await;
    let mut sbom = real.clone();
    sbom["artifactType"] = json!("application/spdx+json");
    raw.fallback_index(&image, vec![decoy.clone(), real.clone(), sbom])
        .await;

    let found = lookup(
        &options(&registry),
        &registry.addr,
        REPO,
        &image,
        &SignatureLimits::default(),
    )
    .await
    .unwrap();
    let cosign = cosign_of(&found);
    assert_eq!(cosign.len(), 3, "{found:?}");
    for ((payload, signature), key) in cosign.iter().zip(["a", "b", "c"]) {
        assert_eq!(payload, &signed);
        assert!(keys.verifies(key, payload, signature), "{key}");
    }
    // attestgate's own verifier agrees, and refuses a key that did not sign.
    let a = keys.pkix("a", "ECDSA_P256_SHA256");
    a.verify(&cosign[0].0, &cosign[0].1).unwrap();
    assert!(a.verify(&cosign[1].0, &cosign[1].1).is_err());
    keys.pkix("c", "RSA_SIGN_PKCS1_2048_SHA256")
        .verify(&cosign[2].0, &cosign[2].1)
        .unwrap();
    let dsse: Vec<_> = found
        .signatures
        .iter()
        .filter(|s| matches!(s, RegistrySignature::Dsse { .. }))
        .collect();
    assert_eq!(dsse.len(), 1, "{found:?}");
    let RegistrySignature::Dsse {
        payload_type,
        payload: got_statement,
        signatures,
    } = dsse[0]
    else {
        unreachable!()
    };
    assert_eq!(got_statement, &statement);
    assert!(keys.verifies("a", &pae(payload_type, got_statement), &signatures[0]));
    a.verify(&pae(payload_type, got_statement), &signatures[0])
        .unwrap();
    // The decoy is named; the SBOM is not a problem, only not ours.
    assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
    assert!(
        found.problems[0].contains(decoy["digest"].as_str().unwrap())
            && found.problems[0].contains(other.as_str()),
        "{:?}",
        found.problems
    );
    // .sig, 3 payloads, the referrers API (404), the fallback tag, two
    // referrer manifests, one bundle: nothing more.
    assert_eq!(found.requests, 9, "{found:?}");
    assert!(found.bytes > 0);
}

#[tokio::test]
async fn malformed_items_are_problems_and_the_rest_still_counts() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let raw = Raw::new(&registry, None);
    let keys = Keys::new();
    keys.make("a", "ec");
    let image = raw.image("v1", "app").await;
    let reference = format!("{}/{REPO}", registry.addr);
    let good = payload(&reference, &image);
    // A payload the registry will serve wrong bytes for: same length, so
    // only the digest check can tell.
    let damaged = payload(&format!("{reference}x"), &image);
    let layers = vec![
        (good.clone(), b64(&keys.sign("a", &good))),
        (damaged.clone(), b64(&keys.sign("a", &damaged))),
        (payload("elsewhere/app", &image), "not base64!".to_string()),
    ];
    // The Docker v2 flavour of the layout (COSIGN_DOCKER_MEDIA_TYPES).
    raw.sig(&image, &layers, DOCKER_MANIFEST).await;
    let blob = registry.blob_path(&sha256(&damaged));
    let mut wrong = std::fs::read(&blob).unwrap();
    wrong[0] ^= 0x20;
    std::fs::write(&blob, &wrong).unwrap();
    // A bundle of another version, and one that is a message signature.
    let statement = statement(&image);
    let old = raw
        .referrer(
            &image,
            &bundle(
                "application/vnd.dev.sigstore.bundle+json;version=0.2",
                &statement,
                b"x",
            ),
        )
        .await;
    let blob_bundle = json!({"mediaType": SIGSTORE_BUNDLE_V03, "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(b"d")}, "signature": b64(b"s")}}).to_string();
    let message = raw.referrer(&image, blob_bundle.as_bytes()).await;
    raw.fallback_index(&image, vec![old, message]).await;

    let found = lookup(
        &options(&registry),
        &registry.addr,
        REPO,
        &image,
        &SignatureLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        cosign_of(&found),
        vec![(good.clone(), keys.sign_check(&good, &found))]
    );
    let problems = found.problems.join("\n");
    assert_eq!(found.problems.len(), 4, "{problems}");
    assert!(
        problems.contains("layer 1") && problems.contains("does not match its digest"),
        "{problems}"
    );
    assert!(
        problems.contains("layer 2") && problems.contains("not base64"),
        "{problems}"
    );
    assert!(problems.contains("only sigstore bundle v0.3"), "{problems}");
    assert!(problems.contains("message signature"), "{problems}");
}

impl Keys {
    /// The signature `found` holds for `payload`, once openssl says it
    /// verifies under key `a`.
    fn sign_check(&self, payload: &[u8], found: &Lookup) -> Vec<u8> {
        let (_, signature) = cosign_of(found)
            .into_iter()
            .find(|(p, _)| p == payload)
            .expect("a signature for the payload");
        assert!(self.verifies("a", payload, &signature));
        signature
    }
}

#[tokio::test]
async fn an_image_without_signatures_has_none_and_that_is_no_error() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let raw = Raw::new(&registry, None);
    let image = raw.image("v1", "app").await;
    let found = lookup(
        &options(&registry),
        &registry.addr,
        REPO,
        &image,
        &SignatureLimits::default(),
    )
    .await
    .unwrap();
    assert!(
        found.signatures.is_empty() && found.problems.is_empty(),
        "{found:?}"
    );
    // .sig 404, referrers 404, fallback tag 404.
    assert_eq!(found.requests, 3);
}

#[tokio::test]
async fn resolve_reads_manifests_indexes_and_docker_manifests_by_tag_or_digest() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let raw = Raw::new(&registry, None);
    let amd = raw.image("amd", "amd64").await;
    let arm = raw.image("arm", "arm64").await;
    let options = options(&registry);
    let by_tag = resolve(&options, &registry.addr, REPO, "amd")
        .await
        .unwrap();
    assert_eq!(by_tag.digest, amd);
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert!(index_children(&by_tag).is_empty());
    let by_digest = resolve(&options, &registry.addr, REPO, amd.as_str())
        .await
        .unwrap();
    assert_eq!(by_digest, by_tag);
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": amd.as_str(), "size": by_tag.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": arm.as_str(), "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
    ]})
    .to_string();
    let index_digest = raw
        .manifest(Some("multi"), OCI_INDEX, index.as_bytes())
        .await;
    let multi = resolve(&options, &registry.addr, REPO, "multi")
        .await
        .unwrap();
    assert_eq!(multi.digest.as_str(), index_digest);
    assert_eq!(multi.media_type, OCI_INDEX);
    let children = index_children(&multi);
    assert_eq!(children.len(), 2);
    assert_eq!(children[1].digest, arm);
    assert_eq!(children[1].variant.as_deref(), Some("v8"));
    // A Docker schema 2 image.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = raw.blob(config).await;
    let docker = json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest}, "layers": []})
    .to_string();
    let docker_digest = raw
        .manifest(Some("docker"), DOCKER_MANIFEST, docker.as_bytes())
        .await;
    let got = resolve(&options, &registry.addr, REPO, "docker")
        .await
        .unwrap();
    assert_eq!(
        (got.digest.as_str(), got.media_type.as_str()),
        (docker_digest.as_str(), DOCKER_MANIFEST)
    );
    let missing = resolve(&options, &registry.addr, REPO, "nope")
        .await
        .unwrap_err();
    assert_eq!(missing.reason(), "not_found", "{missing}");
    let bad = resolve(&options, &registry.addr, REPO, "sha256:12")
        .await
        .unwrap_err();
    assert_eq!(bad.reason(), "bad_reference", "{bad}");
}

#[tokio::test]
async fn htpasswd_registry_needs_the_credentials_kubelet_gave() {
    let Some(registry) = Registry::start_with_htpasswd("alice", "s3cret") else {
        return;
    };
    let raw = Raw::new(&registry, Some(("alice", "s3cret")));
    let keys = Keys::new();
    keys.make("a", "ec");
    let image = raw.image("v1", "app").await;
    let signed = payload(&format!("{}/{REPO}", registry.addr), &image);
    raw.sig(
        &image,
        &[(signed.clone(), b64(&keys.sign("a", &signed)))],
        OCI_MANIFEST,
    )
    .await;
    let with = |credentials| RegistryOptions {
        credentials,
        ..options(&registry)
    };
    // As kubelet passes an imagePullSecret: auth = base64 user:password.
    let cri = CriAuth {
        auth: b64(b"alice:s3cret"),
        server_address: format!("https://{}/v1/", registry.addr),
        ..CriAuth::default()
    };
    let credentials = credentials_from_cri(&cri, &registry.addr).unwrap();
    let found = lookup(
        &with(credentials),
        &registry.addr,
        REPO,
        &image,
        &SignatureLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(cosign_of(&found).len(), 1, "{found:?}");
    assert!(keys.verifies("a", &cosign_of(&found)[0].0, &cosign_of(&found)[0].1));
    // Credentials for another registry are not sent: anonymous, refused.
    let elsewhere = CriAuth {
        server_address: "https://other.example".into(),
        ..cri.clone()
    };
    let anonymous = credentials_from_cri(&elsewhere, &registry.addr).unwrap();
    assert_eq!(anonymous, Credentials::Anonymous);
    for credentials in [
        anonymous,
        Credentials::Basic {
            username: "alice".into(),
            password: "wrong".into(),
        },
    ] {
        let error = lookup(
            &with(credentials),
            &registry.addr,
            REPO,
            &image,
            &SignatureLimits::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(error.reason(), "unauthorized", "{error}");
    }
}

#[tokio::test]
async fn a_registry_that_never_answers_times_out_within_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accepts and holds every connection, says nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let options = RegistryOptions {
        plain_http: vec![addr.clone()],
        timeout: Duration::from_millis(800),
        ..RegistryOptions::default()
    };
    let digest = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
    let started = Instant::now();
    let error = lookup(&options, &addr, REPO, &digest, &SignatureLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "timeout", "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let error = resolve(&options, &addr, REPO, "v1").await.unwrap_err();
    assert_eq!(error.reason(), "timeout", "{error}");
}

#[tokio::test]
async fn limits_fail_the_listing_and_skip_the_item() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let raw = Raw::new(&registry, None);
    let keys = Keys::new();
    keys.make("a", "ec");
    let image = raw.image("v1", "app").await;
    let signed = payload(&format!("{}/{REPO}", registry.addr), &image);
    let layer = (signed.clone(), b64(&keys.sign("a", &signed)));
    let sig = raw
        .sig(&image, &[layer.clone(), layer.clone(), layer], OCI_MANIFEST)
        .await;
    let options = options(&registry);
    let run = |limits: SignatureLimits| {
        let options = options.clone();
        let addr = registry.addr.clone();
        let image = image.clone();
        async move { lookup(&options, &addr, REPO, &image, &limits).await }
    };
    // The .sig manifest itself over its cap: the lookup fails.
    let error = run(SignatureLimits {
        max_manifest: sig.len() as u64 - 1,
        ..SignatureLimits::default()
    })
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    let error = run(SignatureLimits {
        max_layers: 2,
        ..SignatureLimits::default()
    })
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    // A payload over its cap: skipped, not fetched, the rest goes on.
    let found = run(SignatureLimits {
        max_payload: signed.len() as u64 - 1,
        ..SignatureLimits::default()
    })
    .await
    .unwrap();
    assert!(found.signatures.is_empty());
    assert_eq!(found.problems.len(), 3, "{:?}", found.problems);
    assert!(
        found.problems[0].contains("too large"),
        "{:?}",
        found.problems
    );
    assert_eq!(found.requests, 3, "no payload was fetched: {found:?}");
    // A fallback index with more referrers than allowed fails the lookup.
    let statement = statement(&image);
    let one = raw
        .referrer(&image, &bundle(SIGSTORE_BUNDLE_V03, &statement, b"s"))
        .await;
    raw.fallback_index(&image, vec![one.clone(), one.clone(), one])
        .await;
    let error = run(SignatureLimits {
        max_referrers: 2,
        ..SignatureLimits::default()
    })
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    assert!(error.to_string().contains("referrers"), "{error}");
}

#[tokio::test]
async fn push_cosign_appends_keeps_earlier_layers_and_reads_back() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let raw = Raw::new(&registry, None);
    let keys = Keys::new();
    keys.make("a", "ec");
    keys.make("b", "rsa");
    let image = raw.image("v1", "app").await;
    let options = options(&registry);
    let reference = format!("{}/{REPO}", registry.addr);
    let signed = signatures::cosign_payload(&reference, &image);
    assert_eq!(signed, payload(&reference, &image));
    let sig_a = keys.sign("a", &signed);
    let first = push_cosign(&options, &registry.addr, REPO, &image, &signed, &sig_a)
        .await
        .unwrap();
    assert_eq!(
        first.tag,
        format!("{}.sig", image.as_str().replace(':', "-"))
    );
    assert_eq!((first.layers, first.added), (1, true));
    let tag_path = format!("manifests/{}", first.tag);
    let before: serde_json::Value =
        serde_json::from_slice(&raw.get(&tag_path, OCI_MANIFEST).await).unwrap();
    let sig_b = keys.sign("b", &signed);
    let second = push_cosign(&options, &registry.addr, REPO, &image, &signed, &sig_b)
        .await
        .unwrap();
    assert_eq!((second.layers, second.added), (2, true));
    let manifest_bytes = raw.get(&tag_path, OCI_MANIFEST).await;
    assert_eq!(sha256(&manifest_bytes), second.manifest_digest);
    let after: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(after["mediaType"], OCI_MANIFEST);
    assert_eq!(
        after["layers"][0], before["layers"][0],
        "the first layer is kept"
    );
    assert_eq!(
        after["layers"][1]["annotations"][COSIGN_SIGNATURE_ANNOTATION],
        b64(&sig_b)
    );
    // The config lists the layers as diff_ids, one history entry each.
    let config_digest = after["config"]["digest"].as_str().unwrap();
    assert_eq!(after["config"]["mediaType"], OCI_CONFIG);
    let config: serde_json::Value =
        serde_json::from_slice(&raw.get(&format!("blobs/{config_digest}"), "*/*").await).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([sha256(&signed), sha256(&signed)])
    );
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some(""), Some(""))
    );
    // The same signature again adds nothing.
    let again = push_cosign(&options, &registry.addr, REPO, &image, &signed, &sig_b)
        .await
        .unwrap();
    assert!(!again.added);
    assert_eq!(
        (again.layers, again.manifest_digest.as_str()),
        (2, second.manifest_digest.as_str())
    );
    assert_eq!(
        sha256(&raw.get(&tag_path, OCI_MANIFEST).await),
        second.manifest_digest
    );
    // Read back as a node would, verified by openssl alone.
    let found = lookup(
        &options,
        &registry.addr,
        REPO,
        &image,
        &SignatureLimits::default(),
    )
    .await
    .unwrap();
    let cosign = cosign_of(&found);
    assert_eq!(cosign.len(), 2, "{found:?}");
    assert!(keys.verifies("a", &cosign[0].0, &cosign[0].1));
    assert!(keys.verifies("b", &cosign[1].0, &cosign[1].1));
    assert!(!keys.verifies("a", &cosign[1].0, &cosign[1].1));
}
