//! Signatures from the registry (SPEC §11) on a real node: containerd,
//! the proxy in front, Debian's docker-registry. Signatures are laid out
//! by the test from cosign's and sigstore's published formats with keys
//! and signatures openssl makes (`attestgate_e2e::layout`), and by
//! `attestgate sign --cosign`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use attestgate_e2e::cri::assert_denied;
use attestgate_e2e::layout::{
    Keys, OCI_MANIFEST, Raw, SIGSTORE_BUNDLE_V03, b64, bundle, pae, payload, statement,
};
use attestgate_e2e::metrics;
use attestgate_e2e::node::{Node, REQUIRE_CI, SHIM_RUNTIME};

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

const ATTESTOR: &str = "projects/e2e/attestors/ci";

/// A node whose policy requires the CI attestor, the attestor's key made
/// by openssl (not by attestgate), and no attestation in the bundle.
fn node_with_openssl_attestor() -> Option<(Node, Keys)> {
    with_openssl_attestor(Node::up(&agcri())?)
}

fn with_openssl_attestor(node: Node) -> Option<(Node, Keys)> {
    let keys = Keys::new();
    keys.make("ci", "ec8");
    let yaml = node.attestgate(&[
        "attestor",
        "create",
        "--name",
        ATTESTOR,
        "--note",
        "projects/e2e/notes/ci",
        "--public-key",
        &keys.public_path("ci").display().to_string(),
        "--algorithm",
        "ECDSA_P256_SHA256",
    ]);
    std::fs::write(node.bundle.join("attestors/ci.yaml"), yaml).unwrap();
    node.policy(REQUIRE_CI);
    Some((node, keys))
}

fn start_proxy(node: &mut Node, extra: &[&str]) {
    let pause = format!("{}/attestgate/pause*", node.registry);
    let cache = node.dir().join("attestations").display().to_string();
    let registry = node.registry.clone();
    let mut args = vec![
        "--system-image",
        &pause,
        "--registry-attestor",
        ATTESTOR,
        "--plain-http",
        &registry,
        "--attestation-cache",
        &cache,
    ];
    args.extend_from_slice(extra);
    node.start_proxy(&args);
}

/// `reference` without its tag: what cosign writes as docker-reference.
fn repository_of(reference: &str) -> &str {
    reference.rsplit_once(':').unwrap().0
}

/// The repository path inside the registry (`attestgate/NAME`).
fn path_of<'a>(node: &Node, reference: &'a str) -> &'a str {
    repository_of(reference)
        .strip_prefix(&format!("{}/", node.registry))
        .unwrap()
}

/// A cosign `.sig` beside `digest` with one layer: `payload` signed by
/// `signer` (an openssl key name).
async fn cosign_sig(
    node: &Node,
    keys: &Keys,
    reference: &str,
    digest: &str,
    body: Vec<u8>,
    signer: &str,
) {
    let signature = keys.sign(signer, &body);
    Raw::new(&node.registry, path_of(node, reference), None)
        .sig(digest, &[(body, b64(&signature))], OCI_MANIFEST)
        .await;
}

fn last_detail(node: &Node) -> String {
    let audit = node.audit();
    let last = audit.last().unwrap();
    last["attestors"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_and_sigstore_signatures_admit_and_the_cache_decides_with_the_registry_gone() {
    let Some((mut node, keys)) = node_with_openssl_attestor() else {
        return;
    };
    let (cosigned, cosigned_digest) = node.push_image("cosigned", "1", "sleep 3600");
    let (bundled, bundled_digest) = node.push_image("bundled", "1", "sleep 3600");
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");

    cosign_sig(
        &node,
        &keys,
        &cosigned,
        &cosigned_digest,
        payload(repository_of(&cosigned), &cosigned_digest),
        "ci",
    )
    .await;
    // cosign 3's default: a sigstore bundle, found through the fallback tag
    // (distribution 2.8 has no referrers API), beside a decoy referrer
    // whose subject is another image.
    let raw = Raw::new(&node.registry, path_of(&node, &bundled), None);
    let statement_bytes = statement(&bundled_digest);
    let signature = keys.sign("ci", &pae("application/vnd.in-toto+json", &statement_bytes));
    // Padded with a signature that verifies under nothing: the list of an
    // envelope's signatures is signed by none of them.
    let mut padded: serde_json::Value =
        serde_json::from_slice(&bundle(SIGSTORE_BUNDLE_V03, &statement_bytes, &signature)).unwrap();
    padded["dsseEnvelope"]["signatures"]
        .as_array_mut()
        .unwrap()
        .insert(0, serde_json::json!({"sig": b64(&[7; 70]), "keyid": ""}));
    let good = raw
        .referrer(&bundled_digest, padded.to_string().as_bytes())
        .await;
    let decoy = raw
        .referrer(
            &cosigned_digest,
            &bundle(SIGSTORE_BUNDLE_V03, &statement_bytes, &signature),
        )
        .await;
    raw.fallback_index(&bundled_digest, vec![decoy, good]).await;

    start_proxy(&mut node, &[]);
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "web-0");

    let image_id = cri
        .pull(&cosigned, Some(pod.clone()))
        .await
        .expect("a cosign-signed image pulls");
    let audit = node.audit();
    let pulled = audit.last().unwrap();
    assert_eq!(pulled["operation"], "PullImage");
    assert_eq!(pulled["reason"], "ATTESTED", "{pulled:#}");
    let detail = last_detail(&node);
    assert!(
        detail.contains("cosign signature from")
            && detail.contains(&cosigned_digest)
            && detail.contains(repository_of(&cosigned)),
        "{detail}"
    );

    cri.pull(&bundled, Some(pod.clone()))
        .await
        .expect("an image signed with a sigstore bundle pulls");
    let detail = last_detail(&node);
    assert!(
        detail.contains("sigstore bundle from") && detail.contains(&bundled_digest),
        "{detail}"
    );

    assert_denied(cri.pull(&unsigned, Some(pod.clone())).await);
    assert!(
        last_detail(&node).contains("no attestation for"),
        "{}",
        last_detail(&node)
    );

    // What verified is on disk, one entry per digest.
    let cache = node.dir().join("attestations");
    for digest in [&cosigned_digest, &bundled_digest] {
        let entry = cache.join(format!("{}.json", digest.replace(':', "-")));
        assert!(entry.is_file(), "{} missing", entry.display());
    }
    // Only the signature that verified is kept of the padded envelope.
    let entry: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cache.join(format!("{}.json", bundled_digest.replace(':', "-")))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        entry["attestations"][0]["signatures"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{entry:#}"
    );

    // The registry goes (the sandbox is up first: its pause image comes
    // from there), the proxy restarts: CreateContainer decides from the
    // bundle plus the cache, with no network.
    let pod_id = cri.run_pod(&pod).await.expect("the pod runs");
    node.sh("ag_registry_stop \"$DIR\"");
    node.restart_proxy();
    let cri = node.via_proxy().await;
    let id = cri
        .create_container(&pod_id, &pod, "web", &image_id, &cosigned, &[])
        .await
        .expect("created from the cache, the registry gone");
    cri.start_container(&id).await.expect("starts");
    let audit = node.audit();
    let created = audit.last().unwrap();
    assert_eq!(created["operation"], "CreateContainer");
    assert_eq!(created["reason"], "ATTESTED", "{created:#}");
    assert!(last_detail(&node).contains("cosign signature from"));

    // A corrupt entry is reported and ignored, never trusted.
    let entry = cache.join(format!("{}.json", cosigned_digest.replace(':', "-")));
    let text = std::fs::read_to_string(&entry).unwrap();
    std::fs::write(&entry, &text[..text.len() / 2]).unwrap();
    let denied = cri
        .create_container(&pod_id, &pod, "web2", &image_id, &cosigned, &[])
        .await;
    assert_denied(denied);
    assert!(
        node.proxy_log()
            .contains("attestation cache entry left out"),
        "{}",
        node.proxy_log()
    );
    // A planted entry whose signature does not verify counts for nothing.
    let forged = text.replace("\"signature\":\"", "\"signature\":\"AAAA");
    std::fs::write(&entry, forged).unwrap();
    assert_denied(
        cri.create_container(&pod_id, &pod, "web3", &image_id, &cosigned, &[])
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_that_do_not_name_the_image_under_the_attestor_s_key_are_refused() {
    let Some((mut node, keys)) = node_with_openssl_attestor() else {
        return;
    };
    keys.make("stranger", "ec8");
    let (_, other_digest) = node.push_image("other", "1", "sleep 1");
    let mut cases = Vec::new();
    // Each image gets a cosign signature by `signer` over the payload made
    // from (its repository, its digest).
    let signed_image =
        |name: &'static str, signer: &'static str, body: fn(&str, &str) -> Vec<u8>| {
            let (image, digest) = node.push_image(name, "1", "sleep 1");
            let node = &node;
            let keys = &keys;
            async move {
                let bytes = body(repository_of(&image), &digest);
                cosign_sig(node, keys, &image, &digest, bytes, signer).await;
                image
            }
        };
    // Another image's digest, signed by the right key.
    let other = other_digest.clone();
    let for_another = node.push_image("for-another", "1", "sleep 1");
    cosign_sig(
        &node,
        &keys,
        &for_another.0,
        &for_another.1,
        payload(repository_of(&for_another.0), &other),
        "ci",
    )
    .await;
    cases.push((for_another.0, "names digest"));
    // The right payload by another key.
    cases.push((
        signed_image("by-stranger", "stranger", payload).await,
        "verify under none",
    ));
    // A payload changed after it was signed.
    let (image, digest) = node.push_image("tampered", "1", "sleep 1");
    let signed = payload(repository_of(&image), &digest);
    let signature = keys.sign("ci", &signed);
    let mut tampered = signed.clone();
    tampered.extend_from_slice(b" ");
    Raw::new(&node.registry, path_of(&node, &image), None)
        .sig(&digest, &[(tampered, b64(&signature))], OCI_MANIFEST)
        .await;
    cases.push((image, "verify under none"));
    // A payload of another type, properly signed.
    cases.push((
        signed_image("other-type", "ci", |repository, digest| {
            String::from_utf8(payload(repository, digest))
                .unwrap_or_default()
                .replace(
                    "cosign container image signature",
                    "cosign container image sbom",
                )
                .into_bytes()
        })
        .await,
        "not a container signature type",
    ));
    // A DSSE envelope of another payload type.
    let (image, digest) = node.push_image("not-in-toto", "1", "sleep 1");
    let raw = Raw::new(&node.registry, path_of(&node, &image), None);
    let body = statement(&digest);
    let signature = keys.sign("ci", &pae("application/json", &body));
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&bundle(SIGSTORE_BUNDLE_V03, &body, &signature)).unwrap();
    envelope["dsseEnvelope"]["payloadType"] = "application/json".into();
    let referrer = raw.referrer(&digest, envelope.to_string().as_bytes()).await;
    raw.fallback_index(&digest, vec![referrer]).await;
    cases.push((image, "not in-toto"));

    start_proxy(&mut node, &[]);
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "web-0");
    for (image, why) in cases {
        assert_denied(cri.pull(&image, Some(pod.clone())).await);
        let detail = last_detail(&node);
        assert!(detail.contains(why), "{image}: {detail}");
        assert!(
            cri.image_status(&image).await.unwrap().is_none(),
            "{image} was removed again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_slow_or_down_adds_nothing_and_is_counted() {
    let Some((mut node, keys)) = node_with_openssl_attestor() else {
        return;
    };
    // A registry that accepts connections and never answers, and a port
    // where none listens.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let closed_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let metrics_addr = metrics::free_local_addr();
    start_proxy(
        &mut node,
        &[
            "--registry-timeout",
            "2s",
            "--plain-http",
            &silent_addr,
            "--plain-http",
            &closed_addr,
            "--metrics-listen",
            &metrics_addr,
        ],
    );
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "web-0");
    let digest = format!("sha256:{}", "d".repeat(64));
    let began = Instant::now();
    assert_denied(
        cri.pull(&format!("{silent_addr}/app@{digest}"), Some(pod.clone()))
            .await,
    );
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "a lookup bounded by registry_timeout, then the decision: {took:?}"
    );
    assert_denied(
        cri.pull(&format!("{closed_addr}/app@{digest}"), Some(pod.clone()))
            .await,
    );
    let text = metrics::scrape(&metrics_addr).await;
    assert!(
        text.contains("attestgate_registry_lookups_total{reason=\"timeout\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("attestgate_registry_lookups_total{reason=\"unreachable\"} 1"),
        "{text}"
    );
    // A signed image still pulls: the failures spoiled nothing.
    let (signed, digest) = node.push_image("signed", "1", "sleep 1");
    cosign_sig(
        &node,
        &keys,
        &signed,
        &digest,
        payload(repository_of(&signed), &digest),
        "ci",
    )
    .await;
    cri.pull(&signed, Some(pod)).await.expect("signed pulls");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_cosign_signatures_admit_by_tag_and_by_digest() {
    let Some((mut node, keys)) = node_with_openssl_attestor() else {
        return;
    };
    let (by_tag, tag_digest) = node.push_image("signed-by-us", "1", "sleep 1");
    let (by_digest, digest_digest) = node.push_image("pinned", "1", "sleep 1");
    let key = node.dir().join("ci.pem");
    std::fs::copy(keys.make("ci2", "ec8"), &key).unwrap();
    // The attestor gets the second key too: cosign names no key id, so
    // each key is tried.
    let yaml = std::fs::read_to_string(node.bundle.join("attestors/ci.yaml")).unwrap();
    let second = node.attestgate(&[
        "attestor",
        "create",
        "--name",
        ATTESTOR,
        "--note",
        "projects/e2e/notes/ci",
        "--public-key",
        &keys.public_path("ci2").display().to_string(),
        "--algorithm",
        "ECDSA_P256_SHA256",
    ]);
    let _ = yaml;
    std::fs::write(node.bundle.join("attestors/ci.yaml"), second).unwrap();
    for (reference, digest) in [(&by_tag, &tag_digest), (&by_digest, &digest_digest)] {
        node.attestgate(&[
            "sign",
            "--artifact-url",
            &format!("{}@{digest}", repository_of(reference)),
            "--key",
            &key.display().to_string(),
            "--algorithm",
            "ECDSA_P256_SHA256",
            "--cosign",
            "--plain-http",
        ]);
    }
    start_proxy(&mut node, &[]);
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "web-0");
    cri.pull(&by_tag, Some(pod.clone()))
        .await
        .expect("signed by `attestgate sign --cosign`, pulled by tag");
    let pinned = format!("{}@{digest_digest}", repository_of(&by_digest));
    cri.pull(&pinned, Some(pod.clone()))
        .await
        .expect("pulled by digest: looked up before the decision");
    let detail = last_detail(&node);
    assert!(detail.contains("cosign signature from"), "{detail}");

    // `attestgate evaluate --registry` decides the same, off the node.
    let bundle = node.bundle.display().to_string();
    let evaluate = |image: &str| {
        std::process::Command::new(attestgate_e2e::node::bin("attestgate"))
            .args(["evaluate", "--bundle", &bundle, "--image", image])
            .args(["--registry", "--plain-http", "--output", "json"])
            .output()
            .unwrap()
    };
    let allowed = evaluate(&by_tag);
    assert_eq!(allowed.status.code(), Some(0), "{allowed:?}");
    let record: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert_eq!(record["reason"], "ATTESTED");
    assert_eq!(record["image"]["digest"], tag_digest.as_str());
    let (unsigned, _) = node.push_image("not-signed", "1", "sleep 1");
    let denied = evaluate(&unsigned);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    node.sh("ag_registry_stop \"$DIR\"");
    let unreachable = evaluate(&by_tag);
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_signature_counts_for_the_platform_pulled_and_the_reverse() {
    let Some((mut node, keys)) = node_with_openssl_attestor() else {
        return;
    };
    // Signed on the index only (`cosign sign` of a tag); on this node's
    // platform manifest only (`--recursive`, or a signer of one platform);
    // on the other platform's manifest only.
    let index_signed = node.push_multiarch("index-signed", "1");
    let platform_signed = node.push_multiarch("platform-signed", "1");
    let other_signed = node.push_multiarch("other-signed", "1");
    // The same, pulled by the index digest, which is decided before the
    // pull unless only the platform manifest's signature can count.
    let platform_by_digest = node.push_multiarch("platform-by-digest", "1");
    let repo = |m: &attestgate_e2e::node::MultiArch| repository_of(&m.reference).to_string();
    cosign_sig(
        &node,
        &keys,
        &index_signed.reference,
        &index_signed.index_digest,
        payload(&repo(&index_signed), &index_signed.index_digest),
        "ci",
    )
    .await;
    cosign_sig(
        &node,
        &keys,
        &platform_signed.reference,
        &platform_signed.this_platform_digest,
        payload(
            &repo(&platform_signed),
            &platform_signed.this_platform_digest,
        ),
        "ci",
    )
    .await;
    let (_, other_platform) = other_signed
        .platform_digests
        .iter()
        .find(|(_, d)| *d != other_signed.this_platform_digest)
        .unwrap();
    cosign_sig(
        &node,
        &keys,
        &other_signed.reference,
        other_platform,
        payload(&repo(&other_signed), other_platform),
        "ci",
    )
    .await;

    cosign_sig(
        &node,
        &keys,
        &platform_by_digest.reference,
        &platform_by_digest.this_platform_digest,
        payload(
            &repo(&platform_by_digest),
            &platform_by_digest.this_platform_digest,
        ),
        "ci",
    )
    .await;

    start_proxy(&mut node, &[]);
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "web-0");
    cri.pull(&index_signed.reference, Some(pod.clone()))
        .await
        .expect("the index is signed");
    let detail = last_detail(&node);
    assert!(detail.contains(&index_signed.index_digest), "{detail}");

    let image_id = cri
        .pull(&platform_signed.reference, Some(pod.clone()))
        .await
        .expect("the platform manifest pulled through the index is signed");
    let detail = last_detail(&node);
    assert!(
        detail.contains(&format!("for {}", platform_signed.this_platform_digest)),
        "the record names the digest that was signed: {detail}"
    );
    let audit = node.audit();
    assert_eq!(
        audit.last().unwrap()["image"]["digest"],
        platform_signed.index_digest.as_str(),
        "decided by the index digest kubelet knows"
    );

    assert_denied(cri.pull(&other_signed.reference, Some(pod.clone())).await);

    // By digest: the index is pulled, containerd's link read, then decided.
    let index_named =
        |m: &attestgate_e2e::node::MultiArch| format!("{}@{}", repo(m), m.index_digest);
    cri.pull(&index_named(&platform_by_digest), Some(pod.clone()))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the platform manifest of the index pulled by digest is signed: {e:?}\n{}",
                node.proxy_log()
            )
        });
    let detail = last_detail(&node);
    assert!(
        detail.contains(&format!("for {}", platform_by_digest.this_platform_digest)),
        "{detail}"
    );
    let audit = node.audit();
    assert_eq!(
        audit.last().unwrap()["image"]["digest"],
        platform_by_digest.index_digest.as_str()
    );
    // Signed for a platform this node does not pull: refused before the
    // pull, and nothing reached the node.
    let other_by_digest = index_named(&other_signed);
    assert_denied(cri.pull(&other_by_digest, Some(pod.clone())).await);
    assert!(
        node.direct()
            .await
            .image_status(&other_by_digest)
            .await
            .unwrap()
            .is_none(),
        "a refused pull by digest left the image on the node"
    );

    // CreateContainer reads the same from the cache.
    let pod_id = cri.run_pod(&pod).await.expect("the pod runs");
    cri.create_container(
        &pod_id,
        &pod,
        "web",
        &image_id,
        &platform_signed.reference,
        &[],
    )
    .await
    .expect("created: the platform signature is in the cache");
    assert!(
        last_detail(&node).contains(&platform_signed.this_platform_digest),
        "{}",
        last_detail(&node)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_behind_basic_auth_is_read_with_the_credentials_kubelet_sent() {
    let Some((mut node, keys)) = node_with_openssl_attestor() else {
        return;
    };
    let Some(private) =
        attestgate_e2e::registry::Registry::start_with_htpasswd("kubelet", "s3cret")
    else {
        return;
    };
    node.plain_http_registry(&private.addr);
    let raw = Raw::new(&private.addr, "team/app", Some(("kubelet", "s3cret")));
    // A real image (containerd unpacks it), copied in by skopeo.
    node.sh(&format!(
        "skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-creds kubelet:s3cret \
         docker://{} docker://{}/team/app:1",
        node.app_image, private.addr
    ));
    let digest = attestgate_e2e::layout::sha256(&raw.get("manifests/1", OCI_MANIFEST).await);
    let reference = format!("{}/team/app:1", private.addr);
    let body = payload(&format!("{}/team/app", private.addr), &digest);
    let signature = keys.sign("ci", &body);
    raw.sig(&digest, &[(body, b64(&signature))], OCI_MANIFEST)
        .await;

    let metrics_addr = metrics::free_local_addr();
    start_proxy(
        &mut node,
        &[
            "--plain-http",
            &private.addr,
            "--metrics-listen",
            &metrics_addr,
        ],
    );
    let cri = node.via_proxy().await;
    let pull = |auth: Option<k8s_cri::v1::AuthConfig>| {
        let mut images = cri.images.clone();
        let reference = reference.clone();
        async move {
            images
                .pull_image(k8s_cri::v1::PullImageRequest {
                    image: Some(k8s_cri::v1::ImageSpec {
                        image: reference,
                        ..Default::default()
                    }),
                    auth,
                    sandbox_config: None,
                })
                .await
        }
    };
    // kubelet's credentials, as an imagePullSecret gives them: the pull
    // and the lookup both use them (no registry_credentials is set).
    pull(Some(k8s_cri::v1::AuthConfig {
        username: "kubelet".into(),
        password: "s3cret".into(),
        ..Default::default()
    }))
    .await
    .expect("pulled and admitted with the request's credentials");
    let audit = node.audit();
    assert_eq!(audit.last().unwrap()["reason"], "ATTESTED", "{audit:#?}");
    // The same as base64 `auth`, for a server_address that names it.
    cri.remove_image(&reference).await.unwrap();
    // The cache would satisfy the policy and spare the lookup: empty it.
    for entry in std::fs::read_dir(node.dir().join("attestations")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    pull(Some(k8s_cri::v1::AuthConfig {
        auth: b64(b"kubelet:s3cret"),
        server_address: format!("http://{}", private.addr),
        ..Default::default()
    }))
    .await
    .expect("pulled and admitted with base64 auth");
    assert_eq!(node.audit().last().unwrap()["reason"], "ATTESTED");
    // Credentials for another registry are not sent to this one: the
    // pull itself fails at the registry, never admitted.
    cri.remove_image(&reference).await.unwrap();
    let elsewhere = pull(Some(k8s_cri::v1::AuthConfig {
        username: "kubelet".into(),
        password: "s3cret".into(),
        server_address: "https://other.example".into(),
        ..Default::default()
    }))
    .await;
    assert!(elsewhere.is_err(), "{elsewhere:?}");
    assert_eq!(
        metrics::sample(
            &metrics_addr,
            "attestgate_registry_lookups_total{reason=\"found\"}"
        ),
        Some(2.0)
    );
}

/// A node with the shim, the openssl attestor, and a shim that counts
/// registry signatures from the attestation cache it returns.
fn shim_node_reading_the_cache() -> Option<(Node, Keys, PathBuf)> {
    let (node, keys) = with_openssl_attestor(Node::up_with_shim(&agcri())?)?;
    let cache = node.dir().join("attestations");
    node.write_shim_config(&format!(
        "registry_attestors = [\"{ATTESTOR}\"]\nattestation_cache = \"{}\"\n",
        cache.display()
    ));
    Some((node, keys, cache))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shim_decides_from_the_cache_the_proxy_filled() {
    let Some((mut node, keys, cache)) = shim_node_reading_the_cache() else {
        return;
    };
    let (signed, digest) = node.push_image("shim-signed", "1", "sleep 3600");
    cosign_sig(
        &node,
        &keys,
        &signed,
        &digest,
        payload(repository_of(&signed), &digest),
        "ci",
    )
    .await;
    start_proxy(&mut node, &[]);
    node.via_proxy()
        .await
        .pull(&signed, None)
        .await
        .expect("pulled through the proxy, its signature cached");
    // The registry goes; a container of that image made without the CRI
    // is decided at Task.Create from the bundle plus the cache.
    node.sh("ag_registry_stop \"$DIR\"");
    let id = format!("shim-cache-{}", node.cgroup_tag);
    let ctr = |args: &[&str]| node.ctr("k8s.io", args);
    let run = ctr(&["run", "-d", "--runtime", SHIM_RUNTIME, &signed, &id]);
    assert!(run.status.success(), "{run:?}");
    let audit = node.audit();
    let record = audit.last().unwrap();
    assert_eq!(record["operation"], "TaskCreate", "{record:#}");
    assert_eq!(record["reason"], "ATTESTED", "{record:#}");
    assert!(
        record["attestors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("cosign signature from"),
        "{record:#}"
    );
    node.ctr_remove("k8s.io", &id);
    // Without the cache entry the same container is refused.
    std::fs::remove_dir_all(&cache).unwrap();
    let again = format!("{id}-2");
    let refused = ctr(&["run", "-d", "--runtime", SHIM_RUNTIME, &signed, &again]);
    assert!(!refused.status.success(), "ran with no attestation");
    node.ctr_remove("k8s.io", &again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shim_counts_a_platform_signature_for_its_index_only_while_that_platform_alone_is_held()
{
    let Some((mut node, keys, _)) = shim_node_reading_the_cache() else {
        return;
    };
    // Signed on this node's platform manifest only.
    let multi = node.push_multiarch("shim-platform", "1");
    cosign_sig(
        &node,
        &keys,
        &multi.reference,
        &multi.this_platform_digest,
        payload(repository_of(&multi.reference), &multi.this_platform_digest),
        "ci",
    )
    .await;
    start_proxy(&mut node, &[]);
    node.via_proxy()
        .await
        .pull(&multi.reference, None)
        .await
        .expect("pulled through the proxy, the platform's signature cached for the index");
    let ctr = |args: &[&str]| node.ctr("k8s.io", args);
    let id = format!("shim-platform-{}", node.cgroup_tag);
    let run = ctr(&[
        "run",
        "-d",
        "--runtime",
        SHIM_RUNTIME,
        &multi.reference,
        &id,
    ]);
    assert!(run.status.success(), "{run:?}");
    let audit = node.audit();
    let record = audit.last().unwrap();
    assert_eq!(record["operation"], "TaskCreate", "{record:#}");
    assert_eq!(record["reason"], "ATTESTED", "{record:#}");
    node.ctr_remove("k8s.io", &id);

    // The other platform fetched too: a container may now be made for it
    // (`ctr run --platform`), which its index's link does not cover.
    let (other_arch, _) = multi
        .platform_digests
        .iter()
        .find(|(_, d)| *d != multi.this_platform_digest)
        .unwrap();
    let platform = format!("linux/{other_arch}");
    let fetched = ctr(&[
        "content",
        "fetch",
        "--plain-http",
        "--platform",
        &platform,
        &multi.reference,
    ]);
    assert!(fetched.status.success(), "{fetched:?}");
    let other = format!("{id}-other");
    let refused = ctr(&[
        "run",
        "-d",
        "--runtime",
        SHIM_RUNTIME,
        "--platform",
        &platform,
        &multi.reference,
        &other,
    ]);
    assert!(
        !refused.status.success(),
        "a container for the unsigned platform ran"
    );
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("holds 2 of the index's platforms"),
        "{message}"
    );
    let audit = node.audit();
    let record = audit.last().unwrap();
    assert_eq!(record["operation"], "TaskCreate", "{record:#}");
    assert_eq!(record["decision"], "deny", "{record:#}");
    node.ctr_remove("k8s.io", &other);
}

/// `key`'s public PEM, indented to sit under a YAML `|` at `indent`.
fn pem_block(path: &std::path::Path, indent: usize) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| format!("{}{l}\n", " ".repeat(indent)))
        .collect()
}

/// An enforced platform policy decides admission beside a project policy
/// that allows everything, with keys no attestor holds: a cosign signature
/// in the registry under a sigstore authority's key, a bundle attestation
/// under an attestation authenticator's; the pause image exempted by the
/// policy's own allowlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforced_platform_policy_admits_by_its_own_keys_and_refuses_the_rest() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    let keys = Keys::new();
    keys.make("authority", "ec8");
    let authenticator_key = node.add_attestor("release");
    std::fs::remove_file(node.bundle.join("attestors/release.yaml")).unwrap();
    node.attest(
        "release",
        &authenticator_key,
        repository_of(&node.app_image),
        &node.app_digest,
    );
    node.policy(
        "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
    );
    let platform = format!(
        "gkePolicy:\n  imageAllowlist:\n    allowPattern: ['{registry}/attestgate/pause*']\n  checkSets:\n  - displayName: attested\n    scope:\n      kubernetesNamespace: attested\n    checks:\n    - displayName: release-attestation\n      simpleSigningAttestationCheck:\n        attestationAuthenticators:\n        - displayName: release\n          pkixPublicKeySet:\n            pkixPublicKeys:\n            - signatureAlgorithm: ECDSA_P256_SHA256\n              publicKeyPem: |\n{authenticator}  - displayName: signed\n    checks:\n    - displayName: cosign\n      sigstoreSignatureCheck:\n        sigstoreAuthorities:\n        - displayName: ci\n          publicKeySet:\n            publicKeys:\n            - publicKeyPem: |\n{authority}",
        registry = node.registry,
        authenticator = pem_block(&node.dir().join("release.pub"), 16),
        authority = pem_block(&keys.public_path("authority"), 16),
    );
    std::fs::write(node.bundle.join("platform-policy.yaml"), platform).unwrap();
    // Refused with file:line errors, were it wrong.
    node.attestgate(&["policy", "check", &node.bundle.display().to_string()]);

    let (signed, digest) = node.push_image("platform-signed", "1", "sleep 3600");
    cosign_sig(
        &node,
        &keys,
        &signed,
        &digest,
        payload(repository_of(&signed), &digest),
        "authority",
    )
    .await;
    let (unsigned, _) = node.push_image("platform-unsigned", "1", "sleep 3600");
    let cache = node.dir().join("attestations").display().to_string();
    let registry = node.registry.clone();
    node.start_proxy(&[
        "--platform-policy-enforce",
        "true",
        "--plain-http",
        &registry,
        "--attestation-cache",
        &cache,
    ]);
    let cri = node.via_proxy().await;

    // The catch-all set: the registry's signature, with no registry
    // attestor configured, and the pod starts (its pause image exempted).
    let pod = node.pod("dev", "signed-0");
    let image_id = cri
        .pull(&signed, Some(pod.clone()))
        .await
        .expect("signed under the sigstore authority's key");
    let pod_id = cri
        .run_pod(&pod)
        .await
        .expect("the pause image is exempted");
    let id = cri
        .create_container(&pod_id, &pod, "app", &image_id, &signed, &[])
        .await
        .expect("created: the cache holds the platform key's signature");
    cri.start_container(&id).await.expect("started");
    let status = assert_denied(cri.pull(&unsigned, Some(pod.clone())).await);
    assert!(
        status
            .message()
            .contains("platform policy check set signed"),
        "{}",
        status.message()
    );
    let audit = node.audit();
    let refused = audit.last().unwrap();
    assert_eq!(refused["reason"], "PLATFORM_POLICY", "{refused:#}");
    assert_eq!(
        refused["platform_policy"]["checks"][0]["kind"],
        "sigstoreSignatureCheck"
    );

    // `attested` picks the authenticator's set: the bundle's attestation
    // counts, a registry signature does not.
    let attested = node.pod("attested", "app-0");
    cri.pull(&node.app_image, Some(attested.clone()))
        .await
        .expect("attested under the authenticator's key");
    assert_denied(cri.pull(&signed, Some(attested)).await);
    let audit = node.audit();
    let last = audit.last().unwrap();
    assert_eq!(last["platform_policy"]["check_set"], "attested", "{last:#}");
    assert_eq!(
        last["platform_policy"]["checks"][0]["kind"], "simpleSigningAttestationCheck",
        "{last:#}"
    );
}
