//! (being written) init, publish, timestamp, rotate-root, verify.

use std::path::PathBuf;

use clap::Args;

use crate::Outcome;

#[derive(Args)]
pub struct InitArgs {
    pub dir: PathBuf,
}
#[derive(Args)]
pub struct PublishArgs {
    pub dir: PathBuf,
}
#[derive(Args)]
pub struct TimestampArgs {
    pub dir: PathBuf,
}
#[derive(Args)]
pub struct RotateRootArgs {
    pub dir: PathBuf,
}
#[derive(Args)]
pub struct VerifyArgs {
    pub source: String,
}

pub fn init(_: InitArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not built yet")
}
pub fn publish(_: PublishArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not built yet")
}
pub fn timestamp(_: TimestampArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not built yet")
}
pub fn rotate_root(_: RotateRootArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not built yet")
}
pub fn verify(_: VerifyArgs) -> anyhow::Result<Outcome> {
    let _ = super::block_on(async {})?;
    anyhow::bail!("not built yet")
}
