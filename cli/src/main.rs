//! attestgate: the command line for people and pipelines.

mod keys;

fn main() -> anyhow::Result<()> {
    let _ = keys::generate;
    Ok(())
}
