//! Every signature that may count for one image as a node pulls it: those
//! beside the digest a reference names, and, for an image index, those
//! beside the child manifest for the node's platform (a signature made with
//! `cosign sign --recursive` lives there).

use attestgate_policy::{Digest, RegistrySignature};

use super::common::SignatureLimits;
use super::lookup::lookup;
use super::resolve::{index_children, resolve};
use crate::oci::{OciError, RegistryOptions};

/// What one image's lookup brought.
#[derive(Debug, Clone)]
pub struct ImageSignatures {
    /// The digest the reference named at the registry.
    pub digest: Digest,
    /// Signatures by the digest they were found beside: the image's, then
    /// its platform child's when it is an index.
    pub signatures: Vec<(Digest, Vec<RegistrySignature>)>,
    /// Items skipped, with why (a decoy referrer, a damaged layer).
    pub problems: Vec<String>,
    /// Platform children whose lookup failed as a whole, with why: their
    /// signatures are missing, not absent.
    pub failed_children: Vec<String>,
}

/// An OS and architecture as image indexes name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    /// The platform this program runs on, in Go's names.
    pub fn this_machine() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
        }
    }
}

/// Looks up the signatures of `reference` (a tag or a digest) in
/// `registry`/`repository`. The image's own lookup failing fails the
/// whole; a child's only leaves that child out (in `failed_children`).
pub async fn lookup_image(
    options: &RegistryOptions,
    registry: &str,
    repository: &str,
    reference: &str,
    platform: &Platform,
    limits: &SignatureLimits,
) -> Result<ImageSignatures, OciError> {
    let resolved = resolve(options, registry, repository, reference).await?;
    let children: Vec<Digest> = index_children(&resolved)
        .into_iter()
        .filter(|c| {
            c.os.as_deref() == Some(platform.os.as_str())
                && c.architecture.as_deref() == Some(platform.architecture.as_str())
        })
        .map(|c| c.digest)
        .collect();
    let own = lookup(options, registry, repository, &resolved.digest, limits).await?;
    let mut problems = own.problems;
    let mut failed_children = Vec::new();
    let mut signatures = vec![(resolved.digest.clone(), own.signatures)];
    for child in children {
        match lookup(options, registry, repository, &child, limits).await {
            Ok(found) => {
                problems.extend(found.problems);
                signatures.push((child, found.signatures));
            }
            Err(e) => failed_children.push(format!("{child}: {e}")),
        }
    }
    Ok(ImageSignatures {
        digest: resolved.digest,
        signatures,
        problems,
        failed_children,
    })
}

/// The registry host and the repository path of a normalised repository
/// (`host[:port]/path`); Docker Hub's name is not its API's host.
pub fn split_repository(repository: &str) -> Option<(String, &str)> {
    let (host, path) = repository.split_once('/')?;
    let host = if host == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        host.to_string()
    };
    Some((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_reached_at_its_api_host() {
        assert_eq!(
            split_repository("docker.io/library/busybox"),
            Some(("registry-1.docker.io".to_string(), "library/busybox"))
        );
        assert_eq!(
            split_repository("127.0.0.1:5000/app/x"),
            Some(("127.0.0.1:5000".to_string(), "app/x"))
        );
        assert_eq!(split_repository("app"), None);
    }
}
