//! The container's image, from containerd's own records: container → image
//! name → the image's target descriptor, whose digest is what was pulled
//! (or imported) and what attestations name.

use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// containerd answers these from its metadata store in well under a
/// millisecond; anything near this bound means it is wedged.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("cannot reach containerd at {socket}: {source}")]
    Connect {
        socket: String,
        source: tonic::transport::Error,
    },
    #[error("containerd: {what}: {status}")]
    Call { what: String, status: tonic::Status },
    #[error("containerd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("container {0} has no image")]
    NoImage(String),
    #[error("image {0} has no target digest")]
    NoDigest(String),
    #[error("namespace {0:?} cannot be sent to containerd")]
    Namespace(String),
    #[error("containerd reports an unreadable version {0:?}")]
    Version(String),
    #[error("cannot start the client runtime: {0}")]
    Runtime(std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    pub name: String,
    pub digest: String,
    /// Whether the image record targets an index (or manifest list), which
    /// is not by itself what runs: one of its platform manifests is.
    pub index: bool,
}

/// containerd's `-address`: a path, or `unix://path` from containerd 2.x.
pub fn socket_path(address: &str) -> PathBuf {
    PathBuf::from(address.strip_prefix("unix://").unwrap_or(address))
}

/// A blocking client of containerd's gRPC API: the shim's `start` is a
/// short synchronous program, and the forwarder asks from its own thread.
pub struct Containerd {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

impl Containerd {
    pub fn connect(address: &str) -> Result<Containerd, LookupError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LookupError::Runtime)?;
        let socket = socket_path(address);
        let channel = runtime.block_on(async {
            tokio::time::timeout(LOOKUP_TIMEOUT, containerd_client::connect(&socket))
                .await
                .map_err(|_| LookupError::Timeout(LOOKUP_TIMEOUT))?
                .map_err(|source| LookupError::Connect {
                    socket: socket.display().to_string(),
                    source,
                })
        })?;
        Ok(Containerd { runtime, channel })
    }

    /// containerd's major version (1 or 2, from "1.6.20~ds1" or "v2.0.0").
    pub fn major_version(&self) -> Result<u32, LookupError> {
        let version = self.runtime.block_on(async {
            tokio::time::timeout(
                LOOKUP_TIMEOUT,
                VersionClient::new(self.channel.clone()).version(()),
            )
            .await
            .map_err(|_| LookupError::Timeout(LOOKUP_TIMEOUT))?
            .map_err(|status| LookupError::Call {
                what: "version".into(),
                status,
            })
        })?;
        let text = version.into_inner().version;
        text.trim_start_matches('v')
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|major| major.parse().ok())
            .ok_or(LookupError::Version(text))
    }

    /// The container's image name and target digest.
    pub fn container_image(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<ContainerImage, LookupError> {
        self.runtime.block_on(async {
            tokio::time::timeout(LOOKUP_TIMEOUT, lookup(self.channel.clone(), namespace, id))
                .await
                .map_err(|_| LookupError::Timeout(LOOKUP_TIMEOUT))?
        })
    }
}

fn namespaced<T>(message: T, namespace: &str) -> Result<tonic::Request<T>, LookupError> {
    let value = MetadataValue::try_from(namespace)
        .map_err(|_| LookupError::Namespace(namespace.to_string()))?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("containerd-namespace", value);
    Ok(request)
}

async fn lookup(
    channel: Channel,
    namespace: &str,
    id: &str,
) -> Result<ContainerImage, LookupError> {
    let container = ContainersClient::new(channel.clone())
        .get(namespaced(
            GetContainerRequest { id: id.to_string() },
            namespace,
        )?)
        .await
        .map_err(|status| LookupError::Call {
            what: format!("container {namespace}/{id}"),
            status,
        })?
        .into_inner()
        .container
        .ok_or_else(|| LookupError::NoImage(id.to_string()))?;
    if container.image.is_empty() {
        return Err(LookupError::NoImage(id.to_string()));
    }
    let image = ImagesClient::new(channel)
        .get(namespaced(
            GetImageRequest {
                name: container.image.clone(),
            },
            namespace,
        )?)
        .await
        .map_err(|status| LookupError::Call {
            what: format!("image {}", container.image),
            status,
        })?
        .into_inner()
        .image;
    let target = image
        .and_then(|i| i.target)
        .filter(|t| !t.digest.is_empty())
        .ok_or_else(|| LookupError::NoDigest(container.image.clone()))?;
    Ok(ContainerImage {
        name: container.image,
        digest: target.digest,
        index: attestgate_node::content::is_index(&target.media_type),
    })
}
