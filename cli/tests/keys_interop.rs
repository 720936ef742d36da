//! Private keys of the CLI against openssl: keys openssl writes load and sign what
//! openssl verifies; keys the CLI generates are keys openssl reads. openssl is
//! required: a missing tool fails these tests instead of skipping them.

// Test helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../src/keys.rs"]
mod keys;

use std::path::Path;
use std::process::{Command, Stdio};

use attestgate_policy::verify::{KeyKind, PkixKey, SignatureAlgorithm, pkix_key_id};
use keys::{SigningKey, generate};

const PAYLOAD: &[u8] =
    b"{\n  \"critical\": {\n    \"type\": \"Google cloud binauthz container signature\"\n  }\n}\n";

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// openssl's verdict on `signature` over PAYLOAD under the PEM public key in `dir/pub`.
fn openssl_verifies(dir: &Path, alg: SignatureAlgorithm, signature: &[u8]) -> bool {
    std::fs::write(dir.join("payload"), PAYLOAD).unwrap();
    std::fs::write(dir.join("sig"), signature).unwrap();
    let digest = format!("-{}", alg.hash().name());
    let mut args = vec![
        "dgst",
        digest.as_str(),
        "-verify",
        "pub",
        "-signature",
        "sig",
    ];
    if alg.is_pss() {
        // -1: the salt must be exactly as long as the digest.
        args.extend_from_slice(&[
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:-1",
        ]);
    }
    args.push("payload");
    let status = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("cannot run openssl (is it installed?)");
    status.success()
}

fn genpkey_args(alg: SignatureAlgorithm) -> Vec<String> {
    match alg.kind() {
        KeyKind::RsaPss { bits } | KeyKind::RsaPkcs1 { bits } => vec![
            "-algorithm".into(),
            "RSA".into(),
            "-pkeyopt".into(),
            format!("rsa_keygen_bits:{bits}"),
        ],
        KeyKind::Ecdsa(curve) => vec![
            "-algorithm".into(),
            "EC".into(),
            "-pkeyopt".into(),
            format!("ec_paramgen_curve:{}", curve.name()),
        ],
    }
}

/// Signs with `key`, checks the signature with openssl under `dir/pub`, and checks
/// that the key's own public half and id are openssl's.
fn assert_signs_like_openssl(dir: &Path, key: &SigningKey, alg: SignatureAlgorithm) {
    let sig = key.sign(PAYLOAD).unwrap();
    assert!(
        openssl_verifies(dir, alg, &sig),
        "{alg}: openssl rejects our signature"
    );
    let mut tampered = sig.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(
        !openssl_verifies(dir, alg, &tampered),
        "{alg}: openssl accepts a tampered signature"
    );

    let der = openssl(dir, &["pkey", "-pubin", "-in", "pub", "-outform", "DER"]);
    assert_eq!(key.key_id().unwrap(), pkix_key_id(&der), "{alg}");
    let ours = PkixKey::from_pem(&key.public_key_pem().unwrap(), alg).unwrap();
    assert_eq!(ours.spki_der(), der.as_slice(), "{alg}");
}

#[test]
fn signature_verifies_with_openssl_for_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // One openssl PKCS#8 key per key kind, shared by the algorithms that use it.
    let mut made: Vec<(KeyKind, String)> = Vec::new();
    for &alg in SignatureAlgorithm::ALL {
        let kind = match alg.kind() {
            KeyKind::RsaPss { bits } => KeyKind::RsaPkcs1 { bits },
            k => k,
        };
        let file = match made.iter().find(|(k, _)| *k == kind) {
            Some((_, file)) => file.clone(),
            None => {
                let file = format!("key{}", made.len());
                let mut args = vec!["genpkey".to_owned()];
                args.extend(genpkey_args(alg));
                args.extend(["-out".to_owned(), file.clone()]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                openssl(dir, &args);
                made.push((kind, file.clone()));
                file
            }
        };
        openssl(dir, &["pkey", "-in", &file, "-pubout", "-out", "pub"]);
        let pem = std::fs::read_to_string(dir.join(&file)).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = SigningKey::from_pem(&pem, alg).unwrap_or_else(|e| panic!("{alg}: {e:#}"));
        assert_signs_like_openssl(dir, &key, alg);
    }
}

#[test]
fn pkcs1_rsa_private_key_from_openssl_loads_and_signs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    openssl(
        dir,
        &["genrsa", "-traditional", "-out", "genrsa.pem", "2048"],
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
            "-out",
            "p8.pem",
        ],
    );
    openssl(
        dir,
        &["rsa", "-traditional", "-in", "p8.pem", "-out", "rsa.pem"],
    );
    for (file, alg) in [
        ("genrsa.pem", SignatureAlgorithm::RsaPss2048Sha256),
        ("genrsa.pem", SignatureAlgorithm::RsaSignPkcs1_2048Sha256),
        ("rsa.pem", SignatureAlgorithm::RsaPss3072Sha256),
        ("rsa.pem", SignatureAlgorithm::RsaSignPkcs1_3072Sha256),
    ] {
        let pem = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{file}");
        openssl(dir, &["pkey", "-in", file, "-pubout", "-out", "pub"]);
        let key = SigningKey::from_pem(&pem, alg).unwrap_or_else(|e| panic!("{alg}: {e:#}"));
        assert_signs_like_openssl(dir, &key, alg);
    }
}

#[test]
fn sec1_ec_private_key_with_ec_parameters_block_loads_and_signs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for (curve, alg) in [
        ("prime256v1", SignatureAlgorithm::EcdsaP256Sha256),
        ("secp384r1", SignatureAlgorithm::EcdsaP384Sha384),
        ("secp521r1", SignatureAlgorithm::EcdsaP521Sha512),
    ] {
        openssl(
            dir,
            &["ecparam", "-name", curve, "-genkey", "-out", "ec.pem"],
        );
        let pem = std::fs::read_to_string(dir.join("ec.pem")).unwrap();
        assert!(pem.starts_with("-----BEGIN EC PARAMETERS-----"), "{curve}");
        assert!(pem.contains("-----BEGIN EC PRIVATE KEY-----"), "{curve}");
        openssl(dir, &["pkey", "-in", "ec.pem", "-pubout", "-out", "pub"]);
        let key = SigningKey::from_pem(&pem, alg).unwrap_or_else(|e| panic!("{alg}: {e:#}"));
        assert_signs_like_openssl(dir, &key, alg);

        // The same key without the parameters block (`-noout`-style files).
        openssl(dir, &["ec", "-in", "ec.pem", "-out", "bare.pem"]);
        let bare = std::fs::read_to_string(dir.join("bare.pem")).unwrap();
        assert!(
            bare.starts_with("-----BEGIN EC PRIVATE KEY-----"),
            "{curve}"
        );
        let key = SigningKey::from_pem(&bare, alg).unwrap_or_else(|e| panic!("{alg}: {e:#}"));
        assert_signs_like_openssl(dir, &key, alg);
    }
}

#[test]
fn generated_keys_are_read_by_openssl_for_every_key_kind() {
    // RSA generation is slow in debug builds (RSA-4096 takes up to a minute), so one
    // key per kind, made in parallel, is bound to every algorithm of that kind; 4096
    // differs from 3072 only in the size passed down.
    let kinds: Vec<SignatureAlgorithm> = [
        "RSA_PSS_2048_SHA256",
        "RSA_SIGN_PKCS1_3072_SHA256",
        "ECDSA_P256_SHA256",
        "ECDSA_P384_SHA384",
        "ECDSA_P521_SHA512",
    ]
    .iter()
    .map(|n| SignatureAlgorithm::parse(n).unwrap())
    .collect();
    let generated: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = kinds
            .iter()
            .map(|&alg| s.spawn(move || (alg, generate(alg).unwrap())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for (generated_for, key) in generated {
        assert!(key.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(key.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        std::fs::write(dir.join("priv"), &key.private_pem).unwrap();
        openssl(dir, &["pkey", "-in", "priv", "-check", "-noout"]);
        let public = openssl(dir, &["pkey", "-in", "priv", "-pubout"]);
        assert_eq!(
            String::from_utf8(public).unwrap(),
            key.public_pem,
            "{generated_for}"
        );
        std::fs::write(dir.join("pub"), &key.public_pem).unwrap();
        openssl(dir, &["pkey", "-pubin", "-in", "pub", "-noout"]);

        let same_kind = SignatureAlgorithm::ALL.iter().copied().filter(|a| {
            a.rsa_bits() == generated_for.rsa_bits() && a.curve() == generated_for.curve()
        });
        for alg in same_kind {
            let signer = SigningKey::from_pem(&key.private_pem, alg).unwrap();
            assert_signs_like_openssl(dir, &signer, alg);
            let verifier = PkixKey::from_pem(&key.public_pem, alg).unwrap();
            assert_eq!(verifier.derived_id(), signer.key_id().unwrap());
        }
    }
}

#[test]
fn encrypted_private_keys_are_rejected_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:pw",
            "-out",
            "p8.pem",
        ],
    );
    openssl(
        dir,
        &[
            "ec", "-in", "p8.pem", "-passin", "pass:pw", "-aes256", "-passout", "pass:pw", "-out",
            "sec1.pem",
        ],
    );
    for file in ["p8.pem", "sec1.pem"] {
        let pem = std::fs::read_to_string(dir.join(file)).unwrap();
        let err = SigningKey::from_pem(&pem, SignatureAlgorithm::EcdsaP256Sha256).unwrap_err();
        assert!(format!("{err:#}").contains("encrypted"), "{file}: {err:#}");
    }
}

#[test]
fn key_that_does_not_fit_the_algorithm_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    let rsa = std::fs::read_to_string(dir.join("rsa.pem")).unwrap();
    let ec = std::fs::read_to_string(dir.join("ec.pem")).unwrap();
    for (pem, alg, expect) in [
        (&rsa, SignatureAlgorithm::RsaPss3072Sha256, "2048 bits"),
        (
            &rsa,
            SignatureAlgorithm::RsaSignPkcs1_4096Sha512,
            "2048 bits",
        ),
        (&rsa, SignatureAlgorithm::EcdsaP256Sha256, "RSA"),
        (&ec, SignatureAlgorithm::RsaPss2048Sha256, "EC P-256"),
        (&ec, SignatureAlgorithm::EcdsaP384Sha384, "EC P-256"),
    ] {
        let err = SigningKey::from_pem(pem, alg).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(expect) && msg.contains(alg.name()),
            "{alg}: {msg}"
        );
    }
}

#[test]
fn public_keys_and_garbage_are_rejected_as_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    let public = String::from_utf8(openssl(dir, &["pkey", "-in", "ec.pem", "-pubout"])).unwrap();
    let err = SigningKey::from_pem(&public, SignatureAlgorithm::EcdsaP256Sha256).unwrap_err();
    assert!(format!("{err:#}").contains("public key"), "{err:#}");

    let private = std::fs::read_to_string(dir.join("ec.pem")).unwrap();
    for input in [
        String::new(),
        "not a key".to_owned(),
        "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n".to_owned(),
        "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n".to_owned(),
        "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n".to_owned(),
        "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n".to_owned(),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nMAA=\n-----END OPENSSH PRIVATE KEY-----\n".to_owned(),
        format!("{private}{private}"),
    ] {
        for &alg in SignatureAlgorithm::ALL {
            assert!(SigningKey::from_pem(&input, alg).is_err(), "{input:?}");
        }
    }
    for len in 0..private.len() {
        let _ = SigningKey::from_pem(&private[..len], SignatureAlgorithm::EcdsaP256Sha256);
    }
}

#[test]
fn pss_signatures_are_salted_and_ecdsa_signatures_are_der() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    let pem = std::fs::read_to_string(dir.join("rsa.pem")).unwrap();
    let pss = SigningKey::from_pem(&pem, SignatureAlgorithm::RsaPss2048Sha256).unwrap();
    assert_ne!(pss.sign(PAYLOAD).unwrap(), pss.sign(PAYLOAD).unwrap());
    assert_eq!(pss.sign(PAYLOAD).unwrap().len(), 256);

    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
            "-out",
            "ec.pem",
        ],
    );
    let pem = std::fs::read_to_string(dir.join("ec.pem")).unwrap();
    let ec = SigningKey::from_pem(&pem, SignatureAlgorithm::EcdsaP521Sha512).unwrap();
    let sig = ec.sign(PAYLOAD).unwrap();
    std::fs::write(dir.join("sig.der"), &sig).unwrap();
    let parsed = String::from_utf8(openssl(
        dir,
        &["asn1parse", "-inform", "DER", "-in", "sig.der"],
    ))
    .unwrap();
    assert!(
        parsed.contains("SEQUENCE") && parsed.matches("INTEGER").count() == 2,
        "{parsed}"
    );
}
