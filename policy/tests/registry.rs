//! Registry signatures offered beside the bundle (SPEC §11): which count,
//! for which attestors, under strict repository mode, and what the verdict
//! cache may reuse. Keys and signatures are made by openssl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use attestgate_policy::registry::pae;
use attestgate_policy::{
    Digest, ImageRef, PodContext, Reason, RegistryAttestation, RegistryAttestors,
    RegistrySignature, Settings, evaluate_with,
};
use support::*;

const CI: &str = "projects/test/attestors/ci";

fn cosign_payload(repo: &str, digest: &str) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{repo}\"}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
    )
    .into_bytes()
}

fn offered(signature: RegistrySignature, signed: &str, found_in: &str) -> RegistryAttestation {
    RegistryAttestation {
        signature,
        signed_digest: Digest::parse(signed).unwrap(),
        found_in: found_in.to_string(),
    }
}

#[test]
fn registry_signatures_count_only_where_the_node_lets_them() {
    let dir = tempfile::tempdir().unwrap();
    let k = OpensslKey::generate(dir.path(), "ci", alg("ECDSA_P256_SHA256"));
    let other = OpensslKey::generate(dir.path(), "other", alg("ECDSA_P256_SHA256"));
    let b = BundleDir::new();
    // Two keys: cosign names none, so each is tried.
    b.policy(&require_policy(&[CI])).attestor(
        "ci.yaml",
        &pkix_attestor_yaml(CI, NOTE, &[("a", &other), ("b", &k)]),
    );
    let bundle = b.load();
    let d = digest("img");
    let image = ImageRef::parse(&format!("{REPO}@{d}")).unwrap();
    let reference = format!("{REPO}@{d}");
    let pod = PodContext::default();
    let p = cosign_payload(REPO, &d);
    let good = offered(
        RegistrySignature::Cosign {
            payload: p.clone(),
            signature: k.sign(&p),
        },
        &d,
        REPO,
    );
    let all = Settings {
        registry_attestors: RegistryAttestors::All,
        ..Settings::default()
    };
    let decide = |settings: &Settings, offered: &[RegistryAttestation]| {
        evaluate_with(&bundle, settings, &reference, &image, &pod, offered)
    };

    let allowed = decide(&all, std::slice::from_ref(&good));
    assert_eq!(allowed.reason, Reason::Attested, "{:?}", allowed.attestors);
    assert!(allowed.attestors[0].detail.contains("verified with key b"));
    assert!(allowed.attestors[0].detail.contains(&d));
    // Not for attestors the node does not name, nor with none named.
    let named_other = Settings {
        registry_attestors: RegistryAttestors::from_list(&["projects/test/attestors/qa"]),
        ..Settings::default()
    };
    assert_eq!(
        decide(&named_other, std::slice::from_ref(&good)).reason,
        Reason::MissingAttestations
    );
    assert_eq!(
        decide(&Settings::default(), std::slice::from_ref(&good)).reason,
        Reason::MissingAttestations
    );
    // The verdict cache must not carry the allow to other evidence: the
    // same payload signed by a stranger, or made for another digest.
    let stranger_key = OpensslKey::generate(dir.path(), "stranger", alg("ECDSA_P256_SHA256"));
    let stranger = offered(
        RegistrySignature::Cosign {
            payload: p.clone(),
            signature: stranger_key.sign(&p),
        },
        &d,
        REPO,
    );
    let denied = decide(&all, &[stranger]);
    assert_eq!(denied.reason, Reason::MissingAttestations);
    assert!(
        denied.attestors[0].detail.contains("verify under none"),
        "{}",
        denied.attestors[0].detail
    );
    let other_digest = digest("other");
    let p_other = cosign_payload(REPO, &other_digest);
    let for_other = offered(
        RegistrySignature::Cosign {
            payload: p_other.clone(),
            signature: k.sign(&p_other),
        },
        &d,
        REPO,
    );
    assert_eq!(
        decide(&all, &[for_other]).reason,
        Reason::MissingAttestations
    );
    // Strict repository mode: found beside the image in another
    // repository does not count.
    let mirrored = offered(
        RegistrySignature::Cosign {
            payload: p.clone(),
            signature: k.sign(&p),
        },
        &d,
        "mirror.test/app",
    );
    let strict = Settings {
        strict_repository: true,
        ..all.clone()
    };
    assert_eq!(
        decide(&all, std::slice::from_ref(&mirrored)).reason,
        Reason::Attested
    );
    let refused = decide(&strict, std::slice::from_ref(&mirrored));
    assert_eq!(refused.reason, Reason::MissingAttestations);
    assert!(
        refused.attestors[0]
            .detail
            .contains("strict repository mode")
    );
    assert_eq!(decide(&strict, &[good]).reason, Reason::Attested);

    // A DSSE envelope: PAE-signed in-toto statement naming the digest.
    let hex = d.trim_start_matches("sha256:");
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#
    )
    .into_bytes();
    let envelope = |payload_type: &str, signed_type: &str| {
        offered(
            RegistrySignature::Dsse {
                payload_type: payload_type.into(),
                payload: statement.clone(),
                signatures: vec![vec![0; 70], k.sign(&pae(signed_type, &statement))],
            },
            &d,
            REPO,
        )
    };
    let in_toto = "application/vnd.in-toto+json";
    assert_eq!(
        decide(&all, &[envelope(in_toto, in_toto)]).reason,
        Reason::Attested
    );
    assert_eq!(
        decide(&all, &[envelope("application/json", "application/json")]).reason,
        Reason::MissingAttestations
    );
    // Signed over the payload alone, not its PAE: no.
    let bare = offered(
        RegistrySignature::Dsse {
            payload_type: in_toto.into(),
            payload: statement.clone(),
            signatures: vec![k.sign(&statement)],
        },
        &d,
        REPO,
    );
    assert_eq!(decide(&all, &[bare]).reason, Reason::MissingAttestations);
}
