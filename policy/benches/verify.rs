//! One PKIX signature verification per algorithm, without policy evaluation,
//! plus what a key costs before its first verification (parsing, and for
//! ECDSA the per-key table built on first use).
//!
//! `cargo bench -p attestgate-policy --bench verify [-- FILTER]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use attestgate_policy::verify::{KeyKind, PkixKey, SignatureAlgorithm};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rsa::pkcs8::EncodePublicKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
use std::collections::HashMap;
use std::hint::black_box;

const PAYLOAD: &[u8] = br#"{"critical":{"identity":{"docker-reference":"registry.example/team/app"},"image":{"docker-manifest-digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"type":"Google cloud binauthz container signature"}}"#;

/// The DER SPKI of a fresh key for `alg` and a signature by it over PAYLOAD.
fn signed(
    alg: SignatureAlgorithm,
    rsa_keys: &mut HashMap<usize, rsa::RsaPrivateKey>,
) -> (Vec<u8>, Vec<u8>) {
    let rng = &mut rand::thread_rng();
    let pss = alg.is_pss();
    let sha512 = alg.hash().digest_len() == 64;
    match alg.kind() {
        KeyKind::RsaPss { bits } | KeyKind::RsaPkcs1 { bits } => {
            let key = rsa_keys
                .entry(bits)
                .or_insert_with(|| rsa::RsaPrivateKey::new(rng, bits).unwrap())
                .clone();
            let spki = key.to_public_key().to_public_key_der().unwrap().into_vec();
            let sig = match (pss, sha512) {
                (true, false) => rsa::pss::SigningKey::<sha2::Sha256>::new(key)
                    .sign_with_rng(rng, PAYLOAD)
                    .to_vec(),
                (true, true) => rsa::pss::SigningKey::<sha2::Sha512>::new(key)
                    .sign_with_rng(rng, PAYLOAD)
                    .to_vec(),
                (false, false) => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key)
                    .sign(PAYLOAD)
                    .to_vec(),
                (false, true) => rsa::pkcs1v15::SigningKey::<sha2::Sha512>::new(key)
                    .sign(PAYLOAD)
                    .to_vec(),
            };
            (spki, sig)
        }
        KeyKind::Ecdsa(curve) => match curve.name() {
            "P-256" => {
                let key = p256::ecdsa::SigningKey::random(rng);
                let sig: p256::ecdsa::Signature = key.sign(PAYLOAD);
                let spki = key.verifying_key().to_public_key_der().unwrap();
                (spki.into_vec(), sig.to_der().as_bytes().to_vec())
            }
            "P-384" => {
                let key = p384::ecdsa::SigningKey::random(rng);
                let sig: p384::ecdsa::Signature = key.sign(PAYLOAD);
                let spki = key.verifying_key().to_public_key_der().unwrap();
                (spki.into_vec(), sig.to_der().as_bytes().to_vec())
            }
            _ => {
                let key = p521::ecdsa::SigningKey::random(rng);
                let sig: p521::ecdsa::Signature = key.sign(PAYLOAD);
                let public = p521::PublicKey::from_secret_scalar(key.as_nonzero_scalar());
                let spki = public.to_public_key_der().unwrap();
                (spki.into_vec(), sig.to_der().as_bytes().to_vec())
            }
        },
    }
}

fn verify(c: &mut Criterion) {
    let mut rsa_keys = HashMap::new();
    for &alg in SignatureAlgorithm::ALL {
        let (spki, sig) = signed(alg, &mut rsa_keys);
        let key = PkixKey::from_der(&spki, alg).unwrap();
        assert_eq!(key.verify(PAYLOAD, &sig), Ok(()), "{alg}");
        c.bench_function(&format!("verify {alg}"), |b| {
            b.iter(|| black_box(key.verify(black_box(PAYLOAD), black_box(&sig))))
        });
        // Only one size per scheme: loading cost does not depend on the hash.
        if matches!(
            alg,
            SignatureAlgorithm::RsaSignPkcs1_2048Sha256
                | SignatureAlgorithm::RsaSignPkcs1_4096Sha256
                | SignatureAlgorithm::EcdsaP256Sha256
                | SignatureAlgorithm::EcdsaP384Sha384
                | SignatureAlgorithm::EcdsaP521Sha512
        ) {
            c.bench_function(&format!("load and first verify {alg}"), |b| {
                b.iter_batched(
                    || (),
                    |()| {
                        let key = PkixKey::from_der(black_box(&spki), alg).unwrap();
                        black_box(key.verify(PAYLOAD, &sig))
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
}

criterion_group!(benches, verify);
criterion_main!(benches);
