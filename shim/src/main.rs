//! containerd-shim-attestgate-v2. Not yet implemented; see issue "containerd-shim-attestgate-v2".

fn main() -> anyhow::Result<()> {
    anyhow::bail!("containerd-shim-attestgate-v2 is not implemented yet")
}
