//! The whole proxy in-process (`serve_until`), in front of a fake CRI
//! runtime on a temporary socket that records every call it receives: what
//! is forwarded, and what is not, is seen without containerd.
//!
//! The node the fake models has `registry.test/app`, allowlisted by its
//! digest alone, and `registry.test/unsigned`, which the default rule
//! (ALWAYS_DENY) refuses; a pod sandbox for `prod/web-0`, and one for a pod
//! whose labels ask for break-glass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "inprocess/fake.rs"]
mod fake;
#[path = "inprocess/harness.rs"]
mod harness;

use std::collections::HashMap;

use attestgate_proxy::config::FailModeArg;
use k8s_cri::v1::*;
use tonic::Code;

use fake::{Fake, Node};
use harness::{Proxy, call_path, connect, connect_lazily};

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

const APP: &str = "registry.test/app";
const UNSIGNED: &str = "registry.test/unsigned";
const PROD_SANDBOX: &str = "5a4db0c5e1f2a3b4";
const GLASS_SANDBOX: &str = "9e1a55b0c2d3e4f5";
const BREAK_GLASS: &str = "image-policy.k8s.io/break-glass";

fn app_ref_by_digest() -> String {
    format!("{APP}@{}", digest('a'))
}

fn unsigned_ref_by_digest() -> String {
    format!("{UNSIGNED}@{}", digest('b'))
}

/// Only `registry.test/app` at its one digest is allowlisted; anything
/// else is refused by the default rule.
fn policy() -> String {
    format!(
        "admissionWhitelistPatterns:
- namePattern: {}
defaultAdmissionRule:
  evaluationMode: ALWAYS_DENY
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
",
        app_ref_by_digest()
    )
}

/// The image `repository:1` with id `digest(id)` and repo digest
/// `digest(repo_digest)`; `tagged`: whether it carries the tag.
fn image(repository: &str, id: char, repo_digest: char, tagged: bool) -> Image {
    Image {
        id: digest(id),
        repo_tags: if tagged {
            vec![format!("{repository}:1")]
        } else {
            Vec::new()
        },
        repo_digests: vec![format!("{repository}@{}", digest(repo_digest))],
        size: 7_340_032,
        ..Image::default()
    }
}

fn app_image() -> Image {
    image(APP, '1', 'a', true)
}

fn unsigned_image() -> Image {
    image(UNSIGNED, '2', 'b', true)
}

fn pod_metadata(name: &str) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: name.into(),
        uid: format!("uid-{name}"),
        namespace: "prod".into(),
        attempt: 0,
    }
}

fn sandbox(id: &str, name: &str, labels: &[(&str, &str)]) -> PodSandboxStatus {
    PodSandboxStatus {
        id: id.into(),
        metadata: Some(pod_metadata(name)),
        state: PodSandboxState::SandboxReady as i32,
        created_at: 1_700_000_000,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..PodSandboxStatus::default()
    }
}

/// Nothing pulled yet: a registry to pull from, two pod sandboxes and a
/// container made earlier.
fn empty_node() -> Node {
    Node {
        images: Vec::new(),
        registry: vec![
            (format!("{APP}:1"), app_image()),
            (app_ref_by_digest(), image(APP, '1', 'a', false)),
            (format!("{UNSIGNED}:1"), unsigned_image()),
            (unsigned_ref_by_digest(), image(UNSIGNED, '2', 'b', false)),
        ],
        hung: Vec::new(),
        sandboxes: vec![
            sandbox(PROD_SANDBOX, "web-0", &[("app", "web")]),
            sandbox(GLASS_SANDBOX, "glass-0", &[(BREAK_GLASS, "true")]),
        ],
        containers: vec![Container {
            id: "e".repeat(64),
            pod_sandbox_id: PROD_SANDBOX.into(),
            metadata: Some(ContainerMetadata {
                name: "sidecar".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: digest('1'),
                ..ImageSpec::default()
            }),
            image_ref: digest('1'),
            state: ContainerState::ContainerRunning as i32,
            ..Container::default()
        }],
    }
}

/// Both images already on the node.
fn node_with_images() -> Node {
    Node {
        images: vec![app_image(), unsigned_image()],
        ..empty_node()
    }
}

fn pod_config(name: &str, labels: &[(&str, &str)]) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(pod_metadata(name)),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..PodSandboxConfig::default()
    }
}

/// A PullImage as kubelet sends it, credentials included.
fn pull_request(image: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: image.into(),
            annotations: HashMap::from([("kubernetes.io/runtime-handler".into(), "runc".into())]),
            ..ImageSpec::default()
        }),
        auth: Some(AuthConfig {
            username: "robot".into(),
            password: "s3cret".into(),
            server_address: "registry.test".into(),
            ..AuthConfig::default()
        }),
        sandbox_config: Some(pod_config("web-0", &[("app", "web")])),
    }
}

/// A CreateContainer of container `app` in `sandbox_id`: by `image` (an id,
/// as kubelet gives it, or a name), naming `user_specified_image` (kubelet
/// 1.28+, may be empty).
fn create_request(
    sandbox_id: &str,
    pod: PodSandboxConfig,
    image: &str,
    user_specified_image: &str,
) -> CreateContainerRequest {
    CreateContainerRequest {
        pod_sandbox_id: sandbox_id.into(),
        config: Some(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                user_specified_image: user_specified_image.into(),
                ..ImageSpec::default()
            }),
            command: vec!["/app".into()],
            envs: vec![KeyValue {
                key: "MODE".into(),
                value: "serve".into(),
            }],
            log_path: "app/0.log".into(),
            ..ContainerConfig::default()
        }),
        sandbox_config: Some(pod),
    }
}

/// A refusal as SPEC §5 has it: PERMISSION_DENIED, the message kubelet
/// knows, then the decision's explanation.
fn assert_refused(status: &tonic::Status, explanation: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().starts_with("SignatureValidationFailed: "),
        "{status:?}"
    );
    assert!(status.message().contains(explanation), "{status:?}");
}

/// How many calls of `method` the runtime served: received in full and
/// answered.
fn served(fake: &Fake, method: &str) -> usize {
    fake.methods().iter().filter(|m| **m == method).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_are_not_decided_arrive_as_the_runtime_answered_them() {
    let proxy = Proxy::start(&policy(), empty_node()).await;
    let cri = proxy.client().await;
    let mut runtime = cri.runtime.clone();

    // Metadata goes up, the runtime's own headers come back.
    let mut version = tonic::Request::new(VersionRequest {
        version: "v1".into(),
    });
    version
        .metadata_mut()
        .insert("x-request-id", "7f3e".parse().unwrap());
    let answered = runtime.version(version).await.unwrap();
    assert_eq!(
        answered.metadata().get(fake::VERSION_HEADER).unwrap(),
        "containerd"
    );
    assert_eq!(answered.into_inner(), fake::version());
    assert_eq!(
        proxy.fake.requests::<VersionRequest>("Version"),
        [VersionRequest {
            version: "v1".into()
        }]
    );
    assert_eq!(
        proxy.fake.metadata("Version")[0]
            .get("x-request-id")
            .unwrap(),
        "7f3e"
    );

    let filter = ListContainersRequest {
        filter: Some(ContainerFilter {
            pod_sandbox_id: PROD_SANDBOX.into(),
            ..ContainerFilter::default()
        }),
    };
    let listed = runtime.list_containers(filter.clone()).await.unwrap();
    assert_eq!(listed.into_inner().containers, empty_node().containers);
    assert_eq!(
        proxy
            .fake
            .requests::<ListContainersRequest>("ListContainers"),
        [filter]
    );

    // Megabytes each way: many DATA frames and window updates on both
    // connections.
    let exec = ExecSyncRequest {
        container_id: "e".repeat(64),
        cmd: vec!["echo".into(), "x".repeat(3 << 20)],
        timeout: 10,
    };
    let ran = runtime.exec_sync(exec.clone()).await.unwrap().into_inner();
    assert_eq!(ran.stdout.len(), fake::EXEC_STDOUT);
    assert!(ran.stdout == fake::exec_output(fake::EXEC_STDOUT));
    assert!(ran.stderr == exec.cmd.join(" ").into_bytes());
    assert_eq!(ran.exit_code, 3);
    assert!(proxy.fake.requests::<ExecSyncRequest>("ExecSync") == [exec]);

    // An error: code, message, details and metadata as the runtime sent them.
    let missing = runtime
        .container_status(ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    let sent = fake::container_not_found("nope");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), sent.message());
    assert_eq!(missing.details(), sent.details());
    assert_eq!(missing.metadata().get("x-fake-trace").unwrap(), "c0ffee");

    // A server-streaming call, to its end.
    let mut events = runtime
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    while let Some(event) = events.message().await.unwrap() {
        received.push(event);
    }
    assert_eq!(received, fake::events(&empty_node()));

    // Each call reached the runtime once, and the proxy asked nothing of
    // its own nor wrote any record.
    assert_eq!(
        proxy.fake.methods(),
        [
            "Version",
            "ListContainers",
            "ExecSync",
            "ContainerStatus",
            "GetContainerEvents"
        ]
    );
    assert!(proxy.audit().is_empty());
    drop(cri);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlisted_pull_reaches_the_runtime_once_as_it_was_sent() {
    let proxy = Proxy::start(&policy(), empty_node()).await;
    let mut images = proxy.client().await.images;

    let by_digest = pull_request(&app_ref_by_digest());
    let pulled = images.pull_image(by_digest.clone()).await.unwrap();
    assert_eq!(pulled.into_inner().image_ref, digest('1'));
    assert_eq!(
        proxy.fake.requests::<PullImageRequest>("PullImage"),
        std::slice::from_ref(&by_digest)
    );

    // A tag is pulled, then resolved to its digest by the runtime: the
    // allowlist names the digest alone.
    let by_tag = pull_request(&format!("{APP}:1"));
    let pulled = images.pull_image(by_tag.clone()).await.unwrap();
    assert_eq!(pulled.into_inner().image_ref, digest('1'));
    assert_eq!(
        proxy.fake.requests::<PullImageRequest>("PullImage"),
        [by_digest, by_tag]
    );
    let asked: Vec<String> = proxy
        .fake
        .requests::<ImageStatusRequest>("ImageStatus")
        .into_iter()
        .map(|r| r.image.unwrap().image)
        .collect();
    assert!(asked.iter().all(|i| *i == format!("{APP}:1")), "{asked:?}");
    let methods = proxy.fake.methods();
    let pull_at = methods.iter().rposition(|m| *m == "PullImage").unwrap();
    assert!(
        methods[pull_at..].contains(&"ImageStatus"),
        "the tag is resolved after the pull: {methods:?}"
    );
    assert!(!methods.contains(&"RemoveImage"), "{methods:?}");

    let audit = proxy.audit();
    assert_eq!(audit.len(), 2, "{audit:?}");
    for (record, reference) in audit.iter().zip([app_ref_by_digest(), format!("{APP}:1")]) {
        assert_eq!(record["operation"], "PullImage");
        assert_eq!(record["decision"], "allow");
        assert_eq!(record["reason"], "ALLOWLISTED");
        assert_eq!(record["image"]["reference"], reference.as_str());
        assert_eq!(record["image"]["digest"], digest('a').as_str());
        assert_eq!(record["pod"]["namespace"], "prod");
    }
    drop(images);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_pull_by_digest_never_reaches_the_runtime() {
    let proxy = Proxy::start(&policy(), empty_node()).await;
    let mut images = proxy.client().await.images;

    let refused = images
        .pull_image(pull_request(&unsigned_ref_by_digest()))
        .await
        .unwrap_err();
    assert_refused(&refused, "denied by rule default: ALWAYS_DENY");
    assert_eq!(served(&proxy.fake, "PullImage"), 0);
    assert!(proxy.fake.node().images.is_empty());

    let audit = proxy.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let record = &audit[0];
    assert_eq!(record["operation"], "PullImage");
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], "ALWAYS_DENY");
    assert_eq!(record["enforced"], true);
    assert_eq!(record["rule"], "default");
    assert_eq!(
        record["image"]["reference"],
        unsigned_ref_by_digest().as_str()
    );
    assert_eq!(record["image"]["digest"], digest('b').as_str());
    assert_eq!(record["cluster"], "us-east1-b.test");
    drop(images);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tag_is_pulled_decided_and_removed_again() {
    let proxy = Proxy::start(&policy(), empty_node()).await;
    let mut images = proxy.client().await.images;

    let request = pull_request(&format!("{UNSIGNED}:1"));
    let refused = images.pull_image(request.clone()).await.unwrap_err();
    assert_refused(&refused, "denied by rule default: ALWAYS_DENY");
    // A tag's digest is known only once pulled (SPEC §5): pulled once, as
    // sent, then removed, since it was not on the node before.
    assert_eq!(
        proxy.fake.requests::<PullImageRequest>("PullImage"),
        [request]
    );
    let removed: Vec<String> = proxy
        .fake
        .requests::<RemoveImageRequest>("RemoveImage")
        .into_iter()
        .map(|r| r.image.unwrap().image)
        .collect();
    assert_eq!(removed, [digest('2')]);
    assert!(proxy.fake.node().images.is_empty());

    let audit = proxy.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["decision"], "deny");
    assert_eq!(audit[0]["reason"], "ALWAYS_DENY");
    assert_eq!(audit[0]["image"]["digest"], digest('b').as_str());
    drop(images);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tag_that_was_on_the_node_before_is_left_there() {
    let proxy = Proxy::start(&policy(), node_with_images()).await;
    let mut images = proxy.client().await.images;

    let refused = images
        .pull_image(pull_request(&format!("{UNSIGNED}:1")))
        .await
        .unwrap_err();
    assert_refused(&refused, "ALWAYS_DENY");
    assert_eq!(served(&proxy.fake, "PullImage"), 1);
    assert_eq!(served(&proxy.fake, "RemoveImage"), 0);
    assert_eq!(proxy.fake.node().images, node_with_images().images);
    drop(images);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_create_reaches_the_runtime_once_as_it_was_sent() {
    let proxy = Proxy::start(&policy(), node_with_images()).await;
    let mut runtime = proxy.client().await.runtime;
    let pod = || pod_config("web-0", &[("app", "web")]);

    // As kubelet creates: by image id, naming the pod spec's image.
    let by_id = create_request(PROD_SANDBOX, pod(), &digest('1'), &format!("{APP}:1"));
    let created = runtime.create_container(by_id.clone()).await.unwrap();
    let first = created.into_inner().container_id;
    // By name, as other clients do.
    let by_name = create_request(PROD_SANDBOX, pod(), &format!("{APP}:1"), "");
    let created = runtime.create_container(by_name.clone()).await.unwrap();
    let second = created.into_inner().container_id;

    assert_eq!(
        proxy
            .fake
            .requests::<CreateContainerRequest>("CreateContainer"),
        [by_id, by_name]
    );
    let made: Vec<String> = proxy.fake.node().containers[1..]
        .iter()
        .map(|c| c.id.clone())
        .collect();
    assert_eq!(made, [first, second]);
    // The pod is the sandbox's, as the runtime recorded it.
    let asked: Vec<String> = proxy
        .fake
        .requests::<PodSandboxStatusRequest>("PodSandboxStatus")
        .into_iter()
        .map(|r| r.pod_sandbox_id)
        .collect();
    assert_eq!(asked, [PROD_SANDBOX, PROD_SANDBOX]);

    let audit = proxy.audit();
    assert_eq!(audit.len(), 2, "{audit:?}");
    for record in &audit {
        assert_eq!(record["operation"], "CreateContainer");
        assert_eq!(record["decision"], "allow");
        assert_eq!(record["reason"], "ALLOWLISTED");
        assert_eq!(record["image"]["reference"], format!("{APP}:1").as_str());
        assert_eq!(record["image"]["digest"], digest('a').as_str());
        assert_eq!(record["pod"]["name"], "web-0");
        assert_eq!(record["container"], "app");
    }
    drop(runtime);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_create_never_reaches_the_runtime() {
    let proxy = Proxy::start(&policy(), node_with_images()).await;
    let mut runtime = proxy.client().await.runtime;

    let request = create_request(
        PROD_SANDBOX,
        pod_config("web-0", &[("app", "web")]),
        &digest('2'),
        &format!("{UNSIGNED}:1"),
    );
    let refused = runtime.create_container(request).await.unwrap_err();
    assert_refused(&refused, "denied by rule default: ALWAYS_DENY");
    assert_eq!(served(&proxy.fake, "CreateContainer"), 0);
    assert_eq!(proxy.fake.node().containers, empty_node().containers);

    let audit = proxy.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let record = &audit[0];
    assert_eq!(record["operation"], "CreateContainer");
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], "ALWAYS_DENY");
    assert_eq!(
        record["image"]["reference"],
        format!("{UNSIGNED}:1").as_str()
    );
    assert_eq!(record["image"]["digest"], digest('b').as_str());
    assert_eq!(record["pod"]["namespace"], "prod");
    assert_eq!(record["pod"]["name"], "web-0");
    assert_eq!(record["pod"]["uid"], "uid-web-0");
    assert_eq!(record["container"], "app");
    drop(runtime);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_counts_as_the_runtime_recorded_the_sandbox_not_as_the_request_claims() {
    let proxy = Proxy::start(&policy(), node_with_images()).await;
    let mut runtime = proxy.client().await.runtime;
    let unsigned = format!("{UNSIGNED}:1");

    // The request's copy of the sandbox config claims break-glass; the
    // sandbox the runtime has has no such label.
    let claimed = create_request(
        PROD_SANDBOX,
        pod_config("web-0", &[(BREAK_GLASS, "true")]),
        &digest('2'),
        &unsigned,
    );
    let refused = runtime.create_container(claimed).await.unwrap_err();
    assert_refused(&refused, "ALWAYS_DENY");
    assert_eq!(served(&proxy.fake, "CreateContainer"), 0);

    // The sandbox the runtime recorded with the label: admitted, recorded.
    let glass = create_request(
        GLASS_SANDBOX,
        pod_config("glass-0", &[]),
        &digest('2'),
        &unsigned,
    );
    runtime.create_container(glass.clone()).await.unwrap();
    assert_eq!(
        proxy
            .fake
            .requests::<CreateContainerRequest>("CreateContainer"),
        [glass]
    );

    let audit = proxy.audit();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["decision"], "deny");
    assert_eq!(audit[1]["decision"], "allow");
    assert_eq!(audit[1]["reason"], "BREAK_GLASS");
    assert_eq!(audit[1]["overridden"], "ALWAYS_DENY");
    assert_eq!(audit[1]["enforced"], false);
    assert_eq!(audit[1]["pod"]["name"], "glass-0");
    drop(runtime);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_outside_the_cri_are_refused_and_never_reach_the_runtime() {
    let proxy = Proxy::start(&policy(), empty_node()).await;
    let cri = proxy.client().await;

    let own_api = [
        "/containerd.services.version.v1.Version/Version",
        "/containerd.services.images.v1.Images/List",
        "/containerd.services.tasks.v1.Tasks/Create",
    ];
    for path in own_api {
        let refused = call_path(cri.channel.clone(), path).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unimplemented, "{path}: {refused:?}");
        assert!(
            refused.message().contains("serves the CRI only"),
            "{path}: {refused:?}"
        );
    }
    assert!(proxy.fake.own_api_calls().is_empty());
    // The runtime does serve them, to whoever reaches it directly.
    let direct = connect(&proxy.runtime_socket).await.unwrap();
    for path in own_api {
        call_path(direct.clone(), path).await.unwrap();
    }
    assert_eq!(proxy.fake.own_api_calls(), own_api);

    // A method added to the CRI later is the runtime's to answer.
    let later = "/runtime.v1.RuntimeService/AMethodAddedLater";
    let answered = call_path(cri.channel.clone(), later).await.unwrap_err();
    assert_eq!(answered.code(), Code::Unimplemented);
    assert!(!answered.message().contains("serves the CRI only"));
    assert_eq!(proxy.fake.paths().iter().filter(|p| *p == later).count(), 1);

    // The connection is as good as before.
    cri.runtime
        .clone()
        .version(VersionRequest::default())
        .await
        .unwrap();
    assert!(proxy.audit().is_empty());
    drop(cri);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1alpha2_pulls_are_decided_too() {
    use k8s_cri::v1alpha2 as alpha;
    let proxy = Proxy::start(&policy(), empty_node()).await;
    let channel = connect(&proxy.socket).await.unwrap();
    let mut images = alpha::image_service_client::ImageServiceClient::new(channel);
    let pull = |image: String| alpha::PullImageRequest {
        image: Some(alpha::ImageSpec {
            image,
            ..alpha::ImageSpec::default()
        }),
        auth: Some(alpha::AuthConfig {
            username: "robot".into(),
            password: "s3cret".into(),
            ..alpha::AuthConfig::default()
        }),
        sandbox_config: None,
    };

    let allowed = pull(format!("{APP}:1"));
    let pulled = images.pull_image(allowed.clone()).await.unwrap();
    assert_eq!(pulled.into_inner().image_ref, digest('1'));
    let refused = images
        .pull_image(pull(unsigned_ref_by_digest()))
        .await
        .unwrap_err();
    assert_refused(&refused, "ALWAYS_DENY");
    assert_eq!(
        proxy
            .fake
            .requests::<alpha::PullImageRequest>("v1alpha2.PullImage"),
        [allowed]
    );
    // Resolved in the version the call came in.
    assert!(proxy.fake.methods().contains(&"v1alpha2.ImageStatus"));
    assert!(!proxy.fake.methods().contains(&"ImageStatus"));

    let audit = proxy.audit();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(audit[1]["decision"], "deny");
    drop(images);
    proxy.stop().await;
}

/// A client connection relayed while the runtime was there; then its
/// socket goes.
async fn connected_then_runtime_gone(proxy: &Proxy) -> harness::Cri {
    let cri = proxy.client().await;
    cri.runtime
        .clone()
        .version(VersionRequest::default())
        .await
        .unwrap();
    std::fs::remove_file(&proxy.runtime_socket).unwrap();
    cri
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_runtime_out_of_reach_fail_mode_closed_refuses_what_it_cannot_decide() {
    let proxy = Proxy::start(&policy(), node_with_images()).await;
    let cri = connected_then_runtime_gone(&proxy).await;

    // An image the policy admits, but the runtime cannot say whose pod
    // the sandbox is nor what the image is: the node's failure, refused.
    let create = create_request(
        PROD_SANDBOX,
        pod_config("web-0", &[]),
        &digest('1'),
        &format!("{APP}:1"),
    );
    let refused = cri
        .runtime
        .clone()
        .create_container(create)
        .await
        .unwrap_err();
    assert_refused(&refused, "(denied: fail mode closed)");
    let audit = proxy.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["decision"], "deny");
    assert_eq!(audit[0]["reason"], "ERROR");

    // A digest the allowlist admits needs no lookup, but cannot be sent on.
    let pull = cri
        .images
        .clone()
        .pull_image(pull_request(&app_ref_by_digest()))
        .await
        .unwrap_err();
    assert_eq!(pull.code(), Code::Unavailable, "{pull:?}");

    // A new connection has no runtime to be relayed to: the proxy ends it.
    let lost = connect_lazily(&proxy.socket);
    let status = runtime_service_client::RuntimeServiceClient::new(lost)
        .version(VersionRequest::default())
        .await
        .unwrap_err();
    // No status from any server: the connection ended under the client
    // (which tonic reports as UNAVAILABLE, UNKNOWN or CANCELLED, by when
    // it noticed).
    let transport = std::error::Error::source(&status)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    assert!(transport, "{status:?}");

    // Nothing after the socket went reached the runtime.
    assert_eq!(proxy.fake.methods(), ["Version"]);
    drop(cri);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_runtime_out_of_reach_fail_mode_open_admits_but_nothing_is_created() {
    let proxy = Proxy::start_with(&policy(), node_with_images(), FailModeArg::Open).await;
    let cri = connected_then_runtime_gone(&proxy).await;

    let create = create_request(
        PROD_SANDBOX,
        pod_config("web-0", &[]),
        &digest('2'),
        &format!("{UNSIGNED}:1"),
    );
    let failed = cri
        .runtime
        .clone()
        .create_container(create)
        .await
        .unwrap_err();
    // Admitted by the fail mode, then the runtime is not there to create it.
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    let audit = proxy.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(audit[0]["reason"], "ERROR");
    assert_eq!(proxy.fake.methods(), ["Version"]);
    drop(cri);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_image_endpoint_of_its_own_every_image_call_goes_there() {
    let proxy = Proxy::start_with_images_apart(&policy(), node_with_images()).await;
    let cri = proxy.client().await;
    let (mut runtime, mut images) = (cri.runtime, cri.images);

    // Relayed and decided calls alike, on one client connection.
    runtime.version(VersionRequest::default()).await.unwrap();
    let listed = images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap();
    assert_eq!(
        listed.into_inner().images,
        node_with_images().images,
        "the image endpoint's images"
    );
    let by_tag = pull_request(&format!("{APP}:1"));
    let pulled = images.pull_image(by_tag.clone()).await.unwrap();
    assert_eq!(pulled.into_inner().image_ref, digest('1'));
    images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap();

    let image_methods = proxy.image_fake.methods();
    for method in ["ListImages", "PullImage", "ImageStatus", "ImageFsInfo"] {
        assert!(
            image_methods.contains(&method),
            "{method}: {image_methods:?}"
        );
    }
    assert!(!image_methods.contains(&"Version"), "{image_methods:?}");
    assert_eq!(
        proxy.image_fake.requests::<PullImageRequest>("PullImage"),
        [by_tag]
    );
    let runtime_methods = proxy.fake.methods();
    assert_eq!(runtime_methods, ["Version"], "nothing of the images there");
    let audit = proxy.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(audit[0]["image"]["digest"], digest('a').as_str());
    drop((runtime, images));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_with_no_deadline_goes_to_the_runtime_with_one() {
    let proxy = Proxy::start(&policy(), empty_node()).await;
    let mut images = proxy.client().await.images;
    // As kubelet pulls: no grpc-timeout.
    images
        .pull_image(pull_request(&app_ref_by_digest()))
        .await
        .unwrap();
    let mut with_own = tonic::Request::new(pull_request(&format!("{APP}:1")));
    with_own.set_timeout(std::time::Duration::from_secs(20));
    images.pull_image(with_own).await.unwrap();
    let timeouts: Vec<String> = proxy
        .fake
        .metadata("PullImage")
        .iter()
        .map(|m| {
            m.get("grpc-timeout")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        timeouts[0], "1800S",
        "the proxy's pull_timeout: {timeouts:?}"
    );
    assert_ne!(timeouts[1], "1800S", "the client's own: {timeouts:?}");
    assert!(!timeouts[1].is_empty(), "{timeouts:?}");
    drop(images);
    proxy.stop().await;
}

/// A registry that accepts pulls and never answers them.
const HUNG: &str = "hung.test";

/// Until `done` holds, or the test fails after `PATIENCE`-like seconds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_whose_client_leaves_is_cancelled_at_the_runtime_and_what_it_brought_is_decided() {
    let denied = format!("{HUNG}/unsigned:1");
    let node = Node {
        hung: vec![HUNG.into()],
        registry: vec![(
            denied.clone(),
            image(&format!("{HUNG}/unsigned"), '3', 'c', true),
        )],
        ..empty_node()
    };
    let proxy = Proxy::start(&policy(), node).await;
    let mut images = proxy.client().await.images;
    let pulling = tokio::spawn(async move { images.pull_image(pull_request(&denied)).await });
    eventually("the pull reached the runtime", || {
        proxy.fake.hung_pulls().0 == 1
    })
    .await;
    assert_eq!(
        proxy.fake.node().images.len(),
        1,
        "what the registry had arrived"
    );
    // kubelet gives up on the pull (its pod went): the stream is reset.
    pulling.abort();

    eventually("the pull was cancelled at the runtime", || {
        proxy.fake.hung_pulls().1 == 1
    })
    .await;
    // What arrived is decided all the same, and removed, being denied.
    eventually("the denied image was removed", || {
        proxy.fake.node().images.is_empty()
    })
    .await;
    assert_eq!(served(&proxy.fake, "RemoveImage"), 1);
    let audit = proxy.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["decision"], "deny");
    assert_eq!(audit[0]["image"]["digest"], digest('c').as_str());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_never_answers_holds_up_its_own_pulls_only() {
    let node = Node {
        hung: vec![HUNG.into()],
        ..empty_node()
    };
    let proxy = Proxy::start(&policy(), node).await;
    // More than the proxy ever allowed pulls at once, from clients that
    // stay: each pulls an image of its own from the hung registry.
    let mut hung = Vec::new();
    for i in 0..80 {
        let mut images = proxy.client().await.images;
        hung.push(tokio::spawn(async move {
            images
                .pull_image(pull_request(&format!("{HUNG}/app:{i}")))
                .await
        }));
    }
    let per_registry = attestgate_proxy::intercept::permits::PER_REGISTRY;
    eventually("the hung registry's pulls reached the runtime", || {
        proxy.fake.hung_pulls().0 == per_registry
    })
    .await;
    let started = std::time::Instant::now();
    let mut images = proxy.client().await.images;
    let pulled = images
        .pull_image(pull_request(&format!("{APP}:1")))
        .await
        .unwrap();
    assert_eq!(pulled.into_inner().image_ref, digest('1'));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "a pull from another registry waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        proxy.fake.hung_pulls().0,
        per_registry,
        "the rest wait for the registry's permits"
    );

    // Their clients go: every pull the runtime had is cancelled there,
    // and shutdown has nothing left to wait for (Proxy::stop allows 10 s
    // of its 30 s grace).
    for pull in &hung {
        pull.abort();
    }
    eventually("the hung pulls were cancelled", || {
        proxy.fake.hung_pulls().1 == per_registry
    })
    .await;
    drop(images);
    proxy.stop().await;
}
