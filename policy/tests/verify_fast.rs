//! `PkixKey::verify` against the RustCrypto verifiers it replaced.
//!
//! Verification no longer goes through the rsa and ecdsa crates (see
//! policy/src/verify/rsa_fast.rs and ecdsa_fast.rs); here those crates are
//! the oracle. On valid signatures, tampered messages and signatures,
//! out-of-range integers, wrong hashes, salts, schemes and lengths, both must
//! give the same outcome: valid, malformed (ECDSA DER, r or s out of range) or
//! bad.
//!
//! Keys, messages and signatures are made in-process from one seed, which
//! every test prints with the case count: `ATTESTGATE_VERIFY_SEED=<u64>`
//! replays a run (a fresh seed otherwise), `ATTESTGATE_VERIFY_CASES=<n>`
//! sets the number of random messages per algorithm (default
//! `DEFAULT_CASES`; use a release build for large n). Each test draws from
//! its own generator, derived from the seed and the test's name, so that a
//! test replays the same whichever others run with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use attestgate_policy::verify::{
    Curve, HashAlgorithm, KeyKind, PkixKey, SignatureAlgorithm, VerifyError,
};
use p256::elliptic_curve::bigint::ArrayEncoding as _;
use p256::elliptic_curve::ff::{Field as _, PrimeField as _};
use p256::elliptic_curve::point::DecompressPoint as _;
use p256::elliptic_curve::subtle::Choice;
use p256::elliptic_curve::{Curve as _, Group as _};
use rand::rngs::StdRng;
use rand::{Rng as _, RngCore as _, SeedableRng as _};
use rsa::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use rsa::signature::hazmat::PrehashSigner as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _, Verifier as _};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

fn rsa_algorithms() -> impl Iterator<Item = SignatureAlgorithm> {
    SignatureAlgorithm::ALL
        .iter()
        .copied()
        .filter(|a| a.is_rsa())
}

fn ec_algorithms() -> impl Iterator<Item = SignatureAlgorithm> {
    SignatureAlgorithm::ALL
        .iter()
        .copied()
        .filter(|a| !a.is_rsa())
}

/// Random messages per algorithm unless `ATTESTGATE_VERIFY_CASES` says
/// otherwise: spread over three RSA keys of 2048 bits, one of 3072 and two
/// of 4096, and over a fresh ECDSA key every `MESSAGES_PER_EC_KEY`.
const DEFAULT_CASES: usize = 16;
const MESSAGES_PER_EC_KEY: usize = 3;

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={value:?} is not a u64: {e}")))
}

fn cases() -> usize {
    env_number("ATTESTGATE_VERIFY_CASES").map_or(DEFAULT_CASES, |n| n as usize)
}

/// The run's seed: `ATTESTGATE_VERIFY_SEED`, or a fresh one.
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| env_number("ATTESTGATE_VERIFY_SEED").unwrap_or_else(rand::random))
}

/// A generator derived from the run's seed and `label`.
fn rng_for(label: &str) -> StdRng {
    let digest = Sha256::new()
        .chain_update(seed().to_be_bytes())
        .chain_update(label.as_bytes())
        .finalize();
    StdRng::from_seed(digest.into())
}

/// Prints what replays the test `name` (its keys, messages and signatures),
/// which the harness shows when the test fails, and with `--nocapture`.
fn announce(name: &str) {
    println!(
        "{name}: ATTESTGATE_VERIFY_SEED={} ATTESTGATE_VERIFY_CASES={}",
        seed(),
        cases()
    );
}

/// The generator of the test `name`, announced.
fn test_rng(name: &str) -> StdRng {
    announce(name);
    rng_for(name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Valid,
    Malformed,
    Bad,
}

fn outcome(result: Result<(), VerifyError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Valid,
        Err(VerifyError::Malformed(_)) => Outcome::Malformed,
        Err(_) => Outcome::Bad,
    }
}

/// What the RustCrypto crates say, with the error mapping `PkixKey::verify`
/// had when it called them.
fn oracle(spki: &[u8], alg: SignatureAlgorithm, payload: &[u8], sig: &[u8]) -> Outcome {
    fn bad(result: Result<(), rsa::signature::Error>) -> Outcome {
        if result.is_ok() {
            Outcome::Valid
        } else {
            Outcome::Bad
        }
    }
    match alg.kind() {
        KeyKind::RsaPkcs1 { .. } | KeyKind::RsaPss { .. } => {
            let key = rsa::RsaPublicKey::from_public_key_der(spki).unwrap();
            let sha512 = alg.hash() == HashAlgorithm::Sha512;
            if alg.is_pss() {
                let Ok(sig) = rsa::pss::Signature::try_from(sig) else {
                    return Outcome::Malformed;
                };
                if sha512 {
                    bad(rsa::pss::VerifyingKey::<Sha512>::new(key).verify(payload, &sig))
                } else {
                    bad(rsa::pss::VerifyingKey::<Sha256>::new(key).verify(payload, &sig))
                }
            } else {
                let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
                    return Outcome::Malformed;
                };
                if sha512 {
                    bad(rsa::pkcs1v15::VerifyingKey::<Sha512>::new(key).verify(payload, &sig))
                } else {
                    bad(rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key).verify(payload, &sig))
                }
            }
        }
        KeyKind::Ecdsa(Curve::P256) => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
            match p256::ecdsa::Signature::from_der(sig) {
                Ok(sig) => bad(key.verify(payload, &sig)),
                Err(_) => Outcome::Malformed,
            }
        }
        KeyKind::Ecdsa(Curve::P384) => {
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
            match p384::ecdsa::Signature::from_der(sig) {
                Ok(sig) => bad(key.verify(payload, &sig)),
                Err(_) => Outcome::Malformed,
            }
        }
        KeyKind::Ecdsa(Curve::P521) => {
            let public = p521::PublicKey::from_public_key_der(spki).unwrap();
            let key = p521::ecdsa::VerifyingKey::from_affine(*public.as_affine()).unwrap();
            match p521::ecdsa::Signature::from_der(sig) {
                Ok(sig) => bad(key.verify(payload, &sig)),
                Err(_) => Outcome::Malformed,
            }
        }
    }
}

/// Asserts that `PkixKey::verify` and the oracle agree; returns the outcome.
fn agree(key: &PkixKey, payload: &[u8], sig: &[u8], what: &str) -> Outcome {
    let fast = outcome(key.verify(payload, sig));
    let expected = oracle(key.spki_der(), key.algorithm(), payload, sig);
    assert_eq!(fast, expected, "{} {what}", key.algorithm());
    fast
}

fn random_message(rng: &mut StdRng) -> Vec<u8> {
    let mut message = vec![0u8; rng.gen_range(0..300)];
    rng.fill_bytes(&mut message);
    message
}

fn flip_random_bit(rng: &mut StdRng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        out.push(1);
    } else {
        let i = rng.gen_range(0..out.len() * 8);
        out[i / 8] ^= 1 << (i % 8);
    }
    out
}

// ---------------------------------------------------------------------------
// RSA

/// RSA private keys by size, made once per run from the seed (each key
/// from its own generator, so in parallel and whichever test asks first).
fn rsa_keys(bits: usize) -> &'static [rsa::RsaPrivateKey] {
    static KEYS: OnceLock<Vec<(usize, Vec<rsa::RsaPrivateKey>)>> = OnceLock::new();
    let all = KEYS.get_or_init(|| {
        let generate = |bits: usize, i: usize| {
            let mut rng = rng_for(&format!("RSA-{bits} key {i}"));
            rsa::RsaPrivateKey::new(&mut rng, bits).unwrap()
        };
        std::thread::scope(|s| {
            let jobs: Vec<_> = [(2048, 3), (3072, 1), (4096, 2)]
                .into_iter()
                .map(|(bits, count)| {
                    (
                        bits,
                        (0..count)
                            .map(|i| s.spawn(move || generate(bits, i)))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            jobs.into_iter()
                .map(|(bits, handles)| {
                    (
                        bits,
                        handles.into_iter().map(|h| h.join().unwrap()).collect(),
                    )
                })
                .collect()
        })
    });
    all.iter()
        .find(|(b, _)| *b == bits)
        .map(|(_, keys)| keys.as_slice())
        .unwrap()
}

fn rsa_spki(key: &rsa::RsaPrivateKey) -> Vec<u8> {
    key.to_public_key().to_public_key_der().unwrap().into_vec()
}

/// Signs `message` as `alg` prescribes, PSS with a salt of `salt_len` bytes.
fn rsa_sign_with_salt(
    rng: &mut StdRng,
    alg: SignatureAlgorithm,
    hash: HashAlgorithm,
    key: &rsa::RsaPrivateKey,
    message: &[u8],
    salt_len: usize,
) -> Vec<u8> {
    let key = key.clone();
    match (alg.is_pss(), hash) {
        (true, HashAlgorithm::Sha512) => {
            rsa::pss::SigningKey::<Sha512>::new_with_salt_len(key, salt_len)
                .sign_with_rng(rng, message)
                .to_vec()
        }
        (true, HashAlgorithm::Sha384) => {
            rsa::pss::SigningKey::<Sha384>::new_with_salt_len(key, salt_len)
                .sign_with_rng(rng, message)
                .to_vec()
        }
        (true, HashAlgorithm::Sha256) => {
            rsa::pss::SigningKey::<Sha256>::new_with_salt_len(key, salt_len)
                .sign_with_rng(rng, message)
                .to_vec()
        }
        (false, HashAlgorithm::Sha512) => rsa::pkcs1v15::SigningKey::<Sha512>::new(key)
            .sign(message)
            .to_vec(),
        (false, HashAlgorithm::Sha384) => rsa::pkcs1v15::SigningKey::<Sha384>::new(key)
            .sign(message)
            .to_vec(),
        (false, HashAlgorithm::Sha256) => rsa::pkcs1v15::SigningKey::<Sha256>::new(key)
            .sign(message)
            .to_vec(),
    }
}

fn rsa_sign(
    rng: &mut StdRng,
    alg: SignatureAlgorithm,
    key: &rsa::RsaPrivateKey,
    message: &[u8],
) -> Vec<u8> {
    rsa_sign_with_salt(rng, alg, alg.hash(), key, message, alg.hash().digest_len())
}

#[test]
fn rsa_random_keys_and_messages_agree_with_the_rsa_crate() {
    let rng = &mut test_rng("rsa_random_keys_and_messages_agree_with_the_rsa_crate");
    let mut checked = 0;
    for alg in rsa_algorithms() {
        let keys: Vec<(&rsa::RsaPrivateKey, PkixKey)> = rsa_keys(alg.rsa_bits().unwrap())
            .iter()
            .map(|private| (private, PkixKey::from_der(&rsa_spki(private), alg).unwrap()))
            .collect();
        for case in 0..cases() {
            let (private, key) = &keys[case % keys.len()];
            let message = random_message(rng);
            let sig = rsa_sign(rng, alg, private, &message);
            assert_eq!(agree(key, &message, &sig, "valid"), Outcome::Valid);
            let tampered = flip_random_bit(rng, &message);
            assert_eq!(
                agree(key, &tampered, &sig, "tampered message"),
                Outcome::Bad
            );
            for _ in 0..3 {
                let tampered = flip_random_bit(rng, &sig);
                assert_eq!(
                    agree(key, &message, &tampered, "tampered sig"),
                    Outcome::Bad
                );
            }
            let mut longer = sig.clone();
            longer.push(0);
            agree(key, &message, &longer, "trailing byte");
            agree(key, &message, &[&[0], &sig[..]].concat(), "leading 00");
            agree(key, &message, &sig[1..], "first byte dropped");
            agree(key, &message, &sig[..sig.len() - 1], "last byte dropped");
            agree(key, &message, &[], "empty");
            checked += 1;
        }
    }
    println!("{checked} random RSA messages, 10 signatures each, agree with the rsa crate");
    assert_eq!(checked, cases() * rsa_algorithms().count());
}

#[test]
fn rsa_every_signature_byte_flipped_agrees() {
    let rng = &mut test_rng("rsa_every_signature_byte_flipped_agrees");
    for alg in [
        SignatureAlgorithm::RsaSignPkcs1_2048Sha256,
        SignatureAlgorithm::RsaPss2048Sha256,
        SignatureAlgorithm::RsaPss4096Sha512,
    ] {
        let private = &rsa_keys(alg.rsa_bits().unwrap())[0];
        let key = PkixKey::from_der(&rsa_spki(private), alg).unwrap();
        let message = random_message(rng);
        let sig = rsa_sign(rng, alg, private, &message);
        assert_eq!(agree(&key, &message, &sig, "valid"), Outcome::Valid);
        for i in 0..sig.len() {
            let mut flipped = sig.clone();
            flipped[i] ^= rng.gen_range(1..=255u8);
            assert_eq!(
                agree(&key, &message, &flipped, &format!("byte {i} flipped")),
                Outcome::Bad
            );
        }
    }
}

#[test]
fn rsa_signature_integer_at_or_above_the_modulus_agrees() {
    announce("rsa_signature_integer_at_or_above_the_modulus_agrees");
    for alg in [
        SignatureAlgorithm::RsaSignPkcs1_2048Sha256,
        SignatureAlgorithm::RsaPss2048Sha256,
        SignatureAlgorithm::RsaPss3072Sha256,
        SignatureAlgorithm::RsaSignPkcs1_4096Sha512,
    ] {
        use rsa::traits::PublicKeyParts as _;
        let private = &rsa_keys(alg.rsa_bits().unwrap())[0];
        let key = PkixKey::from_der(&rsa_spki(private), alg).unwrap();
        let n = private.n().to_bytes_be();
        let k = n.len();
        let plus = |d: u8| add_small(&n, d);
        let minus_one = sub_one(&n);
        let mut one = vec![0u8; k];
        one[k - 1] = 1;
        for (what, sig) in [
            ("s = n", n.clone()),
            ("s = n + 1", plus(1)),
            ("s = n + 2", plus(2)),
            ("s = 2^bits - 1", vec![0xff; k]),
            ("s = n - 1", minus_one),
            ("s = 0", vec![0; k]),
            ("s = 1", one),
        ] {
            assert_eq!(agree(&key, b"payload", &sig, what), Outcome::Bad);
        }
    }
}

#[test]
fn rsa_wrong_hash_scheme_or_salt_agrees() {
    let rng = &mut test_rng("rsa_wrong_hash_scheme_or_salt_agrees");
    let private = &rsa_keys(4096)[0];
    let message = b"the payload";
    let load = |alg| PkixKey::from_der(&rsa_spki(private), alg).unwrap();
    // A hash other than the algorithm's, in both schemes.
    for (alg, other) in [
        (SignatureAlgorithm::RsaPss4096Sha256, HashAlgorithm::Sha512),
        (SignatureAlgorithm::RsaPss4096Sha512, HashAlgorithm::Sha256),
        (SignatureAlgorithm::RsaPss4096Sha256, HashAlgorithm::Sha384),
        (
            SignatureAlgorithm::RsaSignPkcs1_4096Sha256,
            HashAlgorithm::Sha512,
        ),
        (
            SignatureAlgorithm::RsaSignPkcs1_4096Sha512,
            HashAlgorithm::Sha256,
        ),
        (
            SignatureAlgorithm::RsaSignPkcs1_4096Sha512,
            HashAlgorithm::Sha384,
        ),
    ] {
        let sig = rsa_sign_with_salt(rng, alg, other, private, message, other.digest_len());
        assert_eq!(agree(&load(alg), message, &sig, "other hash"), Outcome::Bad);
        // Salt of the algorithm's digest length but the wrong hash.
        let sig = rsa_sign_with_salt(rng, alg, other, private, message, alg.hash().digest_len());
        assert_eq!(agree(&load(alg), message, &sig, "other hash"), Outcome::Bad);
    }
    // Each scheme's signature under the other scheme.
    for (signed_as, verified_as) in [
        (
            SignatureAlgorithm::RsaPss4096Sha256,
            SignatureAlgorithm::RsaSignPkcs1_4096Sha256,
        ),
        (
            SignatureAlgorithm::RsaSignPkcs1_4096Sha256,
            SignatureAlgorithm::RsaPss4096Sha256,
        ),
    ] {
        let sig = rsa_sign(rng, signed_as, private, message);
        assert_eq!(
            agree(&load(verified_as), message, &sig, "other scheme"),
            Outcome::Bad
        );
    }
    // PSS salts other than the digest length; the longest that fits is
    // emLen - hLen - 2.
    let private = &rsa_keys(2048)[0];
    let alg = SignatureAlgorithm::RsaPss2048Sha256;
    let key = PkixKey::from_der(&rsa_spki(private), alg).unwrap();
    for salt_len in [0, 1, 20, 31, 32, 33, 48, 64, 256 - 32 - 2] {
        let sig = rsa_sign_with_salt(rng, alg, HashAlgorithm::Sha256, private, message, salt_len);
        let expected = if salt_len == 32 {
            Outcome::Valid
        } else {
            Outcome::Bad
        };
        assert_eq!(
            agree(&key, message, &sig, &format!("salt {salt_len}")),
            expected
        );
    }
}

/// The signature whose RSA public operation gives exactly `em` (which must
/// be below n): em^d mod n, as long as the modulus.
fn raw_sign(private: &rsa::RsaPrivateKey, em: &[u8]) -> Vec<u8> {
    use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
    let s = rsa::BigUint::from_bytes_be(em).modpow(private.d(), private.n());
    let s = s.to_bytes_be();
    [vec![0; private.size() - s.len()], s].concat()
}

fn mgf1_sha256(seed: &[u8], len: usize) -> Vec<u8> {
    (0u32..)
        .flat_map(|counter| {
            Sha256::new()
                .chain_update(seed)
                .chain_update(counter.to_be_bytes())
                .finalize()
        })
        .take(len)
        .collect()
}

#[test]
fn rsa_crafted_pkcs1_encodings_agree() {
    announce("rsa_crafted_pkcs1_encodings_agree");
    let private = &rsa_keys(2048)[0];
    let alg = SignatureAlgorithm::RsaSignPkcs1_2048Sha256;
    let key = PkixKey::from_der(&rsa_spki(private), alg).unwrap();
    let message = b"payload";
    let hash = Sha256::digest(message).to_vec();
    let sha256_info = hex::decode("3031300d060960864801650304020105000420").unwrap();
    let encode = |block: &[u8], info: &[u8], hash: &[u8]| {
        let t = [info, hash].concat();
        let mut em = block.to_vec();
        em.resize(256 - t.len() - 1, 0xff);
        em.push(0);
        em.extend(t);
        em
    };
    let valid = encode(&[0, 1], &sha256_info, &hash);
    assert_eq!(
        agree(&key, message, &raw_sign(private, &valid), "as rsa encodes"),
        Outcome::Valid
    );
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("block type 2", encode(&[0, 2], &sha256_info, &hash)),
        // DigestInfo with the NULL parameters left out (RFC 8017 allows
        // reading either; the rsa crate and we accept only the DER form).
        (
            "no NULL",
            encode(
                &[0, 1],
                &hex::decode("302f300b0609608648016503040201").unwrap(),
                &hash,
            ),
        ),
        (
            "SHA-512 OID",
            encode(
                &[0, 1],
                &hex::decode("3031300d060960864801650304020305000420").unwrap(),
                &hash,
            ),
        ),
        (
            "other hash",
            encode(&[0, 1], &sha256_info, &Sha256::digest(b"other")),
        ),
        (
            "hash truncated",
            encode(&[0, 1], &sha256_info[..], &hash[..31]),
        ),
        (
            "hash and garbage",
            encode(&[0, 1], &sha256_info, &[&hash[..], &[0]].concat()),
        ),
    ];
    let mut ps_not_ff = valid.clone();
    ps_not_ff[100] = 0xfe;
    cases.push(("PS byte not FF", ps_not_ff));
    let mut no_separator = valid.clone();
    no_separator[256 - 51 - 1] = 0xff;
    cases.push(("no 00 separator", no_separator));
    let mut early_separator = valid.clone();
    early_separator[5] = 0;
    cases.push(("00 inside PS", early_separator));
    for (what, em) in cases {
        assert_eq!(em.len(), 256, "{what}");
        assert_eq!(
            agree(&key, message, &raw_sign(private, &em), what),
            Outcome::Bad
        );
    }
}

#[test]
fn rsa_crafted_pss_encodings_agree() {
    announce("rsa_crafted_pss_encodings_agree");
    use rsa::traits::PublicKeyParts as _;
    let private = &rsa_keys(2048)[0];
    let alg = SignatureAlgorithm::RsaPss2048Sha256;
    let key = PkixKey::from_der(&rsa_spki(private), alg).unwrap();
    let n = private.n().to_bytes_be();
    let message = b"payload";
    let m_hash = Sha256::digest(message);
    // EMSA-PSS-ENCODE (RFC 8017 §9.1.1) for a 2048-bit key: emBits 2047,
    // emLen 256, sLen = hLen = 32, with a hook to spoil the DB or EM.
    let encode = |salt: &[u8], spoil_db: &dyn Fn(&mut Vec<u8>), spoil_em: &dyn Fn(&mut Vec<u8>)| {
        let h = Sha256::new()
            .chain_update([0u8; 8])
            .chain_update(m_hash)
            .chain_update(salt)
            .finalize();
        let mut db = vec![0u8; 256 - salt.len() - 32 - 2];
        db.push(1);
        db.extend_from_slice(salt);
        spoil_db(&mut db);
        let mut em: Vec<u8> = db
            .iter()
            .zip(mgf1_sha256(&h, db.len()))
            .map(|(d, m)| d ^ m)
            .collect();
        em[0] &= 0x7f;
        em.extend_from_slice(&h);
        em.push(0xbc);
        spoil_em(&mut em);
        em
    };
    let keep = |_: &mut Vec<u8>| {};
    let salt = [0x5a; 32];
    let valid = encode(&salt, &keep, &keep);
    assert_eq!(
        agree(
            &key,
            message,
            &raw_sign(private, &valid),
            "as RFC 8017 encodes"
        ),
        Outcome::Valid
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "trailer bd",
            encode(&salt, &keep, &|em| *em.last_mut().unwrap() = 0xbd),
        ),
        (
            "separator 02",
            encode(&salt, &|db| db[256 - 32 - 32 - 2] = 2, &keep),
        ),
        (
            "no separator",
            encode(&salt, &|db| db[256 - 32 - 32 - 2] = 0, &keep),
        ),
        ("PS byte set", encode(&salt, &|db| db[7] = 1, &keep)),
        ("H spoiled", encode(&salt, &keep, &|em| em[256 - 2] ^= 1)),
        ("salt 31", encode(&salt[..31], &keep, &keep)),
        ("salt 33", encode(&[0x5a; 33], &keep, &keep)),
    ];
    for (what, em) in cases {
        assert_eq!(em.len(), 256, "{what}");
        assert_eq!(
            agree(&key, message, &raw_sign(private, &em), what),
            Outcome::Bad
        );
    }
    // The bit above emBits set, everything else valid (step 9 clears it
    // before the salt and hash are checked, so only step 6 rejects). EM
    // must stay below n to be signable; the salt decides the rest of the
    // first byte.
    let top_bit = (0u8..=255)
        .map(|i| encode(&[i; 32], &keep, &|em| em[0] |= 0x80))
        .find(|em| em.as_slice() < n.as_slice())
        .unwrap();
    assert_eq!(
        agree(&key, message, &raw_sign(private, &top_bit), "top bit"),
        Outcome::Bad
    );
}

/// RSA signatures whose integer starts with zero bytes (one in 256 does;
/// the RSA-2048 PKCS#1 one starts with two), found once by signing numbered
/// messages with the rsa crate. A signature keeps its leading zeros: it is
/// exactly as long as the modulus.
const LEADING_ZERO_KEY_2048: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuR/ThbqIitVBeM/Wytau
X/XmFYdDPUp1OJ3FzFZxJ0O0+XWJCyNdx5B6O3ug18PmZjnFM1FYJfjFLTpM7gry
JT6nwIUkWeRwIgrTgV9PSXv58CMhHPMLM7Ze3QRlM0k/p6mL3V1TukoRIZiuYYVp
rtW3dn62g1X9dCSx0uJ3uxeCJhO8gv4ruFNEAfZRVRFWjXNr1z5dS/K6lngd8Wyx
yATNAlMLybePvYSe26IhE37skcNfytKGe3/I3YunEbPJpcnW5JN/lISP98/Ueog0
QivkzK5ZYHr+SbIBtVTxikzcgYRweLuuKaF1ve4BEi7NJZv02wYsvH6npmxreQgU
8QIDAQAB
-----END PUBLIC KEY-----
";
const LEADING_ZERO_KEY_4096: &str = "\
-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA5ogFxlPb+3oGubOUsek1
24b51l3u/TUALfmV//R3UL/tuGOSNcWIoDa4oSf+lffITiNgyd7JqpXJdTr91SBX
S+WgXtGqySb4KL8tnpui97H85mLtCeJ4GPjy8j1gptav4xcUuu/xI5Idnk5CTW1P
sBpWYaYq5S9apLoiJfeWma8gowhESyOKsk5zX5lgrhbqRnxdbiKE8yxa9iHcMOdF
cCzLd5Usl36i02rfMTRj7jhIg80NNYMCUZwY4yHo3TFUCZJPxkeoifSJsprisNVJ
bj6JPHM8k099Zm2PCv01hGDJkYNSkZjVqe55mAaKdEFZwAlfmWcf6rge0phmuWkv
tPeUd93vW8xpuy2a07Q75f+xrjYV912WaaMEQ9eQZXZeI3Jn35bv9m7xxwRJabuU
gqPrcNYYz0ud4Qei+4wlgcPd+xn09x+sEVcp4YRBO9n+WrXY2YZCBFjJN4Tjeup5
1vpXRCXxjD0n+pQzeH9lU30v2hX0RFaODVRnrdxQydIN++vaND5Qf1l6z2RKlmZO
OWxkLUgwhE1oBAvZh10rEBvZmTIOuVntdIM6QX3JBjWj7l3mI71uaF55Q1ZbM/as
uILg8JIc/P//VX2mMsrC5FNRzgqUJaivYkCL5SvLY8EcrxTmYClT3d6xMpmFUUri
W3128S5C0KACauAYtl9AB4cCAwEAAQ==
-----END PUBLIC KEY-----
";
const LEADING_ZERO_SIGNATURES: &[(usize, SignatureAlgorithm, &str, &str)] = &[
    (
        2048,
        SignatureAlgorithm::RsaSignPkcs1_2048Sha256,
        "leading zeros 60111",
        concat!(
            "0000aa80e4b071139f4f2e9a7c3496342683e5cf7e5ed364cc238c5e7bf91641",
            "5223437041186581e7fac8079996783a00b8639ee4cec1864c348039bcd67289",
            "a775dfb11f58b34ce181eefbda07e42c69335cafc947d1083f5ac98a0156449c",
            "11fb3dfe8845626b8b34a2001140966c991dad4f362cfa846a03cf330d773342",
            "8b6015190d385b002b0fd490be2b080925ce37c3b9367a3d5fe0ce803cbd28cc",
            "47f9c2552e3b03f063bcd3700da10936a3b0e3de0c2989884124f64048391177",
            "c352a8005ef2d9a450e9ef798b1fa9ba6221050248145024d836899c9597f6bb",
            "8751b95e9d88184980a51fd6192d1d8ca2abfea29514457e5710fd1d91d25e9c",
        ),
    ),
    (
        2048,
        SignatureAlgorithm::RsaPss2048Sha256,
        "leading zeros 134",
        concat!(
            "001d7cee74c82f77f82d5cebc5109c2f84160e8c16b611a98983ef36011247d1",
            "4ce62fca1e8144be1df98d820b90a7c8853228d5f2c2446bfeb3eaed52d40f9c",
            "5dc5915e0985ba44a9f7d1c3b5ff32301423de33ac6ebaeb07075e2005a28d00",
            "6b0aea2449e66546303e7c9a235729356a9aff39e4585dd014c0e4319a7acafc",
            "b86cafd4e28acdda6a78b3dd127f781ab2e572e62b52cb23f5390052e7be26b7",
            "ccc1fa2791886f1cb9e8fb230e9e88fb60a3b0ee443878d5a18c6e591ed3ab58",
            "c1257f4154e051d05d4b7d30b612b7df025e59db9e638510dbac40ac02b5b375",
            "59eb3b1aafd6f7b18f45b0ed1c787bdf2d28f150ab4c16fffba2d956b670e4de",
        ),
    ),
    (
        4096,
        SignatureAlgorithm::RsaSignPkcs1_4096Sha256,
        "leading zeros 440",
        concat!(
            "00d5eb37f2acc6c65591288c0ad1a264ba8e9a27feef7b0446b865846900e014",
            "f194ac298dcf6c39efd9379f5bcc8d3cc6e4ccb8fbeafee09637ec0bd2aac2ae",
            "ac54d3eb2d6fb13f6059f7bffc57f29e788758fba074f4e97eb579f8c7ed0e4f",
            "4bdd334fe33828bdf7101ecccf3c62eaf9145c5b9d7f244c6fce858985e2f271",
            "aeaa588fb90845967f40659a8f34db73c079d1d1cc9b65efdd422439be9e187d",
            "484a9c2128f6fc0c4bb5ef9d55545beb66af1e2627e32a6bfca15c423fca8c56",
            "aa69f9d56b5b6c5776fef1cb66deb5bfdb0f475bda97ff8cca1bcd9670d7fd65",
            "96daa8bbee5b8c5b11af8be1d8caaae852a2e36844c66eeca8d2ed1e2e380847",
            "2c35a1c8a7011afb44b38f7bfcaa67313dc79d3188dbd03720ed9e755bdc0531",
            "06988c9303f220407c38cf947f589c9221a814348d1c93fca1dbb5e199c59693",
            "e6f59d4234ef4187ba4922d33fcc60103e0cefbb3bc0101089d61ef3c2410f1a",
            "774fbcc5a68f8efcdd146d97bd40c374c247962d9c3cde4a0bc29c2ee2423ff3",
            "401ee3690836bc91770d69320c059826a0fdc44365b987de38873850105c9805",
            "7293f0eac03217640e2b2e2029e06c49f57ec07be1373058ade43e5e3f623d1f",
            "f53fdbc0ff24f23f7b8ca7385e49c334ecc38d93bd18dd9a98c9c223e5adcd8e",
            "ebeb3d9fe4454c9e150ac796e03a76200d7be378e7f03dda091f7656a235e635",
        ),
    ),
    (
        4096,
        SignatureAlgorithm::RsaSignPkcs1_4096Sha512,
        "leading zeros 174",
        concat!(
            "00a82a1965f26d5a1266fabc17469e4711bda7a07617a7c93ebb73e7af5935e3",
            "6337d69a970682a382470712ba3c37e27643567e1b4d6386ce7784cff21ed4fe",
            "213ef3dec86ef476a4bd3b0e56be80dd924e452d6e3868e2c40e2e7de2a6a90b",
            "fd369470296d6390e5a0a40eddc12095a52a08f4baae28b39c5798771effe1ff",
            "eec41d23202108770344d6721d010a7dd7aeafe4f9e979e98d0e666b2cec8f17",
            "34d9c1dfbea3f0a911086ead4f4558a5572249d128cbf0bdf7d64dd130ce9e22",
            "c541b27c2088775c4fa5c4c2da2ad7d2eeedf2fabb539ceb279bf66c1ddb5435",
            "958ba90e7df79410e095b35518346b7b687be765d99b9ba8c807f6ba4536abfb",
            "90a64c17d96163d5456d7731db360e8044a36ee05e60f31c6de8b28704b7b2d2",
            "f18d95dafb677300118d7a3ef9d5e06bd1e950ad50a2eefc8cbdc061d456e5c1",
            "ed393c1e947027950fa92e95b731923749cbad91f0bfe064ba67b49181cba84e",
            "2a9c7b216f0e3f822170ddba63663276decc779e0215d8c180ce68db3b5da562",
            "9c19a9c42379e2c6db96691dbc005742eb5228c9df8282073107d0f7925de095",
            "72bd8c6ccef4c04d71a2cc926dfe7d2f2e251601b097ecd6a24c5bd9770895f7",
            "c59bc6973eb86de2a227816b804a6754146ca7840f3d5850e772bd4534211dd7",
            "1382494f5853e94ffd04e9aea45c29d7c9e1142d5cf809241715799b63442aed",
        ),
    ),
    (
        4096,
        SignatureAlgorithm::RsaPss4096Sha256,
        "leading zeros 175",
        concat!(
            "0062790b67b944dbb2fbfd2dfd53a78c0dc9b7710e53523cdd6f282848a3fcf6",
            "129e63bc1395017d05bf53cf5a24b010c54fea9d6a9dd6e57934f869e37d8c62",
            "b0827521d18d9f2527d30ae600c2094fd72090b033353f1d4d8c1576ce73ac8d",
            "2987538d2c9112153d99a78f0632e9ebf4c676561f9acf356774440e1777e7de",
            "e1cf1f6f35e3a524157ca1d86d2cbf264531c507d440e5dbd53f906f1b8fdb4a",
            "9844ebc00bf1826dbd5a16747999a4c13961b91d6852f2191283277e0f26bb03",
            "d8eab9b8f28edc6965a9a286b304782f2774950f78f6bf67c9eeafe272e5c6e3",
            "2a8379239c1d68a0646848edde26a0433b7c876cb5b7504246976567a017ac76",
            "d8e013f40f8df1c0e58626d98df98f053348d29d18065b71cf5d53ce2b31c9c9",
            "ed9d11e58679df2de11ec2955619e4e1ad08fabc9119d6670129a96160be4176",
            "b663112cf120910c3c05fc172888291bfefde42697b09729d3ae98a7ca7cedad",
            "ad721453bbd58363a9c027d19a66eee3f1f5de6aa7e92b5a36438a927c7dce73",
            "5c5836c7e0cb44b348da91aa71103c069f5fbba15425f22e274368a50cee10a5",
            "16d7b2032caf9beb415d04cb8aa20953f0dec4a0704c3d06a1e4670149cd93bb",
            "63cf6dddf3f74e54fdcef70a6362604a01afdd36171fb910c37cf1028482afe6",
            "cf124c12c2f5e766b5bb7d147cb389753f4e4e6bf124ac77170bc05faa8f488f",
        ),
    ),
    (
        4096,
        SignatureAlgorithm::RsaPss4096Sha512,
        "leading zeros 90",
        concat!(
            "00fc1f2c1efdcb6756e9b57ba08f939c5e7c25788008e979e910db68ec57a553",
            "67ca881d679ae14b69a3019e45d24bc8a69befdf1b1ff93323f8c43b7d258c02",
            "4a4b4dc0435607a5c0f01c4dc5648b553e865298347d1fd6c0d0e81a4b637702",
            "9c5d96bc8f04f1ae524922d5620d982344d526e12811c2f6c6f8f59306f119da",
            "e087c24383fe0fbcf8ce0f7f8bd81f66ad4ca6883652024c8313b29a6d682d85",
            "b549987b92a08f29411a6a8b4577ab8e214ac45b742e0e5f9ae35587885b1054",
            "3ba3e6c429fd5dbf610b9c35f7a0ddb04eb66a21d6ea4aa07130b333cc191f7e",
            "a061c0499c58253cb909791f091698f6fd8b773e0126d45a4fe1f97c456bd352",
            "3bf87448472ac19016ba5a815f70419ce846df2408978dcb38f4cb360bb3db77",
            "51c8673b58abb4241e4fbd283bedb44f2986a4612881f9455071abfad90071b3",
            "e7aff37f408c652ea0b70a1e780d2961ded2900b730117d5081923b941577e0f",
            "2d6d950d0985491293482b7ab1f123f9ddfa3fed83223d2cf34860c48f72fd4b",
            "35b5315849ec89360af872422bbd242d971423c9688a6ba1f72088299b6d36a7",
            "9df015dd7fa36f3ab6bf7ec75edcfa6044755945b845a419fe0815a93e20d11d",
            "d5871aa3ba6b52ad0f58adde28c2a8681f868580217a4d6ada62d1dede17e645",
            "6da867e4615e5b0f59296c0a2a16073934ac30cb42cee36d7d30511ff6613fa5",
        ),
    ),
];

#[test]
fn rsa_signatures_with_leading_zero_bytes_verify() {
    let rng = &mut test_rng("rsa_signatures_with_leading_zero_bytes_verify");
    let mut most_zeros = 0;
    for &(bits, alg, message, sig_hex) in LEADING_ZERO_SIGNATURES {
        let pem = if bits == 2048 {
            LEADING_ZERO_KEY_2048
        } else {
            LEADING_ZERO_KEY_4096
        };
        let key = PkixKey::from_pem(pem, alg).unwrap();
        let sig = hex::decode(sig_hex).unwrap();
        assert_eq!(sig.len(), bits / 8);
        assert_eq!(sig[0], 0, "{alg}: the vector should start with a zero byte");
        let message = message.as_bytes();
        assert_eq!(agree(&key, message, &sig, "leading zero"), Outcome::Valid);
        let zeros = sig.iter().take_while(|b| **b == 0).count();
        most_zeros = most_zeros.max(zeros);
        assert_eq!(
            agree(&key, message, &sig[zeros..], "zeros stripped"),
            Outcome::Bad
        );
        assert_eq!(
            agree(&key, message, &[&[0], &sig[..]].concat(), "one more zero"),
            Outcome::Bad
        );
        assert_eq!(
            agree(&key, message, &flip_random_bit(rng, &sig), "tampered"),
            Outcome::Bad
        );
        // s + n is congruent to a valid signature and, s being small, still
        // fits in the modulus length: only the s < n check rejects it.
        use rsa::traits::PublicKeyParts as _;
        let n = rsa::RsaPublicKey::from_public_key_pem(pem)
            .unwrap()
            .n()
            .to_bytes_be();
        let s_plus_n = add(&sig, &n);
        assert_eq!(s_plus_n[0], 0, "{alg}: s + n should fit in {bits} bits");
        assert_eq!(agree(&key, message, &s_plus_n[1..], "s + n"), Outcome::Bad);
    }
    assert_eq!(most_zeros, 2);
}

// ---------------------------------------------------------------------------
// ECDSA

/// Signs a message or a digest, giving DER.
type Signer<T> = Box<dyn Fn(&[u8]) -> T>;

/// A fresh ECDSA key: its SPKI, a message signer (DER) and a prehash signer.
struct EcKey {
    alg: SignatureAlgorithm,
    spki: Vec<u8>,
    sign: Signer<Vec<u8>>,
    /// `None` when the digest is too short for the curve to sign.
    sign_prehash: Signer<Option<Vec<u8>>>,
    /// The group order n, big-endian, as long as a field element.
    order: Vec<u8>,
}

macro_rules! ec_key {
    ($rng:expr, $alg:expr, $krate:ident, $curve:ty) => {{
        let private = $krate::ecdsa::SigningKey::random($rng);
        let public = $krate::PublicKey::from_secret_scalar(private.as_nonzero_scalar());
        let field_len = $krate::FieldBytes::default().len();
        let order = <$curve>::ORDER.to_be_byte_array();
        let prehash_signer = private.clone();
        EcKey {
            alg: $alg,
            spki: public.to_public_key_der().unwrap().into_vec(),
            sign: Box::new(move |m: &[u8]| {
                let sig: $krate::ecdsa::Signature = private.sign(m);
                sig.to_der().as_bytes().to_vec()
            }),
            sign_prehash: Box::new(move |h: &[u8]| {
                let sig: $krate::ecdsa::Signature = prehash_signer.sign_prehash(h).ok()?;
                Some(sig.to_der().as_bytes().to_vec())
            }),
            order: order[order.len() - field_len..].to_vec(),
        }
    }};
}

fn ec_key(rng: &mut StdRng, alg: SignatureAlgorithm) -> EcKey {
    match alg.curve().unwrap() {
        Curve::P256 => ec_key!(rng, alg, p256, p256::NistP256),
        Curve::P384 => ec_key!(rng, alg, p384, p384::NistP384),
        Curve::P521 => ec_key!(rng, alg, p521, p521::NistP521),
    }
}

impl EcKey {
    fn load(&self) -> PkixKey {
        PkixKey::from_der(&self.spki, self.alg).unwrap()
    }
}

fn digest(hash: HashAlgorithm, message: &[u8]) -> Vec<u8> {
    match hash {
        HashAlgorithm::Sha256 => Sha256::digest(message).to_vec(),
        HashAlgorithm::Sha384 => Sha384::digest(message).to_vec(),
        HashAlgorithm::Sha512 => Sha512::digest(message).to_vec(),
    }
}

#[test]
fn ecdsa_random_keys_and_messages_agree_with_the_ecdsa_crate() {
    let rng = &mut test_rng("ecdsa_random_keys_and_messages_agree_with_the_ecdsa_crate");
    let mut checked = 0;
    let mut keys = 0;
    for alg in ec_algorithms() {
        let mut signer = None;
        for case in 0..cases() {
            if case % MESSAGES_PER_EC_KEY == 0 {
                keys += 1;
                let fresh = ec_key(rng, alg);
                let key = fresh.load();
                signer = Some((fresh, key));
            }
            let (signer, key) = signer.as_ref().unwrap();
            let message = random_message(rng);
            let sig = (signer.sign)(&message);
            assert_eq!(agree(key, &message, &sig, "valid"), Outcome::Valid);
            let tampered = flip_random_bit(rng, &message);
            assert_eq!(
                agree(key, &tampered, &sig, "tampered message"),
                Outcome::Bad
            );
            for _ in 0..3 {
                let tampered = flip_random_bit(rng, &sig);
                assert_ne!(
                    agree(key, &message, &tampered, "tampered sig"),
                    Outcome::Valid
                );
            }
            let mut longer = sig.clone();
            longer.push(0);
            agree(key, &message, &longer, "trailing byte");
            agree(key, &message, &sig[..sig.len() - 1], "last byte dropped");
            agree(key, &message, &[], "empty");
            checked += 1;
        }
    }
    println!(
        "{checked} random ECDSA messages under {keys} keys, 8 signatures each, agree with the \
         ecdsa crate"
    );
    assert_eq!(checked, cases() * ec_algorithms().count());
}

#[test]
fn ecdsa_every_signature_byte_flipped_agrees() {
    let rng = &mut test_rng("ecdsa_every_signature_byte_flipped_agrees");
    for alg in ec_algorithms() {
        let signer = ec_key(rng, alg);
        let key = signer.load();
        // At least one byte, for the second signature over all but the first.
        let mut message = random_message(rng);
        message.push(rng.r#gen());
        for sig in [(signer.sign)(&message), (signer.sign)(&message[1..])] {
            for i in 0..sig.len() {
                let mask = rng.gen_range(1..=255u8);
                let mut flipped = sig.clone();
                flipped[i] ^= mask;
                let what = format!("byte {i} ^ {mask:#x}");
                assert_ne!(agree(&key, &message, &flipped, &what), Outcome::Valid);
            }
        }
    }
}

#[test]
fn ecdsa_r_and_s_out_of_range_agree() {
    let rng = &mut test_rng("ecdsa_r_and_s_out_of_range_agree");
    for alg in ec_algorithms() {
        let signer = ec_key(rng, alg);
        let key = signer.load();
        let message = b"payload";
        let sig = (signer.sign)(message);
        let (r, s) = der_parts(&sig);
        let n = signer.order.clone();
        let len = n.len();
        let int = |v: u8| {
            let mut x = vec![0u8; len];
            x[len - 1] = v;
            x
        };
        let n_minus_s = sub(&n, &s);
        let cases: Vec<(&str, Vec<u8>, Vec<u8>, Outcome)> = vec![
            ("r = 0", int(0), s.clone(), Outcome::Malformed),
            ("s = 0", r.clone(), int(0), Outcome::Malformed),
            ("r = n", n.clone(), s.clone(), Outcome::Malformed),
            ("s = n", r.clone(), n.clone(), Outcome::Malformed),
            ("r = n + 1", add_small(&n, 1), s.clone(), Outcome::Malformed),
            ("s = n + 1", r.clone(), add_small(&n, 1), Outcome::Malformed),
            (
                "r = 2^bits - 1",
                vec![0xff; len],
                s.clone(),
                Outcome::Malformed,
            ),
            ("r + n", add(&r, &n), s.clone(), Outcome::Malformed),
            ("r = 1", int(1), s.clone(), Outcome::Bad),
            ("s = 1", r.clone(), int(1), Outcome::Bad),
            ("r = n - 1", sub_one(&n), s.clone(), Outcome::Bad),
            ("s = n - 1", r.clone(), sub_one(&n), Outcome::Bad),
            ("r and s swapped", s.clone(), r.clone(), Outcome::Bad),
            // (r, -s) is the other valid signature for the same R: ECDSA
            // verification does not require low s.
            ("s → n - s", r.clone(), n_minus_s, Outcome::Valid),
            ("as produced", r.clone(), s.clone(), Outcome::Valid),
        ];
        for (what, r, s, expected) in cases {
            let sig = der_signature(&r, &s);
            assert_eq!(agree(&key, message, &sig, what), expected, "{alg} {what}");
        }
        // DER that is not minimal or not a sequence of two integers.
        let mut padded_r = vec![0x30];
        let body = [
            der_integer_raw(&[&[0, 0][..], &r].concat()),
            der_integer(&s),
        ]
        .concat();
        push_len(&mut padded_r, body.len());
        padded_r.extend(body);
        assert_eq!(
            agree(&key, message, &padded_r, "padded r"),
            Outcome::Malformed
        );
        assert_eq!(
            agree(&key, message, &der_signature(&r, &s)[2..], "no sequence"),
            Outcome::Malformed
        );
    }
}

#[test]
fn ecdsa_wrong_hash_agrees() {
    let rng = &mut test_rng("ecdsa_wrong_hash_agrees");
    let message = b"payload";
    for alg in ec_algorithms() {
        let signer = ec_key(rng, alg);
        let key = signer.load();
        // The right digest through the prehash path is the same signature.
        let right = (signer.sign_prehash)(&digest(alg.hash(), message)).unwrap();
        assert_eq!(agree(&key, message, &right, "prehash"), Outcome::Valid);
        for other in [
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ] {
            if other == alg.hash() {
                continue;
            }
            // SHA-256 is shorter than half of P-521's field; ecdsa refuses it.
            let Some(sig) = (signer.sign_prehash)(&digest(other, message)) else {
                assert_eq!(
                    (alg, other),
                    (SignatureAlgorithm::EcdsaP521Sha512, HashAlgorithm::Sha256)
                );
                continue;
            };
            let what = format!("signed over {}", other.name());
            assert_eq!(agree(&key, message, &sig, &what), Outcome::Bad);
        }
    }
}

/// A signature whose point R has x(R) ≥ n, so that x(R) mod n = r needs the
/// reduction (probability about 2^-128 for a random signature). The key is
/// made to fit: for chosen R, r, s and z, Q = (R - u1·G) / u2 verifies.
macro_rules! high_x_signature {
    ($rng:expr, $krate:ident, $curve:ty, $uint:ty, $hash:ty) => {{
        let order = <$curve>::ORDER.to_be_byte_array();
        let field_len = $krate::FieldBytes::default().len();
        let order = &order[order.len() - field_len..];
        let (t, point) = (1u8..=255)
            .find_map(|t| {
                let x = $krate::FieldBytes::clone_from_slice(&add_small(order, t));
                let p = $krate::AffinePoint::decompress(&x, Choice::from(0));
                Option::<$krate::AffinePoint>::from(p).map(|p| (t, p))
            })
            .unwrap();
        let message = b"x(R) is above the group order".to_vec();
        let hash = <$hash>::digest(&message);
        let mut field = $krate::FieldBytes::default();
        field[field_len - hash.len()..].copy_from_slice(&hash);
        let z = <$krate::Scalar as p256::elliptic_curve::ops::Reduce<$uint>>::reduce_bytes(&field);
        let r = $krate::Scalar::from(u64::from(t));
        let s = $krate::Scalar::random(&mut *$rng);
        let s_inv = s.invert().unwrap();
        let (u1, u2) = (z * s_inv, r * s_inv);
        let q = ($krate::ProjectivePoint::from(point) - $krate::ProjectivePoint::generator() * u1)
            * u2.invert().unwrap();
        let public = $krate::PublicKey::from_affine(q.to_affine()).unwrap();
        let sig = $krate::ecdsa::Signature::from_scalars(r.to_repr(), s.to_repr()).unwrap();
        (
            public.to_public_key_der().unwrap().into_vec(),
            message,
            sig.to_der().as_bytes().to_vec(),
            add_small(order, t),
        )
    }};
}

#[test]
fn ecdsa_x_coordinate_above_the_order_verifies() {
    let rng = &mut test_rng("ecdsa_x_coordinate_above_the_order_verifies");
    for alg in ec_algorithms() {
        let (spki, message, sig, x) = match alg.curve().unwrap() {
            Curve::P256 => high_x_signature!(rng, p256, p256::NistP256, p256::U256, Sha256),
            Curve::P384 => high_x_signature!(rng, p384, p384::NistP384, p384::U384, Sha384),
            Curve::P521 => high_x_signature!(rng, p521, p521::NistP521, p521::U576, Sha512),
        };
        let key = PkixKey::from_der(&spki, alg).unwrap();
        assert_eq!(agree(&key, &message, &sig, "x(R) ≥ n"), Outcome::Valid);
        // r must be below n even though x(R) is not.
        let (_, s) = der_parts(&sig);
        let unreduced = der_signature(&x, &s);
        assert_eq!(
            agree(&key, &message, &unreduced, "r = x(R)"),
            Outcome::Malformed
        );
        assert_eq!(
            agree(&key, &flip_random_bit(rng, &message), &sig, "tampered"),
            Outcome::Bad
        );
    }
}

#[test]
fn keys_are_shared_between_clones_and_threads_before_first_use() {
    fn clone_send_sync<T: Clone + Send + Sync>() {}
    clone_send_sync::<PkixKey>();
    let rng = &mut test_rng("keys_are_shared_between_clones_and_threads_before_first_use");
    for alg in ec_algorithms() {
        let signer = ec_key(rng, alg);
        let key = signer.load();
        let message = random_message(rng);
        let sig = (signer.sign)(&message);
        // The per-key table is built by whichever thread gets there first.
        std::thread::scope(|s| {
            for _ in 0..4 {
                let key = key.clone();
                let (message, sig) = (&message, &sig);
                s.spawn(move || assert_eq!(key.verify(message, sig), Ok(())));
            }
        });
        assert_eq!(key.verify(&message, &sig), Ok(()));
        assert!(key.clone().verify(b"other", &sig).is_err());
    }
}

#[test]
fn random_garbage_agrees_for_every_algorithm() {
    let rng = &mut test_rng("random_garbage_agrees_for_every_algorithm");
    for &alg in SignatureAlgorithm::ALL {
        let key = match alg.kind() {
            KeyKind::Ecdsa(_) => ec_key(rng, alg).load(),
            _ => PkixKey::from_der(&rsa_spki(&rsa_keys(alg.rsa_bits().unwrap())[0]), alg).unwrap(),
        };
        let modulus_len = alg.rsa_bits().map_or(0, |bits| bits / 8);
        for len in [
            0,
            1,
            2,
            8,
            64,
            72,
            104,
            139,
            140,
            modulus_len,
            modulus_len,
            600,
        ] {
            let mut garbage = vec![0u8; len];
            rng.fill_bytes(&mut garbage);
            agree(&key, b"payload", &garbage, &format!("{len} random bytes"));
            // A DER SEQUENCE header in front gets ECDSA past the first check.
            if let Some(first) = garbage.get_mut(..2) {
                first.copy_from_slice(&[0x30, (len - 2).min(0x7f) as u8]);
                agree(
                    &key,
                    b"payload",
                    &garbage,
                    &format!("{len} bytes of SEQUENCE"),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Big-endian integers and DER for building test signatures

fn add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let len = a.len().max(b.len()) + 1;
    let mut out = vec![0u8; len];
    let mut carry = 0u16;
    for i in 0..len {
        let x = a.len().checked_sub(i + 1).map_or(0, |j| a[j]);
        let y = b.len().checked_sub(i + 1).map_or(0, |j| b[j]);
        let sum = u16::from(x) + u16::from(y) + carry;
        out[len - 1 - i] = sum as u8;
        carry = sum >> 8;
    }
    out
}

fn add_small(a: &[u8], v: u8) -> Vec<u8> {
    let sum = add(a, &[v]);
    // Keep the width unless the sum overflows it.
    if sum[0] == 0 { sum[1..].to_vec() } else { sum }
}

/// a - b for a ≥ b, as wide as a.
fn sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    let mut borrow = 0i16;
    for i in 0..a.len() {
        let y = b.len().checked_sub(i + 1).map_or(0, |j| b[j]);
        let j = a.len() - 1 - i;
        let mut d = i16::from(a[j]) - i16::from(y) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[j] = d as u8;
    }
    assert_eq!(borrow, 0);
    out
}

fn sub_one(a: &[u8]) -> Vec<u8> {
    sub(a, &[1])
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push(0x81);
        out.push(u8::try_from(len).unwrap());
    }
}

/// INTEGER with exactly these content bytes.
fn der_integer_raw(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x02];
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// Minimal INTEGER for a non-negative big-endian number.
fn der_integer(be: &[u8]) -> Vec<u8> {
    let mut content: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
    if content.first().is_none_or(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    der_integer_raw(&content)
}

fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    let body = [der_integer(r), der_integer(s)].concat();
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend(body);
    out
}

/// r and s of a DER ECDSA signature, as unsigned big-endian bytes.
fn der_parts(sig: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut pos = if sig[1] == 0x81 { 3 } else { 2 };
    let mut int = || {
        assert_eq!(sig[pos], 0x02);
        let len = usize::from(sig[pos + 1]);
        let value = sig[pos + 2..pos + 2 + len].to_vec();
        pos += 2 + len;
        value
    };
    let r = int();
    let s = int();
    (r, s)
}
