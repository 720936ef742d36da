//! attestgate-proxy between a CRI client and real containerd: scenarios
//! from SPEC §5, §6, §8 and §9, each on its own node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use attestgate_e2e::cri::assert_denied;
use attestgate_e2e::node::{Node, REQUIRE_CI};

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

/// A node whose policy requires the CI attestor, with the app image signed.
fn signed_node() -> Option<(Node, PathBuf)> {
    let (mut node, key) = signed_node_unproxied()?;
    start_proxy_with_pause_allowed(&mut node);
    Some((node, key))
}

/// [`signed_node`] before its proxy starts.
fn signed_node_unproxied() -> Option<(Node, PathBuf)> {
    let node = Node::up(&agcri())?;
    let key = node.add_attestor("ci");
    let repo = node.app_image.rsplit_once(':').unwrap().0.to_string();
    node.attest("ci", &key, &repo, &node.app_digest.clone());
    node.policy(REQUIRE_CI);
    Some((node, key))
}

/// The proxy, with the pause image a system image.
fn start_proxy_with_pause_allowed(node: &mut Node) {
    let pause_pattern = format!("{}/attestgate/pause*", node.registry);
    node.start_proxy(&["--system-image", &pause_pattern]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_image_runs_as_a_pod() {
    let Some((node, _)) = signed_node() else {
        return;
    };
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "web-0");
    let image_id = cri
        .pull(&node.app_image, Some(pod.clone()))
        .await
        .expect("signed image pulls");
    let pod_id = cri.run_pod(&pod).await.expect("pod runs");
    let id = cri
        .create_container(&pod_id, &pod, "web", &image_id, &node.app_image, &[])
        .await
        .expect("container created");
    cri.start_container(&id).await.expect("container starts");
    let status = cri.container_status(&id).await.unwrap();
    assert_eq!(
        status.state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32
    );

    let audit = node.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[0]["operation"], "PullImage");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(audit[0]["reason"], "ATTESTED");
    assert_eq!(audit[0]["image"]["digest"], node.app_digest.as_str());
    assert_eq!(audit[1]["operation"], "CreateContainer");
    assert_eq!(audit[1]["decision"], "allow");
    assert_eq!(audit[1]["image"]["reference"], node.app_image.as_str());
    assert_eq!(audit[1]["pod"]["namespace"], "prod");
    assert_eq!(audit[1]["pod"]["name"], "web-0");
    assert_eq!(audit[1]["container"], "web");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_image_is_refused_at_pull_and_not_left_on_the_node() {
    let Some((node, _)) = signed_node() else {
        return;
    };
    let (unsigned, digest) = node.push_image("unsigned", "1", "echo unsigned; sleep 3600");
    let cri = node.via_proxy().await;
    let direct = node.direct().await;

    let status = assert_denied(cri.pull(&unsigned, None).await);
    assert!(
        status.message().contains("MISSING") || status.message().contains("not satisfied"),
        "{}",
        status.message()
    );
    assert!(
        direct.image_status(&unsigned).await.unwrap().is_none(),
        "denied image left on the node"
    );

    let by_digest = format!("{}@{digest}", unsigned.rsplit_once(':').unwrap().0);
    assert_denied(cri.pull(&by_digest, None).await);
    assert!(direct.image_status(&by_digest).await.unwrap().is_none());

    // With neither tag nor digest containerd pulls and stores `latest`.
    let (latest, latest_digest) = node.push_image("untagged", "latest", "sleep 3600");
    let untagged = latest.strip_suffix(":latest").unwrap();
    assert_denied(cri.pull(untagged, None).await);
    assert!(
        direct.image_status(&latest).await.unwrap().is_none(),
        "denied image pulled with no tag left on the node"
    );

    let audit = node.audit();
    assert_eq!(audit.len(), 3, "{audit:#?}");
    for (line, digest) in audit.iter().zip([&digest, &digest, &latest_digest]) {
        assert_eq!(line["operation"], "PullImage");
        assert_eq!(line["decision"], "deny");
        assert_eq!(line["reason"], "MISSING_ATTESTATIONS");
        assert_eq!(line["image"]["digest"], digest.as_str());
    }
}

async fn run_app(
    node: &Node,
    cri: &attestgate_e2e::cri::Cri,
    pod: &k8s_cri::v1::PodSandboxConfig,
    image: &str,
) -> Result<String, tonic::Status> {
    let image_id = cri.pull(image, Some(pod.clone())).await?;
    let pod_id = cri.run_pod(pod).await?;
    let _ = node;
    cri.create_container(&pod_id, pod, "app", &image_id, image, &[])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_imported_without_a_pull_is_refused_at_create() {
    let Some((node, _)) = signed_node() else {
        return;
    };
    let (imported, digest) = node.import_image("imported", "1", "echo imported; sleep 3600");
    let cri = node.via_proxy().await;
    let direct = node.direct().await;
    let image = imported_image(&direct, &imported).await;
    let pod = node.pod("prod", "sneaky");
    let pod_id = cri.run_pod(&pod).await.unwrap();

    // As kubelet sends it: the image id plus the pod spec's name.
    assert_denied(
        cri.create_container(&pod_id, &pod, "app", &image.id, &imported, &[])
            .await,
    );
    // By name only, and by bare id only (then every repo digest is tried).
    assert_denied(
        cri.create_container(&pod_id, &pod, "app", &imported, "", &[])
            .await,
    );
    assert_denied(
        cri.create_container(&pod_id, &pod, "app", &image.id, "", &[])
            .await,
    );
    // Naming the signed app's digest does not lend this image its attestation.
    let app_repo = node.app_image.rsplit_once(':').unwrap().0;
    assert_denied(
        cri.create_container(
            &pod_id,
            &pod,
            "app",
            &image.id,
            &format!("{app_repo}@{}", node.app_digest),
            &[],
        )
        .await,
    );
    // Nor does naming an image the policy admits without attestations: the
    // system (pause) image here. containerd runs what `image` names, so a
    // name the image does not carry is not the one decided.
    let pause = cri.pull(&node.pause_image, None).await.unwrap();
    assert!(!pause.is_empty());
    for claimed in [
        node.pause_image.clone(),
        format!(
            "{}@{}",
            node.pause_image.rsplit_once(':').unwrap().0,
            node.pause_digest
        ),
    ] {
        assert_denied(
            cri.create_container(&pod_id, &pod, "app", &image.id, &claimed, &[])
                .await,
        );
    }
    assert!(
        cri.list_containers().await.unwrap().is_empty(),
        "no container was created"
    );

    let audit: Vec<_> = node
        .audit()
        .into_iter()
        .filter(|l| l["operation"] == "CreateContainer")
        .collect();
    assert_eq!(audit.len(), 6, "{audit:#?}");
    for line in &audit {
        assert_eq!(line["operation"], "CreateContainer");
        assert_eq!(line["decision"], "deny");
    }
    assert_eq!(audit[0]["image"]["digest"], digest.as_str());
}

/// The audit log as a FIFO of one page that the test holds. Full, it
/// stops the proxy at its next record: how a test gets in between two
/// steps of one call. Records made longer than half a page (by a long
/// container name) each fill it on their own, so letting one through
/// holds the next.
struct HeldLog {
    fifo: std::fs::File,
    written: Vec<u8>,
    /// Bytes of filler in the pipe ahead of the record it holds.
    filler: usize,
}

impl HeldLog {
    fn new(node: &Node) -> HeldLog {
        let path = node.dir().join("audit.fifo");
        node.sh(&format!("mkfifo {}", path.display()));
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        rustix::io::ioctl_fionbio(&fifo, true).unwrap();
        assert_eq!(rustix::pipe::fcntl_setpipe_size(&fifo, 4096).unwrap(), 4096);
        HeldLog {
            fifo,
            written: Vec::new(),
            filler: 0,
        }
    }

    /// Takes what is in the pipe, letting whatever was held through.
    fn take(&mut self) {
        use std::io::Read as _;
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = (&self.fifo).read(&mut chunk) {
            self.written.extend_from_slice(&chunk[..n]);
        }
        self.filler = 0;
    }

    /// Fills the pipe with newlines, which a reader of the records skips.
    fn fill(&mut self) {
        use std::io::Write as _;
        while (&self.fifo).write(b"\n").is_ok() {
            self.filler += 1;
        }
    }

    /// Takes the filler and not a byte more, so the record held behind it
    /// enters the pipe and stays there, holding the record after it.
    /// (`take` could read that record too, once it is in, and so let the
    /// next one through unheld.)
    fn let_the_held_record_in(&mut self) {
        use std::io::Read as _;
        let mut chunk = [0; 4096];
        while self.filler > 0 {
            let n = (&self.fifo)
                .read(&mut chunk[..self.filler.min(4096)])
                .unwrap();
            assert!(chunk[..n].iter().all(|&b| b == b'\n'));
            self.filler -= n;
        }
    }

    fn creates(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.written)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["operation"] == "CreateContainer")
            .collect()
    }
}

/// Waits until a thread of the proxy sleeps writing to a full pipe.
async fn held_at_a_record(node: &Node) {
    let pid = node.proxy_pid().unwrap();
    let wchan = |task: std::fs::DirEntry| std::fs::read_to_string(task.path().join("wchan"));
    let held = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|task| wchan(task).is_ok_and(|w| w.contains("pipe_write")))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !held() {
        assert!(
            std::time::Instant::now() < deadline,
            "no thread of the proxy came to wait in pipe_write (is /proc/PID/task/*/wchan readable here?): {}",
            node.proxy_log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Points `tag` at `image` and waits until the CRI sees it there.
async fn move_tag(node: &Node, direct: &attestgate_e2e::cri::Cri, image: &str, tag: &str) {
    let id = imported_image(direct, image).await.id;
    node.sh(&format!("ag_ctr \"$DIR\" images tag --force {image} {tag}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while direct.image_status(tag).await.unwrap().map(|i| i.id) != Some(id.clone()) {
        assert!(std::time::Instant::now() < deadline, "{tag} did not move");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_between_the_check_and_the_create_brings_in_nothing() {
    let Some((mut node, _)) = signed_node_unproxied() else {
        return;
    };
    let app_repo = node.app_image.rsplit_once(':').unwrap().0.to_string();
    let mut log = HeldLog::new(&node);
    node.audit_log = node.dir().join("audit.fifo");
    start_proxy_with_pause_allowed(&mut node);

    let cri = node.via_proxy().await;
    let direct = node.direct().await;
    drain(&mut log, cri.pull(&node.app_image, None))
        .await
        .unwrap();
    // In the app's repository, with a repo digest there: unsigned.
    let (evil, evil_digest) = node.import_image("app", "evil", "echo evil; sleep 3600");
    let moving = format!("{app_repo}:moving");
    let pod = node.pod("prod", "racer");
    drain(&mut log, cri.pull(&node.pause_image, None))
        .await
        .unwrap();
    let pod_id = cri.run_pod(&pod).await.unwrap();

    for (round, client_leaves) in [false, true].into_iter().enumerate() {
        move_tag(&node, &direct, &node.app_image, &moving).await;
        log.take();
        let creates_before = log.creates().len();
        log.fill();
        let name = format!("{round}{}", "x".repeat(2500));
        let mut create = Some({
            let cri = node.via_proxy().await;
            let (pod_id, pod, moving, name) =
                (pod_id.clone(), pod.clone(), moving.clone(), name.clone());
            tokio::spawn(async move {
                cri.create_container(&pod_id, &pod, &name, &moving, "", &[])
                    .await
            })
        });
        // Checked and admitted as the signed image, and held writing that
        // down; now a pull of the same tag lands.
        held_at_a_record(&node).await;
        assert!(!create.as_ref().unwrap().is_finished());
        move_tag(&node, &direct, &evil, &moving).await;

        if client_leaves {
            // The client resets its call while the proxy is held between
            // the check and the create: the call still runs to its end,
            // the check of what was created and the removal included.
            let create = create.take().unwrap();
            create.abort();
            assert!(create.await.unwrap_err().is_cancelled());
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while node
                .proxy_log()
                .matches("reset an intercepted call")
                .count()
                < round
            {
                assert!(std::time::Instant::now() < deadline, "no reset came");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            log.take();
        } else {
            // The admission goes through and the create with it; the
            // refusal of what was created is held, with the container in
            // containerd's list, until the test lets it through. A start
            // of that container meanwhile waits, then finds it gone.
            log.let_the_held_record_in();
            held_at_a_record(&node).await;
            let made = direct.list_containers().await.unwrap();
            assert_eq!(made.len(), 1, "{made:#?}");
            assert_eq!(made[0].image_ref, evil_id(&direct, &evil).await);
            let start = {
                let cri = node.via_proxy().await;
                let id = made[0].id.clone();
                tokio::spawn(async move { cri.start_container(&id).await })
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                !start.is_finished(),
                "a start went through before the check"
            );
            let status = direct.container_status(&made[0].id).await.unwrap();
            assert_eq!(
                status.state,
                k8s_cri::v1::ContainerState::ContainerCreated as i32
            );
            let started = drain(&mut log, start).await.unwrap();
            assert_eq!(
                started.unwrap_err().code(),
                tonic::Code::NotFound,
                "the start found the container removed"
            );
        }
        // Let the rest through, and wait for the proxy to finish the call.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while log.creates().len() < creates_before + 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{:#?}\n{}",
                log.creates(),
                node.proxy_log()
            );
            log.take();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(create) = create {
            let status = assert_denied(drain(&mut log, create).await.unwrap());
            assert!(
                status.message().contains(evil_digest.as_str()),
                "the refusal names the image created from: {}",
                status.message()
            );
        }
        // The container goes before the reply; a client that left waits
        // for nothing, so it is given a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            log.take();
            let left = direct.list_containers().await.unwrap();
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "client left: {client_leaves}; a container of {evil} was left: {left:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let creates = log.creates();
        let creates = &creates[creates_before..];
        assert_eq!(creates.len(), 2, "{creates:#?}");
        assert_eq!(creates[0]["decision"], "allow");
        assert_eq!(creates[0]["image"]["digest"], node.app_digest.as_str());
        assert_eq!(creates[1]["decision"], "deny");
        assert_eq!(creates[1]["image"]["digest"], evil_digest.as_str());
    }
}

/// Awaits `call` while taking what the proxy writes to the log.
async fn drain<T>(log: &mut HeldLog, call: impl std::future::Future<Output = T>) -> T {
    let mut call = std::pin::pin!(call);
    loop {
        log.take();
        tokio::select! {
            out = &mut call => return out,
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

async fn evil_id(direct: &attestgate_e2e::cri::Cri, evil: &str) -> String {
    imported_image(direct, evil).await.id
}

/// The image `ctr images import` put on the node, once the CRI sees it:
/// containerd's CRI plugin learns of imports from events, a moment later.
async fn imported_image(direct: &attestgate_e2e::cri::Cri, image: &str) -> k8s_cri::v1::Image {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = direct.image_status(image).await.unwrap() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the import of {image} never reached the CRI"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_naming_two_methods_is_refused() {
    use attestgate_e2e::raw_h2;
    use k8s_cri::v1::{ContainerConfig, CreateContainerRequest, ImageSpec};
    use prost::Message as _;
    let Some((node, _)) = signed_node() else {
        return;
    };
    let cri = node.via_proxy().await;
    cri.pull(&node.app_image, None).await.unwrap();
    let (unsigned, _) = node.push_image("smuggled", "1", "sleep 3600");
    // One body, two readings. As a CreateContainerRequest it creates the
    // signed app. As a PullImageRequest its field 1 is an ImageSpec naming
    // the unsigned image and its field 2 an AuthConfig of strings: a pull.
    let smuggled = ImageSpec {
        image: unsigned.clone(),
        ..ImageSpec::default()
    }
    .encode_to_vec();
    let body = CreateContainerRequest {
        pod_sandbox_id: String::from_utf8(smuggled).unwrap(),
        config: Some(ContainerConfig {
            image: Some(ImageSpec {
                image: node.app_image.clone(),
                ..ImageSpec::default()
            }),
            ..ContainerConfig::default()
        }),
        sandbox_config: None,
    }
    .encode_to_vec();
    let create = "/runtime.v1.RuntimeService/CreateContainer";
    let pull = "/runtime.v1.ImageService/PullImage";
    for (first, second) in [(create, pull), (pull, create)] {
        let ending = raw_h2::call(
            &node.proxy_sock,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", first),
                (":path", second),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
            &body,
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(
            ending.says("given twice"),
            "{first} then {second}: {ending:?}"
        );
    }
    assert!(
        node.direct()
            .await
            .image_status(&unsigned)
            .await
            .unwrap()
            .is_none(),
        "the image named by the second :path was pulled"
    );
    assert!(cri.list_containers().await.unwrap().is_empty());
}

/// grpc-go (kubelet, crictl, critest) dialling a socket by its path sends
/// the path as :authority, which is no URI authority; the proxy once
/// answered every such PullImage and CreateContainer with INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_grpc_go_naming_the_socket_as_authority_are_decided() {
    use attestgate_e2e::raw_h2;
    use k8s_cri::v1::{ImageSpec, PullImageRequest};
    use prost::Message as _;
    let Some((node, _)) = signed_node() else {
        return;
    };
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    let socket = node.proxy_sock.to_string_lossy().into_owned();
    let pull = |image: &str| {
        let body = PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..ImageSpec::default()
            }),
            ..PullImageRequest::default()
        }
        .encode_to_vec();
        raw_h2::call(
            &node.proxy_sock,
            // Field for field what grpc-go 1.51 (crictl 1.26) sends.
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/runtime.v1.ImageService/PullImage"),
                (":authority", &socket),
                ("content-type", "application/grpc"),
                ("user-agent", "grpc-go/1.51.0"),
                ("te", "trailers"),
                ("grpc-accept-encoding", "gzip"),
            ],
            &body,
            Duration::from_secs(120),
        )
        .unwrap()
    };
    let admitted = pull(&node.app_image);
    assert!(admitted.says("grpc-status\u{1}0"), "{admitted:?}");
    let refused = pull(&unsigned);
    assert!(refused.says("grpc-status\u{1}7"), "{refused:?}");
    assert!(refused.says("SignatureValidationFailed"), "{refused:?}");
    let direct = node.direct().await;
    assert!(
        direct
            .image_status(&node.app_image)
            .await
            .unwrap()
            .is_some()
    );
    assert!(direct.image_status(&unsigned).await.unwrap().is_none());
    let audit = node.audit();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(audit[0]["reason"], "ATTESTED");
    assert_eq!(audit[1]["decision"], "deny");
}

/// grpc-go clients PING after replies (BDP estimation), and containerd
/// (grpc-go) closes a connection that PINGs it more than twice with nothing
/// written in between ("too_many_pings"). After replies the proxy gave in
/// containerd's place, a few creates in a row cost kubelet its connection
/// (critest: "listing stats for three created containers").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_after_replies_the_proxy_gave_do_not_cost_the_connection() {
    use attestgate_e2e::raw_h2::{Connection, Ending, Pong};
    use k8s_cri::v1::{ImageSpec, PullImageRequest, VersionRequest};
    use prost::Message as _;
    let Some((node, _)) = signed_node() else {
        return;
    };
    let (unsigned, digest) = node.push_image("unsigned", "1", "sleep 3600");
    let repo = unsigned.rsplit_once(':').unwrap().0;
    let head = |path: &'static str| {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    };
    let refused_pull = PullImageRequest {
        image: Some(ImageSpec {
            image: format!("{repo}@{digest}"),
            ..ImageSpec::default()
        }),
        ..PullImageRequest::default()
    }
    .encode_to_vec();
    let mut connection = Connection::open(&node.proxy_sock, Duration::from_secs(60)).unwrap();
    for round in 0..5u8 {
        let ending = connection
            .call(&head("/runtime.v1.ImageService/PullImage"), &refused_pull)
            .unwrap();
        assert!(ending.says("grpc-status\u{1}7"), "{round}: {ending:?}");
        assert_eq!(
            connection.ping([round; 8]).unwrap(),
            Pong::Answered,
            "PING after refusal {round}"
        );
    }
    let version = connection
        .call(
            &head("/runtime.v1.RuntimeService/Version"),
            &VersionRequest::default().encode_to_vec(),
        )
        .unwrap();
    assert!(matches!(version, Ending::Answered(_)), "{version:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_and_break_glass_admit_and_log() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    let key = node.add_attestor("ci");
    let _ = key;
    node.policy(&REQUIRE_CI.replace("ENFORCED_BLOCK_AND_AUDIT_LOG", "DRYRUN_AUDIT_LOG_ONLY"));
    start_proxy_with_pause_allowed(&mut node);
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "dry");
    run_app(&node, &cri, &pod, &node.app_image)
        .await
        .expect("dry run admits the unsigned app");
    let audit = node.audit();
    assert_eq!(audit.len(), 2);
    for line in &audit {
        assert_eq!(line["decision"], "allow");
        assert_eq!(line["reason"], "DRY_RUN");
        assert_eq!(line["overridden"], "MISSING_ATTESTATIONS");
        assert_eq!(line["enforced"], false);
    }

    // Enforce, then break the glass.
    node.policy(REQUIRE_CI);
    node.restart_proxy();
    let cri = node.via_proxy().await;
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    assert_denied(cri.pull(&unsigned, Some(node.pod("prod", "plain"))).await);
    let mut glass = node.pod("prod", "glass");
    glass
        .labels
        .insert("image-policy.k8s.io/break-glass".into(), "true".into());
    run_app(&node, &cri, &glass, &unsigned)
        .await
        .expect("break-glass admits");
    let audit = node.audit();
    let last_two = &audit[audit.len() - 2..];
    for line in last_two {
        assert_eq!(line["decision"], "allow");
        assert_eq!(line["reason"], "BREAK_GLASS");
        assert_eq!(line["overridden"], "MISSING_ATTESTATIONS");
    }
    let mut annotated = node.pod("prod", "glass2");
    annotated.annotations.insert(
        "alpha.image-policy.k8s.io/break-glass".into(),
        "true".into(),
    );
    cri.pull(&unsigned, Some(annotated))
        .await
        .expect("the annotation breaks the glass too");
}

/// CreateContainer carries a copy of the sandbox config, which is only the
/// client's word; the pod context decided on is the sandbox's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_config_claiming_break_glass_or_another_namespace_lends_nothing() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    let _key = node.add_attestor("ci");
    node.policy(&format!(
        "{REQUIRE_CI}kubernetesNamespaceAdmissionRules:
  dev:
    evaluationMode: ALWAYS_ALLOW
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
"
    ));
    start_proxy_with_pause_allowed(&mut node);
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    let direct = node.direct().await;
    // On the node without a decision, as if imported.
    let image_id = direct.pull(&unsigned, None).await.unwrap();
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "victim");
    let pod_id = cri.run_pod(&pod).await.unwrap();

    let mut glass = pod.clone();
    glass.annotations.insert(
        "alpha.image-policy.k8s.io/break-glass".into(),
        "true".into(),
    );
    glass
        .labels
        .insert("image-policy.k8s.io/break-glass".into(), "true".into());
    let status = assert_denied(
        cri.create_container(&pod_id, &glass, "glass", &image_id, &unsigned, &[])
            .await,
    );
    assert!(status.message().contains("not satisfied"), "{status:?}");

    // Another namespace, and break-glass on a pod the request makes up:
    // the refusal stands.
    let mut dev = pod.clone();
    let mut forged = glass.clone();
    if let (Some(dev), Some(forged)) = (dev.metadata.as_mut(), forged.metadata.as_mut()) {
        dev.namespace = "dev".into();
        forged.uid = "forged".into();
    }
    for (name, claimed) in [("dev", &dev), ("forged", &forged)] {
        let status = assert_denied(
            cri.create_container(&pod_id, claimed, name, &image_id, &unsigned, &[])
                .await,
        );
        assert!(status.message().contains("does not match"), "{status:?}");
    }

    let audit = node.audit();
    let creates: Vec<_> = audit
        .iter()
        .filter(|l| l["operation"] == "CreateContainer")
        .collect();
    assert_eq!(creates.len(), 3, "{audit:?}");
    assert_eq!(creates[0]["reason"], "MISSING_ATTESTATIONS");
    assert_eq!(creates[0]["pod"]["namespace"], "prod");
    assert_eq!(creates[1]["decision"], "deny");
    assert_eq!(creates[2]["decision"], "deny");
    assert_eq!(creates[2]["pod"]["uid"], "forged");
    assert!(direct.list_containers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_cluster_rules_apply() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    let key = node.add_attestor("ci");
    let repo = node.app_image.rsplit_once(':').unwrap().0.to_string();
    node.attest("ci", &key, &repo, &node.app_digest.clone());
    node.policy(
        "defaultAdmissionRule:
  evaluationMode: ALWAYS_DENY
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
clusterAdmissionRules:
  us-east1-b.e2e:
    evaluationMode: REQUIRE_ATTESTATION
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
    requireAttestationsBy: [projects/e2e/attestors/ci]
kubernetesNamespaceAdmissionRules:
  dev:
    evaluationMode: ALWAYS_ALLOW
    enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
",
    );
    node.start_proxy(&["--cluster", "us-east1-b.e2e"]);
    let cri = node.via_proxy().await;
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    cri.pull(&unsigned, Some(node.pod("dev", "a")))
        .await
        .expect("namespace rule allows");
    // Pulled for dev, but a prod container of it is still refused.
    assert_denied(cri.pull(&unsigned, Some(node.pod("prod", "b"))).await);
    cri.pull(&node.app_image, Some(node.pod("prod", "c")))
        .await
        .expect("cluster rule: attested");
    let rules: Vec<String> = node
        .audit()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["rule"].as_str().unwrap(),
                l["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            "namespace:dev ALWAYS_ALLOW",
            "cluster:us-east1-b.e2e MISSING_ATTESTATIONS",
            "cluster:us-east1-b.e2e ATTESTED"
        ]
    );
    assert!(
        node.audit()
            .iter()
            .all(|l| l["cluster"] == "us-east1-b.e2e")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_calls_pass_through_unchanged() {
    let Some((node, _)) = signed_node() else {
        return;
    };
    let cri = node.via_proxy().await;
    let direct = node.direct().await;
    let pod = node.pod("prod", "pass");
    let image_id = cri.pull(&node.app_image, Some(pod.clone())).await.unwrap();
    let pod_id = cri.run_pod(&pod).await.unwrap();
    let id = cri
        .create_container(
            &pod_id,
            &pod,
            "app",
            &image_id,
            &node.app_image,
            &["/bin/sh", "-c", "echo hello-from-app; exec sleep 3600"],
        )
        .await
        .unwrap();
    cri.start_container(&id).await.unwrap();

    assert_eq!(
        cri.version().await.unwrap(),
        direct.version().await.unwrap()
    );
    let ids = |cs: Vec<k8s_cri::v1::Container>| cs.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(cri.list_containers().await.unwrap()),
        ids(direct.list_containers().await.unwrap())
    );
    assert_eq!(
        cri.container_status(&id).await.unwrap(),
        direct.container_status(&id).await.unwrap()
    );

    let exec = cri
        .exec_sync(&id, &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
        .await
        .unwrap();
    assert_eq!(
        (
            exec.stdout.as_slice(),
            exec.stderr.as_slice(),
            exec.exit_code
        ),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );

    let exec_url = cri
        .runtime
        .clone()
        .exec(k8s_cri::v1::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(exec_url.starts_with("http://127.0.0.1:"), "{exec_url}");
    let pf_url = cri
        .runtime
        .clone()
        .port_forward(k8s_cri::v1::PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(pf_url.starts_with("http://127.0.0.1:"), "{pf_url}");

    // Logs: the CRI log file the runtime writes, reopened through the proxy.
    let log_path = cri.container_status(&id).await.unwrap().log_path;
    let mut logged = String::new();
    for _ in 0..200 {
        logged = std::fs::read_to_string(&log_path).unwrap_or_default();
        if logged.contains("hello-from-app") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged.contains("hello-from-app"), "{log_path}: {logged}");
    cri.runtime
        .clone()
        .reopen_container_log(k8s_cri::v1::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();

    // Streaming: GetContainerEvents answers through the proxy exactly as
    // containerd does (containerd 1.6 does not implement it; 1.7+ streams).
    let events = |c: attestgate_e2e::cri::Cri| async move {
        let mut client = c.runtime.clone();
        match client
            .get_container_events(k8s_cri::v1::GetEventsRequest {})
            .await
        {
            Ok(stream) => Ok(stream.into_inner()),
            Err(status) => Err(status.code()),
        }
    };
    match (events(cri.clone()).await, events(direct.clone()).await) {
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Ok(mut through), Ok(_)) => {
            cri.stop_pod(&pod_id).await.unwrap();
            let event = tokio::time::timeout(Duration::from_secs(10), through.message())
                .await
                .expect("an event streams")
                .unwrap();
            assert!(event.is_some());
        }
        (a, b) => panic!(
            "GetContainerEvents differs: via proxy {:?}, direct {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    }

    // A method the proxy's protos do not know is forwarded too.
    let unknown = |channel: tonic::transport::Channel| async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/runtime.v1.RuntimeService/NoSuchMethod");
        let codec: tonic_prost::ProstCodec<
            k8s_cri::v1::VersionRequest,
            k8s_cri::v1::VersionResponse,
        > = tonic_prost::ProstCodec::default();
        grpc.unary(
            tonic::Request::new(k8s_cri::v1::VersionRequest::default()),
            path,
            codec,
        )
        .await
        .map(|_| ())
        .map_err(|s| s.code())
    };
    assert_eq!(
        unknown(cri.channel.clone()).await,
        unknown(direct.channel.clone()).await
    );
    assert_eq!(
        unknown(cri.channel.clone()).await,
        Err(tonic::Code::Unimplemented)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_recovers_when_containerd_restarts() {
    let Some((node, _)) = signed_node() else {
        return;
    };
    let cri = node.via_proxy().await;
    cri.version().await.unwrap();
    node.restart_containerd();
    let mut recovered = false;
    for _ in 0..200 {
        if cri.version().await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "the proxy did not reconnect: {}",
        node.proxy_log()
    );
    cri.pull(&node.app_image, None)
        .await
        .expect("decisions work again after the restart");
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    assert_denied(cri.pull(&unsigned, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_s_own_api_is_not_served_through_the_proxy() {
    let Some((node, _)) = signed_node() else {
        return;
    };
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    let through_the_proxy = |args: &str| {
        node.sh_output(&format!(
            "ctr --address {} -n k8s.io {args}",
            node.proxy_sock.display()
        ))
    };
    // containerd serves its own API on the CRI's socket; passed on, it
    // would pull and run anything with no decision.
    for args in [
        format!("images pull --plain-http {unsigned}"),
        "version".to_string(),
        "containers list".to_string(),
    ] {
        let out = through_the_proxy(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ctr {args} went through");
        assert!(
            stderr.contains("serves the CRI only"),
            "ctr {args}: {stderr}"
        );
    }
    let direct = node.direct().await;
    assert!(direct.image_status(&unsigned).await.unwrap().is_none());
    node.sh("ag_ctr \"$DIR\" version >/dev/null");
    // The connection is still good for the CRI.
    let cri = node.via_proxy().await;
    cri.version().await.unwrap();
    cri.pull(&node.app_image, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bundle_keeps_the_old_policy_enforcing() {
    let Some((node, _)) = signed_node() else {
        return;
    };
    let cri = node.via_proxy().await;
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    node.policy("defaultAdmissionRule:\n  evaluationMode: SOMETIMES\n");
    for _ in 0..100 {
        if node.proxy_log().contains("invalid bundle") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        node.proxy_log().contains("SOMETIMES"),
        "the broken bundle was not noticed: {}",
        node.proxy_log()
    );
    assert_denied(cri.pull(&unsigned, None).await);
    cri.pull(&node.app_image, None)
        .await
        .expect("the old policy still admits the signed image");
    // A valid replacement takes effect.
    node.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n");
    let mut allowed = false;
    for _ in 0..100 {
        if cri.pull(&unsigned, None).await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        allowed,
        "the fixed bundle was not loaded: {}",
        node.proxy_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_proxy_appends_to_the_audit_log() {
    let Some((mut node, _)) = signed_node() else {
        return;
    };
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    assert_denied(node.via_proxy().await.pull(&unsigned, None).await);
    node.restart_proxy();
    assert_denied(node.via_proxy().await.pull(&unsigned, None).await);
    node.via_proxy()
        .await
        .pull(&node.app_image, None)
        .await
        .unwrap();
    let audit = node.audit();
    let decisions: Vec<&str> = audit
        .iter()
        .map(|l| l["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["deny", "deny", "allow"]);
    assert!(node.proxy_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1alpha2_calls_are_decided_too() {
    use k8s_cri::v1alpha2 as alpha;
    let Some((node, _)) = signed_node() else {
        return;
    };
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    let cri = node.via_proxy().await;
    let mut images = alpha::image_service_client::ImageServiceClient::new(cri.channel.clone());
    let pull = |image: &str| alpha::PullImageRequest {
        image: Some(alpha::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    };
    let status = images
        .pull_image(pull(&unsigned))
        .await
        .expect_err("unsigned refused over v1alpha2");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().starts_with("SignatureValidationFailed: "));
    images
        .pull_image(pull(&node.app_image))
        .await
        .expect("signed admitted over v1alpha2");
    let audit = node.audit();
    assert_eq!(audit.len(), 2);
    assert_eq!(
        (audit[0]["decision"].as_str(), audit[1]["decision"].as_str()),
        (Some("deny"), Some("allow"))
    );
}

/// Messages larger than the HTTP/2 windows (64 KiB by default) in both
/// directions, forwarded and intercepted, with calls in flight together
/// on one connection: the relay's flow-control bookkeeping at work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_and_concurrent_calls_pass_through() {
    let Some((node, _)) = signed_node() else {
        return;
    };
    let cri = node.via_proxy().await;
    let direct = node.direct().await;
    let mut pod = node.pod("prod", "big");
    // 200 KiB of annotations: RunPodSandbox's request, CreateContainer's
    // (which carries the sandbox config) and ListPodSandbox's response all
    // exceed the windows.
    for i in 0..4 {
        pod.annotations.insert(
            format!("example.test/big-{i}"),
            format!("{i}").repeat(50 << 10),
        );
    }
    let image_id = cri.pull(&node.app_image, Some(pod.clone())).await.unwrap();
    let pod_id = cri.run_pod(&pod).await.unwrap();
    let id = cri
        .create_container(&pod_id, &pod, "app", &image_id, &node.app_image, &[])
        .await
        .expect("a CreateContainer larger than the window is decided and forwarded");
    assert!(!id.is_empty());

    let listed = |pods: Vec<k8s_cri::v1::PodSandbox>| {
        pods.into_iter()
            .map(|p| {
                (
                    p.id,
                    p.annotations
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )
            })
            .collect::<Vec<_>>()
    };
    let expected = listed(direct.list_pods().await.unwrap());
    assert!(expected.iter().any(|(_, a)| a.len() >= 4));

    // Many calls at once on the proxy's one connection, big and small,
    // forwarded and intercepted (a pull by digest is decided here).
    let by_digest = format!(
        "{}@{}",
        node.app_image.rsplit_once(':').unwrap().0,
        node.app_digest
    );
    let mut calls = Vec::new();
    for i in 0..24 {
        let cri = cri.clone();
        let by_digest = by_digest.clone();
        calls.push(tokio::spawn(async move {
            match i % 3 {
                0 => Some(cri.list_pods().await.unwrap()),
                1 => {
                    cri.version().await.unwrap();
                    None
                }
                _ => {
                    cri.pull(&by_digest, None).await.unwrap();
                    None
                }
            }
        }));
    }
    for call in calls {
        if let Some(pods) = call.await.unwrap() {
            assert_eq!(listed(pods), expected);
        }
    }
    assert_eq!(
        cri.container_status(&id).await.unwrap(),
        direct.container_status(&id).await.unwrap()
    );
}
