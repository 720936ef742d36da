//! Image → digests, through the runtime's own ImageService, and sandbox →
//! pod, through its RuntimeService. The proxy asks containerd what an image
//! is and whose pod a sandbox is rather than trusting the request.

use std::future::Future;
use std::time::Duration;

use crate::cri::{Api, Pod};
use crate::grpc::ProxyError;
use crate::upstream::{NOT_FOUND, UnaryError, Upstream};

/// What the runtime knows about an image on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
}

/// The seam between the decision logic and containerd: the real client in
/// production, a fake in unit tests.
pub trait ImageRuntime: Send + Sync + 'static {
    /// `Ok(None)` when the image is not on the node.
    fn image_status(
        &self,
        api: Api,
        image: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<ImageInfo>, ProxyError>> + Send;
    fn remove_image(
        &self,
        api: Api,
        image: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send;
    /// The pod a sandbox was created for, as the runtime recorded it;
    /// `Ok(None)` when there is no such sandbox.
    fn pod_sandbox(
        &self,
        api: Api,
        sandbox_id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Pod>, ProxyError>> + Send;
    /// The id of the image a container was created from, as the runtime
    /// recorded it at the create; `Ok(None)` when there is no such container.
    fn container_image(
        &self,
        api: Api,
        container_id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<String>, ProxyError>> + Send;
    /// The ids of the containers named `name` (attempt `attempt`) in the
    /// sandbox `sandbox_id` gives, by its full id or a prefix, as a create
    /// may give it.
    fn containers_named(
        &self,
        api: Api,
        sandbox_id: &str,
        name: &str,
        attempt: u32,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<String>, ProxyError>> + Send;
    fn remove_container(
        &self,
        api: Api,
        container_id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ProxyError>> + Send;
}

/// containerd's ImageService and RuntimeService, asked over the same
/// connections as the decided calls are forwarded on (one per endpoint).
#[derive(Clone)]
pub struct ContainerdImages {
    images: Upstream,
    runtime: Upstream,
}

impl ContainerdImages {
    pub fn new(runtime: Upstream, images: Upstream) -> ContainerdImages {
        ContainerdImages { images, runtime }
    }
}

/// The gRPC path of `method` of `service` in CRI version `$api`.
macro_rules! path_in {
    ($api:ident, $service:literal, $method:literal) => {
        concat!("/runtime.", stringify!($api), ".", $service, "/", $method)
    };
}

/// The same call in either CRI version: the generated types differ only in
/// their module.
macro_rules! image_status_in {
    ($api:ident, $upstream:expr, $image:expr, $timeout:expr) => {{
        use k8s_cri::$api::{ImageSpec, ImageStatusRequest, ImageStatusResponse};
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: $image.to_string(),
                ..ImageSpec::default()
            }),
            verbose: false,
        };
        let response: ImageStatusResponse = $upstream
            .unary(
                path_in!($api, "ImageService", "ImageStatus"),
                &request,
                $timeout,
            )
            .await
            .map_err(|e| e.into_proxy_error("ImageStatus"))?;
        response.image.map(|i| ImageInfo {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
        })
    }};
}

macro_rules! remove_image_in {
    ($api:ident, $upstream:expr, $image:expr, $timeout:expr) => {{
        use k8s_cri::$api::{ImageSpec, RemoveImageRequest, RemoveImageResponse};
        let request = RemoveImageRequest {
            image: Some(ImageSpec {
                image: $image.to_string(),
                ..ImageSpec::default()
            }),
        };
        let _: RemoveImageResponse = $upstream
            .unary(
                path_in!($api, "ImageService", "RemoveImage"),
                &request,
                $timeout,
            )
            .await
            .map_err(|e| e.into_proxy_error("RemoveImage"))?;
    }};
}

macro_rules! pod_sandbox_in {
    ($api:ident, $upstream:expr, $id:expr, $timeout:expr) => {{
        use k8s_cri::$api::{PodSandboxStatusRequest, PodSandboxStatusResponse};
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: $id.to_string(),
            verbose: false,
        };
        let answer: Result<PodSandboxStatusResponse, _> = $upstream
            .unary(
                path_in!($api, "RuntimeService", "PodSandboxStatus"),
                &request,
                $timeout,
            )
            .await;
        match answer {
            Ok(response) => response.status.map(|status| {
                let m = status.metadata.unwrap_or_default();
                Pod::new(
                    m.namespace,
                    m.name,
                    m.uid,
                    status.labels,
                    status.annotations,
                )
            }),
            Err(UnaryError::Status {
                code: NOT_FOUND, ..
            }) => None,
            Err(e) => return Err(e.into_proxy_error("PodSandboxStatus")),
        }
    }};
}

macro_rules! container_image_in {
    ($api:ident, $upstream:expr, $id:expr, $timeout:expr) => {{
        use k8s_cri::$api::{ContainerFilter, ListContainersRequest, ListContainersResponse};
        // ListContainers rather than ContainerStatus: its image_ref is the
        // id recorded at the create, where ContainerStatus looks the image
        // up again and gives one of its repo digests when it has any.
        let request = ListContainersRequest {
            filter: Some(ContainerFilter {
                id: $id.to_string(),
                ..ContainerFilter::default()
            }),
        };
        let response: ListContainersResponse = $upstream
            .unary(
                path_in!($api, "RuntimeService", "ListContainers"),
                &request,
                $timeout,
            )
            .await
            .map_err(|e| e.into_proxy_error("ListContainers"))?;
        response
            .containers
            .into_iter()
            .find(|c| c.id == $id)
            .map(|c| c.image_ref)
    }};
}

macro_rules! containers_named_in {
    ($api:ident, $upstream:expr, $sandbox:expr, $name:expr, $attempt:expr, $timeout:expr) => {{
        use k8s_cri::$api::{ListContainersRequest, ListContainersResponse};
        // Unfiltered: containerd filters by a sandbox id prefix only when
        // it names one sandbox alone, and a create accepts any unique one.
        let request = ListContainersRequest { filter: None };
        let response: ListContainersResponse = $upstream
            .unary(
                path_in!($api, "RuntimeService", "ListContainers"),
                &request,
                $timeout,
            )
            .await
            .map_err(|e| e.into_proxy_error("ListContainers"))?;
        response
            .containers
            .into_iter()
            .filter(|c| {
                c.pod_sandbox_id.starts_with($sandbox)
                    && c.metadata
                        .as_ref()
                        .is_some_and(|m| m.name == $name && m.attempt == $attempt)
            })
            .map(|c| c.id)
            .collect()
    }};
}

macro_rules! remove_container_in {
    ($api:ident, $upstream:expr, $id:expr, $timeout:expr) => {{
        use k8s_cri::$api::{RemoveContainerRequest, RemoveContainerResponse};
        let request = RemoveContainerRequest {
            container_id: $id.to_string(),
        };
        let _: RemoveContainerResponse = $upstream
            .unary(
                path_in!($api, "RuntimeService", "RemoveContainer"),
                &request,
                $timeout,
            )
            .await
            .map_err(|e| e.into_proxy_error("RemoveContainer"))?;
    }};
}

/// Runs `$call!` (one of the `*_in` macros above) in the CRI version the
/// intercepted call came in.
macro_rules! in_api {
    ($api:expr, $call:ident, $($arg:expr),*) => {
        match $api {
            Api::V1 => $call!(v1, $($arg),*),
            Api::V1alpha2 => $call!(v1alpha2, $($arg),*),
        }
    };
}

impl ImageRuntime for ContainerdImages {
    async fn image_status(
        &self,
        api: Api,
        image: &str,
        timeout: Duration,
    ) -> Result<Option<ImageInfo>, ProxyError> {
        Ok(in_api!(api, image_status_in, self.images, image, timeout))
    }

    async fn remove_image(
        &self,
        api: Api,
        image: &str,
        timeout: Duration,
    ) -> Result<(), ProxyError> {
        in_api!(api, remove_image_in, self.images, image, timeout);
        Ok(())
    }

    async fn pod_sandbox(
        &self,
        api: Api,
        sandbox_id: &str,
        timeout: Duration,
    ) -> Result<Option<Pod>, ProxyError> {
        let runtime = &self.runtime;
        Ok(in_api!(api, pod_sandbox_in, runtime, sandbox_id, timeout))
    }

    async fn container_image(
        &self,
        api: Api,
        container_id: &str,
        timeout: Duration,
    ) -> Result<Option<String>, ProxyError> {
        let runtime = &self.runtime;
        Ok(in_api!(
            api,
            container_image_in,
            runtime,
            container_id,
            timeout
        ))
    }

    async fn containers_named(
        &self,
        api: Api,
        sandbox_id: &str,
        name: &str,
        attempt: u32,
        timeout: Duration,
    ) -> Result<Vec<String>, ProxyError> {
        if sandbox_id.is_empty() {
            return Ok(Vec::new());
        }
        let runtime = &self.runtime;
        Ok(in_api!(
            api,
            containers_named_in,
            runtime,
            sandbox_id,
            name,
            attempt,
            timeout
        ))
    }

    async fn remove_container(
        &self,
        api: Api,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), ProxyError> {
        let runtime = &self.runtime;
        in_api!(api, remove_container_in, runtime, container_id, timeout);
        Ok(())
    }
}
