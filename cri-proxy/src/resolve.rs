//! Image → digests, through the runtime's own ImageService, and sandbox →
//! pod, through its RuntimeService. The proxy asks containerd what an image
//! is and whose pod a sandbox is rather than trusting the request.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cri::{Api, Pod};
use crate::grpc::ProxyError;

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

/// containerd's ImageService and RuntimeService over their Unix sockets.
#[derive(Clone)]
pub struct ContainerdImages {
    channel: Channel,
    runtime_channel: Channel,
}

fn lazy_channel(socket: PathBuf) -> Channel {
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        },
    ))
}

impl ContainerdImages {
    pub fn new(runtime_socket: PathBuf, image_socket: PathBuf) -> ContainerdImages {
        let channel = lazy_channel(image_socket.clone());
        let runtime_channel = if runtime_socket == image_socket {
            channel.clone()
        } else {
            lazy_channel(runtime_socket)
        };
        ContainerdImages {
            channel,
            runtime_channel,
        }
    }
}

fn status_error(operation: &str, status: tonic::Status) -> ProxyError {
    match status.code() {
        tonic::Code::Unavailable => {
            ProxyError::Upstream(format!("{operation}: {}", status.message()))
        }
        tonic::Code::DeadlineExceeded => ProxyError::Deadline,
        _ => ProxyError::Internal(format!(
            "{operation}: {} ({:?})",
            status.message(),
            status.code()
        )),
    }
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The same call in either CRI version: the generated types differ only in
/// their module.
macro_rules! image_status_in {
    ($api:ident, $channel:expr, $image:expr, $timeout:expr) => {{
        use k8s_cri::$api::{
            ImageSpec, ImageStatusRequest, image_service_client::ImageServiceClient,
        };
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: $image.to_string(),
                ..ImageSpec::default()
            }),
            verbose: false,
        };
        let response = ImageServiceClient::new($channel)
            .image_status(with_timeout(request, $timeout))
            .await
            .map_err(|s| status_error("ImageStatus", s))?;
        response.into_inner().image.map(|i| ImageInfo {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
        })
    }};
}

macro_rules! remove_image_in {
    ($api:ident, $channel:expr, $image:expr, $timeout:expr) => {{
        use k8s_cri::$api::{
            ImageSpec, RemoveImageRequest, image_service_client::ImageServiceClient,
        };
        let request = RemoveImageRequest {
            image: Some(ImageSpec {
                image: $image.to_string(),
                ..ImageSpec::default()
            }),
        };
        ImageServiceClient::new($channel)
            .remove_image(with_timeout(request, $timeout))
            .await
            .map_err(|s| status_error("RemoveImage", s))?;
    }};
}

macro_rules! pod_sandbox_in {
    ($api:ident, $channel:expr, $id:expr, $timeout:expr) => {{
        use k8s_cri::$api::{
            PodSandboxStatusRequest, runtime_service_client::RuntimeServiceClient,
        };
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: $id.to_string(),
            verbose: false,
        };
        match RuntimeServiceClient::new($channel)
            .pod_sandbox_status(with_timeout(request, $timeout))
            .await
        {
            Ok(response) => response.into_inner().status.map(|status| {
                let m = status.metadata.unwrap_or_default();
                Pod::new(
                    m.namespace,
                    m.name,
                    m.uid,
                    status.labels,
                    status.annotations,
                )
            }),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(status_error("PodSandboxStatus", status)),
        }
    }};
}

macro_rules! container_image_in {
    ($api:ident, $channel:expr, $id:expr, $timeout:expr) => {{
        use k8s_cri::$api::{
            ContainerFilter, ListContainersRequest, runtime_service_client::RuntimeServiceClient,
        };
        // ListContainers rather than ContainerStatus: its image_ref is the
        // id recorded at the create, where ContainerStatus looks the image
        // up again and gives one of its repo digests when it has any.
        let request = ListContainersRequest {
            filter: Some(ContainerFilter {
                id: $id.to_string(),
                ..ContainerFilter::default()
            }),
        };
        let response = RuntimeServiceClient::new($channel)
            .list_containers(with_timeout(request, $timeout))
            .await
            .map_err(|s| status_error("ListContainers", s))?;
        response
            .into_inner()
            .containers
            .into_iter()
            .find(|c| c.id == $id)
            .map(|c| c.image_ref)
    }};
}

macro_rules! containers_named_in {
    ($api:ident, $channel:expr, $sandbox:expr, $name:expr, $attempt:expr, $timeout:expr) => {{
        use k8s_cri::$api::{ListContainersRequest, runtime_service_client::RuntimeServiceClient};
        // Unfiltered: containerd filters by a sandbox id prefix only when
        // it names one sandbox alone, and a create accepts any unique one.
        let request = ListContainersRequest { filter: None };
        let response = RuntimeServiceClient::new($channel)
            .list_containers(with_timeout(request, $timeout))
            .await
            .map_err(|s| status_error("ListContainers", s))?;
        response
            .into_inner()
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
    ($api:ident, $channel:expr, $id:expr, $timeout:expr) => {{
        use k8s_cri::$api::{RemoveContainerRequest, runtime_service_client::RuntimeServiceClient};
        let request = RemoveContainerRequest {
            container_id: $id.to_string(),
        };
        RuntimeServiceClient::new($channel)
            .remove_container(with_timeout(request, $timeout))
            .await
            .map_err(|s| status_error("RemoveContainer", s))?;
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
        Ok(in_api!(
            api,
            image_status_in,
            self.channel.clone(),
            image,
            timeout
        ))
    }

    async fn remove_image(
        &self,
        api: Api,
        image: &str,
        timeout: Duration,
    ) -> Result<(), ProxyError> {
        in_api!(api, remove_image_in, self.channel.clone(), image, timeout);
        Ok(())
    }

    async fn pod_sandbox(
        &self,
        api: Api,
        sandbox_id: &str,
        timeout: Duration,
    ) -> Result<Option<Pod>, ProxyError> {
        let channel = self.runtime_channel.clone();
        Ok(in_api!(api, pod_sandbox_in, channel, sandbox_id, timeout))
    }

    async fn container_image(
        &self,
        api: Api,
        container_id: &str,
        timeout: Duration,
    ) -> Result<Option<String>, ProxyError> {
        let channel = self.runtime_channel.clone();
        Ok(in_api!(
            api,
            container_image_in,
            channel,
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
        let channel = self.runtime_channel.clone();
        Ok(in_api!(
            api,
            containers_named_in,
            channel,
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
        let channel = self.runtime_channel.clone();
        in_api!(api, remove_container_in, channel, container_id, timeout);
        Ok(())
    }
}
