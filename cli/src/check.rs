//! `attestgate policy check`: lint a bundle or a single file.

use std::path::PathBuf;

use attestgate_policy::Bundle;
use attestgate_policy::parse::{DocumentKind, check_file};
use clap::Args as ClapArgs;

use crate::Outcome;

#[derive(ClapArgs)]
pub struct Args {
    /// A bundle directory, or one policy, platform policy, attestor or
    /// occurrence file.
    path: PathBuf,
    /// Treat skipped attestations in a bundle as errors.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if args.path.is_dir() {
        let bundle = Bundle::load(&args.path).map_err(|e| {
            let all: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("{}", all.join("\n"))
        })?;
        for w in bundle.warnings() {
            eprintln!("warning: skipped: {w}");
        }
        if args.strict && !bundle.warnings().is_empty() {
            anyhow::bail!(
                "{} attestation problem(s) in {}",
                bundle.warnings().len(),
                args.path.display()
            );
        }
        let platform = match bundle.platform_policy() {
            Some(p) => format!(", platform policy with {} check set(s)", p.check_sets.len()),
            None => String::new(),
        };
        println!(
            "{}: valid bundle ({} attestor(s), {} attestation(s), {} skipped{platform}) {}",
            args.path.display(),
            bundle.attestors().count(),
            bundle.occurrence_count(),
            bundle.warnings().len(),
            bundle.digest()
        );
        return Ok(Outcome::Success);
    }
    match check_file(&args.path) {
        Ok(kind) => {
            let what = match kind {
                DocumentKind::Policy => "valid policy".to_string(),
                DocumentKind::Attestors { count } => format!("{count} valid attestor(s)"),
                DocumentKind::Occurrences { count } => {
                    format!("{count} valid attestation occurrence(s)")
                }
                DocumentKind::PlatformPolicy { check_sets } => {
                    format!("valid platform policy ({check_sets} check set(s))")
                }
            };
            println!("{}: {what}", args.path.display());
            Ok(Outcome::Success)
        }
        Err(errors) => {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::bail!("{}", all.join("\n"))
        }
    }
}
