//! Parsing and validation: what gcloud exports loads unchanged, and every
//! error names the file, the line and column where the format has them,
//! and the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::OnceLock;

use attestgate_policy::Bundle;
use attestgate_policy::parse::{
    DocumentKind, check_file, parse_attestors, parse_occurrences, parse_policy,
};
use base64::Engine as _;
use serde_json::json;
use support::*;

type SharedKey = (tempfile::TempDir, OpensslKey);

fn p256() -> &'static SharedKey {
    static KEY: OnceLock<SharedKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = OpensslKey::generate(dir.path(), "p256", alg("ECDSA_P256_SHA256"));
        (dir, key)
    })
}

fn bundle_errors(b: &BundleDir) -> Vec<String> {
    match Bundle::load(b.path()) {
        Ok(_) => panic!("bundle unexpectedly valid"),
        Err(e) => e
            .errors
            .iter()
            .map(|e| {
                e.to_string()
                    .replace(&format!("{}/", b.path().display()), "")
            })
            .collect(),
    }
}

#[test]
fn unknown_enum_value_names_file_line_column_and_field() {
    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  evaluationMode: SOMETIMES\n");
    let errors = bundle_errors(&b);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "policy.yaml:3:19: defaultAdmissionRule.evaluationMode: unknown value \"SOMETIMES\""
        ),
        "{}",
        errors[0]
    );
}

#[test]
fn json_policies_get_line_and_column_too() {
    let b = BundleDir::new();
    std::fs::write(
        b.path().join("policy.json"),
        "{\n  \"defaultAdmissionRule\": {\n    \"evaluationMode\": \"ALWAYS_ALLOW\",\n    \"enforcementMode\": \"BLOCK\"\n  }\n}\n",
    )
    .unwrap();
    let errors = bundle_errors(&b);
    assert!(
        errors[0].starts_with(
            "policy.json:4:24: defaultAdmissionRule.enforcementMode: unknown value \"BLOCK\""
        ),
        "{}",
        errors[0]
    );
}

#[test]
fn syntax_errors_have_a_location() {
    let b = BundleDir::new();
    b.policy("defaultAdmissionRule: [\n  evaluationMode: x\n");
    let errors = bundle_errors(&b);
    assert!(errors[0].starts_with("policy.yaml:1:"), "{}", errors[0]);
    assert!(errors[0].contains("invalid YAML/JSON"), "{}", errors[0]);
}

#[test]
fn missing_and_inconsistent_fields_are_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "description: no rule\n",
            "defaultAdmissionRule: missing required field",
        ),
        (
            "defaultAdmissionRule:\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
            "defaultAdmissionRule.evaluationMode: missing required field",
        ),
        (
            "defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n",
            "defaultAdmissionRule.enforcementMode: missing required field",
        ),
        (
            "defaultAdmissionRule:\n  evaluationMode: REQUIRE_ATTESTATION\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
            "defaultAdmissionRule.requireAttestationsBy: REQUIRE_ATTESTATION needs at least one attestor",
        ),
        (
            "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  requireAttestationsBy: [projects/p/attestors/a]\n",
            "defaultAdmissionRule.requireAttestationsBy: must be empty when evaluationMode is ALWAYS_ALLOW",
        ),
        (
            "defaultAdmissionRule:\n  evaluationMode: EVALUATION_MODE_UNSPECIFIED\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
            "defaultAdmissionRule.evaluationMode: must be specified",
        ),
        (
            "defaultAdmissionRule:\n  evaluationMode: REQUIRE_ATTESTATION\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  requireAttestationsBy: [attestors/a]\n",
            "defaultAdmissionRule.requireAttestationsBy[0]: \"attestors/a\" is not of the form projects/PROJECT/attestors/NAME",
        ),
        (
            "globalPolicyEvaluationMode: SOMETIMES\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
            "globalPolicyEvaluationMode: unknown value \"SOMETIMES\"",
        ),
        (
            "admissionWhitelistPatterns:\n- namePattern: gcr.io/*/app\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
            "admissionWhitelistPatterns[0].namePattern: invalid pattern \"gcr.io/*/app\"",
        ),
        (
            "admissionWhitelistPatterns:\n- {}\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
            "admissionWhitelistPatterns[0].namePattern: missing required field",
        ),
        (
            "clusterAdmissionRules:\n  prod:\n    evaluationMode: ALWAYS_ALLOW\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
            "clusterAdmissionRules[\"prod\"]: cluster key \"prod\" is not of the form location.clusterId",
        ),
        (
            "kubernetesNamespaceAdmissionRules:\n  Prod_NS:\n    evaluationMode: ALWAYS_ALLOW\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
            "kubernetesNamespaceAdmissionRules[\"Prod_NS\"]: \"Prod_NS\" is not a valid Kubernetes namespace name",
        ),
        (
            "kubernetesServiceAccountAdmissionRules:\n  prod:\n    evaluationMode: ALWAYS_ALLOW\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
            "is not of the form namespace:serviceaccount",
        ),
        (
            "istioServiceIdentityAdmissionRules:\n  prod/sa:\n    evaluationMode: ALWAYS_ALLOW\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
            "is not of the form spiffe://DOMAIN/ns/NAMESPACE/sa/SERVICEACCOUNT",
        ),
        (
            "defaultAdmissionRule: ALWAYS_ALLOW\n",
            "defaultAdmissionRule: expected a mapping, found a string",
        ),
        (
            "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  evaluationMode: ALWAYS_DENY\n",
            "duplicate mapping key: evaluationMode",
        ),
        ("- a\n- b\n", "expected a mapping, found a list"),
    ];
    for (policy, expected) in cases {
        let err = parse_policy(policy).expect_err(policy).to_string();
        assert!(
            err.contains(expected),
            "policy:\n{policy}\nerror: {err}\nexpected: {expected}"
        );
    }
}

#[test]
fn gcloud_policy_export_with_output_only_fields_loads() {
    let (_, key) = p256();
    let b = BundleDir::new();
    // The shape `gcloud container binauthz policy export` prints.
    b.policy(
        r#"admissionWhitelistPatterns:
- namePattern: gcr.io/google_containers/*
- namePattern: gcr.io/google-containers/*
- namePattern: k8s.gcr.io/**
- namePattern: gke.gcr.io/**
- namePattern: gcr.io/stackdriver-agents/*
clusterAdmissionRules:
  us-east1-b.prod:
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
    evaluationMode: REQUIRE_ATTESTATION
    requireAttestationsBy:
    - projects/example-project/attestors/built-by-ci
    - projects/example-project/attestors/qa
defaultAdmissionRule:
  enforcementMode: DRYRUN_AUDIT_LOG_ONLY
  evaluationMode: REQUIRE_ATTESTATION
  requireAttestationsBy:
  - projects/example-project/attestors/built-by-ci
etag: '"Xr4f3Lq9gKcU"'
globalPolicyEvaluationMode: ENABLE
name: projects/example-project/policy
updateTime: '2026-03-02T10:11:12.345678Z'
someFutureField: {nested: [1, 2]}
"#,
    );
    // `gcloud container binauthz attestors describe --format=yaml`, with a
    // delegation account and update time that must be ignored.
    let pem: String = key
        .public_pem
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    b.attestor(
        "built-by-ci.yaml",
        &format!(
            "name: projects/example-project/attestors/built-by-ci\nupdateTime: '2026-03-01T09:00:00.000000Z'\nuserOwnedGrafeasNote:\n  delegationServiceAccountEmail: service-1@gcp-sa-binaryauthorization.iam.gserviceaccount.com\n  noteReference: projects/example-project/notes/built-by-ci\n  publicKeys:\n  - id: {}\n    comment: ci key\n    pkixPublicKey:\n      publicKeyPem: |\n{pem}      signatureAlgorithm: ECDSA_P256_SHA256\n",
            key.derived_id()
        ),
    );
    // A JSON attestor using the legacy Drydock note field.
    std::fs::write(
        b.path().join("attestors/qa.json"),
        serde_json::to_string_pretty(&json!({
            "name": "projects/example-project/attestors/qa",
            "userOwnedDrydockNote": {"noteReference": "projects/example-project/notes/qa", "publicKeys": [
                {"pkixPublicKey": {"publicKeyPem": key.public_pem, "signatureAlgorithm": "EC_SIGN_P256_SHA256"}}
            ]}
        }))
        .unwrap(),
    )
    .unwrap();
    let bundle = b.load();
    assert_eq!(bundle.attestors().count(), 2);
    let qa = bundle
        .attestor("projects/example-project/attestors/qa")
        .unwrap();
    assert_eq!(
        qa.public_keys[0].id,
        key.derived_id(),
        "a blank id is the derived one"
    );
    assert_eq!(bundle.policy().admission_whitelist_patterns.len(), 5);
}

#[test]
fn attestor_errors_name_the_field() {
    let (_, key) = p256();
    let pem: String = key
        .public_pem
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    let base = |alg: &str| {
        format!(
            "name: projects/p/attestors/a\nuserOwnedGrafeasNote:\n  noteReference: projects/p/notes/n\n  publicKeys:\n  - pkixPublicKey:\n      signatureAlgorithm: {alg}\n      publicKeyPem: |\n{pem}"
        )
    };
    let err = parse_attestors(&base("ECDSA_P256_SHA1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("6:27: userOwnedGrafeasNote.publicKeys[0].pkixPublicKey.signatureAlgorithm: unknown value \"ECDSA_P256_SHA1\""), "{err}");
    let err = parse_attestors(&base("RSA_SIGN_PKCS1_2048_SHA256"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("userOwnedGrafeasNote.publicKeys[0].pkixPublicKey.publicKeyPem: key type"),
        "{err}"
    );
    let err = parse_attestors(
        &base("ECDSA_P256_SHA256").replace("noteReference: projects/p/notes/n", "noteReference: n"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("userOwnedGrafeasNote.noteReference"), "{err}");
    let err = parse_attestors("name: projects/p/attestors/a\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("userOwnedGrafeasNote: missing required field"),
        "{err}"
    );
    let err = parse_attestors(&format!(
        "{}  - pkixPublicKey: {{}}\n    asciiArmoredPgpPublicKey: x\n",
        base("ECDSA_P256_SHA256")
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("userOwnedGrafeasNote.publicKeys[1]: only one of pkixPublicKey and asciiArmoredPgpPublicKey"), "{err}");
    let twice = format!(
        "{}{}",
        base("ECDSA_P256_SHA256"),
        base("ECDSA_P256_SHA256")
            .split("publicKeys:\n")
            .nth(1)
            .unwrap()
    );
    let err = parse_attestors(&twice).unwrap_err().to_string();
    assert!(err.contains("appears twice"), "{err}");
}

#[test]
fn rsa_key_of_the_wrong_size_is_an_error_when_loading() {
    let dir = tempfile::tempdir().unwrap();
    let key = OpensslKey::generate(dir.path(), "rsa2048", alg("RSA_SIGN_PKCS1_2048_SHA256"));
    let yaml = pkix_attestor_yaml("projects/p/attestors/a", NOTE, &[("", &key)])
        .replace("RSA_SIGN_PKCS1_2048_SHA256", "RSA_SIGN_PKCS1_4096_SHA256");
    let err = parse_attestors(&yaml).unwrap_err().to_string();
    assert!(
        err.contains("publicKeyPem") && err.contains("2048") && err.contains("4096"),
        "{err}"
    );
}

#[test]
fn pgp_key_id_must_be_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let key = GpgKey::generate(dir.path(), "pgp", "ed25519");
    let good = pgp_attestor_yaml("projects/p/attestors/a", NOTE, &key);
    assert_eq!(
        parse_attestors(&good).unwrap()[0].public_keys[0].id,
        key.fingerprint
    );
    let lower = good.replace(&key.fingerprint, &key.fingerprint.to_lowercase());
    assert_eq!(
        parse_attestors(&lower).unwrap()[0].public_keys[0].id,
        key.fingerprint
    );
    let wrong = good.replace(&key.fingerprint, &"A".repeat(40));
    let err = parse_attestors(&wrong).unwrap_err().to_string();
    assert!(
        err.contains("publicKeys[0].id") && err.contains("is not the key's fingerprint"),
        "{err}"
    );
}

#[test]
fn attestor_files_may_hold_lists() {
    let (_, key) = p256();
    let a = pkix_attestor_yaml("projects/p/attestors/a", NOTE, &[("", key)]);
    let b = pkix_attestor_yaml("projects/p/attestors/b", NOTE, &[("", key)]);
    let list = format!("- {}- {}", indent_list_item(&a), indent_list_item(&b));
    assert_eq!(parse_attestors(&list).unwrap().len(), 2);
    let wrapped = format!(
        "attestors:\n{}",
        list.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    assert_eq!(parse_attestors(&wrapped).unwrap().len(), 2);
}

fn indent_list_item(yaml: &str) -> String {
    let mut lines = yaml.lines();
    let first = lines.next().unwrap();
    let rest: String = lines.map(|l| format!("  {l}\n")).collect();
    format!("{first}\n{rest}")
}

#[test]
fn missing_or_duplicate_attestors_make_the_bundle_invalid() {
    let (_, key) = p256();
    let b = BundleDir::new();
    b.policy(&require_policy(&[
        "projects/p/attestors/a",
        "projects/p/attestors/missing",
    ]))
    .attestor(
        "a.yaml",
        &pkix_attestor_yaml("projects/p/attestors/a", NOTE, &[("", key)]),
    )
    .attestor(
        "a-again.yml",
        &pkix_attestor_yaml("projects/p/attestors/a", NOTE, &[("", key)]),
    );
    let errors = bundle_errors(&b);
    assert!(
        errors.iter().any(|e| e.contains(
            "attestors/a.yaml: name: attestor \"projects/p/attestors/a\" is also defined in"
        )),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.starts_with("policy.yaml: defaultAdmissionRule.requireAttestationsBy[1]: attestor \"projects/p/attestors/missing\" is not in the bundle")), "{errors:?}");
}

#[test]
fn bundle_without_policy_or_with_two_is_invalid() {
    let b = BundleDir::new();
    assert!(bundle_errors(&b)[0].contains("no policy.yaml or policy.json"));
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n");
    std::fs::write(b.path().join("policy.json"), "{}").unwrap();
    assert!(bundle_errors(&b)[0].contains("more than one of"));
}

#[test]
fn occurrence_forms_all_load() {
    let (_, key) = p256();
    let d = digest("forms");
    let p = payload(REPO, &d);
    let sig = key.sign(&p);
    let v1 = occurrence_v1(
        NOTE,
        &format!("{REPO}@{d}"),
        &p,
        &[(&key.derived_id(), &sig)],
    );
    let generic = json!({
        "resource": {"uri": format!("{REPO}@{d}")},
        "noteName": NOTE,
        "kind": "ATTESTATION",
        "attestation": {"attestation": {"genericSignedAttestation": {
            "contentType": "SIMPLE_SIGNING_JSON",
            "serializedPayload": B64.encode(&p),
            "signatures": [{"publicKeyId": key.derived_id(), "signature": B64.encode(&sig)}],
        }}},
    });
    for doc in [
        json!(v1),
        json!([v1, generic]),
        json!({"occurrences": [v1, generic], "nextPageToken": "abc"}),
    ] {
        let (good, bad) = parse_occurrences(&doc.to_string()).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert!(!good.is_empty());
        // The streaming loader accepts the same documents.
        let b = BundleDir::new();
        b.policy(&require_policy(&["projects/test/attestors/ci"]))
            .attestor(
                "ci.yaml",
                &pkix_attestor_yaml("projects/test/attestors/ci", NOTE, &[("", key)]),
            )
            .attestations("a.json", &doc);
        let bundle = b.load();
        assert_eq!(bundle.occurrence_count(), good.len());
        assert!(bundle.warnings().is_empty());
    }
}

fn occurrence_errors(doc: &str) -> Vec<String> {
    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n")
        .raw_attestations("a.json", doc);
    let bundle = b.load();
    bundle
        .warnings()
        .iter()
        .map(|w| {
            w.to_string()
                .replace(&format!("{}/", b.path().display()), "")
        })
        .collect()
}

#[test]
fn bad_occurrences_are_reported_and_skipped() {
    let (_, key) = p256();
    let d = digest("bad");
    let p = payload(REPO, &d);
    let good = occurrence_v1(
        NOTE,
        &format!("{REPO}@{d}"),
        &p,
        &[(&key.derived_id(), &key.sign(&p))],
    );
    let mut no_digest = good.clone();
    no_digest["resourceUri"] = json!(format!("https://{REPO}:1.0"));
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = json!("VULNERABILITY");
    let mut no_note = good.clone();
    no_note.as_object_mut().unwrap().remove("noteName");
    let mut no_sigs = good.clone();
    no_sigs["attestation"]["signatures"] = json!([]);
    let mut bad_type = good.clone();
    bad_type["attestation"]["signatures"] = json!("x");
    let doc = serde_json::to_string_pretty(&json!([
        no_digest, wrong_kind, good, no_note, no_sigs, bad_type
    ]))
    .unwrap();
    let errors = occurrence_errors(&doc);
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(
        errors[0].contains("attestations/a.json:2:")
            && errors[0].contains("[0].resourceUri")
            && errors[0].contains("names no digest"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("[1].kind: \"VULNERABILITY\" is not ATTESTATION"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("[3].noteName: missing required field"),
        "{}",
        errors[2]
    );
    assert!(
        errors[3].contains("[4].attestation.signatures: no signatures"),
        "{}",
        errors[3]
    );
    assert!(
        errors[4].contains("[5].attestation.signatures: expected a list, found a string"),
        "{}",
        errors[4]
    );

    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n")
        .raw_attestations("a.json", &doc);
    assert_eq!(b.load().occurrence_count(), 1);
}

#[test]
fn syntax_error_in_one_element_spoils_only_that_element() {
    let (_, key) = p256();
    let d = digest("syntax");
    let p = payload(REPO, &d);
    let good = serde_json::to_string(&occurrence_v1(
        NOTE,
        &format!("{REPO}@{d}"),
        &p,
        &[(&key.derived_id(), &key.sign(&p))],
    ))
    .unwrap();
    let doc = format!(
        "[\n{good},\n{{\"noteName\": \"projects/p/notes/n\", \"resourceUri\": tru}},\n{good}\n]\n"
    );
    let errors = occurrence_errors(&doc);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("attestations/a.json:3:") && errors[0].contains("[1]: invalid JSON"),
        "{}",
        errors[0]
    );
    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n")
        .raw_attestations("a.json", &doc);
    assert_eq!(b.load().occurrence_count(), 2);
}

#[test]
fn truncated_or_unreadable_attestation_files_are_reported_not_fatal() {
    let errors = occurrence_errors("[{\"noteName\": \"x\"");
    assert!(
        errors.iter().any(|e| e.contains("not closed")),
        "{errors:?}"
    );
    let errors = occurrence_errors("{\"occurrences\": [ {}, ");
    assert!(
        errors.iter().any(|e| e.contains("invalid JSON")),
        "{errors:?}"
    );
    assert!(occurrence_errors("").is_empty());
    assert!(occurrence_errors("[]").is_empty());
    assert!(
        occurrence_errors("[] x")
            .iter()
            .any(|e| e.contains("trailing characters"))
    );
    assert!(
        occurrence_errors("[{}, ]")
            .iter()
            .any(|e| e.contains("trailing comma"))
    );
}

#[test]
fn hidden_files_and_other_extensions_are_ignored() {
    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n")
        .raw_attestations(".hidden.json", "garbage")
        .raw_attestations("notes.txt", "garbage")
        .attestor(".tmp.yaml", "garbage");
    std::fs::create_dir_all(b.path().join("..data")).unwrap();
    let bundle = b.load();
    assert!(bundle.warnings().is_empty(), "{:?}", bundle.warnings());
}

#[test]
fn bundle_digest_changes_with_any_file() {
    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n");
    let first = b.load().digest().to_string();
    assert_eq!(b.load().digest(), first, "stable across loads");
    b.raw_attestations("a.json", "[]");
    let second = b.load().digest().to_string();
    assert_ne!(second, first);
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n");
    assert_ne!(b.load().digest(), second);
}

#[test]
fn check_file_tells_kinds_apart() {
    let (_, key) = p256();
    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n")
        .attestor(
            "a.yaml",
            &pkix_attestor_yaml("projects/p/attestors/a", NOTE, &[("", key)]),
        )
        .attestations("a.json", &json!([]));
    assert_eq!(
        check_file(&b.path().join("policy.yaml")).unwrap(),
        DocumentKind::Policy
    );
    assert_eq!(
        check_file(&b.path().join("attestors/a.yaml")).unwrap(),
        DocumentKind::Attestors { count: 1 }
    );
    assert_eq!(
        check_file(&b.path().join("attestations/a.json")).unwrap(),
        DocumentKind::Occurrences { count: 0 }
    );
    let loose = b.path().join("some-policy.yaml");
    std::fs::write(&loose, "defaultAdmissionRule:\n  evaluationMode: NOPE\n").unwrap();
    let errors = check_file(&loose).unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .contains("some-policy.yaml:2:19: defaultAdmissionRule.evaluationMode"),
        "{}",
        errors[0]
    );
}

#[test]
fn yaml_aliases_and_odd_scalars_do_not_confuse_fields() {
    // Unquoted YAML scalars that look like other types stay strings where a
    // string is expected.
    let policy = parse_policy(
        "name: 0123\ndescription: yes\ndefaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n",
    )
    .unwrap();
    assert_eq!(policy.name.as_deref(), Some("0123"));
    assert_eq!(policy.description.as_deref(), Some("yes"));
    let policy = parse_policy("base: &r\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\ndefaultAdmissionRule: *r\n").unwrap();
    assert_eq!(
        policy.default_admission_rule.evaluation_mode,
        attestgate_policy::model::EvaluationMode::AlwaysDeny
    );
}

#[test]
fn billion_laughs_does_not_hang_or_explode() {
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    doc.push_str("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n");
    let start = std::time::Instant::now();
    let _ = parse_policy(&doc);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}
