//! `attestgate repo`: bundle repositories (SPEC §7, §10). A repository is
//! TUF metadata whose targets are a bundle's files; `publish` makes the
//! next version, `push`/`pull` carry it through an OCI registry, `verify`
//! checks a source as a node would.

mod oci;

pub use oci::Reach;
mod tuf;

use clap::Subcommand;

use crate::Outcome;

#[derive(Subcommand)]
pub enum Command {
    /// Create a bundle repository and its first root (DIR/metadata/1.root.json).
    Init(tuf::InitArgs),
    /// Sign a bundle's files as the repository's next version.
    Publish(tuf::PublishArgs),
    /// Renew freshness only: a new timestamp over the current snapshot.
    Timestamp(tuf::TimestampArgs),
    /// Make the next root, signed by the old root's keys and the new ones.
    RotateRoot(tuf::RotateRootArgs),
    /// Push a repository to a registry as one OCI artifact.
    Push(oci::PushArgs),
    /// Pull a repository from a registry into a directory.
    Pull(oci::PullArgs),
    /// Verify a source as a node would; print version, expiry and files.
    Verify(tuf::VerifyArgs),
}

pub fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Init(args) => tuf::init(args),
        Command::Publish(args) => tuf::publish(args),
        Command::Timestamp(args) => tuf::timestamp(args),
        Command::RotateRoot(args) => tuf::rotate_root(args),
        Command::Push(args) => oci::push(args),
        Command::Pull(args) => oci::pull(args),
        Command::Verify(args) => tuf::verify(args),
    }
}

/// The `repo` commands drive async libraries (tough, reqwest) from a
/// synchronous CLI: one small runtime per command.
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}
