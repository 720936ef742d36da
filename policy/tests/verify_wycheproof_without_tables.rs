//! Wycheproof's ECDSA verification vectors through `PkixKey` without comb
//! tables, the way a short-lived process (the containerd shim) verifies: a
//! process of its own, because `verify_without_tables` is process-wide and
//! one-way. Every test here calls it before verifying anything. See
//! wycheproof_runner/mod.rs for what is checked; `--nocapture` prints the
//! counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod wycheproof_runner;

use attestgate_policy::verify::{SignatureAlgorithm, comb_tables_built, verify_without_tables};

use self::wycheproof_runner::{OtherParameters, ecdsa_sets, run};

fn check_ecdsa(alg: SignatureAlgorithm) {
    verify_without_tables();
    // Which hash and which encoding a signature must have is decided before
    // the multiplication, the same with or without tables; with the tables,
    // verify_wycheproof.rs checks it on those sets.
    let report = run(
        ecdsa_sets(),
        &[alg],
        OtherParameters::Skip(
            "the hash and DER checks come before, and do not depend on, the \
             multiplication path; verify_wycheproof.rs runs these sets",
        ),
    );
    report.print_and_check(
        &format!("Wycheproof ECDSA as {alg}, no comb tables"),
        &[alg],
    );
    assert!(
        !comb_tables_built(),
        "a comb table was built: the vectors did not all take the table-free path"
    );
}

#[test]
fn ecdsa_p256_wycheproof_valid_vectors_verify_and_invalid_ones_do_not_without_comb_tables() {
    check_ecdsa(SignatureAlgorithm::EcdsaP256Sha256);
}

#[test]
fn ecdsa_p384_wycheproof_valid_vectors_verify_and_invalid_ones_do_not_without_comb_tables() {
    check_ecdsa(SignatureAlgorithm::EcdsaP384Sha384);
}

#[test]
fn ecdsa_p521_wycheproof_valid_vectors_verify_and_invalid_ones_do_not_without_comb_tables() {
    check_ecdsa(SignatureAlgorithm::EcdsaP521Sha512);
}
