//! Evaluation scenarios over bundles on disk, with keys and signatures made
//! by openssl and gpg: every branch of SPEC §3, every reason code, and the
//! ways an attestation must fail to count (SPEC §4).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::OnceLock;

use attestgate_policy::index::IndexError;
use attestgate_policy::{
    Bundle, Decision, Digest, ImageRef, NamePattern, PodContext, Reason, Settings, evaluate,
};
use serde_json::json;
use support::*;

struct Keys {
    _dir: tempfile::TempDir,
    by_alg: Vec<OpensslKey>,
    other_p256: OpensslKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let by_alg = ALGORITHMS
            .iter()
            .map(|a| OpensslKey::generate(dir.path(), a.name, a))
            .collect();
        let other_p256 = OpensslKey::generate(dir.path(), "other", alg("ECDSA_P256_SHA256"));
        Keys {
            _dir: dir,
            by_alg,
            other_p256,
        }
    })
}

fn key(name: &str) -> &'static OpensslKey {
    keys().by_alg.iter().find(|k| k.alg.name == name).unwrap()
}

const CI: &str = "projects/test/attestors/ci";
const QA: &str = "projects/test/attestors/qa";
const QA_NOTE: &str = "projects/test/notes/qa";

fn decide(bundle: &Bundle, image: &str, pod: &PodContext) -> Decision {
    decide_on(bundle, &Settings::default(), image, pod)
}

fn decide_on(bundle: &Bundle, node: &Settings, image: &str, pod: &PodContext) -> Decision {
    evaluate(bundle, node, image, &ImageRef::parse(image).unwrap(), pod)
}

fn pod() -> PodContext {
    PodContext {
        namespace: Some("prod".into()),
        name: Some("web-0".into()),
        ..PodContext::default()
    }
}

/// A bundle requiring CI (P-256 key), with one good attestation for `digest("good")`.
fn attested_bundle() -> (BundleDir, String) {
    let k = key("ECDSA_P256_SHA256");
    let d = digest("good");
    let p = payload(REPO, &d);
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI]))
        .attestor("ci.yaml", &pkix_attestor_yaml(CI, NOTE, &[("", k)]))
        .attestations(
            "good.json",
            &json!([occurrence_v1(
                NOTE,
                &format!("{REPO}@{d}"),
                &p,
                &[(&k.derived_id(), &k.sign(&p))]
            )]),
        );
    (b, d)
}

#[test]
fn every_algorithm_verifies_openssl_signatures() {
    for k in &keys().by_alg {
        let d = digest(k.alg.name);
        let p = payload(REPO, &d);
        let sig = k.sign(&p);
        let b = BundleDir::new();
        b.policy(&require_policy(&[CI]))
            .attestor("ci.yaml", &pkix_attestor_yaml(CI, NOTE, &[("", k)]))
            .attestations(
                "a.json",
                &json!([occurrence_v1(
                    NOTE,
                    &format!("{REPO}@{d}"),
                    &p,
                    &[(&k.derived_id(), &sig)]
                )]),
            );
        let bundle = b.load();
        let decision = decide(&bundle, &format!("{REPO}@{d}"), &pod());
        assert_eq!(
            decision.reason,
            Reason::Attested,
            "{}: {}",
            k.alg.name,
            decision.explanation()
        );
        assert!(decision.allowed);

        // The same signature over a payload with one byte changed must not verify.
        let mut tampered = p.clone();
        let at = tampered.len() - 3;
        tampered[at] ^= 0x01;
        let b2 = BundleDir::new();
        b2.policy(&require_policy(&[CI]))
            .attestor("ci.yaml", &pkix_attestor_yaml(CI, NOTE, &[("", k)]))
            .attestations(
                "a.json",
                &json!([occurrence_v1(
                    NOTE,
                    &format!("{REPO}@{d}"),
                    &tampered,
                    &[(&k.derived_id(), &sig)]
                )]),
            );
        let decision = decide(&b2.load(), &format!("{REPO}@{d}"), &pod());
        assert_eq!(
            decision.reason,
            Reason::MissingAttestations,
            "{}",
            k.alg.name
        );
    }
}

#[test]
fn algorithm_aliases_are_accepted() {
    let k = key("RSA_PSS_2048_SHA256");
    let d = digest("alias");
    let p = payload(REPO, &d);
    let yaml = pkix_attestor_yaml(CI, NOTE, &[("", k)])
        .replace("RSA_PSS_2048_SHA256", "RSA_SIGN_PSS_2048_SHA256");
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI]))
        .attestor("ci.yaml", &yaml)
        .attestations(
            "a.json",
            &json!([occurrence_v1(
                NOTE,
                &format!("{REPO}@{d}"),
                &p,
                &[(&k.derived_id(), &k.sign(&p))]
            )]),
        );
    assert_eq!(
        decide(&b.load(), &format!("{REPO}@{d}"), &pod()).reason,
        Reason::Attested
    );
}

#[test]
fn attested_image_is_allowed_and_record_names_attestor() {
    let (b, d) = attested_bundle();
    let bundle = b.load();
    let decision = decide(&bundle, &format!("{REPO}@{d}"), &pod());
    assert!(decision.allowed);
    assert_eq!(decision.reason, Reason::Attested);
    assert!(decision.enforced);
    assert_eq!(decision.rule().unwrap().to_string(), "default");
    assert_eq!(decision.attestors.len(), 1);
    assert!(decision.attestors[0].satisfied);
    // A repeated decision comes from the verdict cache and says the same.
    assert_eq!(decide(&bundle, &format!("{REPO}@{d}"), &pod()), decision);
}

#[test]
fn unsigned_image_is_denied_missing_attestations() {
    let (b, _) = attested_bundle();
    let other = digest("unsigned");
    let decision = decide(&b.load(), &format!("{REPO}@{other}"), &pod());
    assert!(!decision.allowed);
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert_eq!(
        decision.attestors[0].detail,
        format!("no attestation for {other}")
    );
    assert_eq!(
        decision.explanation(),
        format!(
            "image {REPO}@{other} denied by rule default: attestor {CI} not satisfied (no attestation for {other})"
        )
    );
}

#[test]
fn image_without_digest_cannot_satisfy_an_attestor() {
    let (b, _) = attested_bundle();
    let decision = decide(&b.load(), &format!("{REPO}:1.0"), &pod());
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert_eq!(decision.attestors[0].detail, "image has no digest");
}

#[test]
fn attestation_in_another_registry_counts_unless_strict() {
    let (b, d) = attested_bundle();
    let bundle = b.load();
    let mirror = format!("mirror.test/team/app@{d}");
    assert_eq!(decide(&bundle, &mirror, &pod()).reason, Reason::Attested);
    let strict = Settings {
        strict_repository: true,
        ..Settings::default()
    };
    let decision = decide_on(&bundle, &strict, &mirror, &pod());
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert!(
        decision.attestors[0].detail.contains("strict repository"),
        "{}",
        decision.attestors[0].detail
    );
    assert_eq!(
        decide_on(&bundle, &strict, &format!("{REPO}@{d}"), &pod()).reason,
        Reason::Attested
    );
}

/// One attestation for `d` with the given parts, in a bundle requiring CI with key P-256.
fn single(
    note: &str,
    resource_digest: &str,
    payload_bytes: &[u8],
    key_id: &str,
    sig: &[u8],
) -> Bundle {
    let k = key("ECDSA_P256_SHA256");
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI]))
        .attestor("ci.yaml", &pkix_attestor_yaml(CI, NOTE, &[("", k)]))
        .attestations(
            "a.json",
            &json!([occurrence_v1(
                note,
                &format!("{REPO}@{resource_digest}"),
                payload_bytes,
                &[(key_id, sig)]
            )]),
        );
    b.load()
}

#[test]
fn denied_because_payload_tampered() {
    let k = key("ECDSA_P256_SHA256");
    let d = digest("t");
    let p = payload(REPO, &d);
    let sig = k.sign(&p);
    let mut tampered = p.clone();
    tampered.push(b' ');
    let decision = decide(
        &single(NOTE, &d, &tampered, &k.derived_id(), &sig),
        &format!("{REPO}@{d}"),
        &pod(),
    );
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert!(
        decision.attestors[0].detail.contains("fail to verify"),
        "{}",
        decision.attestors[0].detail
    );
}

#[test]
fn denied_because_payload_digest_differs_from_resource_uri() {
    let k = key("ECDSA_P256_SHA256");
    let d = digest("image");
    let other = digest("other-image");
    // Validly signed payload for another image, filed under this image's URI.
    let p = payload(REPO, &other);
    let decision = decide(
        &single(NOTE, &d, &p, &k.derived_id(), &k.sign(&p)),
        &format!("{REPO}@{d}"),
        &pod(),
    );
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert!(
        decision.attestors[0]
            .detail
            .contains(&format!("payload names digest {other}")),
        "{}",
        decision.attestors[0].detail
    );
}

#[test]
fn denied_because_note_is_another_attestors() {
    let k = key("ECDSA_P256_SHA256");
    let d = digest("n");
    let p = payload(REPO, &d);
    let decision = decide(
        &single(QA_NOTE, &d, &p, &k.derived_id(), &k.sign(&p)),
        &format!("{REPO}@{d}"),
        &pod(),
    );
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert_eq!(
        decision.attestors[0].detail,
        format!("no attestation for {d}")
    );
}

#[test]
fn denied_because_key_id_unknown() {
    let k = key("ECDSA_P256_SHA256");
    let d = digest("u");
    let p = payload(REPO, &d);
    let decision = decide(
        &single(NOTE, &d, &p, "ni:///sha-256;unknown", &k.sign(&p)),
        &format!("{REPO}@{d}"),
        &pod(),
    );
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert_eq!(
        decision.attestors[0].detail,
        format!("no attestation for {d}; 1 signature by unknown key id ni:///sha-256;unknown")
    );
}

#[test]
fn denied_because_signature_is_by_another_key_than_its_id_says() {
    // The attestor has keys A and B; the signature is made with key X (not
    // in the attestor) but claims A's id.
    let a = key("ECDSA_P256_SHA256");
    let x = &keys().other_p256;
    let d = digest("x");
    let p = payload(REPO, &d);
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI]))
        .attestor(
            "ci.yaml",
            &pkix_attestor_yaml(
                CI,
                NOTE,
                &[("", a), ("", key("RSA_SIGN_PKCS1_2048_SHA256"))],
            ),
        )
        .attestations(
            "a.json",
            &json!([occurrence_v1(
                NOTE,
                &format!("{REPO}@{d}"),
                &p,
                &[(&a.derived_id(), &x.sign(&p))]
            )]),
        );
    let decision = decide(&b.load(), &format!("{REPO}@{d}"), &pod());
    assert_eq!(decision.reason, Reason::MissingAttestations);
}

#[test]
fn any_good_signature_among_several_satisfies() {
    let a = key("ECDSA_P256_SHA256");
    let x = &keys().other_p256;
    let d = digest("several");
    let p = payload(REPO, &d);
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI]))
        .attestor("ci.yaml", &pkix_attestor_yaml(CI, NOTE, &[("", a)]))
        .attestations(
            "a.json",
            &json!([
                occurrence_v1(
                    NOTE,
                    &format!("{REPO}@{d}"),
                    &p,
                    &[(&a.derived_id(), &x.sign(&p))]
                ),
                occurrence_v1(
                    NOTE,
                    &format!("{REPO}@{d}"),
                    &p,
                    &[
                        ("ni:///sha-256;nope", &x.sign(&p)),
                        (&a.derived_id(), &a.sign(&p))
                    ]
                ),
            ]),
        );
    assert_eq!(
        decide(&b.load(), &format!("{REPO}@{d}"), &pod()).reason,
        Reason::Attested
    );
}

#[test]
fn custom_key_ids_are_used_as_given() {
    let k = key("RSA_SIGN_PKCS1_2048_SHA256");
    let d = digest("custom-id");
    let p = payload(REPO, &d);
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI]))
        .attestor(
            "ci.yaml",
            &pkix_attestor_yaml(
                CI,
                NOTE,
                &[("//cloudkms.googleapis.com/v1/projects/test/keys/k/1", k)],
            ),
        )
        .attestations(
            "a.json",
            &json!([occurrence_v1(
                NOTE,
                &format!("{REPO}@{d}"),
                &p,
                &[(
                    "//cloudkms.googleapis.com/v1/projects/test/keys/k/1",
                    &k.sign(&p)
                )]
            )]),
        );
    assert_eq!(
        decide(&b.load(), &format!("{REPO}@{d}"), &pod()).reason,
        Reason::Attested
    );
}

#[test]
fn garbage_base64_occurrence_is_skipped_and_others_still_count() {
    let k = key("ECDSA_P256_SHA256");
    let d = digest("g");
    let p = payload(REPO, &d);
    let good = occurrence_v1(
        NOTE,
        &format!("{REPO}@{d}"),
        &p,
        &[(&k.derived_id(), &k.sign(&p))],
    );
    let mut bad = good.clone();
    bad["attestation"]["signatures"][0]["signature"] = json!("!!not base64!!");
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI]))
        .attestor("ci.yaml", &pkix_attestor_yaml(CI, NOTE, &[("", k)]))
        .attestations("a.json", &json!([bad, good]));
    let bundle = b.load();
    assert_eq!(bundle.occurrence_count(), 1);
    assert_eq!(bundle.warnings().len(), 1);
    let w = bundle.warnings()[0].to_string();
    assert!(
        w.contains("a.json")
            && w.contains("[0].attestation.signatures[0].signature: invalid base64"),
        "{w}"
    );
    assert_eq!(
        decide(&bundle, &format!("{REPO}@{d}"), &pod()).reason,
        Reason::Attested
    );
}

#[test]
fn denied_because_payload_type_unknown() {
    let k = key("ECDSA_P256_SHA256");
    let d = digest("type");
    let p = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{REPO}"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"my own signature"}}}}"#
    );
    let decision = decide(
        &single(
            NOTE,
            &d,
            p.as_bytes(),
            &k.derived_id(),
            &k.sign(p.as_bytes()),
        ),
        &format!("{REPO}@{d}"),
        &pod(),
    );
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert!(
        decision.attestors[0]
            .detail
            .contains("not a container signature type"),
        "{}",
        decision.attestors[0].detail
    );
}

#[test]
fn every_accepted_payload_type_verifies() {
    let k = key("ECDSA_P256_SHA256");
    for (i, t) in attestgate_policy::payload::ACCEPTED_PAYLOAD_TYPES
        .iter()
        .enumerate()
    {
        let d = digest(&format!("type-{i}"));
        let p = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{REPO}"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"{t}"}},"optional":{{}}}}"#
        );
        let decision = decide(
            &single(
                NOTE,
                &d,
                p.as_bytes(),
                &k.derived_id(),
                &k.sign(p.as_bytes()),
            ),
            &format!("{REPO}@{d}"),
            &pod(),
        );
        assert_eq!(decision.reason, Reason::Attested, "{t}");
    }
}

#[test]
fn every_required_attestor_must_be_satisfied() {
    let ci = key("ECDSA_P256_SHA256");
    let qa = key("RSA_PSS_2048_SHA256");
    let d = digest("two");
    let p = payload(REPO, &d);
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI, QA]))
        .attestor("ci.yaml", &pkix_attestor_yaml(CI, NOTE, &[("", ci)]))
        .attestor("qa.yaml", &pkix_attestor_yaml(QA, QA_NOTE, &[("", qa)]))
        .attestations(
            "ci.json",
            &json!([occurrence_v1(
                NOTE,
                &format!("{REPO}@{d}"),
                &p,
                &[(&ci.derived_id(), &ci.sign(&p))]
            )]),
        );
    let decision = decide(&b.load(), &format!("{REPO}@{d}"), &pod());
    assert_eq!(decision.reason, Reason::MissingAttestations);
    assert!(decision.attestors[0].satisfied);
    assert!(!decision.attestors[1].satisfied);
    assert!(
        decision
            .explanation()
            .contains(&format!("attestor {QA} not satisfied"))
    );

    b.attestations(
        "qa.json",
        &json!([occurrence_v1(
            QA_NOTE,
            &format!("{REPO}@{d}"),
            &p,
            &[(&qa.derived_id(), &qa.sign(&p))]
        )]),
    );
    assert_eq!(
        decide(&b.load(), &format!("{REPO}@{d}"), &pod()).reason,
        Reason::Attested
    );
}

#[test]
fn pgp_signatures_verify_in_v1_and_v1beta1_forms() {
    let dir = tempfile::tempdir().unwrap();
    let gpg_key = GpgKey::generate(dir.path(), "pgp-signer", "rsa2048");
    let d1 = digest("pgp-v1");
    let d2 = digest("pgp-v1beta1");
    let d3 = digest("pgp-v1-armored");
    let p1 = payload(REPO, &d1);
    let p2 = payload(REPO, &d2);
    let p3 = payload(REPO, &d3);
    let v1 = occurrence_v1(
        NOTE,
        &format!("{REPO}@{d1}"),
        &p1,
        &[(&gpg_key.fingerprint, &gpg_key.sign(&p1, false))],
    );
    let v1_armored = occurrence_v1(
        NOTE,
        &format!("{REPO}@{d3}"),
        &p3,
        &[(&gpg_key.fingerprint, &gpg_key.sign(&p3, true))],
    );
    let v1beta1 = json!({
        "name": "projects/test/occurrences/pgp",
        "resource": {"uri": format!("https://{REPO}@{d2}")},
        "noteName": NOTE,
        "kind": "ATTESTATION",
        "attestation": {"attestation": {"pgpSignedAttestation": {
            "signature": String::from_utf8(gpg_key.sign(&p2, true)).unwrap(),
            "contentType": "SIMPLE_SIGNING_JSON",
            "pgpKeyId": gpg_key.fingerprint,
        }}},
    });
    // gpg prints fingerprints in groups of four, and older tools in lower case.
    let grouped: String = gpg_key
        .fingerprint
        .to_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let mut v1beta1_grouped = v1beta1.clone();
    let d6 = digest("pgp-grouped-id");
    let p6 = payload(REPO, &d6);
    v1beta1_grouped["resource"]["uri"] = json!(format!("https://{REPO}@{d6}"));
    v1beta1_grouped["attestation"]["attestation"]["pgpSignedAttestation"]["pgpKeyId"] =
        json!(grouped);
    v1beta1_grouped["attestation"]["attestation"]["pgpSignedAttestation"]["signature"] =
        json!(String::from_utf8(gpg_key.sign(&p6, true)).unwrap());
    let b = BundleDir::new();
    b.policy(&require_policy(&[CI]))
        .attestor("ci.yaml", &pgp_attestor_yaml(CI, NOTE, &gpg_key))
        .attestations(
            "a.json",
            &json!({"occurrences": [v1, v1beta1, v1_armored, v1beta1_grouped], "nextPageToken": ""}),
        );
    let bundle = b.load();
    assert!(bundle.warnings().is_empty(), "{:?}", bundle.warnings());
    for d in [&d1, &d2, &d3, &d6] {
        let decision = decide(&bundle, &format!("{REPO}@{d}"), &pod());
        assert_eq!(
            decision.reason,
            Reason::Attested,
            "{}",
            decision.explanation()
        );
    }

    // Signed by another gpg key that claims this key's fingerprint.
    let impostor = GpgKey::generate(dir.path(), "impostor", "rsa2048");
    let d4 = digest("pgp-impostor");
    let p4 = payload(REPO, &d4);
    b.attestations(
        "b.json",
        &json!([occurrence_v1(
            NOTE,
            &format!("{REPO}@{d4}"),
            &p4,
            &[(&gpg_key.fingerprint, &impostor.sign(&p4, false))]
        )]),
    );
    assert_eq!(
        decide(&b.load(), &format!("{REPO}@{d4}"), &pod()).reason,
        Reason::MissingAttestations
    );

    // A PGP message whose literal data differs from the serialized payload.
    let d5 = digest("pgp-mismatch");
    let p5 = payload(REPO, &d5);
    b.attestations(
        "c.json",
        &json!([occurrence_v1(
            NOTE,
            &format!("{REPO}@{d5}"),
            &p5,
            &[(
                &gpg_key.fingerprint,
                &gpg_key.sign(&payload(REPO, &d4), false)
            )]
        )]),
    );
    assert_eq!(
        decide(&b.load(), &format!("{REPO}@{d5}"), &pod()).reason,
        Reason::MissingAttestations
    );
}

#[test]
fn pgp_eddsa_and_ecdsa_keys_verify() {
    let dir = tempfile::tempdir().unwrap();
    for algo in ["ed25519", "nistp256"] {
        let gpg_key = GpgKey::generate(dir.path(), algo, algo);
        let d = digest(algo);
        let p = payload(REPO, &d);
        let b = BundleDir::new();
        b.policy(&require_policy(&[CI]))
            .attestor("ci.yaml", &pgp_attestor_yaml(CI, NOTE, &gpg_key))
            .attestations(
                "a.json",
                &json!([occurrence_v1(
                    NOTE,
                    &format!("{REPO}@{d}"),
                    &p,
                    &[(&gpg_key.fingerprint, &gpg_key.sign(&p, true))]
                )]),
            );
        assert_eq!(
            decide(&b.load(), &format!("{REPO}@{d}"), &pod()).reason,
            Reason::Attested,
            "{algo}"
        );
    }
}

fn rules_bundle() -> Bundle {
    let b = BundleDir::new();
    b.policy(
        r#"
admissionWhitelistPatterns:
- namePattern: registry.test:5000/tools/*
- namePattern: registry.test:5000/pinned:1.0
globalPolicyEvaluationMode: ENABLE
defaultAdmissionRule:
  evaluationMode: ALWAYS_DENY
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
clusterAdmissionRules:
  us-east1-b.prod:
    evaluationMode: ALWAYS_ALLOW
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
kubernetesNamespaceAdmissionRules:
  staging:
    evaluationMode: ALWAYS_DENY
    enforcementMode: DRYRUN_AUDIT_LOG_ONLY
  prod:
    evaluationMode: REQUIRE_ATTESTATION
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
    requireAttestationsBy: [projects/test/attestors/ci]
kubernetesServiceAccountAdmissionRules:
  prod:deployer:
    evaluationMode: ALWAYS_ALLOW
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
istioServiceIdentityAdmissionRules:
  spiffe://cluster.local/ns/prod/sa/deployer:
    evaluationMode: ALWAYS_DENY
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
"#,
    )
    .attestor(
        "ci.yaml",
        &pkix_attestor_yaml(CI, NOTE, &[("", key("ECDSA_P256_SHA256"))]),
    );
    b.load()
}

fn ns(namespace: &str) -> PodContext {
    PodContext {
        namespace: Some(namespace.into()),
        ..PodContext::default()
    }
}

#[test]
fn rule_selection_is_most_specific_first() {
    let bundle = rules_bundle();
    let cluster = Settings {
        cluster: Some("us-east1-b.prod".into()),
        ..Settings::default()
    };
    let image = format!("{REPO}@{}", digest("r"));

    let sa = PodContext {
        service_account: Some("deployer".into()),
        ..ns("prod")
    };
    let d = decide_on(&bundle, &cluster, &image, &sa);
    assert_eq!(
        (d.reason, d.rule().unwrap().to_string()),
        (Reason::AlwaysAllow, "serviceAccount:prod:deployer".into())
    );

    let d = decide_on(&bundle, &cluster, &image, &ns("prod"));
    assert_eq!(
        (d.reason, d.rule().unwrap().to_string()),
        (Reason::MissingAttestations, "namespace:prod".into())
    );

    let d = decide_on(&bundle, &cluster, &image, &ns("other"));
    assert_eq!(
        (d.reason, d.rule().unwrap().to_string()),
        (Reason::AlwaysAllow, "cluster:us-east1-b.prod".into())
    );

    let d = decide_on(&bundle, &Settings::default(), &image, &ns("other"));
    assert_eq!(
        (d.reason, d.rule().unwrap().to_string()),
        (Reason::AlwaysDeny, "default".into())
    );
    assert!(!d.allowed && d.enforced);

    // The service-account rule needs the service account to be known.
    let unknown_sa = PodContext {
        service_account: None,
        ..ns("prod")
    };
    assert_eq!(
        decide_on(&bundle, &cluster, &image, &unknown_sa)
            .rule()
            .unwrap()
            .to_string(),
        "namespace:prod"
    );
}

#[test]
fn dry_run_allows_and_records_what_would_have_happened() {
    let d = decide(&rules_bundle(), &format!("{REPO}:1"), &ns("staging"));
    assert!(d.allowed);
    assert_eq!(d.reason, Reason::DryRun);
    assert_eq!(d.overridden, Some(Reason::AlwaysDeny));
    assert!(!d.enforced);
    assert!(
        d.explanation()
            .contains("would be denied by rule namespace:staging"),
        "{}",
        d.explanation()
    );
}

#[test]
fn allowlist_patterns_allow_before_rules() {
    let bundle = rules_bundle();
    let d = decide(
        &bundle,
        "registry.test:5000/tools/kubectl:1.30",
        &ns("prod"),
    );
    assert_eq!(d.reason, Reason::Allowlisted);
    assert!(d.allowed && d.enforced);
    assert_eq!(
        decide(&bundle, "registry.test:5000/pinned:1.0", &ns("prod")).reason,
        Reason::Allowlisted
    );
    // Another tag is not the pinned one.
    assert_eq!(
        decide(&bundle, "registry.test:5000/pinned:2.0", &ns("prod")).reason,
        Reason::MissingAttestations
    );
    // `*` does not cross `/`.
    assert_eq!(
        decide(&bundle, "registry.test:5000/tools/sub/x:1", &ns("prod")).reason,
        Reason::MissingAttestations
    );
}

#[test]
fn system_images_need_global_policy_evaluation_enabled() {
    let bundle = rules_bundle();
    let d = decide(&bundle, "registry.k8s.io/pause:3.10", &ns("prod"));
    assert_eq!(d.reason, Reason::SystemImage);
    let node = Settings {
        system_images: vec![NamePattern::parse("registry.test:5000/sandbox/pause*").unwrap()],
        ..Settings::default()
    };
    assert_eq!(
        decide_on(
            &bundle,
            &node,
            "registry.test:5000/sandbox/pause:1",
            &ns("prod")
        )
        .reason,
        Reason::SystemImage
    );
    assert_eq!(
        decide_on(&bundle, &node, "registry.k8s.io/pause:3.10", &ns("prod")).reason,
        Reason::MissingAttestations
    );

    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n");
    assert_eq!(
        decide(&b.load(), "registry.k8s.io/pause:3.10", &ns("prod")).reason,
        Reason::AlwaysDeny
    );
}

#[test]
fn break_glass_label_or_annotation_allows_but_still_evaluates() {
    let bundle = rules_bundle();
    let mut with_label = ns("other");
    with_label
        .labels
        .insert("image-policy.k8s.io/break-glass".into(), "true".into());
    let d = decide(&bundle, &format!("{REPO}:1"), &with_label);
    assert!(d.allowed);
    assert_eq!(d.reason, Reason::BreakGlass);
    assert_eq!(d.overridden, Some(Reason::AlwaysDeny));
    assert!(!d.enforced);
    assert_eq!(d.rule().unwrap().to_string(), "default");

    let mut with_annotation = ns("prod");
    with_annotation.annotations.insert(
        "alpha.image-policy.k8s.io/break-glass".into(),
        "true".into(),
    );
    let d = decide(&bundle, &format!("{REPO}:1"), &with_annotation);
    assert_eq!(
        (d.reason, d.overridden),
        (Reason::BreakGlass, Some(Reason::MissingAttestations))
    );
    assert_eq!(d.attestors.len(), 1, "the attestors were still evaluated");

    let mut not_true = ns("other");
    not_true
        .labels
        .insert("image-policy.k8s.io/break-glass".into(), "yes".into());
    assert_eq!(
        decide(&bundle, &format!("{REPO}:1"), &not_true).reason,
        Reason::AlwaysDeny
    );
}

#[test]
fn decision_record_has_the_documented_shape() {
    let (b, d) = attested_bundle();
    let bundle = b.load();
    let unsigned = digest("record");
    let decision = decide(&bundle, &format!("{REPO}@{unsigned}"), &pod());
    let ctx = attestgate_policy::RecordContext {
        operation: attestgate_policy::Operation::CreateContainer,
        time: time::macros::datetime!(2026-01-02 03:04:05.123456 UTC),
        pod: Some(attestgate_policy::PodRef {
            namespace: Some("prod".into()),
            name: Some("web-0".into()),
            uid: Some("u-1".into()),
        }),
        container: Some("web".into()),
        container_id: None,
        action: None,
        cluster: Some("us-east1-b.prod".into()),
        bundle: Some(attestgate_policy::decision::BundleRef {
            digest: bundle.digest().into(),
            loaded_at: "2026-01-02T03:00:00.000000Z".into(),
            version: None,
            expires: None,
        }),
    };
    let line = decision.record_json(&ctx);
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["time"], "2026-01-02T03:04:05.123456Z");
    assert_eq!(v["operation"], "CreateContainer");
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reason"], "MISSING_ATTESTATIONS");
    assert_eq!(v["enforced"], true);
    assert_eq!(v["image"]["repository"], REPO);
    assert_eq!(v["image"]["digest"], unsigned);
    assert_eq!(v["pod"]["namespace"], "prod");
    assert_eq!(v["pod"]["uid"], "u-1");
    assert_eq!(v["container"], "web");
    assert_eq!(v["cluster"], "us-east1-b.prod");
    assert_eq!(v["rule"], "default");
    assert_eq!(v["evaluation_mode"], "REQUIRE_ATTESTATION");
    assert_eq!(v["enforcement_mode"], "ENFORCED_BLOCK_AND_AUDIT_LOG");
    assert_eq!(v["attestors"][0]["name"], CI);
    assert_eq!(v["attestors"][0]["satisfied"], false);
    assert_eq!(v["message"], decision.explanation());
    assert_eq!(v["bundle"]["digest"], bundle.digest());
    assert!(v.get("overridden").is_none());
    let _ = d;
}

#[test]
fn a_bundle_read_through_its_index_decides_as_the_whole_bundle() {
    let (b, good) = attested_bundle();
    // More images attested in another file: the index must pick the right one.
    let k = key("ECDSA_P256_SHA256");
    let others: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            let d = digest(&format!("other-{i}"));
            let p = payload(REPO, &d);
            occurrence_v1(
                NOTE,
                &format!("{REPO}@{d}"),
                &p,
                &[(&k.derived_id(), &k.sign(&p))],
            )
        })
        .collect();
    b.attestations("others.json", &json!(others));
    let whole = b.load();
    let index_dir = tempfile::tempdir().unwrap();
    let index_file = index_dir.path().join("index");
    std::fs::write(&index_file, whole.index("stamp-1")).unwrap();
    let other = digest("other-7");
    let unsigned = digest("unsigned");
    for d in [&good, &other, &unsigned] {
        let image = format!("{REPO}@{d}");
        let parsed = ImageRef::parse(&image).unwrap();
        let indexed = Bundle::load_indexed(
            b.path(),
            &index_file,
            "stamp-1",
            &[parsed.digest.as_ref().unwrap()],
        )
        .unwrap();
        assert_eq!(indexed.digest(), whole.digest());
        let expected = usize::from(d != &unsigned);
        assert_eq!(indexed.occurrence_count(), expected, "only the image's own");
        let (a, w) = (
            decide(&indexed, &image, &pod()),
            decide(&whole, &image, &pod()),
        );
        assert_eq!((a.allowed, a.reason), (w.allowed, w.reason), "{image}");
        assert_eq!(a.explanation(), w.explanation());
    }
    assert!(decide(&whole, &format!("{REPO}@{good}"), &pod()).allowed);
    // Another stamp is another set of files: refused.
    let digest_good = Digest::parse(&good).unwrap();
    let stale = Bundle::load_indexed(b.path(), &index_file, "stamp-2", &[&digest_good]);
    assert!(matches!(stale, Err(IndexError::Stale { .. })), "{stale:?}");
    // A damaged index is an error, never a wrong occurrence or a panic.
    let bytes = std::fs::read(&index_file).unwrap();
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&index_file, &bytes[..cut]).unwrap();
        let _ = Bundle::load_indexed(b.path(), &index_file, "stamp-1", &[&digest_good])
            .map(|bundle| assert!(bundle.occurrence_count() <= 1));
    }
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(97) {
        flipped[i] ^= 0x5a;
        std::fs::write(&index_file, &flipped).unwrap();
        if let Ok(bundle) = Bundle::load_indexed(b.path(), &index_file, "stamp-1", &[&digest_good])
        {
            // Whatever survives a flipped byte is still only this image's.
            assert!(bundle.occurrence_count() <= 1);
        }
        flipped[i] ^= 0x5a;
    }
}
