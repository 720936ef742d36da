//! OpenPGP public keys and attached (inline) signatures, as `gpg --sign` writes them.

use std::fmt;
use std::io::Read as _;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pgp::composed::{Deserializable as _, Message, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{KeyDetails as _, KeyVersion, VerifyingKey};

use super::{KeyError, VerifyError};

/// Payloads are a few hundred bytes of JSON; the cap bounds what a decompression
/// bomb in an occurrence file can make the node allocate.
pub(crate) const MAX_LITERAL_DATA: u64 = 1 << 20;

/// How many compression layers may wrap the signed message. gpg writes one.
const MAX_COMPRESSION_LAYERS: usize = 2;

/// A PGP public key of an attestor: the primary key and its valid signing subkeys.
#[derive(Clone)]
pub struct PgpKey {
    fingerprint: String,
    primary: PublicKey,
    signing_subkeys: Vec<PublicSubkey>,
}

impl fmt::Debug for PgpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subkeys: Vec<String> = self
            .signing_subkeys
            .iter()
            .map(|k| format!("{:X}", k.fingerprint()))
            .collect();
        f.debug_struct("PgpKey")
            .field("fingerprint", &self.fingerprint)
            .field("signing_subkeys", &subkeys)
            .finish()
    }
}

impl PgpKey {
    /// Parses one ASCII-armored public key block (`gpg --armor --export`).
    pub fn from_armored(text: &str) -> Result<PgpKey, KeyError> {
        catch_unwind(AssertUnwindSafe(|| PgpKey::parse(text))).unwrap_or_else(|_| {
            Err(KeyError::InvalidPgp(
                "the OpenPGP parser failed on this input".to_owned(),
            ))
        })
    }

    fn parse(text: &str) -> Result<PgpKey, KeyError> {
        let invalid = |e: pgp::errors::Error| KeyError::InvalidPgp(e.to_string());
        let text = normalize_armor(text);
        let (mut keys, _headers) = SignedPublicKey::from_string_many(&text).map_err(invalid)?;
        let key = match keys.next() {
            Some(key) => key.map_err(invalid)?,
            None => {
                return Err(KeyError::InvalidPgp(
                    "no public key in the block".to_owned(),
                ));
            }
        };
        // An attestor key names exactly one certificate; a second one would be
        // silently trusted or silently ignored, both surprising.
        if keys.next().is_some() {
            return Err(KeyError::InvalidPgp(
                "the block holds more than one public key".to_owned(),
            ));
        }

        if key.primary_key.version() != KeyVersion::V4 {
            return Err(KeyError::InvalidPgp(format!(
                "only OpenPGP v4 keys are supported, this is a {:?} key",
                key.primary_key.version()
            )));
        }
        if is_revoked(&key) {
            return Err(KeyError::InvalidPgp(format!(
                "key {:X} is revoked",
                key.primary_key.fingerprint()
            )));
        }

        let signing_subkeys = key
            .public_subkeys
            .iter()
            .filter(|sub| is_valid_signing_subkey(&key.primary_key, sub))
            .map(|sub| sub.key.clone())
            .collect();

        Ok(PgpKey {
            fingerprint: format!("{:X}", key.primary_key.fingerprint()),
            primary: key.primary_key,
            signing_subkeys,
        })
    }

    /// Upper-case hex V4 fingerprint of the primary key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Verifies a signed OpenPGP message (armored or binary, compressed or not) and
    /// returns its literal data, exactly as signed.
    pub fn verify_attached(&self, message: &[u8]) -> Result<Vec<u8>, VerifyError> {
        // rPGP guards its reader state machines with panics; a crafted occurrence must
        // never take the node down, so one is turned into a rejection.
        catch_unwind(AssertUnwindSafe(|| self.verify_message(message))).unwrap_or_else(|_| {
            Err(VerifyError::Malformed(
                "the OpenPGP parser failed on this message".to_owned(),
            ))
        })
    }

    fn verify_message(&self, message: &[u8]) -> Result<Vec<u8>, VerifyError> {
        let malformed = |e: pgp::errors::Error| VerifyError::Malformed(e.to_string());

        let armored_text;
        let msg = if is_armored(message) {
            let text = std::str::from_utf8(message).map_err(|_| {
                VerifyError::Malformed("armored PGP message is not UTF-8".to_owned())
            })?;
            if text.contains("-----BEGIN PGP SIGNED MESSAGE-----") {
                return Err(VerifyError::Malformed(
                    "cleartext-signed messages are not supported; sign with `gpg --sign`"
                        .to_owned(),
                ));
            }
            armored_text = normalize_armor(text);
            Message::from_armor(armored_text.as_bytes())
                .map_err(malformed)?
                .0
        } else {
            Message::from_bytes(message).map_err(malformed)?
        };

        let mut msg = msg;
        for _ in 0..MAX_COMPRESSION_LAYERS {
            if !msg.is_compressed() {
                break;
            }
            msg = msg.decompress().map_err(malformed)?;
        }
        match &msg {
            Message::Signed { .. } => {}
            Message::Literal { .. } => return Err(VerifyError::NotSignedByKey),
            Message::Compressed { .. } => {
                return Err(VerifyError::Malformed(
                    "too many compression layers".to_owned(),
                ));
            }
            Message::Encrypted { .. } => {
                return Err(VerifyError::Malformed(
                    "encrypted PGP messages are not supported".to_owned(),
                ));
            }
        }
        // A signature may also cover a compressed message; its hash is over the
        // decompressed literal data.
        let mut msg = msg.decompress().map_err(malformed)?;
        check_signed_literal(&msg)?;

        let mut data = Vec::new();
        (&mut msg)
            .take(MAX_LITERAL_DATA + 1)
            .read_to_end(&mut data)
            .map_err(|e| VerifyError::Malformed(format!("reading PGP message: {e}")))?;
        if data.len() as u64 > MAX_LITERAL_DATA {
            return Err(VerifyError::Malformed(format!(
                "literal data exceeds {MAX_LITERAL_DATA} bytes"
            )));
        }

        let mut level = &msg;
        while let Message::Signed { reader, .. } = level {
            if !reader.is_done() {
                return Err(VerifyError::Malformed(
                    "PGP message ended before its signatures".to_owned(),
                ));
            }
            for index in 0..reader.num_signatures() {
                let Some(sig) = reader.signature(index) else {
                    continue;
                };
                if !is_acceptable_document_signature(sig) {
                    continue;
                }
                let verified = self
                    .verifying_keys()
                    .any(|key| level.verify_nested_explicit(index, key).is_ok());
                if verified {
                    return Ok(data);
                }
            }
            level = reader.get_ref();
        }
        Err(VerifyError::NotSignedByKey)
    }

    fn verifying_keys(&self) -> impl Iterator<Item = &dyn VerifyingKey> {
        std::iter::once(&self.primary as &dyn VerifyingKey)
            .chain(self.signing_subkeys.iter().map(|k| k as &dyn VerifyingKey))
    }
}

/// Every signature layer must, in the end, hash the literal data we return; a
/// compressed or encrypted layer under a signature would be hashed as raw packet bytes.
fn check_signed_literal(msg: &Message<'_>) -> Result<(), VerifyError> {
    let mut level = msg;
    loop {
        match level {
            Message::Signed { reader, .. } => level = reader.get_ref(),
            Message::Literal { .. } => return Ok(()),
            Message::Compressed { .. } | Message::Encrypted { .. } => {
                return Err(VerifyError::Malformed(
                    "unsupported nesting inside the signed PGP message".to_owned(),
                ));
            }
        }
    }
}

fn is_acceptable_document_signature(sig: &Signature) -> bool {
    let document = matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text));
    // MD5, SHA-1 and RIPEMD-160 allow forging a signed payload by collision.
    let strong_hash = matches!(
        sig.hash_alg(),
        Some(
            HashAlgorithm::Sha224
                | HashAlgorithm::Sha256
                | HashAlgorithm::Sha384
                | HashAlgorithm::Sha512
                | HashAlgorithm::Sha3_256
                | HashAlgorithm::Sha3_512
        )
    );
    document && strong_hash
}

fn is_revoked(key: &SignedPublicKey) -> bool {
    key.details.revocation_signatures.iter().any(|sig| {
        sig.typ() == Some(SignatureType::KeyRevocation) && sig.verify_key(&key.primary_key).is_ok()
    })
}

/// A subkey counts when its newest valid binding grants signing, the subkey
/// cross-certifies the primary (back signature), and it is not revoked.
fn is_valid_signing_subkey(primary: &PublicKey, sub: &SignedPublicSubKey) -> bool {
    let revoked = sub.signatures.iter().any(|sig| {
        sig.typ() == Some(SignatureType::SubkeyRevocation)
            && sig.verify_subkey_binding(primary, &sub.key).is_ok()
    });
    if revoked {
        return false;
    }
    let newest_binding = sub
        .signatures
        .iter()
        .filter(|sig| {
            sig.typ() == Some(SignatureType::SubkeyBinding)
                && sig.verify_subkey_binding(primary, &sub.key).is_ok()
        })
        .max_by_key(|sig| sig.created().map(|t| t.as_secs()));
    let Some(binding) = newest_binding else {
        return false;
    };
    binding.key_flags().sign()
        && binding
            .embedded_signature()
            .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok())
}

fn is_armored(message: &[u8]) -> bool {
    let start = message
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(message.len());
    message[start..].starts_with(b"-----BEGIN PGP ")
}

/// YAML block scalars and copy-paste indent or pad armor lines; the armor
/// grammar has no meaningful leading or trailing whitespace on a line.
fn normalize_armor(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.trim().lines() {
        out.push_str(line.trim());
        out.push('\n');
    }
    out
}
