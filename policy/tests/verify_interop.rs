//! Interoperability of signature verification with the real tools people sign with:
//! openssl for PKIX keys, gpg for PGP keys. The tools are required: a missing tool
//! fails these tests instead of skipping them.

// Test helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use attestgate_policy::verify::{KeyError, PgpKey, PkixKey, SignatureAlgorithm, VerifyError};

const PAYLOAD: &[u8] = b"{\n  \"critical\": {\n    \"identity\": {\n      \"docker-reference\": \"gcr.io/p/app\"\n    },\n    \"image\": {\n      \"docker-manifest-digest\": \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n    },\n    \"type\": \"Google cloud binauthz container signature\"\n  }\n}\n";

fn run(program: &str, args: &[&str], cwd: &Path, envs: &[(&str, &Path)]) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .envs(envs.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    run("openssl", args, dir, &[])
}

// ---------------------------------------------------------------------------
// PKIX keys made and used by openssl

/// Keys shared by the PKIX tests: generating RSA-4096 keys is slow, so each is made
/// once. Kept in memory (a static is never dropped, a temp dir in it would stay).
struct OpensslKeys {
    files: HashMap<String, String>,
}

fn keys() -> &'static OpensslKeys {
    static KEYS: OnceLock<OpensslKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let specs: &[(&str, &[&str])] = &[
            (
                "rsa1024",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
            ),
            (
                "rsa2048",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
            (
                "rsa3072",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
            ),
            (
                "rsa4096",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
            ),
            (
                "p256",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
            (
                "p384",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            ),
            (
                "p521",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
            ),
            (
                "rsapss2048",
                &["-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
        ];
        // Every key used for signing gets a second, unrelated key of the same kind.
        let mut names: Vec<String> = Vec::new();
        for (name, _) in specs {
            names.push((*name).to_owned());
            if *name != "rsa1024" && *name != "rsapss2048" {
                names.push(format!("{name}-other"));
            }
        }
        std::thread::scope(|s| {
            for name in &names {
                let base = name.trim_end_matches("-other");
                let opts = specs.iter().find(|(n, _)| *n == base).unwrap().1;
                let dir = dir.path();
                s.spawn(move || {
                    let key = format!("{name}.key");
                    let mut args = vec!["genpkey"];
                    args.extend_from_slice(opts);
                    args.extend_from_slice(&["-out", &key]);
                    openssl(dir, &args);
                    openssl(
                        dir,
                        &[
                            "pkey",
                            "-in",
                            &key,
                            "-pubout",
                            "-out",
                            &format!("{name}.pub"),
                        ],
                    );
                });
            }
        });
        let files = names
            .iter()
            .flat_map(|name| [format!("{name}.key"), format!("{name}.pub")])
            .map(|file| {
                let text = std::fs::read_to_string(dir.path().join(&file)).unwrap();
                (file, text)
            })
            .collect();
        OpensslKeys { files }
    })
}

impl OpensslKeys {
    fn text(&self, file: &str) -> String {
        self.files[file].clone()
    }

    /// Writes one of the key files into `dir` for openssl to read.
    fn write_to(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.text(file)).unwrap();
        path
    }

    fn public_pem(&self, name: &str) -> String {
        self.text(&format!("{name}.pub"))
    }

    /// Signs `payload` with openssl as the algorithm prescribes.
    fn sign(&self, name: &str, alg: SignatureAlgorithm, payload: &[u8]) -> Vec<u8> {
        let work = tempfile::tempdir().unwrap();
        let payload_path = work.path().join("payload");
        std::fs::write(&payload_path, payload).unwrap();
        let key = self.write_to(work.path(), &format!("{name}.key"));
        let digest = format!("-{}", alg.hash().name());
        let mut args = vec!["dgst", digest.as_str(), "-sign", key.to_str().unwrap()];
        if alg.is_pss() {
            args.extend_from_slice(&[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:-1",
            ]);
        }
        args.push(payload_path.to_str().unwrap());
        openssl(work.path(), &args)
    }
}

/// The key (file name) openssl generated for an algorithm.
fn key_name(alg: SignatureAlgorithm) -> &'static str {
    match (alg.rsa_bits(), alg.curve().map(|c| c.name())) {
        (Some(2048), _) => "rsa2048",
        (Some(3072), _) => "rsa3072",
        (Some(4096), _) => "rsa4096",
        (_, Some("P-256")) => "p256",
        (_, Some("P-384")) => "p384",
        (_, Some("P-521")) => "p521",
        other => panic!("no test key for {other:?}"),
    }
}

fn load(alg: SignatureAlgorithm) -> PkixKey {
    PkixKey::from_pem(&keys().public_pem(key_name(alg)), alg)
        .unwrap_or_else(|e| panic!("{alg}: {e}"))
}

fn assert_openssl_signatures_verify(algs: impl Iterator<Item = SignatureAlgorithm>) {
    let mut count = 0;
    for alg in algs {
        let key = load(alg);
        let sig = keys().sign(key_name(alg), alg, PAYLOAD);
        assert_eq!(key.verify(PAYLOAD, &sig), Ok(()), "{alg}");
        count += 1;
    }
    assert!(count > 0);
}

#[test]
fn pkcs1_signature_from_openssl_verifies() {
    assert_openssl_signatures_verify(
        SignatureAlgorithm::ALL
            .iter()
            .copied()
            .filter(|a| a.is_rsa() && !a.is_pss()),
    );
}

#[test]
fn pss_signature_from_openssl_verifies() {
    assert_openssl_signatures_verify(
        SignatureAlgorithm::ALL
            .iter()
            .copied()
            .filter(|a| a.is_pss()),
    );
}

#[test]
fn ecdsa_der_signature_from_openssl_verifies() {
    assert_openssl_signatures_verify(
        SignatureAlgorithm::ALL
            .iter()
            .copied()
            .filter(|a| !a.is_rsa()),
    );
}

#[test]
fn aliases_load_the_same_key_and_verify() {
    for (alias, name) in [
        ("RSA_SIGN_PSS_2048_SHA256", "rsa2048"),
        ("RSA_SIGN_PSS_4096_SHA512", "rsa4096"),
        ("EC_SIGN_P256_SHA256", "p256"),
        ("EC_SIGN_P521_SHA512", "p521"),
    ] {
        let alg = SignatureAlgorithm::parse(alias).unwrap();
        let key = PkixKey::from_pem(&keys().public_pem(name), alg).unwrap();
        let sig = keys().sign(name, alg, PAYLOAD);
        assert_eq!(key.verify(PAYLOAD, &sig), Ok(()), "{alias}");
    }
}

#[test]
fn verify_fails_because_payload_tampered() {
    for &alg in SignatureAlgorithm::ALL {
        let key = load(alg);
        let sig = keys().sign(key_name(alg), alg, PAYLOAD);
        let mut tampered = PAYLOAD.to_vec();
        tampered[20] ^= 0x01;
        assert_eq!(
            key.verify(&tampered, &sig),
            Err(VerifyError::BadSignature),
            "{alg}"
        );
        let mut extended = PAYLOAD.to_vec();
        extended.push(b'\n');
        assert_eq!(
            key.verify(&extended, &sig),
            Err(VerifyError::BadSignature),
            "{alg}"
        );
        assert!(key.verify(b"", &sig).is_err(), "{alg}");
    }
}

#[test]
fn verify_fails_because_signed_by_another_key() {
    for &alg in SignatureAlgorithm::ALL {
        let key = load(alg);
        let other = format!("{}-other", key_name(alg));
        let sig = keys().sign(&other, alg, PAYLOAD);
        assert_eq!(
            key.verify(PAYLOAD, &sig),
            Err(VerifyError::BadSignature),
            "{alg}"
        );
        // Sanity: the other key's own public half accepts it.
        let other_key = PkixKey::from_pem(&keys().public_pem(&other), alg).unwrap();
        assert_eq!(other_key.verify(PAYLOAD, &sig), Ok(()), "{alg}");
    }
}

#[test]
fn verify_fails_without_panic_on_truncated_or_garbage_signature() {
    for &alg in SignatureAlgorithm::ALL {
        let key = load(alg);
        let sig = keys().sign(key_name(alg), alg, PAYLOAD);
        for len in 0..sig.len() {
            assert!(
                key.verify(PAYLOAD, &sig[..len]).is_err(),
                "{alg} truncated to {len}"
            );
        }
        let mut longer = sig.clone();
        longer.push(0);
        assert!(
            key.verify(PAYLOAD, &longer).is_err(),
            "{alg} with a trailing byte"
        );
        // A sample of positions keeps RSA-4096 verification in debug builds quick.
        for i in (0..sig.len()).step_by(7).chain([sig.len() - 1]) {
            let mut flipped = sig.clone();
            flipped[i] ^= 0x80;
            assert!(
                key.verify(PAYLOAD, &flipped).is_err(),
                "{alg} flipped byte {i}"
            );
        }
        for garbage in [
            vec![0u8; sig.len()],
            vec![0xff; sig.len()],
            vec![0x30; 3],
            vec![0x30, 0x80],
        ] {
            assert!(key.verify(PAYLOAD, &garbage).is_err(), "{alg} garbage");
        }
    }
}

#[test]
fn pkcs1_signature_does_not_verify_as_pss_and_vice_versa() {
    let pss = SignatureAlgorithm::RsaPss2048Sha256;
    let pkcs1 = SignatureAlgorithm::RsaSignPkcs1_2048Sha256;
    let pss_sig = keys().sign("rsa2048", pss, PAYLOAD);
    let pkcs1_sig = keys().sign("rsa2048", pkcs1, PAYLOAD);
    assert!(load(pss).verify(PAYLOAD, &pkcs1_sig).is_err());
    assert!(load(pkcs1).verify(PAYLOAD, &pss_sig).is_err());
}

#[test]
fn sha512_signature_does_not_verify_under_sha256_algorithm() {
    let sig = keys().sign("rsa4096", SignatureAlgorithm::RsaPss4096Sha512, PAYLOAD);
    assert!(
        load(SignatureAlgorithm::RsaPss4096Sha256)
            .verify(PAYLOAD, &sig)
            .is_err()
    );
    let sig = keys().sign(
        "rsa4096",
        SignatureAlgorithm::RsaSignPkcs1_4096Sha512,
        PAYLOAD,
    );
    assert!(
        load(SignatureAlgorithm::RsaSignPkcs1_4096Sha256)
            .verify(PAYLOAD, &sig)
            .is_err()
    );
}

#[test]
fn pss_signature_with_salt_other_than_digest_length_is_rejected() {
    let k = keys();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("payload"), PAYLOAD).unwrap();
    let key_path = k.write_to(work.path(), "rsa2048.key");
    let sig = openssl(
        work.path(),
        &[
            "dgst",
            "-sha256",
            "-sign",
            key_path.to_str().unwrap(),
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:max",
            "payload",
        ],
    );
    let key = load(SignatureAlgorithm::RsaPss2048Sha256);
    assert_eq!(key.verify(PAYLOAD, &sig), Err(VerifyError::BadSignature));
}

#[test]
fn rsa_key_size_mismatch_is_rejected_when_loading() {
    let err = PkixKey::from_pem(
        &keys().public_pem("rsa2048"),
        SignatureAlgorithm::RsaPss3072Sha256,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KeyError::RsaKeySize {
            algorithm: "RSA_PSS_3072_SHA256",
            expected: 3072,
            actual: 2048
        }
    );
    let err = PkixKey::from_pem(
        &keys().public_pem("rsa1024"),
        SignatureAlgorithm::RsaSignPkcs1_2048Sha256,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::RsaKeySize {
                expected: 2048,
                actual: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    let err = PkixKey::from_pem(
        &keys().public_pem("rsa4096"),
        SignatureAlgorithm::RsaPss2048Sha256,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::RsaKeySize {
                expected: 2048,
                actual: 4096,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn ec_key_with_rsa_algorithm_is_rejected() {
    for name in ["p256", "p384", "p521"] {
        for alg in [
            SignatureAlgorithm::RsaPss2048Sha256,
            SignatureAlgorithm::RsaSignPkcs1_4096Sha512,
        ] {
            let err = PkixKey::from_pem(&keys().public_pem(name), alg).unwrap_err();
            assert!(
                matches!(err, KeyError::AlgorithmMismatch { .. }),
                "{name} {alg}: {err:?}"
            );
        }
    }
}

#[test]
fn rsa_key_with_ecdsa_algorithm_is_rejected() {
    let err = PkixKey::from_pem(
        &keys().public_pem("rsa2048"),
        SignatureAlgorithm::EcdsaP256Sha256,
    )
    .unwrap_err();
    assert!(matches!(err, KeyError::AlgorithmMismatch { .. }), "{err:?}");
}

#[test]
fn ec_key_on_another_curve_is_rejected() {
    for (name, alg) in [
        ("p256", SignatureAlgorithm::EcdsaP384Sha384),
        ("p384", SignatureAlgorithm::EcdsaP521Sha512),
        ("p521", SignatureAlgorithm::EcdsaP256Sha256),
    ] {
        let err = PkixKey::from_pem(&keys().public_pem(name), alg).unwrap_err();
        assert!(
            matches!(err, KeyError::AlgorithmMismatch { .. }),
            "{name} {alg}: {err:?}"
        );
    }
}

#[test]
fn rsa_pss_restricted_key_is_rejected_with_a_clear_error() {
    let err = PkixKey::from_pem(
        &keys().public_pem("rsapss2048"),
        SignatureAlgorithm::RsaPss2048Sha256,
    )
    .unwrap_err();
    assert!(err.to_string().contains("RSASSA-PSS"), "{err}");
}

#[test]
fn private_key_pem_is_rejected_as_public_key() {
    let private = keys().text("p256.key");
    let err = PkixKey::from_pem(&private, SignatureAlgorithm::EcdsaP256Sha256).unwrap_err();
    assert!(matches!(err, KeyError::InvalidPem(_)), "{err:?}");
}

#[test]
fn derived_key_id_matches_openssl_digest_of_der_spki() {
    let k = keys();
    let work = tempfile::tempdir().unwrap();
    for &alg in SignatureAlgorithm::ALL {
        let name = key_name(alg);
        k.write_to(work.path(), &format!("{name}.pub"));
        let script = format!(
            "openssl pkey -pubin -in {name}.pub -outform DER | openssl dgst -sha256 -binary | basenc --base64url"
        );
        let out = run("sh", &["-ec", &script], work.path(), &[]);
        let expected = format!(
            "ni:///sha-256;{}",
            String::from_utf8(out).unwrap().trim().trim_end_matches('=')
        );
        let key = load(alg);
        assert_eq!(key.derived_id(), expected, "{alg}");
        let der = openssl(
            work.path(),
            &[
                "pkey",
                "-pubin",
                "-in",
                &format!("{name}.pub"),
                "-outform",
                "DER",
            ],
        );
        assert_eq!(
            attestgate_policy::verify::pkix_key_id(&der),
            expected,
            "{alg}"
        );
    }
}

#[test]
fn indented_pem_as_yaml_block_scalars_give_it_loads() {
    let pem = keys().public_pem("p384");
    let indented: String = pem.lines().map(|l| format!("    {l}  \r\n")).collect();
    let key = PkixKey::from_pem(
        &format!("\n{indented}\n"),
        SignatureAlgorithm::EcdsaP384Sha384,
    )
    .unwrap();
    assert_eq!(
        key.derived_id(),
        load(SignatureAlgorithm::EcdsaP384Sha384).derived_id()
    );
    let sig = keys().sign("p384", SignatureAlgorithm::EcdsaP384Sha384, PAYLOAD);
    assert_eq!(key.verify(PAYLOAD, &sig), Ok(()));
}

// ---------------------------------------------------------------------------
// PGP keys and messages made by gpg

/// A throw-away GNUPGHOME; its agent is stopped when the test ends.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let mut full = vec!["--batch", "--pinentry-mode", "loopback", "--passphrase", ""];
        full.extend_from_slice(args);
        run(
            "gpg",
            &full,
            self.home.path(),
            &[("GNUPGHOME", self.home.path())],
        )
    }

    /// Makes a key and returns its primary fingerprint, as gpg reports it.
    fn gen_key(&self, uid: &str, algo: &str) -> String {
        self.run(&["--quick-gen-key", uid, algo, "sign", "never"]);
        self.fingerprint(uid)
    }

    fn fingerprint(&self, uid: &str) -> String {
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])).unwrap();
        let fpr = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .expect("gpg lists a fingerprint");
        fpr.split(':').nth(9).unwrap().to_owned()
    }

    fn export(&self, uid: &str) -> String {
        String::from_utf8(self.run(&["--armor", "--export", uid])).unwrap()
    }

    fn key(&self, uid: &str) -> PgpKey {
        PgpKey::from_armored(&self.export(uid)).unwrap()
    }

    /// `gpg --sign` over `payload` with extra options (`--armor`, `--compress-algo`, …).
    fn sign(&self, signer: &str, payload: &[u8], opts: &[&str]) -> Vec<u8> {
        let input = self.home.path().join("payload.json");
        std::fs::write(&input, payload).unwrap();
        let output = self.home.path().join("signed");
        let _ = std::fs::remove_file(&output);
        let mut args = vec!["--local-user", signer, "--output", output.to_str().unwrap()];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["--sign", input.to_str().unwrap()]);
        self.run(&args);
        std::fs::read(&output).unwrap()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

const RSA_UID: &str = "RSA Test <rsa@example.com>";
const ED_UID: &str = "Ed Test <ed@example.com>";
const NIST_UID: &str = "Nist Test <nist@example.com>";
const OTHER_UID: &str = "Other Test <other@example.com>";

fn assert_gpg_messages_verify(algo: &str, uid: &str) {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key(uid, algo);
    let key = gpg.key(uid);
    assert_eq!(key.fingerprint(), fpr);
    assert_eq!(key.fingerprint().len(), 40);

    let armored = gpg.sign(uid, PAYLOAD, &["--armor"]);
    assert!(armored.starts_with(b"-----BEGIN PGP MESSAGE-----"));
    assert_eq!(
        key.verify_attached(&armored).as_deref(),
        Ok(PAYLOAD),
        "{algo} armored"
    );

    let binary = gpg.sign(uid, PAYLOAD, &[]);
    assert_eq!(
        key.verify_attached(&binary).as_deref(),
        Ok(PAYLOAD),
        "{algo} binary"
    );
}

#[test]
fn gpg_rsa_signed_messages_verify_and_return_the_payload() {
    assert_gpg_messages_verify("rsa2048", RSA_UID);
}

#[test]
fn gpg_ed25519_signed_messages_verify_and_return_the_payload() {
    assert_gpg_messages_verify("ed25519", ED_UID);
}

#[test]
fn gpg_nistp256_signed_messages_verify_and_return_the_payload() {
    assert_gpg_messages_verify("nistp256", NIST_UID);
}

#[test]
fn fingerprint_equals_gpg_colons_fpr_for_default_key_with_encryption_subkey() {
    let gpg = Gpg::new();
    // gpg's defaults: signing primary plus an encryption subkey.
    gpg.run(&["--quick-gen-key", "Default <d@example.com>"]);
    let fpr = gpg.fingerprint("Default <d@example.com>");
    let key = gpg.key("Default <d@example.com>");
    assert_eq!(key.fingerprint(), fpr);
    let msg = gpg.sign("Default <d@example.com>", PAYLOAD, &["--armor"]);
    assert_eq!(key.verify_attached(&msg).as_deref(), Ok(PAYLOAD));
}

#[test]
fn every_gpg_compression_verifies() {
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    let key = gpg.key(ED_UID);
    for algo in ["none", "zip", "zlib", "bzip2"] {
        for armor in [true, false] {
            let mut opts = vec!["--compress-algo", algo];
            if armor {
                opts.push("--armor");
            }
            let msg = gpg.sign(ED_UID, PAYLOAD, &opts);
            assert_eq!(
                key.verify_attached(&msg).as_deref(),
                Ok(PAYLOAD),
                "{algo} armor={armor}"
            );
        }
    }
}

#[test]
fn payload_bytes_are_returned_exactly() {
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    let key = gpg.key(ED_UID);
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend_from_slice(b"line\r\nline\nno newline at end ");
    for opts in [&[][..], &["--armor"][..], &["--compress-algo", "none"][..]] {
        let msg = gpg.sign(ED_UID, &payload, opts);
        assert_eq!(key.verify_attached(&msg), Ok(payload.clone()), "{opts:?}");
    }
    let empty = gpg.sign(ED_UID, b"", &["--armor"]);
    assert_eq!(key.verify_attached(&empty), Ok(Vec::new()));
}

#[test]
fn message_signed_by_another_gpg_key_is_rejected() {
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    gpg.gen_key(OTHER_UID, "ed25519");
    let key = gpg.key(ED_UID);
    for opts in [&["--armor"][..], &[][..]] {
        let msg = gpg.sign(OTHER_UID, PAYLOAD, opts);
        assert_eq!(
            key.verify_attached(&msg),
            Err(VerifyError::NotSignedByKey),
            "{opts:?}"
        );
        assert_eq!(
            gpg.key(OTHER_UID).verify_attached(&msg).as_deref(),
            Ok(PAYLOAD)
        );
    }
}

#[test]
fn message_signed_by_rsa_key_is_rejected_by_ecc_key_and_vice_versa() {
    let gpg = Gpg::new();
    gpg.gen_key(RSA_UID, "rsa2048");
    gpg.gen_key(NIST_UID, "nistp256");
    let rsa_msg = gpg.sign(RSA_UID, PAYLOAD, &[]);
    let nist_msg = gpg.sign(NIST_UID, PAYLOAD, &[]);
    assert_eq!(
        gpg.key(NIST_UID).verify_attached(&rsa_msg),
        Err(VerifyError::NotSignedByKey)
    );
    assert_eq!(
        gpg.key(RSA_UID).verify_attached(&nist_msg),
        Err(VerifyError::NotSignedByKey)
    );
}

#[test]
fn message_signed_by_several_keys_verifies_for_each_signer_only() {
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    gpg.gen_key(NIST_UID, "nistp256");
    gpg.gen_key(OTHER_UID, "ed25519");
    let msg = gpg.sign(ED_UID, PAYLOAD, &["--local-user", NIST_UID, "--armor"]);
    assert_eq!(
        gpg.key(ED_UID).verify_attached(&msg).as_deref(),
        Ok(PAYLOAD)
    );
    assert_eq!(
        gpg.key(NIST_UID).verify_attached(&msg).as_deref(),
        Ok(PAYLOAD)
    );
    assert_eq!(
        gpg.key(OTHER_UID).verify_attached(&msg),
        Err(VerifyError::NotSignedByKey)
    );
}

#[test]
fn message_signed_by_signing_subkey_verifies() {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key(RSA_UID, "rsa2048");
    gpg.run(&["--quick-add-key", &fpr, "ed25519", "sign", "never"]);
    let key = gpg.key(RSA_UID);
    assert_eq!(key.fingerprint(), fpr);
    // gpg signs with the newest signing-capable subkey.
    let msg = gpg.sign(RSA_UID, PAYLOAD, &["--armor"]);
    assert_eq!(key.verify_attached(&msg).as_deref(), Ok(PAYLOAD));

    // The subkey signature must not verify under another certificate.
    gpg.gen_key(OTHER_UID, "ed25519");
    assert_eq!(
        gpg.key(OTHER_UID).verify_attached(&msg),
        Err(VerifyError::NotSignedByKey)
    );
}

#[test]
fn signature_by_subkey_without_its_certificate_binding_is_rejected() {
    // Export the certificate before the signing subkey is added: the subkey that
    // signs is then unknown to the attestor's key.
    let gpg = Gpg::new();
    let fpr = gpg.gen_key(RSA_UID, "rsa2048");
    let before = PgpKey::from_armored(&gpg.export(RSA_UID)).unwrap();
    gpg.run(&["--quick-add-key", &fpr, "ed25519", "sign", "never"]);
    let msg = gpg.sign(RSA_UID, PAYLOAD, &[]);
    assert_eq!(
        before.verify_attached(&msg),
        Err(VerifyError::NotSignedByKey)
    );
    assert_eq!(
        gpg.key(RSA_UID).verify_attached(&msg).as_deref(),
        Ok(PAYLOAD)
    );
}

#[test]
fn tampered_message_is_rejected() {
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    let key = gpg.key(ED_UID);
    let msg = gpg.sign(ED_UID, PAYLOAD, &["--compress-algo", "none"]);
    // Change one byte of the literal data in place, keeping the packet framing intact.
    let at = msg
        .windows(PAYLOAD.len())
        .position(|w| w == PAYLOAD)
        .expect("uncompressed message carries the payload verbatim");
    let mut tampered = msg.clone();
    tampered[at + 30] ^= 0x01;
    assert!(key.verify_attached(&tampered).is_err());

    let compressed = gpg.sign(ED_UID, PAYLOAD, &[]);
    for i in 0..compressed.len() {
        let mut t = compressed.clone();
        t[i] ^= 0x01;
        if let Ok(data) = key.verify_attached(&t) {
            // A flip in a field that is not signed (e.g. the literal file name or
            // date) may still verify; the payload itself must be untouched.
            assert_eq!(data, PAYLOAD, "byte {i}");
        }
    }
}

#[test]
fn garbage_and_truncated_messages_are_rejected_without_panic() {
    let gpg = Gpg::new();
    gpg.gen_key(NIST_UID, "nistp256");
    let key = gpg.key(NIST_UID);
    for opts in [&["--armor"][..], &[][..], &["--compress-algo", "none"][..]] {
        let msg = gpg.sign(NIST_UID, PAYLOAD, opts);
        for len in 0..msg.len() {
            let r = key.verify_attached(&msg[..len]);
            // Armor without its END line can still decode completely; only the
            // payload that verifies may come back.
            if let Ok(data) = r {
                assert_eq!(data, PAYLOAD, "{opts:?} truncated to {len}");
            }
        }
        for i in 0..msg.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = msg.clone();
                t[i] ^= bit;
                if let Ok(data) = key.verify_attached(&t) {
                    assert_eq!(data, PAYLOAD, "{opts:?} byte {i}");
                }
            }
        }
    }
    for garbage in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff",
        b"-----BEGIN PGP MESSAGE-----\n\n-----END PGP MESSAGE-----\n",
        b"-----BEGIN PGP MESSAGE-----\n\n!!!!\n-----END PGP MESSAGE-----\n",
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n",
        b"\xa3\x01",
        b"\xc8\xff\xff\xff\xff\xff",
        PAYLOAD,
    ] {
        assert!(key.verify_attached(garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn unsigned_encrypted_detached_and_clearsigned_messages_are_rejected() {
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    let key = gpg.key(ED_UID);
    let input = gpg.home.path().join("payload.json");
    std::fs::write(&input, PAYLOAD).unwrap();
    let input = input.to_str().unwrap();

    let stored = gpg.run(&["--armor", "--output", "-", "--store", input]);
    assert_eq!(
        key.verify_attached(&stored),
        Err(VerifyError::NotSignedByKey)
    );

    let symmetric = gpg.run(&["--output", "-", "--symmetric", "--passphrase", "pw", input]);
    assert!(key.verify_attached(&symmetric).is_err());

    let detached = gpg.run(&[
        "--local-user",
        ED_UID,
        "--output",
        "-",
        "--detach-sign",
        input,
    ]);
    assert!(key.verify_attached(&detached).is_err());
    let detached = gpg.run(&[
        "--local-user",
        ED_UID,
        "--armor",
        "--output",
        "-",
        "--detach-sign",
        input,
    ]);
    assert!(key.verify_attached(&detached).is_err());

    let clear = gpg.run(&[
        "--local-user",
        ED_UID,
        "--output",
        "-",
        "--clearsign",
        input,
    ]);
    assert!(key.verify_attached(&clear).is_err());
}

#[test]
fn textmode_signature_returns_literal_data_exactly_as_gpg_stored_it() {
    // `gpg --textmode` stores the text with CRLF line ends; that, not the file on
    // the signer's disk, is the literal data, and it is returned unchanged.
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    let key = gpg.key(ED_UID);
    let msg = gpg.sign(ED_UID, PAYLOAD, &["--textmode", "--armor"]);
    let crlf = String::from_utf8(PAYLOAD.to_vec())
        .unwrap()
        .replace('\n', "\r\n");
    assert_eq!(key.verify_attached(&msg), Ok(crlf.into_bytes()));
}

#[test]
fn armored_key_and_message_with_yaml_indentation_load() {
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    let key = PgpKey::from_armored(&indent(&gpg.export(ED_UID))).unwrap();
    let msg = String::from_utf8(gpg.sign(ED_UID, PAYLOAD, &["--armor"])).unwrap();
    assert_eq!(
        key.verify_attached(indent(&msg).as_bytes()).as_deref(),
        Ok(PAYLOAD)
    );
}

#[test]
fn key_blocks_that_are_not_one_public_key_are_rejected() {
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    gpg.gen_key(OTHER_UID, "ed25519");
    let both = String::from_utf8(gpg.run(&["--armor", "--export", ED_UID, OTHER_UID])).unwrap();
    assert!(matches!(
        PgpKey::from_armored(&both),
        Err(KeyError::InvalidPgp(_))
    ));

    let secret = String::from_utf8(gpg.run(&["--armor", "--export-secret-keys", ED_UID])).unwrap();
    assert!(matches!(
        PgpKey::from_armored(&secret),
        Err(KeyError::InvalidPgp(_))
    ));

    for garbage in [
        "",
        "not a key",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF\n-----END PGP PUBLIC KEY BLOCK-----\n",
    ] {
        assert!(
            matches!(PgpKey::from_armored(garbage), Err(KeyError::InvalidPgp(_))),
            "{garbage:?}"
        );
    }

    let exported = gpg.export(ED_UID);
    for len in 0..exported.len() {
        let _ = PgpKey::from_armored(&exported[..len]);
    }
}

#[test]
fn revoked_key_is_rejected_when_loading() {
    let gpg = Gpg::new();
    let fpr = gpg.gen_key(ED_UID, "ed25519");
    let cert = gpg
        .home
        .path()
        .join("openpgp-revocs.d")
        .join(format!("{fpr}.rev"));
    // gpg guards the stored revocation certificate with a leading colon.
    let text = std::fs::read_to_string(&cert)
        .unwrap()
        .replacen(":-----BEGIN", "-----BEGIN", 1);
    std::fs::write(&cert, text).unwrap();
    gpg.run(&["--import", cert.to_str().unwrap()]);
    let err = PgpKey::from_armored(&gpg.export(ED_UID)).unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[test]
fn literal_data_over_one_mebibyte_is_rejected() {
    // Highly compressible: a small occurrence that would inflate to 4 MiB.
    let gpg = Gpg::new();
    gpg.gen_key(ED_UID, "ed25519");
    let key = gpg.key(ED_UID);
    let big = vec![b' '; 4 << 20];
    let msg = gpg.sign(ED_UID, &big, &["--compress-algo", "zlib"]);
    assert!(msg.len() < 64 << 10, "{}", msg.len());
    let err = key.verify_attached(&msg).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed(_)), "{err:?}");

    let fits = vec![b' '; 1 << 20];
    let msg = gpg.sign(ED_UID, &fits, &[]);
    assert_eq!(key.verify_attached(&msg), Ok(fits));
}
