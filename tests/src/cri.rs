//! A CRI v1 client over a Unix socket, from the k8s-cri crate's generated
//! tonic clients: what kubelet would send, without kubelet.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    pub channel: Channel,
}

pub fn socket_of(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl Cri {
    pub async fn connect(endpoint: &str) -> anyhow::Result<Cri> {
        let socket = socket_of(endpoint);
        let channel =
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }))
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            channel,
        })
    }

    pub async fn version(&self) -> anyhow::Result<VersionResponse> {
        Ok(self
            .runtime
            .clone()
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await?
            .into_inner())
    }

    pub async fn status(&self) -> anyhow::Result<StatusResponse> {
        Ok(self
            .runtime
            .clone()
            .status(StatusRequest { verbose: false })
            .await?
            .into_inner())
    }

    pub async fn list_pods(&self) -> anyhow::Result<Vec<PodSandbox>> {
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items)
    }

    pub async fn stop_pod(&self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .clone()
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn remove_pod(&self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .clone()
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await?;
        Ok(())
    }

    /// Pulls and returns the image ref the runtime reports (the image id).
    pub async fn pull(
        &self,
        image: &str,
        pod: Option<PodSandboxConfig>,
    ) -> Result<String, tonic::Status> {
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..ImageSpec::default()
            }),
            auth: None,
            sandbox_config: pod,
        };
        Ok(self
            .images
            .clone()
            .pull_image(request)
            .await?
            .into_inner()
            .image_ref)
    }

    pub async fn list_images(&self) -> anyhow::Result<Vec<Image>> {
        Ok(self
            .images
            .clone()
            .list_images(ListImagesRequest { filter: None })
            .await?
            .into_inner()
            .images)
    }

    pub async fn image_status(&self, image: &str) -> anyhow::Result<Option<Image>> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..ImageSpec::default()
            }),
            verbose: false,
        };
        Ok(self
            .images
            .clone()
            .image_status(request)
            .await?
            .into_inner()
            .image)
    }

    pub async fn remove_image(&self, image: &str) -> anyhow::Result<()> {
        let request = RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..ImageSpec::default()
            }),
        };
        self.images.clone().remove_image(request).await?;
        Ok(())
    }

    pub async fn list_containers(&self) -> anyhow::Result<Vec<Container>> {
        Ok(self
            .runtime
            .clone()
            .list_containers(ListContainersRequest { filter: None })
            .await?
            .into_inner()
            .containers)
    }

    pub async fn run_pod(&self, config: &PodSandboxConfig) -> Result<String, tonic::Status> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        Ok(self
            .runtime
            .clone()
            .run_pod_sandbox(request)
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Creates a container as kubelet 1.28+ does: `image` is what PullImage
    /// returned, `user_specified` the pod spec's image.
    pub async fn create_container(
        &self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        name: &str,
        image: &str,
        user_specified: &str,
        command: &[&str],
    ) -> Result<String, tonic::Status> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                user_specified_image: user_specified.into(),
                ..ImageSpec::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container as i32,
                        ..NamespaceOption::default()
                    }),
                    ..LinuxContainerSecurityContext::default()
                }),
                ..LinuxContainerConfig::default()
            }),
            ..ContainerConfig::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        };
        Ok(self
            .runtime
            .clone()
            .create_container(request)
            .await?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        self.runtime
            .clone()
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await?;
        Ok(())
    }

    pub async fn container_status(&self, id: &str) -> anyhow::Result<ContainerStatus> {
        let request = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.runtime
            .clone()
            .container_status(request)
            .await?
            .into_inner()
            .status
            .context("no status")
    }

    pub async fn exec_sync(&self, id: &str, cmd: &[&str]) -> anyhow::Result<ExecSyncResponse> {
        let request = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        };
        Ok(self.runtime.clone().exec_sync(request).await?.into_inner())
    }
}

/// A pod sandbox config like kubelet's, with host-side paths under `log_dir`.
pub fn pod_config(
    namespace: &str,
    name: &str,
    log_dir: &str,
    cgroup_parent: &str,
) -> PodSandboxConfig {
    let uid = format!("uid-{namespace}-{name}");
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.clone(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.into(),
        labels: HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                namespace.to_string(),
            ),
            ("io.kubernetes.pod.uid".to_string(), uid),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    }
}

/// The call was refused as the node refuses: PERMISSION_DENIED with the
/// CRI's `SignatureValidationFailed:` message (SPEC §5). The status.
pub fn assert_denied(result: Result<String, tonic::Status>) -> tonic::Status {
    let status = result.expect_err("the call should have been refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().starts_with("SignatureValidationFailed: "),
        "{}",
        status.message()
    );
    status
}
