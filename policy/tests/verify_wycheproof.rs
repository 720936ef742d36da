//! Wycheproof's RSA PKCS#1 v1.5, RSA-PSS and ECDSA verification vectors
//! through `PkixKey`, with the comb tables ECDSA verification normally uses;
//! verify_wycheproof_without_tables.rs runs the ECDSA vectors again without
//! them. What is checked, and how acceptable vectors are judged, is in
//! wycheproof_runner/mod.rs; `--nocapture` prints the counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod wycheproof_runner;

use attestgate_policy::verify::{SignatureAlgorithm, comb_tables_built};

use self::wycheproof_runner::{OtherParameters, ecdsa_sets, rsa_pkcs1_sets, rsa_pss_sets, run};

/// Every RSA algorithm, both schemes: each scheme's vectors also go through
/// the other scheme's algorithms, which must reject its valid signatures.
fn rsa_algorithms() -> Vec<SignatureAlgorithm> {
    SignatureAlgorithm::ALL
        .iter()
        .copied()
        .filter(|a| a.is_rsa())
        .collect()
}

fn rsa_scheme(pss: bool) -> Vec<SignatureAlgorithm> {
    rsa_algorithms()
        .into_iter()
        .filter(|a| a.is_pss() == pss)
        .collect()
}

#[test]
fn rsa_pkcs1_wycheproof_valid_vectors_verify_and_invalid_and_missing_null_ones_do_not() {
    let report = run(rsa_pkcs1_sets(), &rsa_algorithms(), OtherParameters::Reject);
    report.print_and_check("Wycheproof RSASSA-PKCS1-v1_5", &rsa_scheme(false));
}

#[test]
fn rsa_pss_wycheproof_valid_vectors_verify_and_invalid_ones_do_not() {
    let report = run(rsa_pss_sets(), &rsa_algorithms(), OtherParameters::Reject);
    report.print_and_check("Wycheproof RSASSA-PSS", &rsa_scheme(true));
}

/// Every ECDSA set under one curve's algorithm (one test per curve, so that
/// they run in parallel).
fn check_ecdsa(alg: SignatureAlgorithm) {
    let report = run(ecdsa_sets(), &[alg], OtherParameters::Reject);
    report.print_and_check(&format!("Wycheproof ECDSA as {alg}, comb tables"), &[alg]);
    assert!(
        comb_tables_built(),
        "the ECDSA vectors did not go through the comb tables"
    );
}

#[test]
fn ecdsa_p256_wycheproof_valid_vectors_verify_and_invalid_ones_do_not_with_comb_tables() {
    check_ecdsa(SignatureAlgorithm::EcdsaP256Sha256);
}

#[test]
fn ecdsa_p384_wycheproof_valid_vectors_verify_and_invalid_ones_do_not_with_comb_tables() {
    check_ecdsa(SignatureAlgorithm::EcdsaP384Sha384);
}

#[test]
fn ecdsa_p521_wycheproof_valid_vectors_verify_and_invalid_ones_do_not_with_comb_tables() {
    check_ecdsa(SignatureAlgorithm::EcdsaP521Sha512);
}
