//! A CRI runtime of our own, standing in for containerd: k8s-cri's v1
//! RuntimeService and ImageService (and v1alpha2's ImageService) over a
//! Unix socket, answering from a small model of a node (images, sandboxes,
//! containers, and what a pull would bring), and recording every call it
//! receives: the path of each HTTP/2 request as it arrived, before any
//! routing, and the decoded request of each CRI method it served. Like
//! containerd, it serves an API of its own on the same socket: any call
//! outside the CRI is answered OK and recorded.
//!
//! A call the proxy decides is muted toward the runtime (relay/mod.rs):
//! its header block arrives, then a reset, never its message. So its path
//! is among [`Fake::paths`], but no served call is recorded for it, as no
//! runtime acts on a request it never received.

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_cri::v1::*;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

/// What the fake runtime has and knows.
#[derive(Default, Clone)]
pub struct Node {
    /// Images on the node.
    pub images: Vec<Image>,
    /// What pulling a reference brings onto the node.
    pub registry: Vec<(String, Image)>,
    /// Registry hosts that accept a pull and never answer it: what the
    /// registry has of the image lands at once, and the pull hangs until
    /// it is cancelled.
    pub hung: Vec<String>,
    pub sandboxes: Vec<PodSandboxStatus>,
    pub containers: Vec<Container>,
}

/// One call a CRI method of the fake served.
pub struct Call {
    pub method: &'static str,
    pub metadata: MetadataMap,
    request: Box<dyn Any + Send>,
}

#[derive(Default)]
pub struct Fake {
    node: Mutex<Node>,
    /// Every request's `:path`, as it reached the fake's HTTP/2 server.
    paths: Mutex<Vec<String>>,
    calls: Mutex<Vec<Call>>,
    /// The paths of the calls outside the CRI it served, in order.
    own_api: Mutex<Vec<String>>,
    /// Pulls from a hung registry that started, and that were cancelled
    /// (their handler dropped: the caller reset the stream).
    hung_pulls: Mutex<(usize, usize)>,
}

/// A hung pull in progress; counted as cancelled when dropped.
struct Hanging<'a>(&'a Fake);

impl Drop for Hanging<'_> {
    fn drop(&mut self) {
        self.0.hung_pulls.lock().unwrap().1 += 1;
    }
}

/// The fake's answer to Version.
pub fn version() -> VersionResponse {
    VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "fake-containerd".into(),
        runtime_version: "v2.1.4-fake".into(),
        runtime_api_version: "v1".into(),
    }
}

/// The header the fake adds to its Version response.
pub const VERSION_HEADER: &str = "x-fake-runtime";

/// ExecSync's stdout: `len` bytes of a pattern no two offsets short of
/// 251 apart share, so a byte dropped or moved shows.
pub fn exec_output(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// How much ExecSync writes to stdout.
pub const EXEC_STDOUT: usize = 6 << 20;

/// The events GetContainerEvents streams, one per container on the node.
pub fn events(node: &Node) -> Vec<ContainerEventResponse> {
    node.containers
        .iter()
        .enumerate()
        .map(|(i, c)| ContainerEventResponse {
            container_id: c.id.clone(),
            container_event_type: ContainerEventType::ContainerCreatedEvent as i32,
            created_at: 1_700_000_000 + i as i64,
            ..ContainerEventResponse::default()
        })
        .collect()
}

/// The status ContainerStatus answers for a container that is not there,
/// as containerd words it, with details and metadata of its own.
pub fn container_not_found(id: &str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert("x-fake-trace", "c0ffee".parse().unwrap());
    Status::with_details_and_metadata(
        tonic::Code::NotFound,
        format!("an error occurred when try to find container {id:?}: not found"),
        bytes::Bytes::from_static(b"\x0a\x04\xde\xad\xbe\xef"),
        metadata,
    )
}

impl Fake {
    pub fn new(node: Node) -> Arc<Fake> {
        Arc::new(Fake {
            node: Mutex::new(node),
            ..Fake::default()
        })
    }

    /// Serves the fake on a new socket at `path`, until the runtime ends.
    pub fn serve(self: &Arc<Fake>, path: &Path) {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let fake = self.clone();
        let arrivals = tower::layer::layer_fn(move |inner| Arrivals {
            inner,
            fake: fake.clone(),
        });
        let router = tonic::transport::Server::builder()
            .layer(arrivals)
            .add_service(
                runtime_service_server::RuntimeServiceServer::from_arc(self.clone())
                    .max_decoding_message_size(64 << 20),
            )
            .add_service(image_service_server::ImageServiceServer::from_arc(
                self.clone(),
            ))
            .add_service(
                k8s_cri::v1alpha2::image_service_server::ImageServiceServer::from_arc(self.clone()),
            );
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tokio::spawn(async move { router.serve_with_incoming(incoming).await });
    }

    /// The paths of the requests that reached the fake, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    /// The calls outside the CRI it served (read in full and answered).
    pub fn own_api_calls(&self) -> Vec<String> {
        self.own_api.lock().unwrap().clone()
    }

    /// The CRI methods the fake served, in order (v1alpha2 ones prefixed).
    pub fn methods(&self) -> Vec<&'static str> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.method)
            .collect()
    }

    /// The decoded requests of `method`, in order.
    pub fn requests<T: Clone + 'static>(&self, method: &str) -> Vec<T> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .map(|c| {
                c.request
                    .downcast_ref::<T>()
                    .unwrap_or_else(|| panic!("{method} recorded another request type"))
                    .clone()
            })
            .collect()
    }

    /// The metadata each call of `method` came with.
    pub fn metadata(&self, method: &str) -> Vec<MetadataMap> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .map(|c| c.metadata.clone())
            .collect()
    }

    /// Pulls from hung registries: how many started, how many were
    /// cancelled.
    pub fn hung_pulls(&self) -> (usize, usize) {
        *self.hung_pulls.lock().unwrap()
    }

    /// The node as it is now.
    pub fn node(&self) -> Node {
        self.node.lock().unwrap().clone()
    }

    fn record<T: Send + 'static>(&self, method: &'static str, request: Request<T>) {
        let metadata = request.metadata().clone();
        self.calls.lock().unwrap().push(Call {
            method,
            metadata,
            request: Box::new(request.into_inner()),
        });
    }

    /// The image `name` names as containerd finds one: by a tag or digest
    /// reference it carries, by its id, or by a unique prefix of its id.
    fn find_image(node: &Node, name: &str) -> Result<Option<Image>, Status> {
        if let Some(image) = node.images.iter().find(|i| {
            i.id == name
                || i.repo_tags.iter().any(|t| t == name)
                || i.repo_digests.iter().any(|d| d == name)
        }) {
            return Ok(Some(image.clone()));
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut prefixed = node
            .images
            .iter()
            .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
        match (prefixed.next(), prefixed.next()) {
            (Some(image), None) => Ok(Some(image.clone())),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(Status::unknown(format!(
                "can not resolve {name:?} locally: ambiguous digest string"
            ))),
        }
    }

    fn image_status_of(&self, name: &str) -> Result<Option<Image>, Status> {
        Fake::find_image(&self.node.lock().unwrap(), name)
    }

    /// Brings the image `reference` names onto the node; its id.
    fn pull(&self, reference: &str) -> Result<String, Status> {
        let mut node = self.node.lock().unwrap();
        let Some((_, image)) = node.registry.iter().find(|(r, _)| r == reference).cloned() else {
            return Err(Status::not_found(format!(
                "failed to pull and unpack image {reference:?}: failed to resolve reference {reference:?}: not found"
            )));
        };
        match node.images.iter_mut().find(|i| i.id == image.id) {
            Some(there) => {
                for tag in image.repo_tags {
                    if !there.repo_tags.contains(&tag) {
                        there.repo_tags.push(tag);
                    }
                }
            }
            None => node.images.push(image.clone()),
        }
        Ok(image.id)
    }

    fn remove(&self, name: &str) -> Result<(), Status> {
        let mut node = self.node.lock().unwrap();
        if let Some(image) = Fake::find_image(&node, name)? {
            node.images.retain(|i| i.id != image.id);
        }
        Ok(())
    }

    fn sandbox(&self, id: &str) -> Result<PodSandboxStatus, Status> {
        self.node
            .lock()
            .unwrap()
            .sandboxes
            .iter()
            .find(|s| !id.is_empty() && s.id.starts_with(id))
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "an error occurred when try to find sandbox {id:?}: not found"
                ))
            })
    }

    fn create(&self, request: &CreateContainerRequest) -> Result<CreateContainerResponse, Status> {
        let sandbox = self.sandbox(&request.pod_sandbox_id)?;
        let config = request.config.clone().unwrap_or_default();
        let spec = config.image.clone().unwrap_or_default();
        let mut node = self.node.lock().unwrap();
        let image = Fake::find_image(&node, &spec.image)?.ok_or_else(|| {
            Status::not_found(format!(
                "failed to get image {:?}: image not found",
                spec.image
            ))
        })?;
        let id = format!("c{:063}", node.containers.len() + 1);
        node.containers.push(Container {
            id: id.clone(),
            pod_sandbox_id: sandbox.id,
            metadata: config.metadata,
            image: Some(spec),
            image_ref: image.id,
            state: ContainerState::ContainerCreated as i32,
            ..Container::default()
        });
        Ok(CreateContainerResponse { container_id: id })
    }

    fn containers(&self, filter: Option<&ContainerFilter>) -> Vec<Container> {
        let filter = filter.cloned().unwrap_or_default();
        self.node
            .lock()
            .unwrap()
            .containers
            .iter()
            .filter(|c| filter.id.is_empty() || c.id == filter.id)
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.pod_sandbox_id == filter.pod_sandbox_id
            })
            .cloned()
            .collect()
    }
}

type Body = tonic::body::Body;

/// Records every request's path as it arrives; serves the CRI through
/// `inner` (the fake's tonic services) and anything else itself, as
/// containerd serves its own API beside the CRI.
#[derive(Clone)]
struct Arrivals<S> {
    inner: S,
    fake: Arc<Fake>,
}

impl<S> tower::Service<http::Request<Body>> for Arrivals<S>
where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        self.fake.paths.lock().unwrap().push(path.clone());
        if path.starts_with("/runtime.") {
            return Box::pin(self.inner.call(request));
        }
        let own_api = OwnApi {
            fake: self.fake.clone(),
            path,
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(own_api, request).await)
        })
    }
}

/// A call outside the CRI, answered once its message has arrived.
struct OwnApi {
    fake: Arc<Fake>,
    path: String,
}

impl tonic::server::UnaryService<()> for OwnApi {
    type Response = ();
    type Future = std::future::Ready<Result<Response<()>, Status>>;

    fn call(&mut self, _: Request<()>) -> Self::Future {
        self.fake.own_api.lock().unwrap().push(self.path.clone());
        std::future::ready(Ok(Response::new(())))
    }
}

/// Implements a CRI service for [`Fake`]: each method records its call,
/// then answers with `$answer`, a function of the fake and the request;
/// `$extra` are items written out in full (streaming methods).
macro_rules! fake_service {
    (
        $service:path { $($extra:tt)* }
        $($method:literal $name:ident($request:ty) -> $response:ty = $answer:expr;)*
    ) => {
        #[tonic::async_trait]
        impl $service for Fake {
            $($extra)*
            $(
                async fn $name(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    let answer: fn(&Fake, &$request) -> Result<Response<$response>, Status> =
                        $answer;
                    let reply = answer(self, request.get_ref());
                    self.record($method, request);
                    reply
                }
            )*
        }
    };
}

fn empty<T: Default>(_: &Fake, _: &impl Sized) -> Result<Response<T>, Status> {
    Ok(Response::new(T::default()))
}

fn image_name(spec: Option<&ImageSpec>) -> &str {
    spec.map_or("", |s| s.image.as_str())
}

fake_service! {
    runtime_service_server::RuntimeService {
        type GetContainerEventsStream =
            tokio_stream::Iter<std::vec::IntoIter<Result<ContainerEventResponse, Status>>>;

        async fn get_container_events(
            &self,
            request: Request<GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            self.record("GetContainerEvents", request);
            let events = events(&self.node()).into_iter().map(Ok).collect::<Vec<_>>();
            Ok(Response::new(tokio_stream::iter(events)))
        }
    }
    "Version" version(VersionRequest) -> VersionResponse = |_, _| {
        let mut response = Response::new(version());
        response.metadata_mut().insert(VERSION_HEADER, "containerd".parse().unwrap());
        Ok(response)
    };
    "RunPodSandbox" run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse = empty;
    "StopPodSandbox" stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse = empty;
    "RemovePodSandbox" remove_pod_sandbox(RemovePodSandboxRequest)
        -> RemovePodSandboxResponse = empty;
    "PodSandboxStatus" pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse =
        |fake, r| Ok(Response::new(PodSandboxStatusResponse {
            status: Some(fake.sandbox(&r.pod_sandbox_id)?),
            ..PodSandboxStatusResponse::default()
        }));
    "ListPodSandbox" list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse =
        |fake, _| Ok(Response::new(ListPodSandboxResponse {
            items: fake.node().sandboxes.into_iter().map(|s| PodSandbox {
                id: s.id,
                metadata: s.metadata,
                state: s.state,
                created_at: s.created_at,
                labels: s.labels,
                annotations: s.annotations,
                runtime_handler: s.runtime_handler,
            }).collect(),
        }));
    "CreateContainer" create_container(CreateContainerRequest) -> CreateContainerResponse =
        |fake, r| fake.create(r).map(Response::new);
    "StartContainer" start_container(StartContainerRequest) -> StartContainerResponse = empty;
    "StopContainer" stop_container(StopContainerRequest) -> StopContainerResponse = empty;
    "RemoveContainer" remove_container(RemoveContainerRequest) -> RemoveContainerResponse =
        |fake, r| {
            fake.node.lock().unwrap().containers.retain(|c| c.id != r.container_id);
            Ok(Response::new(RemoveContainerResponse {}))
        };
    "ListContainers" list_containers(ListContainersRequest) -> ListContainersResponse =
        |fake, r| Ok(Response::new(ListContainersResponse {
            containers: fake.containers(r.filter.as_ref()),
        }));
    "ContainerStatus" container_status(ContainerStatusRequest) -> ContainerStatusResponse =
        |fake, r| {
            let Some(c) = fake.containers(None).into_iter().find(|c| c.id == r.container_id) else {
                return Err(container_not_found(&r.container_id));
            };
            Ok(Response::new(ContainerStatusResponse {
                status: Some(ContainerStatus {
                    id: c.id,
                    metadata: c.metadata,
                    state: c.state,
                    image: c.image,
                    image_ref: c.image_ref,
                    ..ContainerStatus::default()
                }),
                ..ContainerStatusResponse::default()
            }))
        };
    "UpdateContainerResources" update_container_resources(UpdateContainerResourcesRequest)
        -> UpdateContainerResourcesResponse = empty;
    "ReopenContainerLog" reopen_container_log(ReopenContainerLogRequest)
        -> ReopenContainerLogResponse = empty;
    "ExecSync" exec_sync(ExecSyncRequest) -> ExecSyncResponse =
        |_, r| Ok(Response::new(ExecSyncResponse {
            stdout: exec_output(EXEC_STDOUT),
            // What it was asked to run, so that a large request shows too.
            stderr: r.cmd.join(" ").into_bytes(),
            exit_code: 3,
        }));
    "Exec" exec(ExecRequest) -> ExecResponse = empty;
    "Attach" attach(AttachRequest) -> AttachResponse = empty;
    "PortForward" port_forward(PortForwardRequest) -> PortForwardResponse = empty;
    "ContainerStats" container_stats(ContainerStatsRequest) -> ContainerStatsResponse = empty;
    "ListContainerStats" list_container_stats(ListContainerStatsRequest)
        -> ListContainerStatsResponse = empty;
    "PodSandboxStats" pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse = empty;
    "ListPodSandboxStats" list_pod_sandbox_stats(ListPodSandboxStatsRequest)
        -> ListPodSandboxStatsResponse = empty;
    "UpdateRuntimeConfig" update_runtime_config(UpdateRuntimeConfigRequest)
        -> UpdateRuntimeConfigResponse = empty;
    "Status" status(StatusRequest) -> StatusResponse = empty;
    "CheckpointContainer" checkpoint_container(CheckpointContainerRequest)
        -> CheckpointContainerResponse = empty;
    "ListMetricDescriptors" list_metric_descriptors(ListMetricDescriptorsRequest)
        -> ListMetricDescriptorsResponse = empty;
    "ListPodSandboxMetrics" list_pod_sandbox_metrics(ListPodSandboxMetricsRequest)
        -> ListPodSandboxMetricsResponse = empty;
    "RuntimeConfig" runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse = empty;
}

fake_service! {
    image_service_server::ImageService {
        async fn pull_image(
            &self,
            request: Request<PullImageRequest>,
        ) -> Result<Response<PullImageResponse>, Status> {
            let reference = image_name(request.get_ref().image.as_ref()).to_string();
            let hung = self.node().hung.iter().any(|host| {
                reference
                    .split_once('/')
                    .is_some_and(|(first, _)| first == host)
            });
            if hung {
                let _ = self.pull(&reference);
                self.hung_pulls.lock().unwrap().0 += 1;
                self.record("PullImage", request);
                let _hanging = Hanging(self);
                return std::future::pending().await;
            }
            let reply = self.pull(&reference);
            self.record("PullImage", request);
            Ok(Response::new(PullImageResponse { image_ref: reply? }))
        }
    }
    "ListImages" list_images(ListImagesRequest) -> ListImagesResponse =
        |fake, _| Ok(Response::new(ListImagesResponse { images: fake.node().images }));
    "ImageStatus" image_status(ImageStatusRequest) -> ImageStatusResponse =
        |fake, r| Ok(Response::new(ImageStatusResponse {
            image: fake.image_status_of(image_name(r.image.as_ref()))?,
            ..ImageStatusResponse::default()
        }));
    "RemoveImage" remove_image(RemoveImageRequest) -> RemoveImageResponse =
        |fake, r| {
            fake.remove(image_name(r.image.as_ref()))?;
            Ok(Response::new(RemoveImageResponse {}))
        };
    "ImageFsInfo" image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse = empty;
}

/// v1alpha2's ImageService, over the same node.
mod v1alpha2 {
    use k8s_cri::v1alpha2::*;
    use tonic::{Request, Response, Status};

    use super::Fake;

    fn image(i: k8s_cri::v1::Image) -> Image {
        Image {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            size: i.size,
            ..Image::default()
        }
    }

    fn name(spec: Option<&ImageSpec>) -> &str {
        spec.map_or("", |s| s.image.as_str())
    }

    fake_service! {
        image_service_server::ImageService {}
        "v1alpha2.ListImages" list_images(ListImagesRequest) -> ListImagesResponse =
            |fake, _| Ok(Response::new(ListImagesResponse {
                images: fake.node().images.into_iter().map(image).collect(),
            }));
        "v1alpha2.ImageStatus" image_status(ImageStatusRequest) -> ImageStatusResponse =
            |fake, r| Ok(Response::new(ImageStatusResponse {
                image: fake.image_status_of(name(r.image.as_ref()))?.map(image),
                ..ImageStatusResponse::default()
            }));
        "v1alpha2.PullImage" pull_image(PullImageRequest) -> PullImageResponse =
            |fake, r| Ok(Response::new(PullImageResponse {
                image_ref: fake.pull(name(r.image.as_ref()))?,
            }));
        "v1alpha2.RemoveImage" remove_image(RemoveImageRequest) -> RemoveImageResponse =
            |fake, r| {
                fake.remove(name(r.image.as_ref()))?;
                Ok(Response::new(RemoveImageResponse {}))
            };
        "v1alpha2.ImageFsInfo" image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse =
            |_, _| Ok(Response::new(ImageFsInfoResponse::default()));
    }
}
