//! `keygen`, `payload` and `sign`: what a CI pipeline needs to attest an image.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use attestgate_policy::payload::signature_payload;
use attestgate_policy::verify::SignatureAlgorithm;
use base64::Engine as _;
use clap::Args as ClapArgs;

use crate::Outcome;
use crate::keys::{GeneratedKey, SigningKey, generate};

pub fn parse_algorithm(name: &str) -> anyhow::Result<SignatureAlgorithm> {
    SignatureAlgorithm::parse(name).with_context(|| {
        let names: Vec<&str> = SignatureAlgorithm::ALL.iter().map(|a| a.name()).collect();
        format!(
            "unknown signature algorithm {name:?}; one of {}",
            names.join(", ")
        )
    })
}

#[derive(ClapArgs)]
pub struct KeygenArgs {
    /// GCP signature algorithm, e.g. ECDSA_P256_SHA256 or RSA_PSS_2048_SHA256;
    /// or ed25519, for TUF metadata keys (`repo`) only.
    #[arg(long)]
    algorithm: String,
    /// Where to write the private key (PKCS#8 PEM, mode 0600).
    #[arg(long)]
    private: PathBuf,
    /// Where to write the public key (SubjectPublicKeyInfo PEM).
    #[arg(long)]
    public: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<Outcome> {
    let key = if args.algorithm.eq_ignore_ascii_case("ed25519") {
        generate_ed25519()?
    } else {
        generate(parse_algorithm(&args.algorithm)?)?
    };
    write_file(&args.private, key.private_pem.as_bytes(), 0o600, args.force)?;
    write_file(&args.public, key.public_pem.as_bytes(), 0o644, args.force)?;
    eprintln!(
        "wrote {} and {}",
        args.private.display(),
        args.public.display()
    );
    Ok(Outcome::Success)
}

/// Writes a new file; refuses to replace one unless `force`, so a
/// mistyped path never destroys a signing key.
fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE,
/// AlgorithmIdentifier id-Ed25519, BIT STRING of the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 key pair for TUF metadata (not an attestation algorithm):
/// PKCS#8 v1, as `openssl genpkey -algorithm ed25519` writes it.
fn generate_ed25519() -> anyhow::Result<GeneratedKey> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let document = Ed25519KeyPair::generate_pkcs8v1(&rng)
        .map_err(|_| anyhow::anyhow!("generating an Ed25519 key failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(document.as_ref())
        .map_err(|e| anyhow::anyhow!("re-reading the Ed25519 key: {e}"))?;
    let private_pem = pkcs8::SecretDocument::try_from(document.as_ref())
        .context("encoding the Ed25519 key")?
        .to_pem("PRIVATE KEY", pkcs8::LineEnding::LF)
        .context("encoding the Ed25519 key as PEM")?
        .to_string();
    let mut spki_der = ED25519_SPKI_PREFIX.to_vec();
    spki_der.extend_from_slice(pair.public_key().as_ref());
    let public_pem = spki::Document::try_from(spki_der.as_slice())
        .context("encoding the Ed25519 public key")?
        .to_pem("PUBLIC KEY", pkcs8::LineEnding::LF)
        .context("encoding the Ed25519 public key as PEM")?;
    Ok(GeneratedKey {
        private_pem,
        public_pem,
    })
}

#[derive(ClapArgs)]
pub struct PayloadArgs {
    /// REPOSITORY@DIGEST (an https:// prefix is accepted).
    #[arg(long)]
    artifact_url: String,
}

pub fn payload(args: PayloadArgs) -> anyhow::Result<Outcome> {
    let payload = signature_payload(&args.artifact_url)?;
    std::io::stdout().write_all(payload.as_bytes())?;
    Ok(Outcome::Success)
}

#[derive(ClapArgs)]
pub struct SignArgs {
    /// REPOSITORY@DIGEST of the image to attest (with --cosign:
    /// REGISTRY/REPOSITORY@DIGEST).
    #[arg(long)]
    artifact_url: String,
    /// Private key PEM: PKCS#8, PKCS#1 RSA or SEC1 EC, as openssl writes them.
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    algorithm: String,
    /// The attestor's note, projects/P/notes/N.
    #[arg(long, required_unless_present = "cosign", conflicts_with = "cosign")]
    note: Option<String>,
    /// Public key id to record; defaults to the key's derived ni:///sha-256; id.
    #[arg(long, conflicts_with = "cosign")]
    key_id: Option<String>,
    /// Write the occurrence here instead of stdout.
    #[arg(long, conflicts_with = "cosign")]
    out: Option<PathBuf>,
    /// Sign as cosign does and push the signature to the image's registry
    /// (the `sha256-<hex>.sig` tag beside it) instead of writing an
    /// occurrence; prints the tag and the signature manifest's digest.
    #[arg(long)]
    cosign: bool,
    #[command(flatten)]
    reach: crate::repo::Reach,
}

pub fn sign(args: SignArgs) -> anyhow::Result<Outcome> {
    let algorithm = parse_algorithm(&args.algorithm)?;
    if args.cosign {
        return sign_cosign(&args, algorithm);
    }
    let note = args.note.clone().unwrap_or_default();
    let note_parts: Vec<&str> = note.split('/').collect();
    if !(note_parts.len() == 4
        && note_parts[0] == "projects"
        && note_parts[2] == "notes"
        && !note_parts[1].is_empty()
        && !note_parts[3].is_empty())
    {
        bail!("--note {note:?}: expected projects/PROJECT/notes/NOTE");
    }
    let payload = signature_payload(&args.artifact_url)?;
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read {}", args.key.display()))?;
    let key = SigningKey::from_pem(&pem, algorithm)
        .with_context(|| format!("key {}", args.key.display()))?;
    let signature = key.sign(payload.as_bytes())?;
    let key_id = match args.key_id {
        Some(id) if !id.is_empty() => id,
        _ => key.key_id()?,
    };
    let url = args
        .artifact_url
        .strip_prefix("https://")
        .unwrap_or(&args.artifact_url);
    let b64 = base64::engine::general_purpose::STANDARD;
    let occurrence = serde_json::json!({
        "resourceUri": format!("https://{url}"),
        "noteName": note,
        "kind": "ATTESTATION",
        "attestation": {
            "serializedPayload": b64.encode(payload.as_bytes()),
            "signatures": [{ "publicKeyId": key_id, "signature": b64.encode(&signature) }],
        },
    });
    let mut text = serde_json::to_string_pretty(&occurrence)?;
    text.push('\n');
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(Outcome::Success)
}

/// `sign --cosign`: cosign's simple-signing payload for the image, signed
/// with the key and added to the image's `.sig` manifest in its registry,
/// which `cosign verify --key` and the node's registry lookup both read.
fn sign_cosign(args: &SignArgs, algorithm: SignatureAlgorithm) -> anyhow::Result<Outcome> {
    use attestgate_registry::signatures::{cosign_payload, push_cosign};
    let url = args
        .artifact_url
        .strip_prefix("https://")
        .unwrap_or(&args.artifact_url);
    let image = attestgate_policy::ImageRef::parse(url)
        .with_context(|| format!("--artifact-url {url:?}"))?;
    let digest = image.digest.clone().with_context(|| {
        format!("--artifact-url {url:?}: expected REGISTRY/REPOSITORY@sha256:DIGEST")
    })?;
    // The registry is where the signature goes; it is never guessed.
    let first = url.split('/').next().unwrap_or_default();
    if !url.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost") {
        bail!("--artifact-url {url:?}: name the registry (REGISTRY/REPOSITORY@sha256:DIGEST)");
    }
    let (registry, repository) = image
        .repository
        .split_once('/')
        .with_context(|| format!("--artifact-url {url:?}: no repository"))?;
    // Docker Hub's API is not at the name images carry.
    let host = if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    };
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("cannot read {}", args.key.display()))?;
    let key = SigningKey::from_pem(&pem, algorithm)
        .with_context(|| format!("key {}", args.key.display()))?;
    let payload = cosign_payload(&image.repository, &digest);
    let signature = key.sign(&payload)?;
    let options = args.reach.options(host)?;
    let pushed = crate::repo::block_on(push_cosign(
        &options, host, repository, &digest, &payload, &signature,
    ))?
    .with_context(|| format!("pushing the signature of {}", image.pinned()))?;
    if pushed.added {
        eprintln!(
            "signed {} ({} signatures in {})",
            image.pinned(),
            pushed.layers,
            pushed.tag
        );
    } else {
        eprintln!(
            "{} already holds this signature of {}; nothing pushed",
            pushed.tag,
            image.pinned()
        );
    }
    println!(
        "{}:{} {}",
        image.repository, pushed.tag, pushed.manifest_digest
    );
    Ok(Outcome::Success)
}
