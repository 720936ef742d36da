//! attestgate: the command line for people and pipelines — keys, signing,
//! payloads, attestors, linting bundles and evaluating images exactly as the
//! node would.
//!
//! Exit codes: 0 allow / success, 1 deny, 2 bad input or failure.

mod attestor;
mod audit;
mod check;
mod doctor;
mod evaluate;
mod keys;
mod repo;
mod sign;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "attestgate",
    version,
    about = "Binary Authorization for the Kubernetes node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decide whether an image may run, as the node would (exit 0 allow, 1 deny, 2 bad input).
    Evaluate(evaluate::Args),
    /// Validate policies, attestors and attestations.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Generate a PKIX key pair (PEM) for signing attestations.
    Keygen(sign::KeygenArgs),
    /// Print the signature payload for REPOSITORY@DIGEST, byte-identical to gcloud's.
    Payload(sign::PayloadArgs),
    /// Sign an image digest and write a Grafeas attestation occurrence.
    Sign(sign::SignArgs),
    /// Manage attestor resources.
    Attestor {
        #[command(subcommand)]
        command: AttestorCommand,
    },
    /// Bundle repositories: publish signed bundles and carry them to nodes.
    Repo {
        #[command(subcommand)]
        command: repo::Command,
    },
    /// Query the audit log, rotated files included; `audit summary` counts.
    Audit(audit::Args),
    /// Check that this node is wired for attestgate (exit 0 when every check passes).
    Doctor(doctor::Args),
    /// Write the man pages and bash and zsh completions under DIR (for the
    /// package build).
    #[command(hide = true)]
    WriteManual { dir: std::path::PathBuf },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a bundle directory or one policy, attestor or occurrence file.
    Check(check::Args),
}

#[derive(Subcommand)]
enum AttestorCommand {
    /// Write an Attestor resource (YAML) to stdout.
    Create(attestor::CreateArgs),
}

/// What a command wants the process to exit with.
pub enum Outcome {
    Success,
    Deny,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Evaluate(args) => evaluate::run(args),
        Command::Policy {
            command: PolicyCommand::Check(args),
        } => check::run(args),
        Command::Keygen(args) => sign::keygen(args),
        Command::Payload(args) => sign::payload(args),
        Command::Sign(args) => sign::sign(args),
        Command::Attestor {
            command: AttestorCommand::Create(args),
        } => attestor::create(args),
        Command::Repo { command } => repo::run(command),
        Command::Audit(args) => audit::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::WriteManual { dir } => {
            use clap::CommandFactory as _;
            attestgate_node::manual::write(Cli::command(), &dir)
                .map(|_| Outcome::Success)
                .map_err(|e| {
                    anyhow::anyhow!("cannot write the manual under {}: {e}", dir.display())
                })
        }
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Deny) => ExitCode::from(1),
        Err(e) => {
            eprintln!("attestgate: {e:#}");
            ExitCode::from(2)
        }
    }
}
