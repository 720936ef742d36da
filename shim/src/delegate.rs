//! Handing the process over to the runc shim. `exec` replaces this process,
//! so the runc shim sees exactly what containerd gave us — arguments,
//! environment, working directory and the unread stdin — and its answer goes
//! to containerd verbatim. Nothing of ours stays running.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use attestgate_policy::config::ConfigFile;

pub const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// The runc shim named by the configuration file, for invocations that
/// have not read it already. A configuration that cannot be read must not
/// stop `delete` from cleaning up: then the default name is used.
pub fn configured_runc_shim() -> Option<PathBuf> {
    ConfigFile::discover(None)
        .ok()
        .and_then(|(file, _)| file.runc_shim)
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
