//! A bundle repository carried through a real Debian docker-registry
//! (distribution 2.8) as one OCI artifact (SPEC §10): the tree comes back
//! byte for byte, an unchanged poll costs one request, an update fetches
//! only what changed, and a lying or hostile artifact is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attestgate_e2e::node::bin;
use attestgate_e2e::registry::Registry;
use attestgate_registry::oci::{
    self, ARTIFACT_TYPE, EMPTY_CONFIG_MEDIA_TYPE, FILE_MEDIA_TYPE, Fetched, Limits,
    MANIFEST_MEDIA_TYPE, OciRef, RegistryOptions, TITLE,
};
use sha2::{Digest, Sha256};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn options(registry: &Registry) -> RegistryOptions {
    RegistryOptions {
        plain_http: vec![registry.addr.clone()],
        timeout: std::time::Duration::from_secs(10),
        ..RegistryOptions::default()
    }
}

fn reference(registry: &Registry, repository: &str) -> OciRef {
    OciRef::parse(&format!("oci://{}/{repository}", registry.addr)).unwrap()
}

/// A TUF-shaped tree (the files only; TUF itself is verified elsewhere).
fn fake_repository(dir: &Path) {
    let files: [(&str, &[u8]); 5] = [
        (
            "metadata/1.root.json",
            b"{\"signed\":{\"_type\":\"root\"}}\n",
        ),
        (
            "metadata/timestamp.json",
            b"{\"signed\":{\"_type\":\"timestamp\"}}\n",
        ),
        (
            "targets/policy.yaml",
            b"globalPolicyEvaluationMode: ENABLE\n",
        ),
        (
            "targets/attestors/ci.yaml",
            b"name: projects/p/attestors/ci\n",
        ),
        // Same bytes as another file: one blob, two titles.
        (
            "targets/attestors/copy.yaml",
            b"name: projects/p/attestors/ci\n",
        ),
    ];
    for (path, bytes) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let title = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &title, out);
            } else {
                out.insert(title, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

async fn manifest_as_stored(registry: &Registry, repository: &str, tag: &str) -> Vec<u8> {
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            registry.addr
        ))
        .header("Accept", MANIFEST_MEDIA_TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_repository_round_trips_and_an_unchanged_poll_is_one_request() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("repo");
    fake_repository(&source);
    let to = reference(&registry, "bundles/prod:v1");
    let options = options(&registry);
    let limits = Limits::default();

    let pushed = oci::push_dir(&source, &to, &options).await.unwrap();
    assert_eq!(pushed.files.len(), 5);
    assert_eq!(pushed.uploaded, 5, "4 distinct files and the empty config");

    // The artifact as stored has exactly SPEC §10's shape.
    let stored = manifest_as_stored(&registry, "bundles/prod", "v1").await;
    assert_eq!(digest(&stored), pushed.manifest_digest);
    let manifest: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(manifest["artifactType"], ARTIFACT_TYPE);
    assert_eq!(manifest["config"]["mediaType"], EMPTY_CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["config"]["size"], 2);
    assert_eq!(manifest["config"]["digest"], digest(b"{}"));
    let layers = manifest["layers"].as_array().unwrap();
    let expected = tree(&source);
    let titled: BTreeMap<String, (String, u64)> = layers
        .iter()
        .map(|layer| {
            assert_eq!(layer["mediaType"], FILE_MEDIA_TYPE);
            (
                layer["annotations"][TITLE].as_str().unwrap().to_string(),
                (
                    layer["digest"].as_str().unwrap().to_string(),
                    layer["size"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(titled.len(), layers.len(), "one layer per file");
    for (title, bytes) in &expected {
        assert_eq!(
            titled[title],
            (digest(bytes), bytes.len() as u64),
            "{title}"
        );
    }

    // First sync: the same tree, byte for byte.
    let cache = work.path().join("state/blobs");
    let staging = work.path().join("staging-1");
    let mark = registry.mark();
    let (fetched, traffic) = oci::fetch(&to, None, &staging, &cache, &options, &limits)
        .await
        .unwrap();
    let Fetched::New {
        manifest_digest,
        files,
    } = fetched
    else {
        panic!("{fetched:?}")
    };
    assert_eq!(manifest_digest, pushed.manifest_digest);
    assert_eq!(files, expected.keys().cloned().collect::<Vec<_>>());
    assert_eq!(tree(&staging), expected);
    let requests = registry.requests_since(mark);
    assert_eq!(requests.len(), 5, "the manifest and 4 blobs: {requests:?}");
    assert_eq!(traffic.requests, 5);

    // Nothing changed: one conditional request, answered 304.
    let mark = registry.mark();
    let staging = work.path().join("staging-2");
    let (fetched, traffic) = oci::fetch(
        &to,
        Some(&manifest_digest),
        &staging,
        &cache,
        &options,
        &limits,
    )
    .await
    .unwrap();
    assert_eq!(fetched, Fetched::Unchanged);
    let requests = registry.requests_since(mark);
    assert_eq!(
        requests,
        ["GET /v2/bundles/prod/manifests/v1 HTTP/1.1"],
        "one request"
    );
    assert_eq!(traffic.requests, 1);
    assert_eq!(traffic.bytes, 0, "304 has no body");
    assert!(!staging.exists(), "nothing laid out");

    // One file changes: the manifest and that blob only.
    let changed = b"globalPolicyEvaluationMode: DISABLE\n";
    std::fs::write(source.join("targets/policy.yaml"), changed).unwrap();
    let pushed2 = oci::push_dir(&source, &to, &options).await.unwrap();
    assert_eq!(pushed2.uploaded, 1, "only the changed file is uploaded");
    let mark = registry.mark();
    let staging = work.path().join("staging-3");
    let (fetched, traffic) = oci::fetch(
        &to,
        Some(&manifest_digest),
        &staging,
        &cache,
        &options,
        &limits,
    )
    .await
    .unwrap();
    assert!(
        matches!(&fetched, Fetched::New { manifest_digest, .. } if *manifest_digest == pushed2.manifest_digest)
    );
    let requests = registry.requests_since(mark);
    assert_eq!(
        requests,
        [
            "GET /v2/bundles/prod/manifests/v1 HTTP/1.1".to_string(),
            format!("GET /v2/bundles/prod/blobs/{} HTTP/1.1", digest(changed)),
        ]
    );
    let manifest2 = manifest_as_stored(&registry, "bundles/prod", "v1").await;
    assert_eq!(
        traffic.bytes,
        (manifest2.len() + changed.len()) as u64,
        "the manifest and the changed file"
    );
    assert_eq!(tree(&staging), tree(&source));
    eprintln!(
        "figures: first sync {} requests, unchanged poll 1 request 0 bytes, update {} requests {} bytes (manifest {} + file {})",
        5,
        traffic.requests,
        traffic.bytes,
        manifest2.len(),
        changed.len()
    );

    // Keeping the new version only drops the old policy blob (and manifest).
    let removed = oci::prune(&cache, &[&pushed2.manifest_digest])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let (fetched, _) = oci::fetch(
        &to,
        None,
        &work.path().join("staging-4"),
        &cache,
        &options,
        &limits,
    )
    .await
    .unwrap();
    assert!(matches!(fetched, Fetched::New { .. }));
    assert_eq!(
        registry.requests_since(registry.mark()).len(),
        0,
        "log settled"
    );
}

#[tokio::test]
async fn a_corrupted_cache_blob_is_fetched_again() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("repo");
    fake_repository(&source);
    let to = reference(&registry, "bundles/cache:v1");
    let options = options(&registry);
    oci::push_dir(&source, &to, &options).await.unwrap();
    let cache = work.path().join("blobs");
    let limits = Limits::default();
    oci::fetch(&to, None, &work.path().join("a"), &cache, &options, &limits)
        .await
        .unwrap();
    let policy = std::fs::read(source.join("targets/policy.yaml")).unwrap();
    let cached = cache
        .join("sha256")
        .join(digest(&policy).trim_start_matches("sha256:"));
    std::fs::write(&cached, b"globalPolicyEvaluationMode: DISABLE\n").unwrap();
    let mark = registry.mark();
    let staging = work.path().join("b");
    oci::fetch(&to, None, &staging, &cache, &options, &limits)
        .await
        .unwrap();
    let requests = registry.requests_since(mark);
    assert_eq!(
        requests.len(),
        2,
        "manifest and the corrupted blob: {requests:?}"
    );
    assert!(requests[1].contains(&digest(&policy)), "{requests:?}");
    assert_eq!(tree(&staging), tree(&source));
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        policy,
        "the cache is repaired"
    );
}

/// A manifest of our shape over `layers` (title, blob, declared size).
fn hand_made(layers: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(title, blob, size)| {
            serde_json::json!({
                "mediaType": FILE_MEDIA_TYPE,
                "digest": digest(blob),
                "size": size,
                "annotations": { TITLE: title },
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": { "mediaType": EMPTY_CONFIG_MEDIA_TYPE, "digest": digest(b"{}"), "size": 2 },
        "layers": layers,
    }))
    .unwrap()
}

async fn push_hand_made(
    registry: &Registry,
    repository: &str,
    layers: &[(&str, &[u8], u64)],
) -> OciRef {
    let to = reference(registry, repository);
    let mut blobs = vec![b"{}".to_vec()];
    blobs.extend(layers.iter().map(|(_, blob, _)| blob.to_vec()));
    oci::push_raw(&to, &blobs, &hand_made(layers), &options(registry))
        .await
        .unwrap();
    to
}

#[tokio::test]
async fn titles_that_leave_the_repository_are_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let ok: &[u8] = b"{}\n";
    for (i, bad) in ["../x", "/etc/x", "metadata/../../x", "x/y", "targets/a//b"]
        .iter()
        .enumerate()
    {
        let to = push_hand_made(
            &registry,
            &format!("bad/title{i}:v1"),
            &[("metadata/timestamp.json", ok, 3), (bad, b"evil", 4)],
        )
        .await;
        let staging = work.path().join(format!("s{i}/staging"));
        let error = oci::fetch(
            &to,
            None,
            &staging,
            &work.path().join("blobs"),
            &options(&registry),
            &Limits::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(error.reason(), "bad_artifact", "{bad}: {error}");
        assert!(!error.is_unreachable());
        assert!(error.to_string().contains(&to.to_string()), "{error}");
        assert!(!work.path().join(format!("s{i}/x")).exists());
        assert!(!staging.exists(), "refused before anything is written");
    }
}

#[tokio::test]
async fn sizes_past_the_limits_or_the_descriptor_are_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let options = options(&registry);
    let cache = work.path().join("blobs");
    let big = vec![7u8; 2048];
    let fetch = |to: OciRef, limits: Limits, staging: &'static str| {
        let options = options.clone();
        let cache = cache.clone();
        let staging = work.path().join(staging);
        async move { oci::fetch(&to, None, &staging, &cache, &options, &limits).await }
    };

    // The descriptor says 1 KiB; the registry sends 2 KiB.
    let to = push_hand_made(&registry, "big/lying:v1", &[("targets/a", &big, 1024)]).await;
    let error = fetch(to, Limits::default(), "s1").await.unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    // The descriptor says more than arrives.
    let to = push_hand_made(&registry, "big/short:v1", &[("targets/a", &big, 4096)]).await;
    let error = fetch(to, Limits::default(), "s2").await.unwrap_err();
    assert_eq!(error.reason(), "digest_mismatch", "{error}");
    assert!(
        std::fs::read_dir(cache.join("sha256"))
            .unwrap()
            .next()
            .is_none(),
        "nothing refused stays in the cache"
    );

    // Declared past the limits: refused before any blob is asked for.
    let to = push_hand_made(&registry, "big/honest:v1", &[("targets/a", &big, 2048)]).await;
    let small = Limits {
        max_blob: 1024,
        ..Limits::default()
    };
    let mark = registry.mark();
    let error = fetch(to.clone(), small, "s3").await.unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    assert_eq!(registry.requests_since(mark).len(), 1, "the manifest only");
    let tiny_total = Limits {
        max_total: 100,
        ..Limits::default()
    };
    let error = fetch(to.clone(), tiny_total, "s4").await.unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    let few_layers = Limits {
        max_layers: 0,
        ..Limits::default()
    };
    let error = fetch(to.clone(), few_layers, "s5").await.unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    let tiny_manifest = Limits {
        max_manifest: 100,
        ..Limits::default()
    };
    let error = fetch(to.clone(), tiny_manifest, "s6").await.unwrap_err();
    assert_eq!(error.reason(), "too_large", "{error}");
    // Within the limits it is fine.
    let (fetched, _) = fetch(to, Limits::default(), "s7").await.unwrap();
    assert!(matches!(fetched, Fetched::New { .. }));
}

#[tokio::test]
async fn a_missing_tag_and_a_stopped_registry_are_unreachable() {
    let Some(mut registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let options = options(&registry);
    let missing = reference(&registry, "bundles/none:v1");
    let error = oci::fetch(
        &missing,
        None,
        &work.path().join("s"),
        &work.path().join("b"),
        &options,
        &Limits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "not_found", "{error}");
    assert!(error.is_unreachable());

    registry.stop();
    let error = oci::fetch(
        &missing,
        Some("sha256:00"),
        &work.path().join("s"),
        &work.path().join("b"),
        &options,
        &Limits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "unreachable", "{error}");
    assert!(error.is_unreachable());
    assert!(error.to_string().contains(&missing.to_string()), "{error}");
}

fn attestgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("attestgate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn repo_push_and_pull_round_trip_through_the_cli() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("repo");
    fake_repository(&source);
    let target = format!("oci://{}/bundles/cli:v1", registry.addr);
    let out = attestgate(&[
        "repo",
        "push",
        source.to_str().unwrap(),
        &target,
        "--plain-http",
        &registry.addr,
        "--timeout",
        "10s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        pushed.starts_with("sha256:") && pushed.len() == 71,
        "{pushed}"
    );

    let pulled_dir: PathBuf = work.path().join("pulled");
    let out = attestgate(&[
        "repo",
        "pull",
        &target,
        pulled_dir.to_str().unwrap(),
        "--plain-http",
        &registry.addr,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), pushed);
    assert_eq!(tree(&pulled_dir), tree(&source));

    // Into a non-empty directory: refused, nothing touched.
    let out = attestgate(&[
        "repo",
        "pull",
        &target,
        pulled_dir.to_str().unwrap(),
        "--plain-http",
        &registry.addr,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&pulled_dir), tree(&source));

    // Without --plain-http the registry is asked over https, which it does
    // not speak: unreachable, exit 2, naming the reference.
    let out = attestgate(&[
        "repo",
        "pull",
        &target,
        work.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&target));
    let out = attestgate(&["repo", "push", source.to_str().unwrap(), "oci://nohost"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `oras pull` (here oras-py, the oras CLI is not in Debian) unpacks the
/// artifact into the same tree. Runs when ATTESTGATE_ORAS_PYTHON names a
/// Python with the `oras` package (`pip install oras==0.2.43` in a venv).
#[test]
fn oras_pull_unpacks_the_same_tree() {
    let Some(python) = std::env::var_os("ATTESTGATE_ORAS_PYTHON") else {
        assert!(
            !attestgate_e2e::node::required(),
            "ATTESTGATE_ORAS_PYTHON is not set (ATTESTGATE_E2E_REQUIRED is set): run scripts/test.sh"
        );
        eprintln!("SKIPPED: ATTESTGATE_ORAS_PYTHON is not set (a python with oras-py)");
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("repo");
    fake_repository(&source);
    let to = reference(&registry, "bundles/oras:v1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(oci::push_dir(&source, &to, &options(&registry)))
        .unwrap();
    let out_dir = work.path().join("oras-out");
    let script = "import sys, oras.client\n\
        c = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)\n\
        c.pull(target=sys.argv[2], outdir=sys.argv[3])\n";
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&registry.addr)
        .arg(format!("{}/bundles/oras:v1", registry.addr))
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&out_dir), tree(&source));
}

/// A CA and a certificate for 127.0.0.1 signed by it, in `dir`:
/// (ca.pem, leaf.pem, leaf.key).
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && {args}", dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout ca.key -out ca.pem -days 1 -subj /CN=attestgate-test-ca 2>/dev/null",
    );
    run(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1 2>/dev/null",
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
         -out leaf.pem -days 1 -extfile leaf.ext 2>/dev/null",
    );
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

#[tokio::test]
async fn https_registries_are_trusted_through_the_extra_ca_only() {
    if !attestgate_e2e::registry::tool_available("openssl") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = make_certificates(work.path());
    let Some(registry) = Registry::start_with(Some((&leaf, &key))) else {
        return;
    };
    let source = work.path().join("repo");
    fake_repository(&source);
    let to = reference(&registry, "bundles/tls:v1");
    let trusted = RegistryOptions {
        extra_ca_pem: vec![std::fs::read(&ca).unwrap()],
        timeout: std::time::Duration::from_secs(10),
        ..RegistryOptions::default()
    };
    let pushed = oci::push_dir(&source, &to, &trusted).await.unwrap();
    let cache = work.path().join("blobs");
    let limits = Limits::default();
    let staging = work.path().join("s1");
    oci::fetch(&to, None, &staging, &cache, &trusted, &limits)
        .await
        .unwrap();
    assert_eq!(tree(&staging), tree(&source));
    let (fetched, traffic) = oci::fetch(
        &to,
        Some(&pushed.manifest_digest),
        &work.path().join("s2"),
        &cache,
        &trusted,
        &limits,
    )
    .await
    .unwrap();
    assert_eq!((fetched, traffic.requests), (Fetched::Unchanged, 1));

    // Without the CA the certificate is not trusted: unreachable, and the
    // message says why.
    let error = oci::fetch(
        &to,
        None,
        &work.path().join("s3"),
        &cache,
        &RegistryOptions::default(),
        &limits,
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "unreachable", "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
    // Nor is a CA that is not PEM accepted.
    let bad = RegistryOptions {
        extra_ca_pem: vec![b"not a certificate".to_vec()],
        ..RegistryOptions::default()
    };
    let error = oci::push_dir(&source, &to, &bad).await.unwrap_err();
    assert_eq!(error.reason(), "bad_options", "{error}");
}
