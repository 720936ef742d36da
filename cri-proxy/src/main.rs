//! attestgate-proxy: the node daemon. Not yet implemented; see issue "attestgate-proxy".

fn main() -> anyhow::Result<()> {
    anyhow::bail!("attestgate-proxy is not implemented yet")
}
