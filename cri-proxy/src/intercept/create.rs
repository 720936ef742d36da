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
use crate::resolve::{Api, ImageRuntime};
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

        let named = if !request.user_specified_image.is_empty() {
            Some(request.user_specified_image.as_str())
        } else if !is_image_id(&request.image) {
            Some(request.image.as_str())
        } else {
            None
        };

        match named {
            Some(name) => {
                let image = match ImageRef::parse(name) {
                    Ok(image) => image,
                    Err(e) => {
                        return self.error(
                            &subject,
                            name,
                            format!("cannot parse image reference: {e}"),
                            started,
                        );
                    }
                };
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
            None => {
                self.decide_by_repo_digests(&subject, &request.image, &info.repo_digests, started)
            }
        }
    }

    /// A bare image id: each repository digest the image carries is decided,
    /// and the container is allowed if one is. Every candidate is recorded.
    fn decide_by_repo_digests(
        &self,
        subject: &Subject<'_>,
        id: &str,
        repo_digests: &[String],
        started: Instant,
    ) -> Decision {
        let mut last = None;
        for repo_digest in repo_digests {
            let Ok(image) = ImageRef::parse(repo_digest) else {
                continue;
            };
            let decision = self.decide(subject, repo_digest, &image, started);
            if decision.allowed {
                return decision;
            }
            last = Some(decision);
        }
        last.unwrap_or_else(|| {
            self.error(
                subject,
                id,
                format!("image {id} has no repository digest to decide"),
                started,
            )
        })
    }
}
