//! Handing the process over to the runc shim. `exec` replaces this process,
//! so the runc shim sees exactly what containerd gave us — arguments,
//! environment, working directory and the unread stdin — and its answer goes
//! to containerd verbatim. Nothing of ours stays running.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use attestgate_node::ConfigFile;
use serde::Deserialize;

pub const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// The shim's own keys in the node's configuration file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ShimKeys {
    /// The shim allowed containers are handed to; a bare name is looked up
    /// on containerd's PATH.
    pub runc_shim: Option<PathBuf>,
    pub shim_mode: Option<ShimMode>,
}

/// How containerd-shim-attestgate-v2 puts itself between containerd and runc.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShimMode {
    /// By containerd's version: forward from 2.x on, exec before.
    #[default]
    Auto,
    /// Decide in `start`, then become the runc shim.
    Exec,
    /// A forwarder in front of the runc shim decides every Task.Create.
    Forward,
}

/// The runc shim named by the configuration file, for invocations that
/// have not read it already. A configuration that cannot be read must not
/// stop `delete` from cleaning up: then the default name is used.
pub fn configured_runc_shim() -> Option<PathBuf> {
    ConfigFile::discover(None)
        .ok()
        .and_then(|file| file.keys_of::<ShimKeys>(attestgate_node::config::SHIM).ok())
        .and_then(|own| own.runc_shim)
}

/// The runc shim to hand over to: `configured` (the configuration's
/// `runc_shim`), else `containerd-shim-runc-v2` on containerd's PATH.
pub fn runc_shim(configured: Option<PathBuf>) -> Result<PathBuf, String> {
    let wanted = configured.unwrap_or_else(|| PathBuf::from(RUNC_SHIM));
    if wanted.components().count() > 1 {
        return Ok(wanted);
    }
    let own = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(&wanted))
        .find(|candidate| is_executable(candidate) && candidate.canonicalize().ok() != own)
        .ok_or_else(|| format!("{} not found on PATH", wanted.display()))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Replaces this process with the runc shim; returns only on failure.
pub fn exec(shim: &Path, args: &[OsString]) -> std::io::Error {
    Command::new(shim).args(args).exec()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_shim_s_keys_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "runc_shim = \"/x\"\nshim_mode = \"forward\"\nlisten = \"/a\"\n",
        )
        .unwrap();
        let own: ShimKeys = ConfigFile::read(&path)
            .unwrap()
            .keys_of(attestgate_node::config::SHIM)
            .unwrap();
        assert_eq!(own.shim_mode, Some(ShimMode::Forward));
        assert_eq!(own.runc_shim, Some(PathBuf::from("/x")));
        std::fs::write(&path, "shim_mode = \"sometimes\"\n").unwrap();
        let e = ConfigFile::read(&path)
            .unwrap()
            .keys_of::<ShimKeys>(attestgate_node::config::SHIM)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes") && e.contains("config.toml"), "{e}");
    }
}
