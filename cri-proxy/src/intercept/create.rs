//! CreateContainer: the authoritative check. It covers images already on
//! the node however they got there. The name decided is the one the request
//! asked for; only a bare image id falls back to the image's repo digests.

use std::time::Instant;

use attestgate_policy::{Decision, ImageRef, Operation};
use bytes::Bytes;
use http::request::Parts;
use prost::Message as _;

use super::pull::{pod_v1, pod_v1alpha2};
use super::{Gate, Pod, Subject, deadline, digest_for, is_image_id};
use crate::grpc::{self, ProxyError};
use crate::resolve::{Api, ImageInfo, ImageRuntime};
use crate::server::Reply;

pub struct CreateRequest {
    /// `config.image.image`: an image id, a digest reference or a tag.
    pub image: String,
    /// `config.image.user_specified_image` (kubelet 1.28+): the pod spec's name.
    pub user_specified_image: String,
    pub container: String,
    pub pod: Pod,
}

pub fn decode(api: Api, message: &[u8]) -> Result<CreateRequest, ProxyError> {
    let bad =
        |e: prost::DecodeError| ProxyError::BadRequest(format!("CreateContainerRequest: {e}"));
    Ok(match api {
        Api::V1 => {
            let r = k8s_cri::v1::CreateContainerRequest::decode(message).map_err(bad)?;
            let config = r.config.unwrap_or_default();
            let spec = config.image.unwrap_or_default();
            CreateRequest {
                image: spec.image,
                user_specified_image: spec.user_specified_image,
                container: config.metadata.map(|m| m.name).unwrap_or_default(),
                pod: r.sandbox_config.map(pod_v1).unwrap_or_default(),
            }
        }
        Api::V1alpha2 => {
            let r = k8s_cri::v1alpha2::CreateContainerRequest::decode(message).map_err(bad)?;
            let config = r.config.unwrap_or_default();
            let spec = config.image.unwrap_or_default();
            CreateRequest {
                image: spec.image,
                user_specified_image: String::new(),
                container: config.metadata.map(|m| m.name).unwrap_or_default(),
                pod: r.sandbox_config.map(pod_v1alpha2).unwrap_or_default(),
            }
        }
    })
}

impl<R: ImageRuntime> Gate<R> {
    pub async fn create(&self, api: Api, parts: Parts, body: Bytes) -> Result<Reply, ProxyError> {
        let started = Instant::now();
        let request = decode(api, &grpc::single_message(body.clone())?)?;
        let decision = self.decide_create(api, &request, &parts, started).await;
        super::pull::settle(&decision)?;
        self.forward(parts, body).await
    }

    async fn decide_create(
        &self,
        api: Api,
        request: &CreateRequest,
        parts: &Parts,
        started: Instant,
    ) -> Decision {
        let subject = Subject {
            operation: Operation::CreateContainer,
            pod: Some(&request.pod),
            container: (!request.container.is_empty()).then_some(request.container.as_str()),
        };
        let timeout = deadline(&parts.headers);
        let asked = if !request.user_specified_image.is_empty() {
            &request.user_specified_image
        } else {
            &request.image
        };
        let info = match self
            .runtime
            .image_status(api, &request.image, timeout)
            .await
        {
            Ok(Some(info)) => info,
            // containerd would refuse too; refusing here closes the window in
            // which an image could appear between our check and its create.
            Ok(None) => {
                return self.error(
                    &subject,
                    asked,
                    format!("image {} is not on the node", request.image),
                    started,
                );
            }
            Err(e) => {
                return self.error(
                    &subject,
                    asked,
                    format!("cannot resolve image {}: {e}", request.image),
                    started,
                );
            }
        };

        // `user_specified_image` is only the client's word: containerd runs
        // what `image` names. It is decided when the image carries it (kubelet
        // sends the pod spec's name beside the image id), never lent to an
        // image that does not, or naming an allowlisted or system image would
        // admit anything.
        let mut named = None;
        if !request.user_specified_image.is_empty() {
            let name = request.user_specified_image.as_str();
            match ImageRef::parse(name) {
                Ok(image) if carries(&info, &image) => named = Some((name, image)),
                Ok(_) => tracing::warn!(
                    user_specified_image = name,
                    image = %request.image,
                    "the image being created does not carry the name the client gave; deciding it by its own names"
                ),
                Err(e) => {
                    return self.error(
                        &subject,
                        name,
                        format!("cannot parse image reference: {e}"),
                        started,
                    );
                }
            }
        }
        if named.is_none() && !is_image_id(&request.image) {
            let name = request.image.as_str();
            match ImageRef::parse(name) {
                Ok(image) => named = Some((name, image)),
                Err(e) => {
                    return self.error(
                        &subject,
                        name,
                        format!("cannot parse image reference: {e}"),
                        started,
                    );
                }
            }
        }

        match named {
            Some((name, image)) => {
                let resolved = if let Some(digest) = &image.digest {
                    // A digest in the name counts only if it is the digest of
                    // the image actually being run.
                    let confirmed = info.repo_digests.iter().any(|rd| {
                        rd.rsplit_once('@')
                            .is_some_and(|(_, d)| d == digest.as_str())
                    });
                    if confirmed {
                        image
                    } else {
                        attestgate_policy::ImageRef {
                            digest: None,
                            ..image
                        }
                    }
                } else {
                    match digest_for(&image, &info.repo_digests) {
                        Some(digest) => image.with_digest(digest),
                        // No digest for this name on the node (an imported
                        // image): decided by name alone, so only a rule that
                        // needs no attestation can admit it.
                        None => image,
                    }
                };
                self.decide(&subject, name, &resolved, started)
            }
            None => self.decide_by_own_names(&subject, &request.image, &info, started),
        }
    }

    /// An image known by id alone: each repository digest it carries is
    /// decided, or, for an image that has none (imported, not pulled), each
    /// of its tags; the container is allowed if one is. Every candidate is
    /// recorded.
    fn decide_by_own_names(
        &self,
        subject: &Subject<'_>,
        id: &str,
        info: &ImageInfo,
        started: Instant,
    ) -> Decision {
        let candidates = if info.repo_digests.is_empty() {
            &info.repo_tags
        } else {
            &info.repo_digests
        };
        let mut last = None;
        for name in candidates {
            let Ok(image) = ImageRef::parse(name) else {
                continue;
            };
            let decision = self.decide(subject, name, &image, started);
            if decision.allowed {
                return decision;
            }
            last = Some(decision);
        }
        last.unwrap_or_else(|| {
            self.error(
                subject,
                id,
                format!("image {id} has no name to decide"),
                started,
            )
        })
    }
}

/// Whether the image goes by `name`: a repository it has a digest for (that
/// very digest, when the name has one), or one of its tags.
fn carries(info: &ImageInfo, name: &ImageRef) -> bool {
    let by_digest = info
        .repo_digests
        .iter()
        .filter_map(|rd| ImageRef::parse(rd).ok())
        .any(|rd| {
            rd.repository == name.repository && (name.digest.is_none() || rd.digest == name.digest)
        });
    if by_digest || name.digest.is_some() {
        return by_digest;
    }
    let tag = name.tag.as_deref().unwrap_or("latest");
    info.repo_tags
        .iter()
        .filter_map(|t| ImageRef::parse(t).ok())
        .any(|t| t.repository == name.repository && t.tag.as_deref().unwrap_or("latest") == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_counts_only_if_the_image_carries_it() {
        let d = format!("sha256:{}", "a".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        let info = ImageInfo {
            id: "x".into(),
            repo_tags: vec![
                "registry.test/app:1".into(),
                "docker.io/library/nginx:latest".into(),
            ],
            repo_digests: vec![format!("registry.test/app@{d}")],
        };
        let carried = |name: &str| carries(&info, &ImageRef::parse(name).unwrap());
        assert!(carried("registry.test/app:1"));
        // A tag that moved on: the repository still has this image's digest.
        assert!(carried("registry.test/app:2"));
        assert!(carried(&format!("registry.test/app@{d}")));
        assert!(carried(&format!("registry.test/app:1@{d}")));
        assert!(carried("nginx"));
        assert!(carried("docker.io/library/nginx:latest"));
        assert!(!carried("nginx:1.25"));
        assert!(!carried(&format!("registry.test/app@{other}")));
        assert!(!carried(&format!("mirror.test/app@{d}")));
        assert!(!carried("registry.k8s.io/pause:3.10"));
        let imported = ImageInfo {
            repo_digests: Vec::new(),
            ..info
        };
        assert!(!carried_by(&imported, &format!("registry.test/app@{d}")));
        assert!(carried_by(&imported, "registry.test/app:1"));
        assert!(!carried_by(&imported, "registry.test/app:2"));
    }

    fn carried_by(info: &ImageInfo, name: &str) -> bool {
        carries(info, &ImageRef::parse(name).unwrap())
    }
}
