//! PEM private keys as a tough key source. tough's own `LocalKeySource`
//! reads Ed25519 and ECDSA keys only as raw DER and never reads SEC1, so
//! the keys openssl and `attestgate keygen` write are decoded here and
//! handed to tough as aws-lc-rs key pairs, which tough signs with.

use std::path::{Path, PathBuf};

use attestgate_policy::verify::pem_blocks;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair,
};
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::sign::Sign;

use super::error::TufError;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Clone)]
enum Material {
    /// PKCS#8 or SEC1 DER of a P-256 key; aws-lc-rs reads both.
    EcdsaP256(Vec<u8>),
    /// PKCS#8 (v1 or v2) DER.
    Ed25519(Vec<u8>),
    Rsa {
        der: Vec<u8>,
        pkcs1: bool,
    },
}

/// A private key read from a PEM file: PKCS#8 (EC P-256, Ed25519, RSA),
/// SEC1 `EC PRIVATE KEY` (P-256) or PKCS#1 `RSA PRIVATE KEY`.
#[derive(Clone)]
pub struct PemKey {
    path: PathBuf,
    material: Material,
    key_id: String,
}

impl std::fmt::Debug for PemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemKey")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl PemKey {
    /// Reads and checks the key now, so a bad key is reported before
    /// anything is signed.
    pub fn from_file(path: &Path) -> Result<PemKey, TufError> {
        let text = std::fs::read_to_string(path).map_err(|e| TufError::Key {
            path: path.to_owned(),
            why: format!("cannot read: {e}"),
        })?;
        PemKey::from_pem(path, &text)
    }

    /// `path` only names the key in messages.
    pub fn from_pem(path: &Path, pem: &str) -> Result<PemKey, TufError> {
        let refuse = |why: String| TufError::Key {
            path: path.to_owned(),
            why,
        };
        let material = parse(pem).map_err(refuse)?;
        let sign = material.key_pair().map_err(|e| refuse(e.to_string()))?;
        let key_id = sign
            .tuf_key()
            .key_id()
            .map_err(|e| refuse(format!("cannot compute its TUF key id: {e}")))?;
        Ok(PemKey {
            path: path.to_owned(),
            material,
            key_id: hex::encode(key_id.as_ref() as &[u8]),
        })
    }

    /// The TUF key id (hex sha256 of the canonical public key), as the root lists it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn tuf_key(&self) -> Result<Key, TufError> {
        let sign = self.material.key_pair().map_err(|e| TufError::Key {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        Ok(sign.tuf_key())
    }

    pub(crate) fn decoded_key_id(&self) -> Result<Decoded<Hex>, TufError> {
        let bytes = hex::decode(&self.key_id).map_err(|e| TufError::Invalid(e.to_string()))?;
        Ok(Decoded::from(bytes))
    }
}

impl Material {
    fn key_pair(&self) -> Result<Box<dyn Sign>, BoxError> {
        Ok(match self {
            Material::EcdsaP256(der) => Box::new(EcdsaKeyPair::from_private_key_der(
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                der,
            )?),
            Material::Ed25519(der) => Box::new(Ed25519KeyPair::from_pkcs8(der)?),
            Material::Rsa { der, pkcs1: true } => Box::new(RsaKeyPair::from_der(der)?),
            Material::Rsa { der, pkcs1: false } => Box::new(RsaKeyPair::from_pkcs8(der)?),
        })
    }
}

#[tough::async_trait]
impl KeySource for PemKey {
    async fn as_sign(&self) -> Result<Box<dyn Sign>, BoxError> {
        self.material.key_pair()
    }

    async fn write(&self, _value: &str, _key_id_hex: &str) -> Result<(), BoxError> {
        Err("attestgate never writes private keys through TUF".into())
    }
}

const SUPPORTED: &str = "TUF metadata can be signed with ECDSA P-256, Ed25519 or RSA";

fn parse(pem: &str) -> Result<Material, String> {
    let blocks = pem_blocks(pem).map_err(|e| format!("not a PEM file: {e}"))?;
    // `openssl ecparam -genkey` writes the curve as a block of its own first.
    let mut keys = blocks.iter().filter(|b| b.label != "EC PARAMETERS");
    let block = match (keys.next(), keys.next()) {
        (Some(block), None) => block,
        (Some(_), Some(_)) => return Err("the PEM file holds more than one key block".into()),
        (None, _) => {
            return Err(
                "no private key block; expected PRIVATE KEY (PKCS#8), EC PRIVATE KEY or RSA PRIVATE KEY"
                    .into(),
            );
        }
    };
    if block.label == "ENCRYPTED PRIVATE KEY" || block.has_headers {
        return Err(
            "the private key is encrypted; decrypt it first, e.g. `openssl pkey -in KEY -out PLAIN`"
                .into(),
        );
    }
    let der = block.der.clone();
    match block.label.as_str() {
        "PRIVATE KEY" => {
            if Ed25519KeyPair::from_pkcs8(&der).is_ok() {
                return Ok(Material::Ed25519(der));
            }
            if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der).is_ok() {
                return Ok(Material::EcdsaP256(der));
            }
            if RsaKeyPair::from_pkcs8(&der).is_ok() {
                return Ok(Material::Rsa { der, pkcs1: false });
            }
            Err(unsupported_curve(&der)
                .unwrap_or_else(|| format!("{SUPPORTED}; this PKCS#8 key is none of them")))
        }
        "EC PRIVATE KEY" => {
            if EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &der).is_ok() {
                return Ok(Material::EcdsaP256(der));
            }
            Err(unsupported_curve(&der)
                .unwrap_or_else(|| format!("{SUPPORTED}; this SEC1 EC key is not P-256")))
        }
        "RSA PRIVATE KEY" => match RsaKeyPair::from_der(&der) {
            Ok(_) => Ok(Material::Rsa { der, pkcs1: true }),
            Err(e) => Err(format!("invalid PKCS#1 RSA private key: {e}")),
        },
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {
            Err("this is a public key; signing needs the private key".into())
        }
        other => Err(format!(
            "unsupported PEM block {other:?}; expected PRIVATE KEY (PKCS#8), EC PRIVATE KEY or RSA PRIVATE KEY"
        )),
    }
}

/// Names the curve of an EC key tough could not label correctly (its
/// ECDSA keys are always declared nistp256), so the refusal says why.
fn unsupported_curve(der: &[u8]) -> Option<String> {
    let curves = [
        (&ECDSA_P384_SHA384_ASN1_SIGNING, "P-384"),
        (&ECDSA_P521_SHA512_ASN1_SIGNING, "P-521"),
    ];
    curves.iter().find_map(|(alg, name)| {
        EcdsaKeyPair::from_private_key_der(alg, der)
            .is_ok()
            .then(|| format!("{SUPPORTED}; this key is {name}"))
    })
}
