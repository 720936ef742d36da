//! `attestor create`: an Attestor resource as gcloud describes it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use attestgate_policy::verify::{PgpKey, PkixKey};
use clap::Args as ClapArgs;

use crate::Outcome;
use crate::sign::parse_algorithm;

#[derive(ClapArgs)]
pub struct CreateArgs {
    /// projects/P/attestors/A
    #[arg(long)]
    name: String,
    /// projects/P/notes/N
    #[arg(long)]
    note: String,
    /// PEM SubjectPublicKeyInfo, or an ASCII-armored PGP public key.
    #[arg(long)]
    public_key: PathBuf,
    /// Signature algorithm of a PKIX key (not used for PGP keys).
    #[arg(long)]
    algorithm: Option<String>,
    /// Key id; defaults to the derived id (PKIX) or the fingerprint (PGP).
    #[arg(long)]
    key_id: Option<String>,
    #[arg(long)]
    description: Option<String>,
}

/// YAML double-quoted scalar; JSON string syntax is valid YAML.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn block(text: &str, indent: &str) -> String {
    text.lines().map(|l| format!("{indent}{l}\n")).collect()
}

pub fn create(args: CreateArgs) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(&args.public_key)
        .with_context(|| format!("cannot read {}", args.public_key.display()))?;
    let mut out = format!("name: {}\n", quoted(&args.name));
    if let Some(d) = &args.description {
        out.push_str(&format!("description: {}\n", quoted(d)));
    }
    out.push_str(&format!(
        "userOwnedGrafeasNote:\n  noteReference: {}\n  publicKeys:\n",
        quoted(&args.note)
    ));
    if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        let key = PgpKey::from_armored(&text)
            .with_context(|| format!("PGP key {}", args.public_key.display()))?;
        if let Some(id) = &args.key_id
            && !id.eq_ignore_ascii_case(key.fingerprint())
        {
            bail!(
                "--key-id {id:?} is not the PGP key's fingerprint {}",
                key.fingerprint()
            );
        }
        out.push_str("  - asciiArmoredPgpPublicKey: |\n");
        out.push_str(&block(text.trim_end(), "      "));
        out.push_str(&format!("    id: {}\n", quoted(key.fingerprint())));
    } else {
        let algorithm_name = args
            .algorithm
            .as_deref()
            .context("--algorithm is required for a PKIX public key")?;
        let algorithm = parse_algorithm(algorithm_name)?;
        let key = PkixKey::from_pem(&text, algorithm)
            .with_context(|| format!("public key {}", args.public_key.display()))?;
        let id = args.key_id.clone().unwrap_or_else(|| key.derived_id());
        out.push_str(&format!(
            "  - id: {}\n    pkixPublicKey:\n      publicKeyPem: |\n",
            quoted(&id)
        ));
        out.push_str(&block(text.trim(), "        "));
        out.push_str(&format!("      signatureAlgorithm: {}\n", algorithm.name()));
    }
    // What we print must load: parse it back before handing it out.
    attestgate_policy::parse::parse_attestors(&out)
        .context("generated attestor does not validate")?;
    print!("{out}");
    Ok(Outcome::Success)
}
