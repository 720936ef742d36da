//! Where doctor looks: every node path under a root, `/` on a node and a
//! temporary directory in tests, so a whole fake node can be laid out
//! without touching the real one.

use std::path::{Component, Path, PathBuf};

pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: PathBuf) -> Root {
        Root { dir }
    }

    /// `path` as written on the node, under the root. A relative path is
    /// taken from the node's `/`, as the daemons, started by systemd in
    /// `/`, would take it.
    pub fn path(&self, path: &Path) -> PathBuf {
        let relative: PathBuf = path
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
            .collect();
        self.dir.join(relative)
    }

    /// [`Root::path`], with a symlink at the end followed as the node
    /// would follow it: an absolute target names a node path, so it is
    /// taken under the root too (the syncer's bundle symlink is one).
    pub fn follow(&self, path: &Path) -> PathBuf {
        let mut here = self.path(path);
        // As many hops as the kernel allows before ELOOP.
        for _ in 0..40 {
            let Ok(target) = std::fs::read_link(&here) else {
                break;
            };
            here = if target.is_absolute() {
                self.path(&target)
            } else {
                match here.parent() {
                    Some(parent) => parent.join(target),
                    None => target,
                }
            };
        }
        here
    }
}

/// A fake node for tests: each `(path, text)` written under a new
/// temporary root.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub fn laid_out(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let root = Root::new(dir.path().to_path_buf());
    (dir, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_land_under_the_root() {
        let root = Root::new(PathBuf::from("/tmp/node"));
        assert_eq!(
            root.path(Path::new("/etc/attestgate/config.toml")),
            Path::new("/tmp/node/etc/attestgate/config.toml")
        );
        assert_eq!(
            root.path(Path::new("run/x.sock")),
            Path::new("/tmp/node/run/x.sock")
        );
        let real = Root::new(PathBuf::from("/"));
        assert_eq!(
            real.path(Path::new("/run/x.sock")),
            Path::new("/run/x.sock")
        );
    }

    #[test]
    fn absolute_symlink_targets_are_node_paths() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().to_path_buf());
        std::fs::create_dir_all(dir.path().join("var/lib/sync/v1")).unwrap();
        std::os::unix::fs::symlink("/var/lib/sync/v1", dir.path().join("var/lib/bundle")).unwrap();
        assert_eq!(
            root.follow(Path::new("/var/lib/bundle")),
            dir.path().join("var/lib/sync/v1")
        );
    }
}
