//! PKIX public keys (PEM SubjectPublicKeyInfo) and the GCP signature algorithms.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::pkcs1::der::Decode as _;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use spki::ObjectIdentifier;

use super::{KeyError, VerifyError};

// Implementation details of PKIX keys, hence declared here rather than in
// verify/mod.rs; `path` keeps the files beside this one.
#[path = "ecdsa_fast.rs"]
mod ecdsa_fast;
pub use self::ecdsa_fast::{comb_tables_built, verify_without_tables};
#[path = "rsa_fast.rs"]
mod rsa_fast;

use self::ecdsa_fast::EcdsaKey;
use self::rsa_fast::RsaKey;

const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// A `signatureAlgorithm` of a GCP attestor public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    RsaPss2048Sha256,
    RsaPss3072Sha256,
    RsaPss4096Sha256,
    RsaPss4096Sha512,
    RsaSignPkcs1_2048Sha256,
    RsaSignPkcs1_3072Sha256,
    RsaSignPkcs1_4096Sha256,
    RsaSignPkcs1_4096Sha512,
    EcdsaP256Sha256,
    EcdsaP384Sha384,
    EcdsaP521Sha512,
}

/// The elliptic curve of an ECDSA algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The name openssl uses for the curve (`-pkeyopt ec_paramgen_curve:`).
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// The named-curve OID that identifies the curve in SPKI, PKCS#8 and SEC1.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
            Curve::P521 => OID_P521,
        }
    }

    /// The curve a named-curve OID stands for.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521]
            .into_iter()
            .find(|c| c.oid() == *oid)
    }
}

/// The hash function an algorithm signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    /// The digest length in bytes (also the PSS salt length).
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// The name openssl uses (`openssl dgst -sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }
}

/// The kind of key and signature scheme an algorithm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    RsaPss { bits: usize },
    RsaPkcs1 { bits: usize },
    Ecdsa(Curve),
}

impl SignatureAlgorithm {
    /// Every algorithm, in the order GCP documents them.
    pub const ALL: &[SignatureAlgorithm] = &[
        SignatureAlgorithm::RsaPss2048Sha256,
        SignatureAlgorithm::RsaPss3072Sha256,
        SignatureAlgorithm::RsaPss4096Sha256,
        SignatureAlgorithm::RsaPss4096Sha512,
        SignatureAlgorithm::RsaSignPkcs1_2048Sha256,
        SignatureAlgorithm::RsaSignPkcs1_3072Sha256,
        SignatureAlgorithm::RsaSignPkcs1_4096Sha256,
        SignatureAlgorithm::RsaSignPkcs1_4096Sha512,
        SignatureAlgorithm::EcdsaP256Sha256,
        SignatureAlgorithm::EcdsaP384Sha384,
        SignatureAlgorithm::EcdsaP521Sha512,
    ];

    /// Parses a GCP name, canonical or alias (`RSA_SIGN_PSS_*`, `EC_SIGN_*`).
    pub fn parse(name: &str) -> Option<SignatureAlgorithm> {
        use SignatureAlgorithm as A;
        let alg = match name {
            "RSA_PSS_2048_SHA256" | "RSA_SIGN_PSS_2048_SHA256" => A::RsaPss2048Sha256,
            "RSA_PSS_3072_SHA256" | "RSA_SIGN_PSS_3072_SHA256" => A::RsaPss3072Sha256,
            "RSA_PSS_4096_SHA256" | "RSA_SIGN_PSS_4096_SHA256" => A::RsaPss4096Sha256,
            "RSA_PSS_4096_SHA512" | "RSA_SIGN_PSS_4096_SHA512" => A::RsaPss4096Sha512,
            "RSA_SIGN_PKCS1_2048_SHA256" => A::RsaSignPkcs1_2048Sha256,
            "RSA_SIGN_PKCS1_3072_SHA256" => A::RsaSignPkcs1_3072Sha256,
            "RSA_SIGN_PKCS1_4096_SHA256" => A::RsaSignPkcs1_4096Sha256,
            "RSA_SIGN_PKCS1_4096_SHA512" => A::RsaSignPkcs1_4096Sha512,
            "ECDSA_P256_SHA256" | "EC_SIGN_P256_SHA256" => A::EcdsaP256Sha256,
            "ECDSA_P384_SHA384" | "EC_SIGN_P384_SHA384" => A::EcdsaP384Sha384,
            "ECDSA_P521_SHA512" | "EC_SIGN_P521_SHA512" => A::EcdsaP521Sha512,
            _ => return None,
        };
        Some(alg)
    }

    /// The canonical GCP name.
    pub fn name(&self) -> &'static str {
        use SignatureAlgorithm as A;
        match self {
            A::RsaPss2048Sha256 => "RSA_PSS_2048_SHA256",
            A::RsaPss3072Sha256 => "RSA_PSS_3072_SHA256",
            A::RsaPss4096Sha256 => "RSA_PSS_4096_SHA256",
            A::RsaPss4096Sha512 => "RSA_PSS_4096_SHA512",
            A::RsaSignPkcs1_2048Sha256 => "RSA_SIGN_PKCS1_2048_SHA256",
            A::RsaSignPkcs1_3072Sha256 => "RSA_SIGN_PKCS1_3072_SHA256",
            A::RsaSignPkcs1_4096Sha256 => "RSA_SIGN_PKCS1_4096_SHA256",
            A::RsaSignPkcs1_4096Sha512 => "RSA_SIGN_PKCS1_4096_SHA512",
            A::EcdsaP256Sha256 => "ECDSA_P256_SHA256",
            A::EcdsaP384Sha384 => "ECDSA_P384_SHA384",
            A::EcdsaP521Sha512 => "ECDSA_P521_SHA512",
        }
    }

    /// Key type, size or curve, and signature scheme.
    pub fn kind(&self) -> KeyKind {
        use SignatureAlgorithm as A;
        match self {
            A::RsaPss2048Sha256 => KeyKind::RsaPss { bits: 2048 },
            A::RsaPss3072Sha256 => KeyKind::RsaPss { bits: 3072 },
            A::RsaPss4096Sha256 | A::RsaPss4096Sha512 => KeyKind::RsaPss { bits: 4096 },
            A::RsaSignPkcs1_2048Sha256 => KeyKind::RsaPkcs1 { bits: 2048 },
            A::RsaSignPkcs1_3072Sha256 => KeyKind::RsaPkcs1 { bits: 3072 },
            A::RsaSignPkcs1_4096Sha256 | A::RsaSignPkcs1_4096Sha512 => {
                KeyKind::RsaPkcs1 { bits: 4096 }
            }
            A::EcdsaP256Sha256 => KeyKind::Ecdsa(Curve::P256),
            A::EcdsaP384Sha384 => KeyKind::Ecdsa(Curve::P384),
            A::EcdsaP521Sha512 => KeyKind::Ecdsa(Curve::P521),
        }
    }

    /// The digest signed over the payload.
    pub fn hash(&self) -> HashAlgorithm {
        use SignatureAlgorithm as A;
        match self {
            A::RsaPss4096Sha512 | A::RsaSignPkcs1_4096Sha512 | A::EcdsaP521Sha512 => {
                HashAlgorithm::Sha512
            }
            A::EcdsaP384Sha384 => HashAlgorithm::Sha384,
            _ => HashAlgorithm::Sha256,
        }
    }

    pub fn is_rsa(&self) -> bool {
        self.rsa_bits().is_some()
    }

    pub fn is_pss(&self) -> bool {
        matches!(self.kind(), KeyKind::RsaPss { .. })
    }

    /// The exact RSA modulus size the algorithm requires.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self.kind() {
            KeyKind::RsaPss { bits } | KeyKind::RsaPkcs1 { bits } => Some(bits),
            KeyKind::Ecdsa(_) => None,
        }
    }

    pub fn curve(&self) -> Option<Curve> {
        match self.kind() {
            KeyKind::Ecdsa(curve) => Some(curve),
            _ => None,
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SignatureAlgorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignatureAlgorithm::parse(s).ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

/// A name that is not a GCP signature algorithm.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("unknown signature algorithm {0:?}")]
pub struct UnknownAlgorithm(pub String);

/// `ni:///sha-256;` + unpadded base64url of SHA-256 over the DER SubjectPublicKeyInfo.
pub fn pkix_key_id(spki_der: &[u8]) -> String {
    format!(
        "ni:///sha-256;{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
    )
}

/// The verifying key, parsed once, bound to its scheme and hash.
///
/// Verification does not go through the rsa and ecdsa crates' verifiers,
/// which are several times too slow for the admission path (generic bignum
/// modpow; two constant-time scalar multiplications): see `rsa_fast` and
/// `ecdsa_fast`. The crates still parse and validate the keys, and the tests
/// check that both give the same answers.
#[derive(Clone)]
enum Verifier {
    RsaPkcs1(RsaKey, HashAlgorithm),
    RsaPss(RsaKey, HashAlgorithm),
    P256(EcdsaKey<p256::NistP256>),
    P384(EcdsaKey<p384::NistP384>),
    P521(EcdsaKey<p521::NistP521>),
}

/// A PKIX public key of an attestor, ready to verify signatures.
#[derive(Clone)]
pub struct PkixKey {
    algorithm: SignatureAlgorithm,
    spki_der: Vec<u8>,
    id: String,
    verifier: Verifier,
}

impl fmt::Debug for PkixKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PkixKey")
            .field("algorithm", &self.algorithm)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PkixKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) for use with `alg`.
    pub fn from_pem(pem: &str, alg: SignatureAlgorithm) -> Result<PkixKey, KeyError> {
        let der = decode_public_pem(pem)?;
        PkixKey::from_der(&der, alg)
    }

    /// Parses a DER SubjectPublicKeyInfo for use with `alg`.
    pub fn from_der(der: &[u8], alg: SignatureAlgorithm) -> Result<PkixKey, KeyError> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| KeyError::InvalidPem(format!("not a SubjectPublicKeyInfo: {e}")))?;
        let oid = spki.algorithm.oid;
        let key_bytes = spki.subject_public_key.as_bytes().ok_or_else(|| {
            KeyError::InvalidPem("public key bit string has unused bits".to_owned())
        })?;
        let mismatch = |actual: String| KeyError::AlgorithmMismatch {
            algorithm: alg.name(),
            actual,
        };

        let verifier = match alg.kind() {
            KeyKind::RsaPss { bits } | KeyKind::RsaPkcs1 { bits } => {
                if oid != OID_RSA_ENCRYPTION {
                    return Err(mismatch(describe_key_oid(&spki.algorithm)));
                }
                let key = parse_rsa_public_key(key_bytes, alg, bits)?;
                if alg.is_pss() {
                    // The salt is as long as the digest, as GCP and KMS sign.
                    Verifier::RsaPss(key, alg.hash())
                } else {
                    Verifier::RsaPkcs1(key, alg.hash())
                }
            }
            KeyKind::Ecdsa(curve) => {
                let actual_curve = if oid == OID_EC_PUBLIC_KEY {
                    spki.algorithm
                        .parameters_oid()
                        .ok()
                        .and_then(|c| Curve::from_oid(&c))
                } else {
                    None
                };
                if actual_curve != Some(curve) {
                    return Err(mismatch(describe_key_oid(&spki.algorithm)));
                }
                let invalid =
                    |e: p256::ecdsa::Error| KeyError::InvalidPem(format!("invalid EC point: {e}"));
                // The curve crates check that the point is on the curve and
                // not the identity.
                match curve {
                    Curve::P256 => Verifier::P256(EcdsaKey::new(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                            .map_err(invalid)?
                            .as_affine(),
                    )),
                    Curve::P384 => Verifier::P384(EcdsaKey::new(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                            .map_err(invalid)?
                            .as_affine(),
                    )),
                    Curve::P521 => Verifier::P521(EcdsaKey::new(
                        p521::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                            .map_err(invalid)?
                            .as_affine(),
                    )),
                }
            }
        };

        Ok(PkixKey {
            algorithm: alg,
            spki_der: der.to_vec(),
            id: pkix_key_id(der),
            verifier,
        })
    }

    /// The key id GCP derives when the attestor leaves `id` blank.
    pub fn derived_id(&self) -> String {
        self.id.clone()
    }

    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The DER SubjectPublicKeyInfo the key was parsed from.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Checks `signature` over exactly `payload`.
    ///
    /// An ECDSA signature that is not DER with r and s in [1, n-1] is
    /// `Malformed`; every other failure, including an RSA signature of the
    /// wrong length, is `BadSignature`, as with the rsa and ecdsa crates.
    pub fn verify(&self, payload: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let valid = match &self.verifier {
            Verifier::RsaPkcs1(k, hash) => k.verify_pkcs1v15(*hash, payload, signature),
            Verifier::RsaPss(k, hash) => k.verify_pss(*hash, payload, signature),
            Verifier::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(signature).map_err(der_error)?;
                let (r, s) = sig.split_scalars();
                k.verify(&Sha256::digest(payload), &r, &s)
            }
            Verifier::P384(k) => {
                let sig = p384::ecdsa::Signature::from_der(signature).map_err(der_error)?;
                let (r, s) = sig.split_scalars();
                k.verify(&Sha384::digest(payload), &r, &s)
            }
            Verifier::P521(k) => {
                let sig = p521::ecdsa::Signature::from_der(signature).map_err(der_error)?;
                let (r, s) = sig.split_scalars();
                k.verify(&Sha512::digest(payload), &r, &s)
            }
        };
        if valid {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

fn der_error(e: p256::ecdsa::Error) -> VerifyError {
    VerifyError::Malformed(format!("ECDSA signature is not ASN.1 DER: {e}"))
}

fn describe_key_oid(alg: &spki::AlgorithmIdentifierRef<'_>) -> String {
    if alg.oid == OID_RSA_ENCRYPTION {
        "RSA".to_owned()
    } else if alg.oid == OID_RSASSA_PSS {
        // Keys restricted to RSASSA-PSS carry parameters we do not honour; KMS and
        // `openssl genpkey -algorithm RSA` export plain rsaEncryption keys.
        "RSASSA-PSS (restricted RSA key; export it as a plain RSA key)".to_owned()
    } else if alg.oid == OID_EC_PUBLIC_KEY {
        match alg.parameters_oid().ok() {
            Some(c) => match Curve::from_oid(&c) {
                Some(curve) => format!("EC {}", curve.name()),
                None => format!("EC curve {c}"),
            },
            None => "EC (no named curve)".to_owned(),
        }
    } else {
        format!("OID {}", alg.oid)
    }
}

fn parse_rsa_public_key(
    pkcs1_der: &[u8],
    alg: SignatureAlgorithm,
    expected_bits: usize,
) -> Result<RsaKey, KeyError> {
    let raw = rsa::pkcs1::RsaPublicKey::from_der(pkcs1_der)
        .map_err(|e| KeyError::InvalidPem(format!("invalid RSA public key: {e}")))?;
    // Measured on the raw modulus so that oversized keys, which the rsa crate refuses
    // to load at all, still get the precise size error.
    let actual = bit_length(raw.modulus.as_bytes());
    if actual != expected_bits {
        return Err(KeyError::RsaKeySize {
            algorithm: alg.name(),
            expected: expected_bits,
            actual,
        });
    }
    let n = rsa::BigUint::from_bytes_be(raw.modulus.as_bytes());
    let e = rsa::BigUint::from_bytes_be(raw.public_exponent.as_bytes());
    // The rsa crate's checks (odd n, odd e with 3 ≤ e < 2^33 and e < n)
    // still decide which keys are acceptable; the fast verifier only takes
    // the numbers.
    rsa::RsaPublicKey::new(n, e)
        .map_err(|e| KeyError::InvalidPem(format!("invalid RSA public key: {e}")))?;
    RsaKey::new(raw.modulus.as_bytes(), raw.public_exponent.as_bytes()).ok_or_else(|| {
        KeyError::InvalidPem(format!(
            "RSA modulus is not a {expected_bits}-bit odd number"
        ))
    })
}

fn bit_length(be: &[u8]) -> usize {
    let mut bytes = be.iter().skip_while(|b| **b == 0);
    match bytes.next() {
        Some(first) => (8 - first.leading_zeros() as usize) + 8 * bytes.count(),
        None => 0,
    }
}

/// Text that is not well-formed PEM.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("malformed PEM: {0}")]
pub struct PemError(pub String);

/// A PEM block: its label, whether it had RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`
/// of traditional encrypted keys), and its decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub has_headers: bool,
    pub der: Vec<u8>,
}

/// Splits text into PEM blocks. Lenient where YAML and copy-paste are careless
/// (indentation, trailing spaces, CRLF, any base64 line width), strict on
/// matching BEGIN/END labels and base64.
pub fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = pem_boundary(line, "BEGIN") else {
            continue;
        };
        let mut body = String::new();
        let mut has_headers = false;
        let mut ended = false;
        for line in lines.by_ref() {
            if let Some(end) = pem_boundary(line, "END") {
                if end != label {
                    return Err(PemError(format!("BEGIN {label} ends with END {end}")));
                }
                ended = true;
                break;
            }
            if line.contains(':') {
                has_headers = true;
            } else {
                body.push_str(line);
            }
        }
        if !ended {
            return Err(PemError(format!("{label} block has no END line")));
        }
        let der = STANDARD
            .decode(body.as_bytes())
            .map_err(|e| PemError(format!("{label} block is not valid base64: {e}")))?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            has_headers,
            der,
        });
    }
    Ok(blocks)
}

fn pem_boundary<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

fn decode_public_pem(pem: &str) -> Result<Vec<u8>, KeyError> {
    let blocks = pem_blocks(pem).map_err(|e| KeyError::InvalidPem(e.0))?;
    let mut found = blocks.into_iter().filter(|b| b.label == "PUBLIC KEY");
    match (found.next(), found.next()) {
        (Some(block), None) => Ok(block.der),
        (Some(_), Some(_)) => Err(KeyError::InvalidPem(
            "more than one PUBLIC KEY block".to_owned(),
        )),
        (None, _) if pem.contains("-----BEGIN RSA PUBLIC KEY-----") => Err(KeyError::InvalidPem(
            "PKCS#1 RSA PUBLIC KEY found; a SubjectPublicKeyInfo (BEGIN PUBLIC KEY) is needed, \
             e.g. from `openssl pkey -pubout`"
                .to_owned(),
        )),
        (None, _) => Err(KeyError::InvalidPem(
            "no -----BEGIN PUBLIC KEY----- block".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canonical_name_round_trips() {
        for alg in SignatureAlgorithm::ALL {
            assert_eq!(SignatureAlgorithm::parse(alg.name()), Some(*alg));
        }
        assert_eq!(SignatureAlgorithm::ALL.len(), 11);
    }

    #[test]
    fn aliases_parse_to_canonical_algorithms() {
        use SignatureAlgorithm as A;
        for (alias, alg) in [
            ("RSA_SIGN_PSS_2048_SHA256", A::RsaPss2048Sha256),
            ("RSA_SIGN_PSS_3072_SHA256", A::RsaPss3072Sha256),
            ("RSA_SIGN_PSS_4096_SHA256", A::RsaPss4096Sha256),
            ("RSA_SIGN_PSS_4096_SHA512", A::RsaPss4096Sha512),
            ("EC_SIGN_P256_SHA256", A::EcdsaP256Sha256),
            ("EC_SIGN_P384_SHA384", A::EcdsaP384Sha384),
            ("EC_SIGN_P521_SHA512", A::EcdsaP521Sha512),
        ] {
            assert_eq!(SignatureAlgorithm::parse(alias), Some(alg), "{alias}");
        }
    }

    #[test]
    fn unknown_and_lowercase_names_do_not_parse() {
        for name in [
            "",
            "ecdsa_p256_sha256",
            "RSA_PSS_1024_SHA256",
            "ED25519",
            " ECDSA_P256_SHA256",
        ] {
            assert_eq!(SignatureAlgorithm::parse(name), None, "{name:?}");
        }
    }

    #[test]
    fn bit_length_ignores_leading_zero_bytes() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[]), 0);
    }

    #[test]
    fn from_pem_rejects_garbage_without_panicking() {
        let inputs = [
            "",
            "hello",
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nMAMGAQA=\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n",
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
        ];
        for input in inputs {
            for alg in SignatureAlgorithm::ALL {
                assert!(PkixKey::from_pem(input, *alg).is_err(), "{input:?}");
            }
        }
    }

    #[test]
    fn from_der_survives_every_truncation_and_bit_flip() {
        // A real P-256 SPKI (from openssl), mutated in every byte.
        let pem = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAETJpNp9Mn6MLPRniH7993WlmaXMtS
tvSmCRi4zPJSJ6BZh2JGxpF0i2QnE+xJ1n4snKr9oiJxeYwwmL6357k0fA==
-----END PUBLIC KEY-----";
        let der = decode_public_pem(pem).unwrap();
        assert!(PkixKey::from_der(&der, SignatureAlgorithm::EcdsaP256Sha256).is_ok());
        for len in 0..der.len() {
            for alg in SignatureAlgorithm::ALL {
                let _ = PkixKey::from_der(&der[..len], *alg);
            }
        }
        for i in 0..der.len() {
            for bit in 0..8 {
                let mut d = der.clone();
                d[i] ^= 1 << bit;
                let _ = PkixKey::from_der(&d, SignatureAlgorithm::EcdsaP256Sha256);
            }
        }
    }
}
