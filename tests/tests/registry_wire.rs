//! Registry signatures (SPEC §11) on the wire, against a real
//! distribution 2.8 (Debian's docker-registry): the fixtures are laid out
//! from the published formats (cosign's `.sig` layout, sigstore bundle
//! v0.3, the OCI referrers fallback tag) with raw HTTP requests and
//! signatures openssl makes (`attestgate_e2e::layout`); what
//! attestgate-registry's `lookup`, `resolve` and `push_cosign` do is
//! checked with openssl and with attestgate's own keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use attestgate_e2e::layout::{
    COSIGN_SIGNATURE_ANNOTATION, DOCKER_CONFIG, DOCKER_MANIFEST, Keys, OCI_CONFIG, OCI_INDEX,
    OCI_MANIFEST, Raw, SIGSTORE_BUNDLE_V03, b64, bundle, pae, payload, sha256, statement,
};
use attestgate_e2e::registry::Registry;
use attestgate_policy::verify::{PkixKey, SignatureAlgorithm};
use attestgate_policy::{Digest, RegistrySignature};
use attestgate_registry::oci::{Credentials, OciError, RegistryOptions};
use attestgate_registry::signatures::{
    self, CriAuth, Lookup, Resolved, SignatureLimits, credentials_from_cri, index_children, lookup,
    push_cosign, resolve,
};
use serde_json::json;

const REPO: &str = "team/app";

/// A small image under `tag` (`Raw::image`), as a digest.
async fn push_image(raw: &Raw, tag: &str, seed: &str) -> Digest {
    Digest::parse(&raw.image(tag, seed).await).unwrap()
}

/// `registry` (`None`: skipped) with image `v1` pushed as `auth` and key
/// `a` (EC, SEC1) made.
async fn setup(
    registry: Option<Registry>,
    auth: Option<(&str, &str)>,
) -> Option<(Registry, Raw, Keys, Digest)> {
    let registry = registry?;
    let raw = Raw::new(&registry.addr, REPO, auth);
    let keys = Keys::new();
    keys.make("a", "ec");
    let image = push_image(&raw, "v1", "app").await;
    Some((registry, raw, keys, image))
}

fn options(registry: &Registry) -> RegistryOptions {
    RegistryOptions {
        plain_http: vec![registry.addr.clone()],
        timeout: Duration::from_secs(10),
        ..RegistryOptions::default()
    }
}

/// `lookup` of `image` in REPO with the default limits.
async fn find(
    options: &RegistryOptions,
    registry: &Registry,
    image: &Digest,
) -> Result<Lookup, OciError> {
    lookup(
        options,
        &registry.addr,
        REPO,
        image,
        &SignatureLimits::default(),
    )
    .await
}

/// `lookup` of `image` in REPO under the default limits changed by `set`,
/// which it must fail as too large; the error.
async fn too_large(
    registry: &Registry,
    image: &Digest,
    set: impl FnOnce(&mut SignatureLimits),
) -> OciError {
    let mut limits = SignatureLimits::default();
    set(&mut limits);
    let error = lookup(&options(registry), &registry.addr, REPO, image, &limits)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    error
}

/// `resolve` of `reference` in REPO.
async fn resolve_in(registry: &Registry, reference: &str) -> Result<Resolved, OciError> {
    resolve(&options(registry), &registry.addr, REPO, reference).await
}

/// Key `name`'s public half as attestgate's own verifier reads it.
fn pkix(keys: &Keys, name: &str, algorithm: &str) -> PkixKey {
    PkixKey::from_pem(
        &keys.public_pem(name),
        SignatureAlgorithm::parse(algorithm).unwrap(),
    )
    .unwrap()
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

/// The signature `found` holds for `payload`, once openssl says it
/// verifies under key `a`.
fn sign_check(keys: &Keys, payload: &[u8], found: &Lookup) -> Vec<u8> {
    let (_, signature) = cosign_of(found)
        .into_iter()
        .find(|(p, _)| p == payload)
        .expect("a signature for the payload");
    assert!(keys.verifies("a", payload, &signature));
    signature
}

#[tokio::test]
async fn cosign_layers_and_a_bundle_referrer_are_found_and_verify() {
    let Some((registry, raw, keys, image)) = setup(Registry::start(), None).await else {
        return;
    };
    keys.make("b", "ec8");
    keys.make("c", "rsa");
    let other = push_image(&raw, "other", "other").await;
    let reference = format!("{}/{REPO}", registry.addr);
    let signed = payload(&reference, image.as_str());
    let layers: Vec<(Vec<u8>, String)> = ["a", "b", "c"]
        .iter()
        .map(|k| (signed.clone(), b64(&keys.sign(k, &signed))))
        .collect();
    raw.sig(image.as_str(), &layers, OCI_MANIFEST).await;
    // The bundle, and a decoy: a referrer of another image listed in this
    // image's fallback index, and an SBOM that is no signature at all.
    let statement = statement(image.as_str());
    let signed_pae = pae("application/vnd.in-toto+json", &statement);
    assert_eq!(
        signed_pae,
        attestgate_policy::registry::pae("application/vnd.in-toto+json", &statement)
    );
    let dsse_sig = keys.sign("a", &signed_pae);
    let real = raw
        .referrer(
            image.as_str(),
            &bundle(SIGSTORE_BUNDLE_V03, &statement, &dsse_sig),
        )
        .await;
    let decoy = raw
        .referrer(
            other.as_str(),
            &bundle(SIGSTORE_BUNDLE_V03, &statement, &dsse_sig),
        )
        .await;
    let mut sbom = real.clone();
    sbom["artifactType"] = json!("application/spdx+json");
    raw.fallback_index(image.as_str(), vec![decoy.clone(), real.clone(), sbom])
        .await;

    let found = find(&options(&registry), &registry, &image).await.unwrap();
    let cosign = cosign_of(&found);
    assert_eq!(cosign.len(), 3, "{found:?}");
    for ((payload, signature), key) in cosign.iter().zip(["a", "b", "c"]) {
        assert_eq!(payload, &signed);
        assert!(keys.verifies(key, payload, signature), "{key}");
    }
    // attestgate's own verifier agrees, and refuses a key that did not sign.
    let a = pkix(&keys, "a", "ECDSA_P256_SHA256");
    a.verify(&cosign[0].0, &cosign[0].1).unwrap();
    assert!(a.verify(&cosign[1].0, &cosign[1].1).is_err());
    pkix(&keys, "c", "RSA_SIGN_PKCS1_2048_SHA256")
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
    let Some((registry, raw, keys, image)) = setup(Registry::start(), None).await else {
        return;
    };
    let reference = format!("{}/{REPO}", registry.addr);
    let good = payload(&reference, image.as_str());
    // A payload the registry will serve wrong bytes for: same length, so
    // only the digest check can tell.
    let damaged = payload(&format!("{reference}x"), image.as_str());
    let layers = vec![
        (good.clone(), b64(&keys.sign("a", &good))),
        (damaged.clone(), b64(&keys.sign("a", &damaged))),
        (
            payload("elsewhere/app", image.as_str()),
            "not base64!".to_string(),
        ),
    ];
    // The Docker v2 flavour of the layout (COSIGN_DOCKER_MEDIA_TYPES).
    raw.sig(image.as_str(), &layers, DOCKER_MANIFEST).await;
    let blob = registry.blob_path(&sha256(&damaged));
    let mut wrong = std::fs::read(&blob).unwrap();
    wrong[0] ^= 0x20;
    std::fs::write(&blob, &wrong).unwrap();
    // A bundle of another version, and one that is a message signature.
    let statement = statement(image.as_str());
    let old = raw
        .referrer(
            image.as_str(),
            &bundle(
                "application/vnd.dev.sigstore.bundle+json;version=0.2",
                &statement,
                b"x",
            ),
        )
        .await;
    let blob_bundle = json!({"mediaType": SIGSTORE_BUNDLE_V03, "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(b"d")}, "signature": b64(b"s")}}).to_string();
    let message = raw.referrer(image.as_str(), blob_bundle.as_bytes()).await;
    raw.fallback_index(image.as_str(), vec![old, message]).await;

    let found = find(&options(&registry), &registry, &image).await.unwrap();
    assert_eq!(
        cosign_of(&found),
        vec![(good.clone(), sign_check(&keys, &good, &found))]
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

#[tokio::test]
async fn an_image_without_signatures_has_none_and_that_is_no_error() {
    let Some((registry, _raw, _keys, image)) = setup(Registry::start(), None).await else {
        return;
    };
    let found = find(&options(&registry), &registry, &image).await.unwrap();
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
    let raw = Raw::new(&registry.addr, REPO, None);
    let amd = push_image(&raw, "amd", "amd64").await;
    let arm = push_image(&raw, "arm", "arm64").await;
    let by_tag = resolve_in(&registry, "amd").await.unwrap();
    assert_eq!(by_tag.digest, amd);
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert!(index_children(&by_tag).is_empty());
    let by_digest = resolve_in(&registry, amd.as_str()).await.unwrap();
    assert_eq!(by_digest, by_tag);
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": amd.as_str(), "size": by_tag.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": OCI_MANIFEST, "digest": arm.as_str(), "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
    ]})
    .to_string();
    let index_digest = raw
        .manifest(Some("multi"), OCI_INDEX, index.as_bytes())
        .await;
    let multi = resolve_in(&registry, "multi").await.unwrap();
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
    let got = resolve_in(&registry, "docker").await.unwrap();
    assert_eq!(
        (got.digest.as_str(), got.media_type.as_str()),
        (docker_digest.as_str(), DOCKER_MANIFEST)
    );
    let missing = resolve_in(&registry, "nope").await.unwrap_err();
    assert_eq!(missing.reason(), "not_found", "{missing}");
    let bad = resolve_in(&registry, "sha256:12").await.unwrap_err();
    assert_eq!(bad.reason(), "bad_reference", "{bad}");
}

#[tokio::test]
async fn htpasswd_registry_needs_the_credentials_kubelet_gave() {
    let Some((registry, raw, keys, image)) = setup(
        Registry::start_with_htpasswd("alice", "s3cret"),
        Some(("alice", "s3cret")),
    )
    .await
    else {
        return;
    };
    let signed = payload(&format!("{}/{REPO}", registry.addr), image.as_str());
    raw.sig(
        image.as_str(),
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
    let found = find(&with(credentials), &registry, &image).await.unwrap();
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
        let error = find(&with(credentials), &registry, &image)
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
    let Some((registry, raw, keys, image)) = setup(Registry::start(), None).await else {
        return;
    };
    let signed = payload(&format!("{}/{REPO}", registry.addr), image.as_str());
    let layer = (signed.clone(), b64(&keys.sign("a", &signed)));
    let sig = raw
        .sig(
            image.as_str(),
            &[layer.clone(), layer.clone(), layer],
            OCI_MANIFEST,
        )
        .await;
    // The .sig manifest itself over its cap: the lookup fails.
    too_large(&registry, &image, |l| l.max_manifest = sig.len() as u64 - 1).await;
    too_large(&registry, &image, |l| l.max_layers = 2).await;
    // A payload over its cap: skipped, not fetched, the rest goes on.
    let limits = SignatureLimits {
        max_payload: signed.len() as u64 - 1,
        ..SignatureLimits::default()
    };
    let found = lookup(&options(&registry), &registry.addr, REPO, &image, &limits)
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
    let statement = statement(image.as_str());
    let one = raw
        .referrer(
            image.as_str(),
            &bundle(SIGSTORE_BUNDLE_V03, &statement, b"s"),
        )
        .await;
    raw.fallback_index(image.as_str(), vec![one.clone(), one.clone(), one])
        .await;
    let error = too_large(&registry, &image, |l| l.max_referrers = 2).await;
    assert!(error.to_string().contains("referrers"), "{error}");
}

#[tokio::test]
async fn push_cosign_appends_keeps_earlier_layers_and_reads_back() {
    let Some((registry, raw, keys, image)) = setup(Registry::start(), None).await else {
        return;
    };
    keys.make("b", "rsa");
    let options = options(&registry);
    let reference = format!("{}/{REPO}", registry.addr);
    let signed = signatures::cosign_payload(&reference, &image);
    assert_eq!(signed, payload(&reference, image.as_str()));
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
    let found = find(&options, &registry, &image).await.unwrap();
    let cosign = cosign_of(&found);
    assert_eq!(cosign.len(), 2, "{found:?}");
    assert!(keys.verifies("a", &cosign[0].0, &cosign[0].1));
    assert!(keys.verifies("b", &cosign[1].0, &cosign[1].1));
    assert!(!keys.verifies("a", &cosign[1].0, &cosign[1].1));
}
