//! Durable writes: a reader (or a crash) sees the old file or the new one,
//! never half of one.

use std::io::Write as _;
use std::path::Path;

use super::error::TufError;

/// Writes `bytes` to a temporary file beside `path`, fsyncs it, renames it
/// over `path` and fsyncs the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TufError> {
    let dir = parent(path)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| TufError::io(format!("creating a temporary file in {}", dir.display()), e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| TufError::io(format!("writing {}", path.display()), e))?;
    tmp.persist(path)
        .map_err(|e| TufError::io(format!("renaming into {}", path.display()), e.error))?;
    sync_dir(dir)
}

/// Writes a new file (no rename) and fsyncs it, for files inside a staging
/// directory that is itself renamed into place.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TufError> {
    let what = || format!("writing {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TufError::io(what(), e))?;
    }
    let mut file = std::fs::File::create(path).map_err(|e| TufError::io(what(), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| TufError::io(what(), e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), TufError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TufError::io(format!("syncing directory {}", dir.display()), e))
}

fn parent(path: &Path) -> Result<&Path, TufError> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Ok(Path::new(".")),
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TufError> {
    std::fs::read(path).map_err(|e| TufError::io(format!("reading {}", path.display()), e))
}

/// `Ok(None)` when the file does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, TufError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TufError::io(format!("reading {}", path.display()), e)),
    }
}
