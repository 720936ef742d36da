//! The whole proxy in this process (`attestgate_proxy::serve_until`), in
//! front of a [`Fake`] runtime, with its bundle, audit log and sockets in a
//! temporary directory of its own; and CRI clients dialling the proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attestgate_proxy::config::{Config, FailModeArg, Flags};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::fake::{Fake, Node};

/// How long anything here may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running proxy and the fake runtime behind it.
pub struct Proxy {
    pub dir: tempfile::TempDir,
    pub fake: Arc<Fake>,
    /// The image endpoint's fake: `fake` itself unless the proxy was
    /// started with an image endpoint of its own.
    pub image_fake: Arc<Fake>,
    pub socket: PathBuf,
    pub runtime_socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Proxy {
    /// The proxy under fail mode closed, deciding by `policy` (a policy.yaml).
    pub async fn start(policy: &str, node: Node) -> Proxy {
        Proxy::start_with(policy, node, FailModeArg::Closed).await
    }

    pub async fn start_with(policy: &str, node: Node, fail_mode: FailModeArg) -> Proxy {
        Proxy::launch(policy, node, fail_mode, None).await
    }

    /// The proxy with `image_endpoint` apart from `runtime_endpoint`: the
    /// runtime's fake knows `node` without its images, which a fake of
    /// their own holds.
    pub async fn start_with_images_apart(policy: &str, node: Node) -> Proxy {
        let images = Node {
            images: node.images.clone(),
            registry: node.registry.clone(),
            ..Node::default()
        };
        let runtime = Node {
            images: Vec::new(),
            registry: Vec::new(),
            ..node
        };
        Proxy::launch(policy, runtime, FailModeArg::Closed, Some(images)).await
    }

    async fn launch(
        policy: &str,
        node: Node,
        fail_mode: FailModeArg,
        images_apart: Option<Node>,
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        // In a directory of its own: its index is written beside it.
        let bundle = dir.path().join("store").join("bundle");
        for sub in ["attestors", "attestations"] {
            std::fs::create_dir_all(bundle.join(sub)).unwrap();
        }
        std::fs::write(bundle.join("policy.yaml"), policy).unwrap();
        let config_file = dir.path().join("config.toml");
        std::fs::write(&config_file, "").unwrap();

        let runtime_socket = dir.path().join("containerd.sock");
        let fake = Fake::new(node);
        fake.serve(&runtime_socket);
        let (image_fake, image_endpoint) = match images_apart {
            Some(images) => {
                let image_socket = dir.path().join("images.sock");
                let image_fake = Fake::new(images);
                image_fake.serve(&image_socket);
                (
                    image_fake,
                    Some(format!("unix://{}", image_socket.display())),
                )
            }
            None => (fake.clone(), None),
        };

        let socket = dir.path().join("attestgate.sock");
        let config = Config::load(Flags {
            config: Some(config_file),
            listen: Some(socket.clone()),
            runtime_endpoint: Some(format!("unix://{}", runtime_socket.display())),
            image_endpoint,
            bundle: Some(bundle),
            audit_log: Some(dir.path().join("audit.jsonl")),
            cluster: Some("us-east1-b.test".into()),
            fail_mode: Some(fail_mode),
            // Its passes would be calls of its own to the runtime, which
            // these tests count exactly.
            cv_action: Some(attestgate_proxy::config::CvAction::Off),
            ..Flags::default()
        })
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(attestgate_proxy::serve_until(config, async {
            let _ = stopped.await;
        }));
        let mut proxy = Proxy {
            dir,
            fake,
            image_fake,
            socket,
            runtime_socket,
            stop: Some(stop),
            served: Some(served),
        };
        proxy.wait_for_the_socket().await;
        proxy
    }

    /// Until the proxy accepts connections: its socket file appears at
    /// bind(), a moment before it listens.
    async fn wait_for_the_socket(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while UnixStream::connect(&self.socket).await.is_err() {
            let served = self.served.as_ref().unwrap();
            if served.is_finished() {
                let ended = self.served.take().unwrap().await.unwrap();
                panic!("the proxy ended before it listened: {ended:?}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy did not listen within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A client connected to the proxy, as kubelet would be.
    pub async fn client(&self) -> Cri {
        Cri::new(connect(&self.socket).await.unwrap())
    }

    /// The audit log's records, one per line.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let path = self.dir.path().join("audit.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Shuts the proxy down through its shutdown future and waits for
    /// `serve_until` to return.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let served = self.served.take().unwrap();
        let ended = tokio::time::timeout(PATIENCE, served)
            .await
            .expect("the proxy did not shut down in time")
            .unwrap();
        ended.unwrap();
    }
}

/// The CRI v1 clients kubelet uses, over one connection.
pub struct Cri {
    pub channel: Channel,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    pub fn new(channel: Channel) -> Cri {
        Cri {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel.clone()),
            channel,
        }
    }
}

fn endpoint() -> Endpoint {
    // The URI is required but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost").timeout(PATIENCE)
}

fn dial(socket: &Path) -> impl Fn(Uri) -> DialFuture + Clone + use<> {
    let socket = socket.to_path_buf();
    move |_: Uri| {
        let socket = socket.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(socket).await?)) })
    }
}

type DialFuture =
    std::pin::Pin<Box<dyn Future<Output = std::io::Result<TokioIo<UnixStream>>> + Send + 'static>>;

/// One HTTP/2 connection to the socket, made now.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    endpoint()
        .connect_with_connector(tower::service_fn(dial(socket)))
        .await
}

/// A connection to the socket, made at the first call.
pub fn connect_lazily(socket: &Path) -> Channel {
    endpoint().connect_with_connector_lazy(tower::service_fn(dial(socket)))
}

/// A unary call to any path, with an empty message: what a client of
/// another API on the same socket would send.
pub async fn call_path(channel: Channel, path: &'static str) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(()),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}
