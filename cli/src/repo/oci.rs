//! (being written) push, pull.

use std::path::PathBuf;

use clap::Args;

use crate::Outcome;

#[derive(Args)]
pub struct PushArgs {
    pub dir: PathBuf,
    pub destination: String,
}
#[derive(Args)]
pub struct PullArgs {
    pub source: String,
    pub dir: PathBuf,
}

pub fn push(_: PushArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not built yet")
}
pub fn pull(_: PullArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!("not built yet")
}
