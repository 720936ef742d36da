//! Platform policies (SPEC §12): `platform-policy.yaml` parsed field for
//! field, check sets chosen by scope, every check kind evaluated with keys
//! and signatures made by openssl, and what enforcing the verdict does to
//! a decision.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::OnceLock;

use attestgate_policy::decision::{Operation, RecordContext};
use attestgate_policy::parse::{DocumentKind, check_file};
use attestgate_policy::platform::{CheckKind, Scope, parse_platform_policy};
use attestgate_policy::registry::{IN_TOTO_PAYLOAD_TYPE, pae};
use attestgate_policy::{
    Bundle, Digest, ImageRef, PlatformVerdict, PodContext, Reason, RegistryAttestation,
    RegistrySignature, Settings, evaluate_platform, evaluate_with,
};
use support::*;

type Keys = (tempfile::TempDir, OpensslKey, OpensslKey, OpensslKey);

/// `signer` signs; `stranger` is in no policy; `rsa` is a cosign RSA key.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let signer = OpensslKey::generate(dir.path(), "signer", alg("ECDSA_P256_SHA256"));
        let stranger = OpensslKey::generate(dir.path(), "stranger", alg("ECDSA_P256_SHA256"));
        let rsa = OpensslKey::generate(dir.path(), "rsa", alg("RSA_SIGN_PKCS1_2048_SHA256"));
        (dir, signer, stranger, rsa)
    })
}

fn signer() -> &'static OpensslKey {
    &keys().1
}

fn stranger() -> &'static OpensslKey {
    &keys().2
}

fn indented(pem: &str, spaces: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(spaces)))
        .collect()
}

/// A sigstore check trusting `key`, as a list item at 4 spaces.
fn sigstore_check(name: &str, key: &OpensslKey) -> String {
    format!(
        "    - displayName: {name}\n      sigstoreSignatureCheck:\n        sigstoreAuthorities:\n        - displayName: release\n          publicKeySet:\n            publicKeys:\n            - publicKeyPem: |\n{}",
        indented(&key.public_pem, 16)
    )
}

/// A simple-signing check trusting `key`.
fn simple_signing_check(name: &str, key: &OpensslKey, projects: &[&str]) -> String {
    let projects: String = projects.iter().map(|p| format!("\"{p}\", ")).collect();
    format!(
        "    - displayName: {name}\n      simpleSigningAttestationCheck:\n        containerAnalysisAttestationProjects: [{}]\n        attestationAuthenticators:\n        - displayName: ci\n          pkixPublicKeySet:\n            pkixPublicKeys:\n            - signatureAlgorithm: {}\n              keyId: ci-key\n              publicKeyPem: |\n{}",
        projects.trim_end_matches(", "),
        key.alg.name,
        indented(&key.public_pem, 16)
    )
}

fn platform_yaml(check_sets: &str) -> String {
    format!(
        "name: projects/test/platforms/gke/policies/node\ndescription: node policy\nupdateTime: '2026-03-02T10:00:00.123456Z'\netag: abc\ngkePolicy:\n  checkSets:\n{check_sets}"
    )
}

const ALLOW_ALL: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";

fn bundle_with(platform: &str) -> Bundle {
    let b = BundleDir::new();
    b.policy(ALLOW_ALL);
    std::fs::write(b.path().join("platform-policy.yaml"), platform).unwrap();
    b.load()
}

fn image(repo: &str, seed: &str) -> (String, ImageRef) {
    let reference = format!("{repo}@{}", digest(seed));
    let parsed = ImageRef::parse(&reference).unwrap();
    (reference, parsed)
}

fn pod(namespace: &str, service_account: Option<&str>) -> PodContext {
    PodContext {
        namespace: Some(namespace.to_string()),
        service_account: service_account.map(str::to_string),
        ..PodContext::default()
    }
}

fn verdict(
    bundle: &Bundle,
    image: &ImageRef,
    pod: &PodContext,
    registry: &[RegistryAttestation],
) -> PlatformVerdict {
    evaluate_platform(bundle, &Settings::default(), image, pod, registry).unwrap()
}

fn cosign_payload(repo: &str, digest: &str) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{repo}\"}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
    )
    .into_bytes()
}

fn cosign(key: &OpensslKey, repo: &str, signed: &str, found_in: &str) -> RegistryAttestation {
    let payload = cosign_payload(repo, signed);
    RegistryAttestation {
        signature: RegistrySignature::Cosign {
            signature: key.sign(&payload),
            payload,
        },
        signed_digest: Digest::parse(signed).unwrap(),
        found_in: found_in.to_string(),
    }
}

fn dsse(key: &OpensslKey, signed: &str, found_in: &str) -> RegistryAttestation {
    let hex = signed.trim_start_matches("sha256:");
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"app","digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#
    );
    let signature = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, statement.as_bytes()));
    RegistryAttestation {
        signature: RegistrySignature::Dsse {
            payload_type: IN_TOTO_PAYLOAD_TYPE.to_string(),
            payload: statement.into_bytes(),
            signatures: vec![signature],
        },
        signed_digest: Digest::parse(signed).unwrap(),
        found_in: found_in.to_string(),
    }
}

#[test]
fn every_field_gcloud_exports_is_read() {
    let text = format!(
        "{}    imageAllowlist:\n      allowPattern: [\"gcr.io/p/exempt/*\"]\n    checks:\n    - alwaysDeny: true\n      imageAllowlist:\n        allowPattern: [\"gcr.io/p/debug/*\"]\n    - trustedDirectoryCheck:\n        trustedDirPatterns: [\"us-docker.pkg.dev/p/repo\", \"*.gcr.io/p/**\"]\n{}{}  - displayName: everything-else\n    checks:\n    - imageAllowlist:\n        allowPattern: [\"gcr.io/p/**\"]\n  imageAllowlist:\n    allowPattern: [\"registry.k8s.io/pause*\"]\n",
        platform_yaml(
            "  - displayName: prod-ci\n    scope:\n      kubernetesServiceAccount: prod:ci\n    checks:\n    - alwaysDeny: true\n  - displayName: prod\n    scope:\n      kubernetesNamespace: prod\n"
        ),
        simple_signing_check("attested", signer(), &["projects/test"]),
        sigstore_check("signed", &keys().3),
    );
    let policy = parse_platform_policy(&text).unwrap();
    assert_eq!(
        policy.name.as_deref(),
        Some("projects/test/platforms/gke/policies/node")
    );
    assert_eq!(policy.description.as_deref(), Some("node policy"));
    assert_eq!(
        policy.update_time.as_deref(),
        Some("2026-03-02T10:00:00.123456Z")
    );
    assert_eq!(policy.etag.as_deref(), Some("abc"));
    assert_eq!(policy.image_allowlist[0].as_str(), "registry.k8s.io/pause*");
    assert_eq!(policy.check_sets.len(), 3);
    let [prod_ci, prod, rest] = policy.check_sets.as_slice() else {
        panic!()
    };
    assert_eq!(prod_ci.name, "prod-ci");
    assert_eq!(
        prod_ci.scope,
        Scope::ServiceAccount {
            namespace: "prod".into(),
            name: "ci".into()
        }
    );
    assert_eq!(prod.scope, Scope::Namespace("prod".into()));
    assert_eq!(prod.image_allowlist[0].as_str(), "gcr.io/p/exempt/*");
    assert_eq!(rest.scope, Scope::Everything);
    let kinds: Vec<&str> = prod.checks.iter().map(|c| c.kind.field_name()).collect();
    assert_eq!(
        kinds,
        [
            "alwaysDeny",
            "trustedDirectoryCheck",
            "simpleSigningAttestationCheck",
            "sigstoreSignatureCheck"
        ]
    );
    assert_eq!(prod.checks[0].name, "checkSets[1].checks[0]");
    assert_eq!(
        prod.checks[0].image_allowlist[0].as_str(),
        "gcr.io/p/debug/*"
    );
    assert_eq!(prod.checks[2].name, "attested");
    let CheckKind::SimpleSigningAttestation {
        attestation_projects,
        authenticators,
    } = &prod.checks[2].kind
    else {
        panic!()
    };
    assert_eq!(attestation_projects, &["projects/test"]);
    assert_eq!(authenticators[0].name, "ci");
    assert_eq!(authenticators[0].public_keys[0].id, "ci-key");
    let CheckKind::SigstoreSignature { authorities } = &prod.checks[3].kind else {
        panic!()
    };
    assert_eq!(authorities[0].name, "release");
    assert!(matches!(rest.checks[0].kind, CheckKind::ImageAllowlist));
    assert!(policy.uses_registry_signatures());
    assert_eq!(policy.registry_verifiers().count(), 2);
}

#[test]
fn checks_the_node_cannot_evaluate_parse_and_never_pass() {
    let text = platform_yaml(
        "  - checks:\n    - displayName: vulns\n      vulnerabilityCheck:\n        maximumFixableSeverity: MEDIUM\n    - slsaCheck: {rules: []}\n    - imageFreshnessCheck: {maxUploadAgeDays: 30}\n    - trustedBuilderCheck: {}\n    - futureCheck: {x: 1}\n    - alwaysDeny: true\n      someNewOption: 1\n",
    );
    let policy = parse_platform_policy(&text).unwrap();
    let kinds: Vec<&str> = policy.check_sets[0]
        .checks
        .iter()
        .map(|c| c.kind.field_name())
        .collect();
    assert_eq!(
        kinds,
        [
            "vulnerabilityCheck",
            "slsaCheck",
            "imageFreshnessCheck",
            "trustedBuilderCheck",
            "futureCheck",
            "someNewOption+alwaysDeny"
        ]
    );
    let bundle = bundle_with(&text);
    let (_, img) = image("gcr.io/p/app", "a");
    let v = verdict(&bundle, &img, &PodContext::default(), &[]);
    assert!(!v.conforms);
    assert!(v.checks.iter().all(|c| !c.passed));
    assert_eq!(v.config_errors.len(), 6, "{:?}", v.config_errors);
    assert!(
        v.config_errors[0].contains("check vulns (vulnerabilityCheck) cannot be evaluated"),
        "{:?}",
        v.config_errors
    );
    // Exempted by name, even such a check passes: nothing was evaluated.
    let exempt = platform_yaml(
        "  - checks:\n    - vulnerabilityCheck: {}\n      imageAllowlist:\n        allowPattern: [\"gcr.io/p/*\"]\n",
    );
    let v = verdict(&bundle_with(&exempt), &img, &PodContext::default(), &[]);
    assert!(v.conforms && v.config_errors.is_empty(), "{v:?}");
}

fn load_errors(platform: &str) -> Vec<String> {
    let b = BundleDir::new();
    b.policy(ALLOW_ALL);
    std::fs::write(b.path().join("platform-policy.yaml"), platform).unwrap();
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
fn errors_name_the_file_line_column_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "gkePolicy:\n  checkSets:\n  - scope:\n      kubernetesNamespace: Prod_1\n",
            "platform-policy.yaml:4:28: gkePolicy.checkSets[0].scope.kubernetesNamespace: \"Prod_1\" is not a valid Kubernetes namespace name",
        ),
        (
            "gkePolicy:\n  checkSets:\n  - scope:\n      kubernetesServiceAccount: prod\n",
            "platform-policy.yaml:4:33: gkePolicy.checkSets[0].scope.kubernetesServiceAccount: \"prod\" is not of the form namespace:serviceaccount",
        ),
        (
            "gkePolicy:\n  checkSets:\n  - checks:\n    - trustedDirectoryCheck:\n        trustedDirPatterns: [\"gcr.io/*/x\"]\n",
            "platform-policy.yaml:5:30: gkePolicy.checkSets[0].checks[0].trustedDirectoryCheck.trustedDirPatterns[0]: invalid pattern \"gcr.io/*/x\"",
        ),
        (
            "gkePolicy:\n  checkSets:\n  - checks:\n    - alwaysDeny: true\n      trustedDirectoryCheck: {trustedDirPatterns: [gcr.io/p]}\n",
            "platform-policy.yaml:4:7: gkePolicy.checkSets[0].checks[0]: a check is one kind of check; this one is alwaysDeny and trustedDirectoryCheck",
        ),
        (
            "gkePolicy:\n  checkSets:\n  - checks:\n    - displayName: nothing\n",
            "platform-policy.yaml:4:7: gkePolicy.checkSets[0].checks[0]: a check needs one of",
        ),
        (
            "gkePolicy:\n  checkSets:\n  - checks:\n    - sigstoreSignatureCheck:\n        sigstoreAuthorities:\n        - publicKeySet:\n            publicKeys:\n            - publicKeyPem: not a key\n",
            "platform-policy.yaml:8:29: gkePolicy.checkSets[0].checks[0].sigstoreSignatureCheck.sigstoreAuthorities[0].publicKeySet.publicKeys[0].publicKeyPem: no -----BEGIN PUBLIC KEY----- block",
        ),
        (
            "gkePolicy:\n  imageAllowlist:\n    allowPattern: [\"gcr.io/*/x\"]\n",
            "platform-policy.yaml:3:20: gkePolicy.imageAllowlist.allowPattern[0]: invalid pattern",
        ),
        (
            "gkePolicy:\n  checkSets:\n  - scope:\n      kubernetesNamespace: prod\n  - scope:\n      kubernetesServiceAccount: prod:ci\n",
            "platform-policy.yaml:5:5: gkePolicy.checkSets[1]: check set with scope serviceAccount:prod:ci can never apply: checkSets[0] (scope namespace:prod) comes first",
        ),
        (
            "gkePolicy:\n  checkSets:\n  - checks: []\n  - scope:\n      kubernetesNamespace: prod\n",
            "platform-policy.yaml:4:5: gkePolicy.checkSets[1]: check set with scope namespace:prod can never apply",
        ),
        (
            "description: no policy\n",
            "platform-policy.yaml:1:1: gkePolicy: missing required field",
        ),
        ("gkePolicy: [\n", "platform-policy.yaml:"),
    ];
    for (text, expected) in cases {
        let errors = load_errors(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(expected),
            "{text}\n  got:      {}\n  expected: {expected}",
            errors[0]
        );
    }
    // A policy gcloud printed as JSON gets lines and columns too.
    let b = BundleDir::new();
    b.policy(ALLOW_ALL);
    std::fs::write(
        b.path().join("platform-policy.json"),
        "{\n  \"gkePolicy\": {\n    \"checkSets\": [{\"scope\": {\"kubernetesNamespace\": \"Bad\"}}]\n  }\n}\n",
    )
    .unwrap();
    let e = Bundle::load(b.path()).unwrap_err().errors[0].to_string();
    assert!(
        e.contains("platform-policy.json:3:") && e.contains("kubernetesNamespace"),
        "{e}"
    );
    // Both forms at once are ambiguous.
    std::fs::write(b.path().join("platform-policy.yaml"), "gkePolicy: {}\n").unwrap();
    let e = Bundle::load(b.path()).unwrap_err().errors[0].to_string();
    assert!(e.contains("more than one platform policy file"), "{e}");
}

#[test]
fn a_yml_platform_policy_loads_and_two_files_are_refused() {
    let b = BundleDir::new();
    b.policy(ALLOW_ALL);
    let text = platform_yaml("  - checks:\n    - alwaysDeny: true\n");
    std::fs::write(b.path().join("platform-policy.yml"), &text).unwrap();
    let bundle = b.load();
    let (_, img) = image(REPO, "x");
    assert!(!verdict(&bundle, &img, &PodContext::default(), &[]).conforms);
    // The indexed loader reads it too.
    let index = b.path().join("index.bin");
    std::fs::write(&index, bundle.index("stamp")).unwrap();
    let d = img.digest.clone().unwrap();
    let indexed = Bundle::load_indexed(b.path(), &index, "stamp", &[&d]).unwrap();
    assert!(!verdict(&indexed, &img, &PodContext::default(), &[]).conforms);
    // `policy check` on the file alone.
    assert_eq!(
        check_file(&b.path().join("platform-policy.yml")).unwrap(),
        DocumentKind::PlatformPolicy { check_sets: 1 }
    );
    // Beside a .yaml one: which applies is ambiguous.
    std::fs::write(b.path().join("platform-policy.yaml"), &text).unwrap();
    let e = Bundle::load(b.path()).unwrap_err().errors[0].to_string();
    assert!(
        e.contains("more than one platform policy file")
            && e.contains("platform-policy.yaml")
            && e.contains("platform-policy.yml"),
        "{e}"
    );
}

#[test]
fn a_platform_policy_that_cannot_be_read_fails_the_load() {
    // Run as root, so a directory and a dangling symlink stand in for a
    // file the loader cannot read.
    let dangling = BundleDir::new();
    dangling.policy(ALLOW_ALL);
    std::os::unix::fs::symlink(
        dangling.path().join("..data/platform-policy.yaml"),
        dangling.path().join("platform-policy.yaml"),
    )
    .unwrap();
    let directory = BundleDir::new();
    directory.policy(ALLOW_ALL);
    std::fs::create_dir(directory.path().join("platform-policy.yml")).unwrap();
    for (b, name, why) in [
        (&dangling, "platform-policy.yaml", "dangling symlink"),
        (&directory, "platform-policy.yml", "not a regular file"),
    ] {
        let errors = Bundle::load(b.path()).unwrap_err().errors;
        let e = errors[0].to_string();
        assert!(e.contains(name) && e.contains(why), "{errors:?}");
        // The same through the index: never "no platform policy".
        let index = b.path().join("index.bin");
        std::fs::write(&index, b"").unwrap();
        assert!(Bundle::load_indexed(b.path(), &index, "stamp", &[]).is_err());
    }
}

#[test]
fn a_single_file_is_checked_by_name_or_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let text = platform_yaml("  - checks:\n    - alwaysDeny: true\n  - checks: []\n");
    let by_name = dir.path().join("platform-policy.yaml");
    std::fs::write(&by_name, &text).unwrap();
    let sniffed = dir.path().join("exported.yaml");
    std::fs::write(&sniffed, &text).unwrap();
    // A catch-all first shadows the second: refused.
    for path in [&by_name, &sniffed] {
        let errors = check_file(path).unwrap_err();
        assert!(
            errors[0].to_string().contains("gkePolicy.checkSets[1]"),
            "{errors:?}"
        );
    }
    let good = platform_yaml(
        "  - scope: {kubernetesNamespace: prod}\n    checks: []\n  - checks:\n    - alwaysDeny: true\n",
    );
    std::fs::write(&sniffed, &good).unwrap();
    assert_eq!(
        check_file(&sniffed).unwrap(),
        DocumentKind::PlatformPolicy { check_sets: 2 }
    );
}

#[test]
fn a_service_account_set_is_undecided_when_the_service_account_is_unknown() {
    let text = platform_yaml(
        "  - displayName: deployer\n    scope: {kubernetesServiceAccount: \"prod:deployer\"}\n    checks:\n    - trustedDirectoryCheck:\n        trustedDirPatterns: [\"gcr.io/p\"]\n",
    );
    let bundle = bundle_with(&text);
    let (_, img) = image("gcr.io/p/app", "a");
    let (_, other) = image("gcr.io/q/other", "b");
    // In prod, with the service account unknown, the only set may apply:
    // never "no check set applies, so it conforms".
    for image in [&img, &other] {
        let v = verdict(&bundle, image, &pod("prod", None), &[]);
        assert!(!v.conforms, "{v:?}");
        assert_eq!(v.check_set.as_deref(), Some("deployer"));
        assert_eq!(v.scope.as_deref(), Some("serviceAccount:prod:deployer"));
        assert!(v.checks.is_empty(), "{v:?}");
        assert_eq!(v.config_errors.len(), 1, "{v:?}");
        assert!(
            v.config_errors[0].contains("cannot tell the pod's service account"),
            "{v:?}"
        );
        assert!(
            v.summary()
                .contains("cannot tell the pod's service account")
        );
    }
    // A set scoped to another namespace's service account does not apply.
    let v = verdict(&bundle, &other, &pod("dev", None), &[]);
    assert!(v.conforms && v.check_set.is_none() && v.config_errors.is_empty());
    // With the service account known (`evaluate --service-account`), the
    // set applies as before, or does not.
    let v = verdict(&bundle, &img, &pod("prod", Some("deployer")), &[]);
    assert!(
        v.conforms && v.check_set.as_deref() == Some("deployer"),
        "{v:?}"
    );
    let v = verdict(&bundle, &other, &pod("prod", Some("deployer")), &[]);
    assert!(!v.conforms && v.config_errors.is_empty(), "{v:?}");
    let v = verdict(&bundle, &other, &pod("prod", Some("web")), &[]);
    assert!(v.conforms && v.check_set.is_none(), "{v:?}");
}

#[test]
fn the_first_check_set_whose_scope_matches_applies() {
    let text = platform_yaml(
        "  - displayName: prod-ci\n    scope: {kubernetesServiceAccount: \"prod:ci\"}\n    checks: []\n  - displayName: prod\n    scope: {kubernetesNamespace: prod}\n    checks:\n    - alwaysDeny: true\n  - displayName: dev\n    scope: {kubernetesNamespace: dev}\n    checks: []\n",
    );
    let bundle = bundle_with(&text);
    let (_, img) = image("gcr.io/p/app", "a");
    let set = |pod: &PodContext| {
        let v = verdict(&bundle, &img, pod, &[]);
        (v.check_set, v.conforms)
    };
    assert_eq!(
        set(&pod("prod", Some("ci"))),
        (Some("prod-ci".into()), true)
    );
    assert_eq!(set(&pod("prod", Some("web"))), (Some("prod".into()), false));
    // Unknown service account (the node's CRI context): the prod-ci set
    // may apply or not, so the verdict cannot fall through to prod.
    assert_eq!(set(&pod("prod", None)), (Some("prod-ci".into()), false));
    assert_eq!(set(&pod("dev", Some("ci"))), (Some("dev".into()), true));
    // No set applies: GKE allows (and so does the verdict), saying so.
    let v = verdict(&bundle, &img, &pod("staging", None), &[]);
    assert!(v.conforms && v.check_set.is_none() && v.checks.is_empty());
    assert_eq!(
        v.summary(),
        "platform policy: no check set applies to the pod"
    );
    assert!(verdict(&bundle, &img, &PodContext::default(), &[]).conforms);
    // A set with no scope applies to every pod, and the record says which.
    let catch_all = bundle_with(&platform_yaml(
        "  - scope: {kubernetesNamespace: dev}\n    checks: []\n  - checks:\n    - alwaysDeny: true\n",
    ));
    let v = verdict(&catch_all, &img, &pod("staging", None), &[]);
    assert_eq!(v.check_set.as_deref(), Some("checkSets[1]"));
    assert_eq!(v.scope.as_deref(), Some("everything"));
    assert!(!v.conforms);
    assert_eq!(
        v.summary(),
        "platform policy check set checkSets[1]: check checkSets[1].checks[0] (alwaysDeny) failed: alwaysDeny"
    );
    // Without a platform policy there is no verdict at all.
    let b = BundleDir::new();
    b.policy(ALLOW_ALL);
    assert!(
        evaluate_platform(
            &b.load(),
            &Settings::default(),
            &img,
            &pod("prod", None),
            &[]
        )
        .is_none()
    );
}

#[test]
fn allowlists_exempt_policy_wide_per_set_and_per_check() {
    let text = format!(
        "{}  imageAllowlist:\n    allowPattern: [\"registry.k8s.io/pause*\"]\n",
        platform_yaml(
            "  - displayName: all\n    imageAllowlist:\n      allowPattern: [\"gcr.io/p/exempt/*\"]\n    checks:\n    - displayName: deny\n      alwaysDeny: true\n      imageAllowlist:\n        allowPattern: [\"gcr.io/p/debug/**\"]\n    - displayName: named\n      imageAllowlist:\n        allowPattern: [\"gcr.io/p/**\"]\n",
        )
    );
    let bundle = bundle_with(&text);
    let any = PodContext::default();
    let of = |repo: &str| verdict(&bundle, &image(repo, "a").1, &any, &[]);

    let pause = of("registry.k8s.io/pause");
    assert!(pause.conforms && pause.check_set.is_none());
    assert_eq!(pause.exempted_by.as_deref(), Some("registry.k8s.io/pause*"));
    let exempt = of("gcr.io/p/exempt/app");
    assert!(exempt.conforms && exempt.checks.is_empty());
    assert_eq!(exempt.check_set.as_deref(), Some("all"));
    assert_eq!(exempt.exempted_by.as_deref(), Some("gcr.io/p/exempt/*"));
    // The check's own allowlist passes that check alone.
    let debug = of("gcr.io/p/debug/x/app");
    assert!(debug.conforms, "{debug:?}");
    assert!(
        debug.checks[0]
            .detail
            .contains("exempted by imageAllowlist pattern gcr.io/p/debug/**")
    );
    assert!(debug.checks[1].passed);
    let app = of("gcr.io/p/app");
    assert!(!app.conforms);
    assert!(!app.checks[0].passed && app.checks[1].passed);
    // A check that is only an allowlist fails what it does not name.
    let elsewhere = of("docker.io/library/nginx");
    assert!(!elsewhere.checks[1].passed);
    assert!(
        elsewhere.checks[1]
            .detail
            .contains("matches no allowPattern"),
        "{}",
        elsewhere.checks[1].detail
    );
}

#[test]
fn trusted_directory_checks_the_image_s_directory() {
    let bundle = bundle_with(&platform_yaml(
        "  - checks:\n    - trustedDirectoryCheck:\n        trustedDirPatterns: [\"us-docker.pkg.dev/p/repo\", \"*.gcr.io/p/*\"]\n",
    ));
    let any = PodContext::default();
    let passes = |repo: &str| verdict(&bundle, &image(repo, "a").1, &any, &[]).conforms;
    assert!(passes("us-docker.pkg.dev/p/repo/app"));
    assert!(passes("eu.gcr.io/p/team/app"));
    assert!(!passes("us-docker.pkg.dev/p/repo/nested/app"));
    assert!(!passes("us-docker.pkg.dev/p/other/app"));
    assert!(!passes("gcr.io/p/team/app"));
    let v = verdict(&bundle, &image("docker.io/library/nginx", "a").1, &any, &[]);
    assert!(
        v.checks[0]
            .detail
            .contains("docker.io/library/nginx is in no trusted directory"),
        "{}",
        v.checks[0].detail
    );
}

#[test]
fn simple_signing_counts_bundle_attestations_and_cosign_signatures_under_its_keys() {
    let b = BundleDir::new();
    b.policy(ALLOW_ALL);
    let text = platform_yaml(&format!(
        "  - checks:\n{}",
        simple_signing_check("attested", signer(), &["projects/test"])
    ));
    std::fs::write(b.path().join("platform-policy.yaml"), &text).unwrap();
    let d_signed = digest("signed");
    let d_wrong_key = digest("wrong-key");
    let d_other_project = digest("other-project");
    let d_bad_payload = digest("bad-payload");
    let p = payload(REPO, &d_signed);
    let p_wrong = payload(REPO, &d_wrong_key);
    let p_other = payload(REPO, &d_other_project);
    // The payload names another digest than the resource URI.
    let p_bad = payload(REPO, &d_signed);
    let mut other_project = occurrence_v1(
        "projects/elsewhere/notes/n",
        &format!("{REPO}@{d_other_project}"),
        &p_other,
        &[("any", &signer().sign(&p_other))],
    );
    other_project["name"] = "projects/elsewhere/occurrences/1".into();
    b.attestations(
        "a.json",
        &serde_json::json!([
            // The note and key id need not be the platform's: the key decides.
            occurrence_v1(
                "projects/test/notes/whatever",
                &format!("{REPO}@{d_signed}"),
                &p,
                &[("some-other-id", &signer().sign(&p))]
            ),
            occurrence_v1(
                NOTE,
                &format!("{REPO}@{d_wrong_key}"),
                &p_wrong,
                &[("ci-key", &stranger().sign(&p_wrong))]
            ),
            other_project,
            occurrence_v1(
                NOTE,
                &format!("{REPO}@{d_bad_payload}"),
                &p_bad,
                &[("ci-key", &signer().sign(&p_bad))]
            ),
        ]),
    );
    let bundle = b.load();
    let any = PodContext::default();
    let at = |d: &str, registry: &[RegistryAttestation]| {
        verdict(
            &bundle,
            &ImageRef::parse(&format!("{REPO}@{d}")).unwrap(),
            &any,
            registry,
        )
    };
    let ok = at(&d_signed, &[]);
    assert!(ok.conforms, "{ok:?}");
    assert!(
        ok.checks[0]
            .detail
            .contains("verified by authenticator ci with key ci-key"),
        "{}",
        ok.checks[0].detail
    );
    for (d, why) in [
        (&d_wrong_key, "a key the authenticator does not hold"),
        (&d_other_project, "a project the check does not list"),
        (&d_bad_payload, "a payload for another digest"),
    ] {
        let v = at(d, &[]);
        assert!(!v.conforms, "{why}: {v:?}");
        assert!(v.checks[0].detail.contains("no attestation for"), "{why}");
    }
    // A cosign signature in the registry is a simple-signing payload too;
    // a sigstore bundle is not.
    let registry = [cosign(signer(), REPO, &d_wrong_key, REPO)];
    let v = at(&d_wrong_key, &registry);
    assert!(v.conforms, "{v:?}");
    assert!(v.checks[0].detail.contains("cosign signature from"));
    assert!(!at(&d_wrong_key, &[dsse(signer(), &d_wrong_key, REPO)]).conforms);
    assert!(
        !at(
            &d_wrong_key,
            &[cosign(stranger(), REPO, &d_wrong_key, REPO)]
        )
        .conforms
    );
    // Strict repository mode: an occurrence for a mirror does not count.
    let mirror = ImageRef::parse(&format!("mirror.test/app@{d_signed}")).unwrap();
    assert!(verdict(&bundle, &mirror, &any, &[]).conforms);
    let strict = Settings {
        strict_repository: true,
        ..Settings::default()
    };
    assert!(
        !evaluate_platform(&bundle, &strict, &mirror, &any, &[])
            .unwrap()
            .conforms
    );
    // No digest, nothing to verify.
    let tagged = ImageRef::parse(&format!("{REPO}:1")).unwrap();
    let v = verdict(&bundle, &tagged, &any, &[]);
    assert_eq!(v.checks[0].detail, "image has no digest");
}

#[test]
fn sigstore_checks_count_registry_signatures_under_an_authority_s_keys() {
    let text = platform_yaml(&format!(
        "  - checks:\n{}{}",
        sigstore_check("ec", signer()),
        // An RSA key names no algorithm either: cosign's PKCS#1 v1.5 is used.
        sigstore_check("rsa", &keys().3).replace("- displayName: rsa", "- displayName: rsa\n      imageAllowlist: {allowPattern: [\"registry.test:5000/team/*\"]}")
    ));
    let bundle = bundle_with(&text);
    let d = digest("img");
    let img = ImageRef::parse(&format!("{REPO}@{d}")).unwrap();
    let any = PodContext::default();
    let v = verdict(&bundle, &img, &any, &[cosign(signer(), REPO, &d, REPO)]);
    assert!(v.conforms, "{v:?}");
    assert!(
        v.checks[0]
            .detail
            .contains("cosign signature from registry.test:5000/team/app"),
        "{}",
        v.checks[0].detail
    );
    let v = verdict(&bundle, &img, &any, &[dsse(signer(), &d, REPO)]);
    assert!(v.conforms, "{v:?}");
    assert!(v.checks[0].detail.contains("sigstore bundle"));
    for (offered, why) in [
        (vec![], "nothing offered"),
        (vec![cosign(stranger(), REPO, &d, REPO)], "a stranger's key"),
        (
            vec![RegistryAttestation {
                signed_digest: Digest::parse(&d).unwrap(),
                ..cosign(signer(), REPO, &digest("other"), REPO)
            }],
            "a payload naming another image",
        ),
    ] {
        let v = verdict(&bundle, &img, &any, &offered);
        assert!(!v.conforms, "{why}");
        assert!(
            v.checks[0].detail.contains("no registry signature for"),
            "{why}: {}",
            v.checks[0].detail
        );
    }
    // The RSA authority verifies RSA signatures.
    let rsa_only = bundle_with(&platform_yaml(&format!(
        "  - checks:\n{}",
        sigstore_check("rsa", &keys().3)
    )));
    assert!(verdict(&rsa_only, &img, &any, &[cosign(&keys().3, REPO, &d, REPO)]).conforms);
    assert!(!verdict(&rsa_only, &img, &any, &[cosign(signer(), REPO, &d, REPO)]).conforms);
}

#[test]
fn enforcing_needs_both_policies_to_allow() {
    let platform = platform_yaml(&format!(
        "  - displayName: prod\n    scope: {{kubernetesNamespace: prod}}\n    checks:\n{}",
        sigstore_check("release-signed", signer())
    ));
    let b = BundleDir::new();
    let dry_rule = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\nkubernetesNamespaceAdmissionRules:\n  prod:\n    evaluationMode: ALWAYS_ALLOW\n    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  dryrun:\n    evaluationMode: ALWAYS_ALLOW\n    enforcementMode: DRYRUN_AUDIT_LOG_ONLY\nadmissionWhitelistPatterns:\n- namePattern: registry.test:5000/allowlisted/*\n";
    b.policy(dry_rule);
    std::fs::write(b.path().join("platform-policy.yaml"), &platform).unwrap();
    let bundle = b.load();
    let d = digest("img");
    let reference = format!("{REPO}@{d}");
    let img = ImageRef::parse(&reference).unwrap();
    let enforce = Settings {
        platform_policy_enforce: true,
        ..Settings::default()
    };
    let prod = pod("prod", None);

    // Not enforced: the platform policy is not even evaluated.
    let ignored = evaluate_with(&bundle, &Settings::default(), &reference, &img, &prod, &[]);
    assert_eq!(
        (ignored.allowed, ignored.reason),
        (true, Reason::AlwaysAllow)
    );
    assert!(ignored.platform_policy.is_none());

    let denied = evaluate_with(&bundle, &enforce, &reference, &img, &prod, &[]);
    assert_eq!(
        (denied.allowed, denied.reason),
        (false, Reason::PlatformPolicy)
    );
    assert!(denied.enforced);
    let verdict = denied.platform_policy.as_ref().unwrap();
    assert!(verdict.enforced && !verdict.conforms);
    let message = denied.explanation();
    assert!(
        message.starts_with(&format!(
            "image {reference} denied by platform policy check set prod: check release-signed (sigstoreSignatureCheck) failed: no registry signature for {d}"
        )),
        "{message}"
    );
    assert!(message.contains("; project policy: image"), "{message}");

    // The record carries the verdict.
    let ctx = RecordContext {
        operation: Operation::CreateContainer,
        time: time::OffsetDateTime::UNIX_EPOCH,
        pod: None,
        container: None,
        container_id: None,
        action: None,
        cluster: None,
        bundle: None,
    };
    let record: serde_json::Value = serde_json::from_str(&denied.record_json(&ctx)).unwrap();
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], "PLATFORM_POLICY");
    assert_eq!(record["platform_policy"]["check_set"], "prod");
    assert_eq!(record["platform_policy"]["scope"], "namespace:prod");
    assert_eq!(record["platform_policy"]["conforms"], false);
    assert_eq!(record["platform_policy"]["enforced"], true);
    assert_eq!(
        record["platform_policy"]["checks"][0]["kind"],
        "sigstoreSignatureCheck"
    );
    assert_eq!(record["platform_policy"]["checks"][0]["passed"], false);
    assert_eq!(
        record["platform_policy"]["policy"],
        "projects/test/platforms/gke/policies/node"
    );

    // Signed: both allow; the record still carries the verdict.
    let signed = [cosign(signer(), REPO, &d, REPO)];
    let allowed = evaluate_with(&bundle, &enforce, &reference, &img, &prod, &signed);
    assert_eq!(
        (allowed.allowed, allowed.reason),
        (true, Reason::AlwaysAllow)
    );
    assert!(allowed.platform_policy.as_ref().unwrap().conforms);
    let record: serde_json::Value = serde_json::from_str(&allowed.record_json(&ctx)).unwrap();
    assert_eq!(record["platform_policy"]["checks"][0]["passed"], true);

    // An image allowlisted by the project policy still needs the platform's.
    let listed = format!("registry.test:5000/allowlisted/app@{d}");
    let listed_img = ImageRef::parse(&listed).unwrap();
    let d2 = evaluate_with(&bundle, &enforce, &listed, &listed_img, &prod, &[]);
    assert_eq!((d2.allowed, d2.reason), (false, Reason::PlatformPolicy));
    assert!(
        d2.explanation().contains("project policy: image"),
        "{}",
        d2.explanation()
    );

    // Dry run: the project rule in force only audits, platform denials too.
    let platform_dry = platform.replace("kubernetesNamespace: prod", "kubernetesNamespace: dryrun");
    std::fs::write(b.path().join("platform-policy.yaml"), &platform_dry).unwrap();
    let bundle = b.load();
    let dry = evaluate_with(
        &bundle,
        &enforce,
        &reference,
        &img,
        &pod("dryrun", None),
        &[],
    );
    assert_eq!(
        (dry.allowed, dry.reason, dry.overridden, dry.enforced),
        (true, Reason::DryRun, Some(Reason::PlatformPolicy), false)
    );
    assert!(
        dry.explanation()
            .contains("would be denied by platform policy check set prod"),
        "{}",
        dry.explanation()
    );

    // Break-glass allows, and keeps what the platform policy said.
    let mut glass = pod("dryrun", None);
    glass
        .labels
        .insert("image-policy.k8s.io/break-glass".into(), "true".into());
    let broken = evaluate_with(&bundle, &enforce, &reference, &img, &glass, &[]);
    assert_eq!(
        (broken.allowed, broken.reason, broken.overridden),
        (true, Reason::BreakGlass, Some(Reason::PlatformPolicy))
    );
    assert!(broken.platform_policy.is_some());
}

#[test]
fn a_project_denial_stays_the_project_s_and_names_the_platform_s_too() {
    let b = BundleDir::new();
    b.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n");
    std::fs::write(
        b.path().join("platform-policy.yaml"),
        platform_yaml("  - checks:\n    - alwaysDeny: true\n"),
    )
    .unwrap();
    let bundle = b.load();
    let (reference, img) = image(REPO, "x");
    let enforce = Settings {
        platform_policy_enforce: true,
        ..Settings::default()
    };
    let d = evaluate_with(
        &bundle,
        &enforce,
        &reference,
        &img,
        &PodContext::default(),
        &[],
    );
    assert_eq!((d.allowed, d.reason), (false, Reason::AlwaysDeny));
    assert!(
        d.explanation()
            .contains("ALWAYS_DENY; platform policy check set checkSets[0]"),
        "{}",
        d.explanation()
    );
}

#[test]
fn a_bundle_read_through_its_index_keeps_its_platform_policy() {
    let b = BundleDir::new();
    b.policy(ALLOW_ALL);
    std::fs::write(
        b.path().join("platform-policy.yaml"),
        platform_yaml("  - checks:\n    - alwaysDeny: true\n"),
    )
    .unwrap();
    let whole = b.load();
    let index = b.path().join("index.bin");
    std::fs::write(&index, whole.index("stamp")).unwrap();
    let (_, img) = image(REPO, "x");
    let d = img.digest.clone().unwrap();
    let indexed = Bundle::load_indexed(b.path(), &index, "stamp", &[&d]).unwrap();
    assert_eq!(indexed.digest(), whole.digest());
    assert!(!verdict(&indexed, &img, &PodContext::default(), &[]).conforms);
    // The platform policy counts in the bundle's digest.
    let without = BundleDir::new();
    without.policy(ALLOW_ALL);
    assert_ne!(without.load().digest(), whole.digest());
}
