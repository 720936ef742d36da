//! containerd-shim-attestgate-v2 on real containerd and runc: containers
//! that never pass through the CRI proxy (ctr), and CRI pods with the shim
//! as containerd's default runtime (SPEC §5, Task.Create). Every scenario
//! runs in both modes: `auto`, which on this containerd (1.6) decides in
//! `start` and becomes the runc shim, and `forward`, the forwarder that
//! containerd 2.x needs, which decides at Task.Create.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use attestgate_e2e::node::{Node, REQUIRE_CI, SHIM_RUNTIME};

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Auto,
    Forward,
}

impl Mode {
    /// The configuration line that selects the mode.
    fn config(self) -> &'static str {
        match self {
            Mode::Auto => "",
            Mode::Forward => "shim_mode = \"forward\"\n",
        }
    }

    /// Processes serving one container group: the runc shim, and in
    /// forward mode the forwarder in front of it.
    fn processes(self) -> usize {
        match self {
            Mode::Auto => 1,
            Mode::Forward => 2,
        }
    }
}

/// A shim node whose policy requires the CI attestor, with the app signed.
fn signed_shim_node(mode: Mode) -> Option<Node> {
    let node = Node::up_with_shim(&agcri())?;
    node.write_shim_config(mode.config());
    let key = node.add_attestor("ci");
    node.attest("ci", &key, repository(&node.app_image), &node.app_digest);
    node.policy(REQUIRE_CI);
    Some(node)
}

fn repository(reference: &str) -> &str {
    reference.rsplit_once(':').unwrap().0
}

/// `ctr` in containerd namespace `default`, where plain clients work.
fn ctr(node: &Node, args: &[&str]) -> Output {
    node.ctr("default", args)
}

fn ctr_ok(node: &Node, args: &[&str]) -> String {
    let out = ctr(node, args);
    assert!(
        out.status.success(),
        "ctr {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn last_audit(node: &Node) -> serde_json::Value {
    node.audit().pop().expect("an audit record")
}

fn task_bundle(node: &Node, namespace: &str, id: &str) -> PathBuf {
    node.dir()
        .join("containerd/state/io.containerd.runtime.v2.task")
        .join(namespace)
        .join(id)
}

fn sha256_hex(node: &Node, text: &str) -> String {
    node.sh(&format!("printf '%s' \"{text}\" | sha256sum | cut -c1-64"))
}

/// Where containerd 1.6's runc shim listens for a shim grouped under `group`.
fn shim_socket(node: &Node, namespace: &str, group: &str) -> PathBuf {
    PathBuf::from("/run/containerd/s").join(sha256_hex(
        node,
        &format!("$AG_CONTAINERD_SOCK/{namespace}/{group}"),
    ))
}

/// Where attestgate's forwarder for that runc shim listens.
fn forwarder_socket(node: &Node, namespace: &str, group: &str) -> PathBuf {
    let runc = shim_socket(node, namespace, group);
    PathBuf::from("/run/containerd/s").join(sha256_hex(
        node,
        &format!("attestgate-forward:unix://{}", runc.display()),
    ))
}

/// PIDs of the shims (runc's and, in forward mode, ours) serving `group`.
fn shim_pids(node: &Node, namespace: &str, group: &str) -> Vec<String> {
    node.sh(&format!(
        "ag_pids_mentioning \"-namespace {namespace} -id {group} -address $AG_CONTAINERD_SOCK\""
    ))
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

fn mounts_under(node: &Node, path: &Path) -> String {
    node.sh(&format!("ag_mounts_under {}", path.display()))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nothing of container `id` exists any more: no task, no shim process or
/// socket, no task bundle, nothing mounted.
fn assert_no_trace(node: &Node, id: &str) {
    let bundle = task_bundle(node, "default", id);
    wait_until(&format!("{id}'s shim to go"), || {
        shim_pids(node, "default", id).is_empty()
            && !bundle.exists()
            && !forwarder_socket(node, "default", id).exists()
    });
    let tasks = ctr_ok(node, &["task", "ls", "-q"]);
    assert!(!tasks.lines().any(|l| l == id), "task {id} left: {tasks}");
    assert!(
        !shim_socket(node, "default", id).exists(),
        "shim socket of {id} left"
    );
    assert_eq!(mounts_under(node, &bundle), "", "mounts of {id} left");
}

#[test]
fn ctr_containers_are_decided_before_their_task_exists() {
    ctr_containers(Mode::Auto);
}

#[test]
fn ctr_containers_are_decided_by_the_forwarder() {
    ctr_containers(Mode::Forward);
}

fn ctr_containers(mode: Mode) {
    let Some(node) = signed_shim_node(mode) else {
        return;
    };
    // Plain ctr containers share runc's default root with every other
    // containerd on the machine: ids unique to this node.
    let bad = &format!("bad-{}", node.cgroup_tag);
    let good = &format!("good-{}", node.cgroup_tag);
    let pinned_id = &format!("pinned-{}", node.cgroup_tag);
    let glass = &format!("glass-{}", node.cgroup_tag);
    let (unsigned, unsigned_digest) =
        node.push_image("unsigned", "1", "trap \"exit 0\" TERM; sleep 3600 & wait");
    for image in [&node.app_image, &unsigned] {
        ctr_ok(&node, &["images", "pull", "--plain-http", image]);
    }

    // Unsigned: refused at start, with the explanation, and nothing made.
    let out = ctr(
        &node,
        &["run", "-d", "--runtime", SHIM_RUNTIME, &unsigned, bad],
    );
    assert!(!out.status.success(), "an unsigned image ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "SignatureValidationFailed: image {}@{unsigned_digest} denied",
            repository(&unsigned)
        )) && stderr.contains("projects/e2e/attestors/ci"),
        "{stderr}"
    );
    let record = last_audit(&node);
    assert_eq!(record["operation"], "TaskCreate");
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["reason"], "MISSING_ATTESTATIONS");
    assert_eq!(record["image"]["reference"], unsigned.as_str());
    assert_eq!(record["image"]["digest"], unsigned_digest.as_str());
    assert_eq!(record["container"], bad.as_str());
    assert!(record["bundle"]["digest"].is_string(), "{record}");
    assert_no_trace(&node, bad);
    ctr_ok(&node, &["containers", "delete", bad]);

    // Signed: runs on the runc shim, which containerd then talks to itself.
    ctr_ok(
        &node,
        &[
            "run",
            "-d",
            "--runtime",
            SHIM_RUNTIME,
            &node.app_image,
            good,
        ],
    );
    let record = last_audit(&node);
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["reason"], "ATTESTED");
    assert_eq!(record["image"]["digest"], node.app_digest.as_str());
    let bundle = task_bundle(&node, "default", good);
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let socket = shim_socket(&node, "default", good);
    assert_eq!(address.trim(), format!("unix://{}", socket.display()));
    assert_eq!(
        forwarder_socket(&node, "default", good).exists(),
        mode == Mode::Forward
    );
    assert_eq!(
        shim_pids(&node, "default", good).len(),
        mode.processes(),
        "{mode:?}"
    );
    let exec = |exec_id: &str| {
        ctr_ok(
            &node,
            &[
                "task",
                "exec",
                "--exec-id",
                exec_id,
                good,
                "sh",
                "-c",
                "echo exec-ok",
            ],
        )
    };
    assert_eq!(exec("e1").trim(), "exec-ok");

    // containerd restarted: it reconnects to the runc shim; nothing of ours
    // was running to lose.
    node.restart_containerd();
    assert!(ctr_ok(&node, &["task", "ls"]).contains("RUNNING"));
    assert_eq!(exec("e2").trim(), "exec-ok");
    let ps = ctr_ok(&node, &["task", "ps", good]);
    assert!(ps.lines().count() >= 2, "{ps}");

    // kill, wait, delete
    ctr_ok(&node, &["task", "kill", good]);
    wait_until("good to stop", || {
        ctr_ok(&node, &["task", "ls"])
            .lines()
            .any(|l| l.starts_with(good) && l.contains("STOPPED"))
    });
    ctr_ok(&node, &["task", "delete", good]);
    ctr_ok(&node, &["containers", "delete", good]);
    assert_no_trace(&node, good);

    // By digest, run to completion and removed (--rm: start, wait, delete).
    let pinned = format!("{}@{}", repository(&node.app_image), node.app_digest);
    ctr_ok(&node, &["images", "pull", "--plain-http", &pinned]);
    let out = ctr_ok(
        &node,
        &[
            "run",
            "--rm",
            "--runtime",
            SHIM_RUNTIME,
            &pinned,
            pinned_id,
            "echo",
            "ran-pinned",
        ],
    );
    assert_eq!(out.trim(), "ran-pinned");
    let record = last_audit(&node);
    assert_eq!(record["image"]["reference"], pinned.as_str());
    assert_eq!(record["decision"], "allow");
    assert_no_trace(&node, pinned_id);

    // The runc shim killed under a running container: containerd cleans up
    // through `<our binary> delete`, which hands over to runc's, and in
    // forward mode the forwarder goes with the runc shim.
    let doomed = &format!("doomed-{}", node.cgroup_tag);
    ctr_ok(
        &node,
        &[
            "run",
            "-d",
            "--runtime",
            SHIM_RUNTIME,
            &node.app_image,
            doomed,
        ],
    );
    let runc_shim = node.sh(&format!(
        "for p in $(ag_pids_mentioning \"-namespace default -id {doomed} -address $AG_CONTAINERD_SOCK\"); do \
           tr '\\0' ' ' </proc/$p/cmdline | grep -q containerd-shim-runc-v2 && echo $p; done; true"
    ));
    assert!(!runc_shim.is_empty(), "no runc shim for {doomed}");
    node.sh(&format!("kill -KILL {runc_shim}"));
    wait_until(&format!("{doomed} to stop"), || {
        !ctr_ok(&node, &["task", "ls"])
            .lines()
            .any(|l| l.starts_with(doomed.as_str()) && l.contains("RUNNING"))
    });
    let _ = ctr(&node, &["task", "delete", "-f", doomed]);
    ctr_ok(&node, &["containers", "delete", doomed]);
    // A killed runc shim leaves its socket file behind, with or without
    // attestgate (nothing removes it in containerd 1.6): not ours to judge.
    let _ = std::fs::remove_file(shim_socket(&node, "default", doomed));
    assert_no_trace(&node, doomed);

    // Break-glass on the container's annotations admits, unenforced.
    ctr_ok(
        &node,
        &[
            "run",
            "--rm",
            "--annotation",
            "alpha.image-policy.k8s.io/break-glass=true",
            "--runtime",
            SHIM_RUNTIME,
            &unsigned,
            glass,
            "true",
        ],
    );
    let record = last_audit(&node);
    assert_eq!(record["reason"], "BREAK_GLASS");
    assert_eq!(record["enforced"], false);
    assert_eq!(record["overridden"], "MISSING_ATTESTATIONS");
    assert_no_trace(&node, glass);
}

#[test]
fn the_shim_fails_closed() {
    fails_closed(Mode::Auto);
}

#[test]
fn the_forwarder_fails_closed() {
    fails_closed(Mode::Forward);
}

/// `ctr run` of a container on a bare rootfs directory: no image at all.
fn run_without_image(node: &Node, rootfs: &Path, id: &str) -> Output {
    ctr(
        node,
        &[
            "run",
            "--rm",
            "--runtime",
            SHIM_RUNTIME,
            "--rootfs",
            &rootfs.display().to_string(),
            id,
            "true",
        ],
    )
}

fn fails_closed(mode: Mode) {
    let Some(node) = signed_shim_node(mode) else {
        return;
    };
    ctr_ok(&node, &["images", "pull", "--plain-http", &node.app_image]);
    let tag = node.cgroup_tag.clone();
    let refused = |name: &str, expect: &str| {
        let id = &format!("{name}-{tag}");
        let out = ctr(
            &node,
            &[
                "run",
                "--rm",
                "--runtime",
                SHIM_RUNTIME,
                &node.app_image,
                id,
                "true",
            ],
        );
        assert!(!out.status.success(), "{id}: the container ran");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("SignatureValidationFailed: ") && stderr.contains(expect),
            "{id}: {stderr}"
        );
        assert_no_trace(&node, id);
        ctr(&node, &["containers", "delete", id]);
    };

    // A bundle that does not parse: no policy, closed.
    node.policy("defaultAdmissionRule: [\n");
    refused("nobundle", "policy.yaml");
    assert_eq!(last_audit(&node)["reason"], "NO_POLICY");
    node.policy(REQUIRE_CI);

    // A configuration that does not parse: nothing is known, closed.
    node.write_shim_config(&format!("{}bogus_key = 1\n", mode.config()));
    refused("noconfig", "bogus_key");
    // Recorded in the log the invalid file still names, not the default.
    let record = last_audit(&node);
    assert_eq!(record["reason"], "ERROR", "{record}");
    assert!(
        record["message"].as_str().unwrap().contains("bogus_key"),
        "{record}"
    );

    // An audit log that cannot be written: closed.
    std::fs::write(
        &node.shim_config,
        format!(
            "bundle = \"{}\"\naudit_log = \"/dev/full\"\n{}",
            node.bundle.display(),
            mode.config()
        ),
    )
    .unwrap();
    refused("noaudit", "audit log /dev/full cannot be written");

    // The same, fail-open, runs.
    std::fs::write(
        &node.shim_config,
        format!(
            "bundle = \"{}\"\naudit_log = \"/dev/full\"\nfail_mode = \"open\"\n{}",
            node.bundle.display(),
            mode.config()
        ),
    )
    .unwrap();
    let out = ctr_ok(
        &node,
        &[
            "run",
            "--rm",
            "--runtime",
            SHIM_RUNTIME,
            &node.app_image,
            &format!("open-{tag}"),
            "echo",
            "ran-open",
        ],
    );
    assert_eq!(out.trim(), "ran-open");

    // A container without an image (made from a raw snapshot) cannot be
    // decided: refused under the closed default.
    node.write_shim_config(mode.config());
    let rootfs = node.dir().join("raw-rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let out = run_without_image(&node, &rootfs, &format!("noimage-{tag}"));
    assert!(!out.status.success(), "a container without an image ran");
    let record = last_audit(&node);
    assert_eq!(record["reason"], "ERROR");
    assert!(
        record["message"].as_str().unwrap().contains("has no image"),
        "{record}"
    );
    assert_no_trace(&node, &format!("noimage-{tag}"));

    // Nor under fail mode open: having no image is the container's doing,
    // not a failure of the node's.
    node.write_shim_config(&format!("fail_mode = \"open\"\n{}", mode.config()));
    let out = run_without_image(&node, &rootfs, &format!("noimage-open-{tag}"));
    assert!(
        !out.status.success(),
        "a container without an image ran under fail mode open"
    );
    let record = last_audit(&node);
    assert_eq!(
        record["container"],
        format!("noimage-open-{tag}"),
        "{record}"
    );
    assert_eq!(record["decision"], "deny", "{record}");
    assert_no_trace(&node, &format!("noimage-open-{tag}"));

    // Nor is a container whose image record was removed under it.
    let orphan = format!("orphan-{tag}");
    ctr_ok(
        &node,
        &[
            "containers",
            "create",
            "--runtime",
            SHIM_RUNTIME,
            &node.app_image,
            &orphan,
            "true",
        ],
    );
    ctr_ok(&node, &["images", "rm", &node.app_image]);
    let out = ctr(&node, &["tasks", "start", &orphan]);
    assert!(
        !out.status.success(),
        "a container whose image is gone ran under fail mode open"
    );
    let record = last_audit(&node);
    assert_eq!(record["container"], orphan.as_str(), "{record}");
    assert_eq!(record["decision"], "deny", "{record}");
    assert!(
        record["message"].as_str().unwrap().contains("not found"),
        "{record}"
    );
    assert_no_trace(&node, &orphan);
    ctr(&node, &["containers", "delete", &orphan]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pods_run_with_the_shim_as_default_runtime() {
    cri_pods(Mode::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pods_run_with_the_forwarder_as_default_runtime() {
    cri_pods(Mode::Forward).await;
}

async fn cri_pods(mode: Mode) {
    let Some(node) = signed_shim_node(mode) else {
        return;
    };
    // Straight to containerd: the shim alone decides.
    let cri = node.direct().await;
    let pod = node.pod("prod", "web-0");
    let app_id = cri.pull(&node.app_image, None).await.unwrap();
    let pod_id = cri.run_pod(&pod).await.expect("pod runs");
    let web = cri
        .create_container(&pod_id, &pod, "web", &app_id, &node.app_image, &[])
        .await
        .unwrap();
    cri.start_container(&web)
        .await
        .expect("signed container starts");
    assert_eq!(
        cri.container_status(&web).await.unwrap().state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32
    );
    let audit = node.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[0]["operation"], "TaskCreate");
    assert_eq!(audit[0]["reason"], "SYSTEM_IMAGE");
    assert_eq!(audit[0]["image"]["reference"], node.pause_image.as_str());
    assert_eq!(audit[0]["pod"]["namespace"], "prod");
    assert_eq!(audit[1]["reason"], "ATTESTED");
    assert_eq!(audit[1]["pod"]["name"], "web-0");
    assert_eq!(audit[1]["container"], "web");

    // An unsigned image reaches the node without the proxy: created, but
    // refused when its task would be made; the pod's signed container runs on.
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    let unsigned_id = cri.pull(&unsigned, None).await.unwrap();
    let bad = cri
        .create_container(&pod_id, &pod, "bad", &unsigned_id, &unsigned, &[])
        .await
        .unwrap();
    let status = cri
        .start_container(&bad)
        .await
        .expect_err("an unsigned container started");
    assert!(
        status
            .message()
            .contains("SignatureValidationFailed: image"),
        "{status:?}"
    );
    assert_eq!(last_audit(&node)["decision"], "deny");
    assert_eq!(last_audit(&node)["container"], "bad");
    assert_eq!(
        cri.container_status(&web).await.unwrap().state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32
    );
    let exec = cri.exec_sync(&web, &["echo", "still-here"]).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "still-here");
    // One runc shim (and in forward mode one forwarder) serves the whole
    // pod, as without attestgate.
    assert_eq!(
        shim_pids(&node, "k8s.io", &pod_id).len(),
        mode.processes(),
        "{mode:?}"
    );

    // A break-glass pod: its annotation reaches the shim through the
    // runtime's pod_annotations, and admits the unsigned image, unenforced.
    let mut glass = node.pod("prod", "glass-0");
    glass.annotations.insert(
        "alpha.image-policy.k8s.io/break-glass".into(),
        "true".into(),
    );
    let glass_id = cri.run_pod(&glass).await.expect("break-glass pod runs");
    let forced = cri
        .create_container(&glass_id, &glass, "forced", &unsigned_id, &unsigned, &[])
        .await
        .unwrap();
    cri.start_container(&forced)
        .await
        .expect("break-glass admits");
    let record = last_audit(&node);
    assert_eq!(record["reason"], "BREAK_GLASS");
    assert_eq!(record["enforced"], false);
    assert_eq!(record["pod"]["name"], "glass-0");
    cri.stop_pod(&glass_id).await.unwrap();
    cri.remove_pod(&glass_id).await.unwrap();

    cri.stop_pod(&pod_id).await.unwrap();
    cri.remove_pod(&pod_id).await.unwrap();
    wait_until("the pod's shim to go", || {
        shim_pids(&node, "k8s.io", &pod_id).is_empty()
            && !forwarder_socket(&node, "k8s.io", &pod_id).exists()
    });
    let state = node
        .dir()
        .join("containerd/state/io.containerd.runtime.v2.task/k8s.io");
    for id in [&pod_id, &web, &bad] {
        assert!(!state.join(id).exists(), "task bundle {id} left");
    }
    assert!(!shim_socket(&node, "k8s.io", &pod_id).exists());
    assert_eq!(mounts_under(&node, &state), "");
}
