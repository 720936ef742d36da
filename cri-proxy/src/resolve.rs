//! Image → digests, through the runtime's own ImageService. The proxy asks
//! containerd what an image is rather than trusting the request.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::grpc::ProxyError;

/// Which CRI version a request came in on; the proxy asks back in the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V1,
    V1alpha2,
}

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
}

/// containerd's ImageService over its Unix socket.
#[derive(Clone)]
pub struct ContainerdImages {
    channel: Channel,
}

impl ContainerdImages {
    pub fn new(socket: PathBuf) -> anyhow::Result<ContainerdImages> {
        // The URI is required by the API but unused: the connector dials the socket.
        let channel =
            Endpoint::from_static("http://localhost").connect_with_connector_lazy(
                tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }),
            );
        Ok(ContainerdImages { channel })
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

impl ImageRuntime for ContainerdImages {
    async fn image_status(
        &self,
        api: Api,
        image: &str,
        timeout: Duration,
    ) -> Result<Option<ImageInfo>, ProxyError> {
        Ok(match api {
            Api::V1 => image_status_in!(v1, self.channel.clone(), image, timeout),
            Api::V1alpha2 => image_status_in!(v1alpha2, self.channel.clone(), image, timeout),
        })
    }

    async fn remove_image(
        &self,
        api: Api,
        image: &str,
        timeout: Duration,
    ) -> Result<(), ProxyError> {
        match api {
            Api::V1 => remove_image_in!(v1, self.channel.clone(), image, timeout),
            Api::V1alpha2 => remove_image_in!(v1alpha2, self.channel.clone(), image, timeout),
        }
        Ok(())
    }
}
