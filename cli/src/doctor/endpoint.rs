//! CRI endpoints as kubelet and the proxy write them: a socket path, or
//! the same with `unix://` before it.

use std::path::{Component, Path, PathBuf};

/// The socket an endpoint names; none for one that is not a Unix socket
/// (`tcp://`, `npipe://`).
pub fn socket(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    path.starts_with('/').then(|| normal(Path::new(path)))
}

/// Whether `endpoint` names the socket at `path`. `/var/run` is `/run` on
/// every systemd node (a symlink), and kubeadm still writes the former.
pub fn same_socket(endpoint: &str, path: &Path) -> bool {
    let Some(named) = socket(endpoint) else {
        return false;
    };
    let path = path.to_string_lossy();
    socket(&path).is_some_and(|p| p == named)
}

fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    match out.strip_prefix("/var/run") {
        Ok(rest) => Path::new("/run").join(rest),
        Err(_) => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_sockets_with_or_without_a_scheme() {
        let listen = Path::new("/run/attestgate/cri.sock");
        assert!(same_socket("unix:///run/attestgate/cri.sock", listen));
        assert!(same_socket("/run/attestgate/cri.sock", listen));
        assert!(same_socket("unix:///var/run/attestgate/cri.sock", listen));
        assert!(same_socket(
            "unix:///run/attestgate/../attestgate/cri.sock",
            listen
        ));
        assert!(!same_socket(
            "unix:///run/containerd/containerd.sock",
            listen
        ));
        assert!(!same_socket("tcp://127.0.0.1:3735", listen));
        assert!(!same_socket("unix://run/attestgate/cri.sock", listen));
        assert_eq!(socket("npipe:////./pipe/containerd"), None);
    }
}
