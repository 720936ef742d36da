//! The `attestgate` binary end to end: exit codes, output formats, and
//! signatures that openssl verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

#[path = "../../policy/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use binary::{attestgate, ok};

use base64::Engine as _;
use support::*;

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn payload_is_byte_identical_to_gcloud() {
    // `gcloud container binauthz create-signature-payload
    //   --artifact-url=gcr.io/example-project/web@sha256:0123…` prints exactly this.
    let expected = format!(
        "{{\n  \"critical\": {{\n    \"identity\": {{\n      \"docker-reference\": \"gcr.io/example-project/web\"\n    }},\n    \"image\": {{\n      \"docker-manifest-digest\": \"{D}\"\n    }},\n    \"type\": \"Google cloud binauthz container signature\"\n  }}\n}}\n"
    );
    assert_eq!(
        ok(&[
            "payload",
            "--artifact-url",
            &format!("gcr.io/example-project/web@{D}")
        ]),
        expected
    );
    assert_eq!(
        ok(&[
            "payload",
            "--artifact-url",
            &format!("https://gcr.io/example-project/web@{D}")
        ]),
        expected
    );
    let out = attestgate(&[
        "payload",
        "--artifact-url",
        "gcr.io/example-project/web:latest",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

fn openssl_verify(
    dir: &Path,
    alg: &Alg,
    public_pem: &str,
    payload: &[u8],
    signature: &[u8],
) -> bool {
    std::fs::write(dir.join("v.pub"), public_pem).unwrap();
    std::fs::write(dir.join("v.payload"), payload).unwrap();
    std::fs::write(dir.join("v.sig"), signature).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args([
        "dgst",
        alg.digest,
        "-verify",
        "v.pub",
        "-signature",
        "v.sig",
    ]);
    if alg.pss {
        cmd.args([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    cmd.arg("v.payload");
    cmd.output().expect("openssl is required").status.success()
}

#[test]
fn sign_output_verifies_with_openssl_for_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("registry.test/app@{D}");
    let payload = ok(&["payload", "--artifact-url", &url]);
    for alg in ALGORITHMS {
        // RSA-4096 generation is slow in debug builds; openssl makes those keys.
        let private = d.join(format!("{}.key", alg.name));
        let public = d.join(format!("{}.pub", alg.name));
        if alg.name.contains("4096") {
            let key = OpensslKey::generate(d, &format!("{}-ossl", alg.name), alg);
            std::fs::copy(&key.private, &private).unwrap();
            std::fs::write(&public, &key.public_pem).unwrap();
        } else {
            ok(&[
                "keygen",
                "--algorithm",
                alg.name,
                "--private",
                private.to_str().unwrap(),
                "--public",
                public.to_str().unwrap(),
            ]);
        }
        let occurrence = ok(&[
            "sign",
            "--artifact-url",
            &url,
            "--key",
            private.to_str().unwrap(),
            "--algorithm",
            alg.name,
            "--note",
            NOTE,
        ]);
        let v: serde_json::Value = serde_json::from_str(&occurrence).unwrap();
        assert_eq!(v["resourceUri"], format!("https://{url}"));
        assert_eq!(v["noteName"], NOTE);
        assert_eq!(v["kind"], "ATTESTATION");
        let signed = B64
            .decode(v["attestation"]["serializedPayload"].as_str().unwrap())
            .unwrap();
        assert_eq!(signed, payload.as_bytes());
        let signature = B64
            .decode(
                v["attestation"]["signatures"][0]["signature"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let public_pem = std::fs::read_to_string(&public).unwrap();
        assert!(
            openssl_verify(d, alg, &public_pem, &signed, &signature),
            "{}: openssl rejects the signature",
            alg.name
        );
        let mut tampered = signed.clone();
        tampered[10] ^= 1;
        assert!(
            !openssl_verify(d, alg, &public_pem, &tampered, &signature),
            "{}",
            alg.name
        );
        // The id is the derived one openssl computes.
        let key = OpensslKey {
            alg,
            private: private.clone(),
            public_pem,
        };
        assert_eq!(
            v["attestation"]["signatures"][0]["publicKeyId"],
            key.derived_id()
        );
    }
}

#[test]
fn keygen_writes_private_key_0600_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("k.pem");
    let public = dir.path().join("k.pub");
    let args = [
        "keygen",
        "--algorithm",
        "ECDSA_P256_SHA256",
        "--private",
        private.to_str().unwrap(),
        "--public",
        public.to_str().unwrap(),
    ];
    ok(&args);
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&private).unwrap();
    let again = attestgate(&args);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot create"));
    assert_eq!(
        std::fs::read(&private).unwrap(),
        before,
        "the key was not replaced"
    );
    let unknown = attestgate(&[
        "keygen",
        "--algorithm",
        "ED448",
        "--private",
        "/dev/null",
        "--public",
        "/dev/null",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown signature algorithm"));
}

/// keygen → attestor create → sign → evaluate, as a CI pipeline would.
fn pipeline_bundle(dir: &Path) -> String {
    let b = dir.join("bundle");
    std::fs::create_dir_all(b.join("attestors")).unwrap();
    std::fs::create_dir_all(b.join("attestations")).unwrap();
    let private = dir.join("ci.key");
    let public = dir.join("ci.pub");
    ok(&[
        "keygen",
        "--algorithm",
        "RSA_PSS_2048_SHA256",
        "--private",
        private.to_str().unwrap(),
        "--public",
        public.to_str().unwrap(),
    ]);
    let attestor = ok(&[
        "attestor",
        "create",
        "--name",
        "projects/test/attestors/ci",
        "--note",
        NOTE,
        "--public-key",
        public.to_str().unwrap(),
        "--algorithm",
        "RSA_PSS_2048_SHA256",
    ]);
    std::fs::write(b.join("attestors/ci.yaml"), attestor).unwrap();
    let image = format!("registry.test/app@{D}");
    ok(&[
        "sign",
        "--artifact-url",
        &image,
        "--key",
        private.to_str().unwrap(),
        "--algorithm",
        "RSA_PSS_2048_SHA256",
        "--note",
        NOTE,
        "--out",
        b.join("attestations/ci.json").to_str().unwrap(),
    ]);
    std::fs::write(
        b.join("policy.yaml"),
        require_policy(&["projects/test/attestors/ci"]),
    )
    .unwrap();
    b.to_str().unwrap().to_string()
}

#[test]
fn evaluate_exit_codes_follow_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = pipeline_bundle(dir.path());
    let allowed = attestgate(&[
        "evaluate",
        "--bundle",
        &bundle,
        "--image",
        &format!("registry.test/app@{D}"),
    ]);
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stdout)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).starts_with("ALLOW ATTESTED"));

    let other = format!("registry.test/app@sha256:{}", "f".repeat(64));
    let denied = attestgate(&["evaluate", "--bundle", &bundle, "--image", &other]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stdout).starts_with("DENY MISSING_ATTESTATIONS"));

    let break_glass = attestgate(&[
        "evaluate",
        "--bundle",
        &bundle,
        "--image",
        &other,
        "--label",
        "image-policy.k8s.io/break-glass=true",
    ]);
    assert_eq!(break_glass.status.code(), Some(0));

    for bad in [
        vec![
            "evaluate",
            "--bundle",
            &bundle,
            "--image",
            "Not A Reference",
        ],
        vec![
            "evaluate",
            "--bundle",
            "/nonexistent",
            "--image",
            "registry.test/app:1",
        ],
        vec![
            "evaluate",
            "--bundle",
            &bundle,
            "--image",
            "registry.test/app:1",
            "--label",
            "novalue",
        ],
        vec!["evaluate", "--bundle", &bundle],
    ] {
        assert_eq!(attestgate(&bad).status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn evaluate_json_prints_exactly_the_decision_record() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = pipeline_bundle(dir.path());
    let out = attestgate(&[
        "evaluate",
        "--bundle",
        &bundle,
        "--image",
        &format!("registry.test/app:1.0@{D}"),
        "--namespace",
        "prod",
        "--cluster",
        "us-east1-b.prod",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["operation"], "Evaluate");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["reason"], "ATTESTED");
    assert_eq!(v["enforced"], true);
    assert_eq!(
        v["image"]["reference"],
        format!("registry.test/app:1.0@{D}")
    );
    assert_eq!(v["image"]["repository"], "registry.test/app");
    assert_eq!(v["image"]["digest"], D);
    assert_eq!(v["pod"]["namespace"], "prod");
    assert_eq!(v["cluster"], "us-east1-b.prod");
    assert_eq!(v["rule"], "default");
    assert_eq!(v["attestors"][0]["satisfied"], true);
    assert!(
        v["bundle"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(v["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn policy_check_reports_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = pipeline_bundle(dir.path());
    let good = attestgate(&["policy", "check", &bundle]);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        String::from_utf8_lossy(&good.stdout)
            .contains("valid bundle (1 attestor(s), 1 attestation(s), 0 skipped)")
    );
    assert_eq!(
        attestgate(&["policy", "check", &format!("{bundle}/attestors/ci.yaml")])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        attestgate(&["policy", "check", &format!("{bundle}/attestations/ci.json")])
            .status
            .code(),
        Some(0)
    );

    std::fs::write(
        format!("{bundle}/policy.yaml"),
        "defaultAdmissionRule:\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  evaluationMode: SOMETIMES\n",
    )
    .unwrap();
    for path in [bundle.clone(), format!("{bundle}/policy.yaml")] {
        let bad = attestgate(&["policy", "check", &path]);
        assert_eq!(bad.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(
            stderr.contains(
                "policy.yaml:3:19: defaultAdmissionRule.evaluationMode: unknown value \"SOMETIMES\""
            ),
            "{stderr}"
        );
    }
}

#[test]
fn policy_check_strict_fails_on_skipped_attestations() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = pipeline_bundle(dir.path());
    std::fs::write(
        format!("{bundle}/attestations/bad.json"),
        "[{\"noteName\": 1}]",
    )
    .unwrap();
    let lenient = attestgate(&["policy", "check", &bundle]);
    assert_eq!(lenient.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&lenient.stderr).contains("warning: skipped"));
    assert_eq!(
        attestgate(&["policy", "check", "--strict", &bundle])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn attestor_create_takes_pgp_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = GpgKey::generate(dir.path(), "cli-pgp", "ed25519");
    let public = dir.path().join("pgp.asc");
    std::fs::write(&public, &key.armored_public).unwrap();
    let yaml = ok(&[
        "attestor",
        "create",
        "--name",
        "projects/test/attestors/pgp",
        "--note",
        NOTE,
        "--public-key",
        public.to_str().unwrap(),
    ]);
    let attestors = attestgate_policy::parse::parse_attestors(&yaml).unwrap();
    assert_eq!(attestors[0].public_keys[0].id, key.fingerprint);
    let wrong = attestgate(&[
        "attestor",
        "create",
        "--name",
        "projects/test/attestors/pgp",
        "--note",
        NOTE,
        "--public-key",
        public.to_str().unwrap(),
        "--key-id",
        "ABCD",
    ]);
    assert_eq!(wrong.status.code(), Some(2));
}

/// `pipeline_bundle` plus attestations of five other images, so that an
/// index of it has more than the one image to choose from.
fn indexed_pipeline_bundle(dir: &Path) -> String {
    let bundle = pipeline_bundle(dir);
    let signed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{bundle}/attestations/ci.json")).unwrap(),
    )
    .unwrap();
    let others: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            let mut o = signed.clone();
            o["name"] = format!("projects/test/occurrences/other-{i}").into();
            o["resourceUri"] =
                format!("https://registry.test/other@{}", digest(&i.to_string())).into();
            o
        })
        .collect();
    std::fs::write(
        format!("{bundle}/attestations/others.json"),
        serde_json::to_string(&others).unwrap(),
    )
    .unwrap();
    bundle
}

/// Loads the bundle as the proxy and the shim do, which writes its index.
fn keep_index(bundle: &str) -> std::path::PathBuf {
    use attestgate_node::store::{BundleStore, ReloadOutcome, index_path};
    let store = BundleStore::new(
        bundle.into(),
        std::sync::Arc::new(attestgate_node::hooks::NoHooks),
    );
    assert_eq!(store.reload(true), ReloadOutcome::Loaded);
    let index = index_path(Path::new(bundle)).unwrap();
    assert!(index.exists(), "the store writes the index");
    index
}

/// `evaluate --output json` for the pipeline's image: exit code and the
/// record without the fields that say when it was made.
fn evaluate_json(bundle: &str) -> (Option<i32>, serde_json::Value) {
    let out = attestgate(&[
        "evaluate",
        "--bundle",
        bundle,
        "--image",
        &format!("registry.test/app:1.0@{D}"),
        "--namespace",
        "prod",
        "--output",
        "json",
    ]);
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let record = v.as_object_mut().unwrap();
    record.remove("time").unwrap();
    record["bundle"]
        .as_object_mut()
        .unwrap()
        .remove("loaded_at")
        .unwrap();
    (out.status.code(), v)
}

/// An index's header (after its magic line): the stamp it was made for,
/// and where its table begins.
fn index_header(index: &[u8]) -> (String, usize) {
    let at = b"attestgate-index 1\n".len();
    let len = u32::from_be_bytes(index[at..at + 4].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&index[at + 4..at + 4 + len]).unwrap();
    (header["stamp"].as_str().unwrap().to_string(), at + 4 + len)
}

#[test]
fn evaluate_through_the_node_s_index_prints_the_same_record_as_without() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = indexed_pipeline_bundle(dir.path());
    let whole = evaluate_json(&bundle);
    assert_eq!(whole.0, Some(0), "{}", whole.1);
    assert_eq!(whole.1["reason"], "ATTESTED");

    let index = keep_index(&bundle);
    assert_eq!(evaluate_json(&bundle), whole);

    // And it is the index that was read: one planted with the bundle's
    // stamp, made from the bundle without the image's attestation, decides.
    let unsigned = dir.path().join("unsigned");
    std::fs::create_dir_all(unsigned.join("attestors")).unwrap();
    for file in ["policy.yaml", "attestors/ci.yaml"] {
        std::fs::copy(Path::new(&bundle).join(file), unsigned.join(file)).unwrap();
    }
    let planted = attestgate_policy::Bundle::load(&unsigned)
        .unwrap()
        .index(&index_header(&std::fs::read(&index).unwrap()).0);
    std::fs::write(&index, planted).unwrap();
    let (code, record) = evaluate_json(&bundle);
    assert_eq!(code, Some(1), "{record}");
    assert_eq!(record["reason"], "MISSING_ATTESTATIONS");
}

#[test]
fn evaluate_never_writes_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = indexed_pipeline_bundle(dir.path());
    let index = attestgate_node::store::index_path(Path::new(&bundle)).unwrap();
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let (code, _) = evaluate_json(&bundle);
    assert_eq!(code, Some(0));
    ok(&[
        "evaluate",
        "--bundle",
        &bundle,
        "--image",
        &format!("registry.test/app@{D}"),
    ]);
    assert!(!index.exists(), "{} written", index.display());
    assert_eq!(listing(), before, "nothing written beside the bundle");
}

#[test]
fn evaluate_does_not_trust_an_index_made_before_the_bundle_changed() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = indexed_pipeline_bundle(dir.path());
    // The index is made while the image has no attestation ...
    let signed = dir.path().join("ci.json");
    std::fs::rename(format!("{bundle}/attestations/ci.json"), &signed).unwrap();
    let index = keep_index(&bundle);
    let (code, record) = evaluate_json(&bundle);
    assert_eq!(code, Some(1), "{record}");
    assert_eq!(record["reason"], "MISSING_ATTESTATIONS");
    let stale = std::fs::read(&index).unwrap();

    // ... then the attestation arrives: the index is stale, not used.
    std::fs::rename(&signed, format!("{bundle}/attestations/ci.json")).unwrap();
    let (code, record) = evaluate_json(&bundle);
    assert_eq!(code, Some(0), "{record}");
    assert_eq!(record["reason"], "ATTESTED");
    assert_eq!(std::fs::read(&index).unwrap(), stale, "and not rewritten");
    std::fs::remove_file(&index).unwrap();
    assert_eq!(
        evaluate_json(&bundle).1,
        record,
        "the record of the whole new bundle"
    );
}

#[test]
fn evaluate_falls_back_to_the_whole_bundle_from_a_damaged_index() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = indexed_pipeline_bundle(dir.path());
    let whole = evaluate_json(&bundle);
    assert_eq!(whole.0, Some(0), "{}", whole.1);
    let index = keep_index(&bundle);
    let good = std::fs::read(&index).unwrap();
    // Not an index at all, and the current one cut short: its stamp
    // matches, its table is not there.
    let table = index_header(&good).1;
    for damaged in [
        b"garbage".to_vec(),
        good[..table].to_vec(),
        good[..table + 10].to_vec(),
    ] {
        std::fs::write(&index, &damaged).unwrap();
        assert_eq!(evaluate_json(&bundle), whole, "{} bytes", damaged.len());
        assert_eq!(std::fs::read(&index).unwrap(), damaged, "left as it was");
    }
}

#[test]
fn evaluate_decides_nothing_by_a_synced_bundle_past_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = pipeline_bundle(dir.path());
    let sync = |text: &str| std::fs::write(Path::new(&bundle).join("sync.json"), text).unwrap();
    sync(r#"{"version": 9, "expires": "2999-01-01T00:00:00Z"}"#);
    let (code, record) = evaluate_json(&bundle);
    assert_eq!(code, Some(0), "{record}");
    assert_eq!(record["bundle"]["version"], 9);
    assert_eq!(record["bundle"]["expires"], "2999-01-01T00:00:00.000000Z");
    sync(r#"{"version": 9, "expires": "2020-01-01T00:00:00Z"}"#);
    let (code, record) = evaluate_json(&bundle);
    assert_eq!(code, Some(1), "{record}");
    assert_eq!(record["reason"], "NO_POLICY");
    assert!(
        record["message"]
            .as_str()
            .unwrap()
            .contains("synced bundle version 9 expired at 2020-01-01T00:00:00.000000Z"),
        "{record}"
    );
    sync("{}");
    let out = attestgate(&[
        "evaluate",
        "--bundle",
        &bundle,
        "--image",
        "registry.test/app:1.0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync.json"));
}

/// The end-to-end suite's platform policy fixture (tests/fixtures/platform).
fn platform_fixture() -> String {
    format!(
        "{}/../tests/fixtures/platform/bundle",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn policy_check_validates_platform_policies_in_a_bundle_and_alone() {
    let bundle = platform_fixture();
    let out = ok(&["policy", "check", &bundle]);
    assert!(out.contains("platform policy with 4 check set(s)"), "{out}");
    let file = format!("{bundle}/platform-policy.yaml");
    let out = ok(&["policy", "check", &file]);
    assert!(
        out.contains("valid platform policy (4 check set(s))"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("policy.yaml"),
        "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
    )
    .unwrap();
    std::fs::write(
        b.join("platform-policy.yaml"),
        "gkePolicy:\n  checkSets:\n  - checks:\n    - trustedDirectoryCheck:\n        trustedDirPatterns: [\"gcr.i*\"]\n",
    )
    .unwrap();
    for path in [b.clone(), b.join("platform-policy.yaml")] {
        let out = attestgate(&["policy", "check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("platform-policy.yaml:5:30: gkePolicy.checkSets[0].checks[0].trustedDirectoryCheck.trustedDirPatterns[0]: invalid pattern \"gcr.i*\""),
            "{err}"
        );
    }
}

#[test]
fn evaluate_shows_every_platform_check_and_enforces_on_request() {
    let bundle = platform_fixture();
    let image = format!("registry.test:5000/release/app@{D}");
    let base = ["evaluate", "--bundle", &bundle, "--image", &image];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        attestgate(&args)
    };

    // Without --service-account, as on the node (kubelet does not send
    // it): the deployer set may apply, so prod's set cannot be chosen.
    let unknown = with(&["--namespace", "prod", "--platform-policy-enforce"]);
    assert_eq!(unknown.status.code(), Some(1));
    let text = String::from_utf8_lossy(&unknown.stdout);
    assert!(
        text.contains("cannot tell the pod's service account"),
        "{text}"
    );

    // Shown, not enforced: the project policy alone decides.
    let shown = with(&["--namespace", "prod", "--service-account", "web"]);
    assert_eq!(shown.status.code(), Some(0));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.starts_with("ALLOW ALWAYS_ALLOW"), "{text}");
    assert!(
        text.contains(
            "platform policy (not enforced): does not conform: platform policy check set prod:"
        ),
        "{text}"
    );
    assert!(text.contains("  ok   from-release-repo (trustedDirectoryCheck): in trusted directory registry.test:5000/release"), "{text}");
    assert!(
        text.contains("  FAIL release-signed (sigstoreSignatureCheck): no registry signature for"),
        "{text}"
    );

    // Enforced: denied, and the record names the check set and check.
    let denied = with(&[
        "--namespace",
        "prod",
        "--service-account",
        "web",
        "--platform-policy-enforce",
        "--output",
        "json",
    ]);
    assert_eq!(denied.status.code(), Some(1));
    let record: serde_json::Value = serde_json::from_slice(&denied.stdout).unwrap();
    assert_eq!(record["reason"], "PLATFORM_POLICY");
    assert_eq!(record["platform_policy"]["check_set"], "prod");
    assert_eq!(record["platform_policy"]["enforced"], true);
    let checks = record["platform_policy"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["passed"], true);
    assert_eq!(checks[1]["name"], "release-signed");
    assert_eq!(checks[1]["passed"], false);
    assert!(
        record["message"]
            .as_str()
            .unwrap()
            .contains("check release-signed (sigstoreSignatureCheck) failed"),
        "{record}"
    );

    // The service account's own check set; json output shows it unenforced.
    let deployer = with(&[
        "--namespace",
        "prod",
        "--service-account",
        "deployer",
        "--platform-policy-enforce",
    ]);
    assert_eq!(
        deployer.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&deployer.stdout)
    );
    let json = with(&["--namespace", "legacy", "--output", "json"]);
    assert_eq!(json.status.code(), Some(0));
    let record: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(record["platform_policy"]["enforced"], false);
    assert_eq!(record["platform_policy"]["check_set"], "unscannable");
    assert!(
        record["platform_policy"]["config_errors"][0]
            .as_str()
            .unwrap()
            .contains("vulnerabilityCheck"),
        "{record}"
    );
    // Anywhere else the catch-all denies; the pause image is exempt.
    let other = with(&["--namespace", "dev", "--platform-policy-enforce"]);
    assert_eq!(other.status.code(), Some(1));
    let pause = attestgate(&[
        "evaluate",
        "--bundle",
        &bundle,
        "--image",
        "registry.k8s.io/pause:3.10",
        "--platform-policy-enforce",
    ]);
    assert_eq!(pause.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&pause.stdout)
            .contains("exempted by imageAllowlist pattern registry.k8s.io/pause*")
    );
}
