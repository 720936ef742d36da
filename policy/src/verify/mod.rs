//! Signature verification: PKIX keys (RSA PKCS#1 v1.5, RSA-PSS, ECDSA) and
//! OpenPGP keys with attached signatures.
//!
//! CONTRACT (used by the rest of the crate; implementation in pkix.rs / pgp.rs):
//! - `SignatureAlgorithm::parse(&str) -> Option<SignatureAlgorithm>` accepts every
//!   GCP name including the `RSA_SIGN_PSS_*` / `EC_SIGN_*` aliases;
//!   `SignatureAlgorithm::name()` gives the canonical GCP name.
//! - `PkixKey::from_pem(pem, alg) -> Result<PkixKey, KeyError>`; RSA size must match alg.
//! - `PkixKey::derived_id()` -> `ni:///sha-256;<b64url(sha256(spki der))>`.
//! - `PkixKey::verify(payload, signature) -> Result<(), VerifyError>`.
//! - `PgpKey::from_armored(text) -> Result<PgpKey, KeyError>`; `fingerprint()` upper hex.
//! - `PgpKey::verify_attached(message bytes, armored or binary) -> Result<Vec<u8>, VerifyError>`
//!   returns the literal data of a message signed by the key (primary or subkey).
//!
//! Also public, for the CLI's private keys: `pem_blocks` (lenient PEM splitting),
//! `pkix_key_id(spki_der)`, `PkixKey::from_der` / `spki_der()`, and the algorithm
//! details `SignatureAlgorithm::{kind, hash, rsa_bits, curve, is_rsa, is_pss}`.

mod pgp;
mod pkix;

pub use self::pgp::PgpKey;
#[doc(hidden)]
pub use self::pkix::comb_tables_built;
pub use self::pkix::{
    Curve, HashAlgorithm, KeyKind, PemBlock, PemError, PkixKey, SignatureAlgorithm,
    UnknownAlgorithm, pem_blocks, pkix_key_id, verify_without_tables,
};

/// A public key could not be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("invalid PEM public key: {0}")]
    InvalidPem(String),
    #[error("key type {actual} does not match signature algorithm {algorithm}")]
    AlgorithmMismatch {
        algorithm: &'static str,
        actual: String,
    },
    #[error("RSA key is {actual} bits but signature algorithm {algorithm} needs {expected}")]
    RsaKeySize {
        algorithm: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("invalid PGP public key: {0}")]
    InvalidPgp(String),
}

/// A signature did not verify.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("PGP message is not signed by this key")]
    NotSignedByKey,
}
