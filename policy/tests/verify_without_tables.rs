//! ECDSA verification without comb tables, the way a short-lived process
//! (the containerd shim) verifies: a process of its own, because the switch
//! is process-wide and one-way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use attestgate_policy::verify::{
    PkixKey, SignatureAlgorithm, comb_tables_built, verify_without_tables,
};
use rand::RngCore as _;
use rsa::pkcs8::EncodePublicKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};

macro_rules! check_curve {
    ($alg:expr, $krate:ident) => {{
        let private = $krate::ecdsa::SigningKey::random(&mut rand::thread_rng());
        let public = $krate::PublicKey::from_secret_scalar(private.as_nonzero_scalar());
        let key = PkixKey::from_der(&public.to_public_key_der().unwrap().into_vec(), $alg).unwrap();
        for _ in 0..20 {
            let mut message = vec![0u8; 64];
            rand::thread_rng().fill_bytes(&mut message);
            let sig: $krate::ecdsa::Signature = private.sign(&message);
            let sig = sig.to_der().to_vec();
            assert!(key.verify(&message, &sig).is_ok(), "{}", $alg);
            let mut tampered = message.clone();
            tampered[7] ^= 0x10;
            assert!(key.verify(&tampered, &sig).is_err(), "{}", $alg);
            let mut bad = sig.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(key.verify(&message, &bad).is_err(), "{}", $alg);
        }
    }};
}

#[test]
fn every_curve_accepts_good_and_refuses_bad_signatures() {
    verify_without_tables();
    check_curve!(SignatureAlgorithm::EcdsaP256Sha256, p256);
    check_curve!(SignatureAlgorithm::EcdsaP384Sha384, p384);
    check_curve!(SignatureAlgorithm::EcdsaP521Sha512, p521);
    assert!(!comb_tables_built(), "a comb table was built all the same");
}
