//! Private keys: generation and signing (PKIX algorithms of SPEC §4).

use anyhow::{Context as _, anyhow, bail, ensure};
use attestgate_policy::verify::{
    Curve, HashAlgorithm, KeyKind, PemBlock, PkixKey, SignatureAlgorithm, pem_blocks, pkix_key_id,
};
use pkcs8::der::Decode as _;
use pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rand::rngs::OsRng;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use sha2::{Sha256, Sha512};

const OID_RSA_ENCRYPTION: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSASSA_PSS: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_EC_PUBLIC_KEY: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// A freshly generated key pair, PEM encoded.
#[derive(Clone)]
pub struct GeneratedKey {
    /// PKCS#8 `PRIVATE KEY`, unencrypted.
    pub private_pem: String,
    /// SubjectPublicKeyInfo `PUBLIC KEY`.
    pub public_pem: String,
}

/// Generates a key pair for `alg` (RSA of the algorithm's size, or EC on its curve).
pub fn generate(alg: SignatureAlgorithm) -> anyhow::Result<GeneratedKey> {
    let private_pem = match alg.kind() {
        KeyKind::RsaPss { bits } | KeyKind::RsaPkcs1 { bits } => {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, bits)
                .with_context(|| format!("generating a {bits}-bit RSA key"))?;
            key.to_pkcs8_pem(LineEnding::LF)
                .context("encoding the RSA key as PKCS#8")?
                .to_string()
        }
        KeyKind::Ecdsa(Curve::P256) => p256::SecretKey::random(&mut OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the P-256 key as PKCS#8")?
            .to_string(),
        KeyKind::Ecdsa(Curve::P384) => p384::SecretKey::random(&mut OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the P-384 key as PKCS#8")?
            .to_string(),
        KeyKind::Ecdsa(Curve::P521) => p521::SecretKey::random(&mut OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the P-521 key as PKCS#8")?
            .to_string(),
    };
    // Round-trip through the loader so a generated key is, by construction, one that
    // `sign` accepts for the same algorithm.
    let key = SigningKey::from_pem(&private_pem, alg)?;
    let public_pem = key.public_key_pem()?;
    Ok(GeneratedKey {
        private_pem,
        public_pem,
    })
}

enum Signer {
    RsaPkcs1Sha256(rsa::pkcs1v15::SigningKey<Sha256>),
    RsaPkcs1Sha512(rsa::pkcs1v15::SigningKey<Sha512>),
    RsaPssSha256(rsa::pss::BlindedSigningKey<Sha256>),
    RsaPssSha512(rsa::pss::BlindedSigningKey<Sha512>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
}

/// A private key bound to one signature algorithm.
pub struct SigningKey {
    algorithm: SignatureAlgorithm,
    signer: Signer,
    spki_der: Vec<u8>,
    verifier: PkixKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &pkix_key_id(&self.spki_der))
            .finish_non_exhaustive()
    }
}

/// The key material found in a PEM file, before it is bound to an algorithm.
enum PrivateKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

impl PrivateKey {
    fn describe(&self) -> String {
        match self {
            PrivateKey::Rsa(k) => format!("RSA {}-bit", k.n().bits()),
            PrivateKey::P256(_) => "EC P-256".to_owned(),
            PrivateKey::P384(_) => "EC P-384".to_owned(),
            PrivateKey::P521(_) => "EC P-521".to_owned(),
        }
    }
}

impl SigningKey {
    /// Loads an unencrypted PEM private key as openssl writes it: PKCS#8
    /// (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`, with or
    /// without a preceding `EC PARAMETERS` block).
    pub fn from_pem(pem: &str, alg: SignatureAlgorithm) -> anyhow::Result<SigningKey> {
        let key = parse_private_pem(pem)?;
        SigningKey::new(key, alg)
    }

    fn new(key: PrivateKey, alg: SignatureAlgorithm) -> anyhow::Result<SigningKey> {
        let mismatch = |key: &PrivateKey| {
            anyhow!(
                "the key is {} but signature algorithm {} needs {}",
                key.describe(),
                alg.name(),
                describe_needed(alg)
            )
        };
        let (signer, spki) = match (alg.kind(), key) {
            (KeyKind::RsaPss { bits } | KeyKind::RsaPkcs1 { bits }, PrivateKey::Rsa(k)) => {
                let k = *k;
                let actual = k.n().bits();
                ensure!(
                    actual == bits,
                    "the RSA key is {actual} bits but signature algorithm {} needs {bits}",
                    alg.name()
                );
                let spki = k
                    .to_public_key()
                    .to_public_key_der()
                    .context("encoding the RSA public key")?;
                let signer = match (alg.is_pss(), alg.hash()) {
                    (false, HashAlgorithm::Sha512) => {
                        Signer::RsaPkcs1Sha512(rsa::pkcs1v15::SigningKey::new(k))
                    }
                    (false, _) => Signer::RsaPkcs1Sha256(rsa::pkcs1v15::SigningKey::new(k)),
                    // Salt as long as the digest, as GCP/KMS sign and verify.
                    (true, HashAlgorithm::Sha512) => {
                        Signer::RsaPssSha512(rsa::pss::BlindedSigningKey::new(k))
                    }
                    (true, _) => Signer::RsaPssSha256(rsa::pss::BlindedSigningKey::new(k)),
                };
                (signer, spki)
            }
            (KeyKind::Ecdsa(Curve::P256), PrivateKey::P256(k)) => {
                let spki = k
                    .public_key()
                    .to_public_key_der()
                    .context("encoding the P-256 public key")?;
                (Signer::P256(p256::ecdsa::SigningKey::from(k)), spki)
            }
            (KeyKind::Ecdsa(Curve::P384), PrivateKey::P384(k)) => {
                let spki = k
                    .public_key()
                    .to_public_key_der()
                    .context("encoding the P-384 public key")?;
                (Signer::P384(p384::ecdsa::SigningKey::from(k)), spki)
            }
            (KeyKind::Ecdsa(Curve::P521), PrivateKey::P521(k)) => {
                let spki = k
                    .public_key()
                    .to_public_key_der()
                    .context("encoding the P-521 public key")?;
                let signer = p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                    .map_err(|e| anyhow!("invalid P-521 private key: {e}"))?;
                (Signer::P521(signer), spki)
            }
            (_, key) => return Err(mismatch(&key)),
        };
        let spki_der = spki.as_bytes().to_vec();
        let verifier = PkixKey::from_der(&spki_der, alg)
            .context("the public half of the private key is not usable")?;
        Ok(SigningKey {
            algorithm: alg,
            signer,
            spki_der,
            verifier,
        })
    }

    /// Signs `payload`: RSA-PSS (salt = digest length) or PKCS#1 v1.5, or ECDSA
    /// as an ASN.1 DER signature.
    pub fn sign(&self, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let signature = match &self.signer {
            Signer::RsaPkcs1Sha256(k) => k.try_sign_with_rng(&mut OsRng, payload)?.to_vec(),
            Signer::RsaPkcs1Sha512(k) => k.try_sign_with_rng(&mut OsRng, payload)?.to_vec(),
            Signer::RsaPssSha256(k) => k.try_sign_with_rng(&mut OsRng, payload)?.to_vec(),
            Signer::RsaPssSha512(k) => k.try_sign_with_rng(&mut OsRng, payload)?.to_vec(),
            Signer::P256(k) => {
                let sig: p256::ecdsa::Signature = k.try_sign(payload)?;
                sig.to_der().as_bytes().to_vec()
            }
            Signer::P384(k) => {
                let sig: p384::ecdsa::Signature = k.try_sign(payload)?;
                sig.to_der().as_bytes().to_vec()
            }
            Signer::P521(k) => {
                let sig: p521::ecdsa::Signature = k.try_sign_with_rng(&mut OsRng, payload)?;
                sig.to_der().as_bytes().to_vec()
            }
        };
        // A signature the node would reject must never be written into an occurrence
        // (a fault during the private-key operation, or a key/algorithm slip).
        self.verifier
            .verify(payload, &signature)
            .context("the signature just made does not verify under the key's public half")?;
        Ok(signature)
    }

    /// The SubjectPublicKeyInfo PEM of the key's public half.
    pub fn public_key_pem(&self) -> anyhow::Result<String> {
        let doc = spki::Document::from_der(&self.spki_der).context("re-reading the public key")?;
        doc.to_pem("PUBLIC KEY", LineEnding::LF)
            .context("encoding the public key as PEM")
    }

    /// The id GCP derives for the public key (`ni:///sha-256;…`).
    pub fn key_id(&self) -> anyhow::Result<String> {
        Ok(pkix_key_id(&self.spki_der))
    }
}

fn describe_needed(alg: SignatureAlgorithm) -> String {
    match alg.kind() {
        KeyKind::RsaPss { bits } | KeyKind::RsaPkcs1 { bits } => format!("an RSA {bits}-bit key"),
        KeyKind::Ecdsa(curve) => format!("an EC {} key", curve.name()),
    }
}

fn parse_private_pem(pem: &str) -> anyhow::Result<PrivateKey> {
    let blocks = pem_blocks(pem).context("reading the PEM private key")?;
    if blocks.is_empty() {
        bail!(
            "no PEM block found; expected -----BEGIN PRIVATE KEY----- (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY"
        );
    }
    // openssl ecparam -genkey writes the curve as a separate block first.
    let ec_parameters_curve = blocks
        .iter()
        .find(|b| b.label == "EC PARAMETERS")
        .and_then(|b| pkcs8::ObjectIdentifier::from_der(&b.der).ok())
        .and_then(|oid| Curve::from_oid(&oid));

    let mut keys = blocks.iter().filter(|b| b.label != "EC PARAMETERS");
    let block = match (keys.next(), keys.next()) {
        (Some(block), None) => block,
        (Some(_), Some(_)) => bail!("the PEM file holds more than one key block"),
        (None, _) => bail!("the PEM file holds only EC PARAMETERS, no EC PRIVATE KEY"),
    };
    parse_private_block(block, ec_parameters_curve)
}

fn parse_private_block(block: &PemBlock, curve_hint: Option<Curve>) -> anyhow::Result<PrivateKey> {
    if block.label == "ENCRYPTED PRIVATE KEY" || block.has_headers {
        bail!(
            "the private key is encrypted; decrypt it first, e.g. `openssl pkey -in KEY -out PLAIN`"
        );
    }
    match block.label.as_str() {
        "PRIVATE KEY" => parse_pkcs8(&block.der),
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&block.der)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|e| anyhow!("invalid PKCS#1 RSA private key: {e}")),
        "EC PRIVATE KEY" => parse_sec1(&block.der, curve_hint),
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {
            bail!("this is a public key; signing needs the private key")
        }
        other => bail!(
            "unsupported PEM block {other:?}; expected PRIVATE KEY (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY"
        ),
    }
}

fn parse_pkcs8(der: &[u8]) -> anyhow::Result<PrivateKey> {
    let info = pkcs8::PrivateKeyInfo::from_der(der)
        .map_err(|e| anyhow!("invalid PKCS#8 private key: {e}"))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA_ENCRYPTION {
        return rsa::RsaPrivateKey::from_pkcs8_der(der)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|e| anyhow!("invalid PKCS#8 RSA private key: {e}"));
    }
    if oid == OID_RSASSA_PSS {
        bail!(
            "RSA-PSS restricted keys (openssl genpkey -algorithm RSA-PSS) are not supported; \
             generate a plain RSA key (openssl genpkey -algorithm RSA)"
        );
    }
    if oid != OID_EC_PUBLIC_KEY {
        bail!("unsupported private key algorithm {oid}; expected RSA or EC");
    }
    let curve_oid = info
        .algorithm
        .parameters_oid()
        .map_err(|e| anyhow!("EC private key without a named curve: {e}"))?;
    let invalid = |e: pkcs8::Error| anyhow!("invalid PKCS#8 EC private key: {e}");
    match Curve::from_oid(&curve_oid) {
        Some(Curve::P256) => p256::SecretKey::from_pkcs8_der(der)
            .map(PrivateKey::P256)
            .map_err(invalid),
        Some(Curve::P384) => p384::SecretKey::from_pkcs8_der(der)
            .map(PrivateKey::P384)
            .map_err(invalid),
        Some(Curve::P521) => p521::SecretKey::from_pkcs8_der(der)
            .map(PrivateKey::P521)
            .map_err(invalid),
        None => bail!("unsupported EC curve {curve_oid}; expected P-256, P-384 or P-521"),
    }
}

fn parse_sec1(der: &[u8], curve_hint: Option<Curve>) -> anyhow::Result<PrivateKey> {
    let ec = sec1::EcPrivateKey::from_der(der)
        .map_err(|e| anyhow!("invalid SEC1 EC private key: {e}"))?;
    let curve = match ec.parameters {
        Some(sec1::EcParameters::NamedCurve(oid)) => Curve::from_oid(&oid)
            .ok_or_else(|| anyhow!("unsupported EC curve {oid}; expected P-256, P-384 or P-521"))?,
        None => curve_hint.ok_or_else(|| {
            anyhow!("the EC private key does not name its curve and no EC PARAMETERS block does")
        })?,
    };
    let invalid = |e: p256::elliptic_curve::Error| anyhow!("invalid SEC1 EC private key: {e}");
    match curve {
        Curve::P256 => p256::SecretKey::from_sec1_der(der)
            .map(PrivateKey::P256)
            .map_err(invalid),
        Curve::P384 => p384::SecretKey::from_sec1_der(der)
            .map(PrivateKey::P384)
            .map_err(invalid),
        Curve::P521 => p521::SecretKey::from_sec1_der(der)
            .map(PrivateKey::P521)
            .map_err(invalid),
    }
}
