//! A real node for a scenario: registry, containerd (CRI, runc, CNI bridge)
//! and images from `support/env.sh`, plus attestgate-proxy in front, all
//! confined to one temporary directory and torn down (by PID) on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cri::Cri;

/// Where cargo put the workspace's binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support")
}

/// Whether ATTESTGATE_E2E_REQUIRED is set (as CI does): then a missing
/// prerequisite fails a scenario instead of skipping it.
pub fn required() -> bool {
    std::env::var_os("ATTESTGATE_E2E_REQUIRED").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Whether the end-to-end prerequisites are here. Without them a scenario is
/// skipped on a developer machine, but fails when ATTESTGATE_E2E_REQUIRED is
/// set (as CI does), so a missing dependency can never pass silently.
pub fn available(agcri: &Path) -> bool {
    let required = required();
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}/env.sh && ag_require",
            support_dir().display()
        ))
        .env("AG_CRI_BIN", agcri)
        .output()
        .expect("bash");
    if check.status.success() {
        return true;
    }
    let why = String::from_utf8_lossy(&check.stderr);
    if required {
        panic!("end-to-end prerequisites missing (ATTESTGATE_E2E_REQUIRED is set): {why}");
    }
    eprintln!("SKIPPED: end-to-end prerequisites missing: {why}");
    false
}

pub struct Node {
    dir: tempfile::TempDir,
    agcri: PathBuf,
    pub registry: String,
    pub containerd_sock: PathBuf,
    pub pause_image: String,
    pub pause_digest: String,
    pub app_image: String,
    pub app_digest: String,
    pub cgroup_tag: String,
    pub bundle: PathBuf,
    pub audit_log: PathBuf,
    pub proxy_sock: PathBuf,
    proxy: Option<Child>,
    proxy_args: Vec<String>,
    proxy_wrapper: Vec<String>,
    proxy_env: Vec<(String, String)>,
    /// Environment for env.sh, and so for containerd and its shims.
    containerd_env: Vec<(String, String)>,
    /// The configuration file the shim reads (`ATTESTGATE_CONFIG`).
    pub shim_config: PathBuf,
}

/// A multi-platform image in the node's registry ([`Node::push_multiarch`]).
#[derive(Debug, Clone)]
pub struct MultiArch {
    /// `REGISTRY/attestgate/NAME:TAG`, which names the index.
    pub reference: String,
    pub index_digest: String,
    /// (GOARCH, manifest digest), in the index's order, this machine's first.
    pub platform_digests: Vec<(String, String)>,
    /// The manifest containerd pulls on this machine.
    pub this_platform_digest: String,
}

/// This machine's architecture as OCI platforms name it (GOARCH).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no multi-arch fixture for {other}"),
    }
}

/// A policy requiring the CI attestor ([`Node::add_attestor`]`("ci")`), with
/// system images allowed.
pub const REQUIRE_CI: &str = "globalPolicyEvaluationMode: ENABLE
defaultAdmissionRule:
  evaluationMode: REQUIRE_ATTESTATION
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
  requireAttestationsBy: [projects/e2e/attestors/ci]
";

/// The containerd runtime name of attestgate's shim.
pub const SHIM_RUNTIME: &str = "io.containerd.attestgate.v2";

impl Node {
    /// Brings up registry, images and containerd; `None` when skipped.
    pub fn up(agcri: &Path) -> Option<Node> {
        Node::start(agcri, false)
    }

    /// Like [`Node::up`], with containerd-shim-attestgate-v2 on containerd's
    /// PATH and as the CRI's default runtime, reading [`Node::shim_config`]:
    /// the node's bundle and audit log, the pause image as a system image.
    pub fn up_with_shim(agcri: &Path) -> Option<Node> {
        Node::start(agcri, true)
    }

    fn start(agcri: &Path, shim: bool) -> Option<Node> {
        if !available(agcri) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("ag.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let mut node = Node {
            bundle: dir.path().join("bundle"),
            audit_log: dir.path().join("audit/audit.jsonl"),
            proxy_sock: dir.path().join("attestgate.sock"),
            dir,
            agcri: agcri.to_path_buf(),
            registry: String::new(),
            containerd_sock: PathBuf::new(),
            pause_image: String::new(),
            pause_digest: String::new(),
            app_image: String::new(),
            app_digest: String::new(),
            cgroup_tag: String::new(),
            proxy: None,
            proxy_args: Vec::new(),
            proxy_wrapper: Vec::new(),
            proxy_env: Vec::new(),
            containerd_env: Vec::new(),
            shim_config: PathBuf::new(),
        };
        if shim {
            // Only our shim is added to containerd's PATH; it finds the
            // runc shim where containerd would.
            let shim_dir = node.dir().join("shim-bin");
            std::fs::create_dir_all(&shim_dir).expect("shim dir");
            std::os::unix::fs::symlink(
                bin("containerd-shim-attestgate-v2"),
                shim_dir.join("containerd-shim-attestgate-v2"),
            )
            .expect("shim link");
            node.shim_config = node.dir().join("attestgate.toml");
            node.containerd_env = vec![
                ("AG_RUNTIME_TYPE".into(), SHIM_RUNTIME.into()),
                ("AG_SHIM_DIR".into(), shim_dir.display().to_string()),
                (
                    "ATTESTGATE_CONFIG".into(),
                    node.shim_config.display().to_string(),
                ),
            ];
        }
        node.sh("ag_up \"$DIR\"");
        let env = std::fs::read_to_string(node.dir().join("env")).expect("env file");
        for line in env.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "AG_REGISTRY" => node.registry = v.into(),
                "AG_CONTAINERD_SOCK" => node.containerd_sock = v.into(),
                "AG_PAUSE_IMAGE" => node.pause_image = v.into(),
                "AG_PAUSE_DIGEST" => node.pause_digest = v.into(),
                "AG_APP_IMAGE" => node.app_image = v.into(),
                "AG_APP_DIGEST" => node.app_digest = v.into(),
                "AG_CGROUP_TAG" => node.cgroup_tag = v.into(),
                _ => {}
            }
        }
        if shim {
            node.write_shim_config("");
        }
        std::fs::create_dir_all(node.bundle.join("attestors")).expect("bundle dir");
        std::fs::create_dir_all(node.bundle.join("attestations")).expect("bundle dir");
        Some(node)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the shim's configuration: the node's bundle and audit log, the
    /// pause image as a system image, then `extra` (TOML lines).
    pub fn write_shim_config(&self, extra: &str) {
        std::fs::write(
            &self.shim_config,
            format!(
                "bundle = \"{}\"\naudit_log = \"{}\"\nsystem_images = [\"{}/attestgate/pause*\"]\n{extra}",
                self.bundle.display(),
                self.audit_log.display(),
                self.registry
            ),
        )
        .expect("shim config");
    }

    /// Runs bash with env.sh sourced, DIR set and the node's variables
    /// loaded; panics with its output when it fails; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.sh_output(script);
        assert!(
            out.status.success(),
            "env.sh script failed: {script}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `ctr` against this node's containerd, in containerd namespace
    /// `namespace`.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd_sock)
            .args(["-n", namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr")
    }

    /// Kills and removes what `ctr run` made as `id`, whether or not its
    /// task ever started; a test's own clean-up, so nothing is asserted.
    pub fn ctr_remove(&self, namespace: &str, id: &str) {
        let _ = self.ctr(namespace, &["task", "kill", "-s", "KILL", id]);
        // The kill is asynchronous; `task rm -f` after it, not instead.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = self.ctr(namespace, &["task", "rm", "-f", id]);
        let _ = self.ctr(namespace, &["container", "rm", id]);
    }

    pub fn sh_output(&self, script: &str) -> std::process::Output {
        let env_file = self.dir().join("env");
        let full = format!(
            "set -euo pipefail; source {}/env.sh; DIR={}; [[ -f {} ]] && set -a && source {} && set +a; AG_CONTAINERD_SOCK=\"${{AG_CONTAINERD_SOCK:-}}\"; {script}",
            support_dir().display(),
            self.dir().display(),
            env_file.display(),
            env_file.display(),
        );
        Command::new("bash")
            .arg("-c")
            .arg(full)
            .env("AG_CRI_BIN", &self.agcri)
            .env("AG_QUIET", "1")
            .envs(
                self.containerd_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .output()
            .expect("bash")
    }

    /// Builds an image from busybox running `command`, pushes it as
    /// `REGISTRY/attestgate/NAME:TAG`, and returns (reference, digest).
    pub fn push_image(&self, name: &str, tag: &str, command: &str) -> (String, String) {
        let reference = format!("{}/attestgate/{name}:{tag}", self.registry);
        let layout = self.dir().join("oci");
        let digest = self.sh(&format!(
            "ag_image_build {layout} {name}-{tag} --label attestgate.test/name={name}-{tag} -- /bin/sh -c '{command}' >/dev/null && ag_image_push {layout} {name}-{tag} {reference}",
            layout = layout.display(),
        ));
        (
            reference,
            digest.lines().last().unwrap_or_default().to_string(),
        )
    }

    /// Pushes a real multi-platform image as `REGISTRY/attestgate/NAME:TAG`:
    /// an OCI image index listing two image manifests with `platform`
    /// fields, this machine's architecture (what containerd pulls) and one
    /// other (amd64 ↔ arm64). Both are the busybox app layer; only their
    /// configs differ, and the other one is never run. The index is written
    /// here byte for byte and copied with `skopeo copy --all`, which keeps
    /// it, so its digest is the one the registry serves.
    pub fn push_multiarch(&self, name: &str, tag: &str) -> MultiArch {
        use sha2::Digest as _;
        let reference = format!("{}/attestgate/{name}:{tag}", self.registry);
        // A layout of its own: the other helpers' `umoci gc` need not know
        // about index-typed refs.
        let layout = self.dir().join(format!("oci-multiarch-{name}-{tag}"));
        let this = host_arch();
        let other = if this == "arm64" { "amd64" } else { "arm64" };
        let mut children = Vec::new();
        for arch in [this, other] {
            let image = format!("{name}-{tag}-{arch}");
            self.sh(&format!(
                "ag_image_build {layout} {image} --label attestgate.test/name={image} -- /bin/sh -c 'trap \"exit 0\" TERM INT; echo hello; sleep 3600 & wait' >/dev/null && umoci config --image {layout}:{image} --os linux --architecture {arch} && umoci gc --layout {layout}",
                layout = layout.display(),
            ));
            children.push((arch, image));
        }
        let index_json_path = layout.join("index.json");
        let mut layout_index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index_json_path).expect("index.json"))
                .expect("index.json is JSON");
        let refs = layout_index["manifests"]
            .as_array()
            .expect("index.json manifests")
            .clone();
        let mut manifests = Vec::new();
        let mut platform_digests = Vec::new();
        for (arch, image) in &children {
            let descriptor = refs
                .iter()
                .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == image.as_str())
                .unwrap_or_else(|| panic!("{image} is not in {}", index_json_path.display()));
            manifests.push(serde_json::json!({
                "mediaType": descriptor["mediaType"],
                "digest": descriptor["digest"],
                "size": descriptor["size"],
                "platform": {"architecture": arch, "os": "linux"},
            }));
            let digest = descriptor["digest"].as_str().expect("digest").to_string();
            platform_digests.push((arch.to_string(), digest));
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .expect("index");
        let hex = hex::encode(sha2::Sha256::digest(&index));
        std::fs::write(layout.join("blobs/sha256").join(&hex), &index).expect("index blob");
        let ref_name = format!("{name}-{tag}");
        layout_index["manifests"]
            .as_array_mut()
            .expect("index.json manifests")
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"),
                "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": ref_name},
            }));
        std::fs::write(
            &index_json_path,
            serde_json::to_vec(&layout_index).expect("index.json"),
        )
        .expect("index.json");
        let pushed = self.sh(&format!(
            "df=\"$DIR/multiarch.digest\" && skopeo copy -q --all --dest-tls-verify=false --digestfile \"$df\" oci:{layout}:{ref_name} docker://{reference} >/dev/null && cat \"$df\" && rm -f \"$df\"",
            layout = layout.display(),
        ));
        let index_digest = format!("sha256:{hex}");
        assert_eq!(
            pushed, index_digest,
            "skopeo did not push the index byte for byte"
        );
        MultiArch {
            reference,
            index_digest,
            this_platform_digest: platform_digests[0].1.clone(),
            platform_digests,
        }
    }

    /// Builds an image and puts it on the node without a pull
    /// (`ctr -n k8s.io images import`) as `REGISTRY/attestgate/NAME:TAG`,
    /// with its repo digest; returns (reference, digest).
    pub fn import_image(&self, name: &str, tag: &str, command: &str) -> (String, String) {
        let reference = format!("{}/attestgate/{name}:{tag}", self.registry);
        let layout = self.dir().join("oci");
        let digest = self.sh(&format!(
            "ag_image_build {layout} {name}-{tag} --label attestgate.test/name={name}-{tag} -- /bin/sh -c '{command}' >/dev/null && ag_image_import \"$DIR\" {layout} {name}-{tag} {reference}",
            layout = layout.display(),
        ));
        (
            reference,
            digest.lines().last().unwrap_or_default().to_string(),
        )
    }

    /// Makes containerd reach `host` (`127.0.0.1:<port>`) over plain HTTP,
    /// as it reaches the node's own registry: a hosts.toml of its own
    /// under the `config_path` env.sh gives containerd, read at every pull,
    /// so containerd need not restart.
    pub fn plain_http_registry(&self, host: &str) {
        let dir = self.dir().join("containerd/certs.d").join(host);
        std::fs::create_dir_all(&dir).expect("certs.d dir");
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .expect("hosts.toml");
    }

    /// Starts attestgate-proxy in front of containerd with `args` added, and
    /// waits until it serves.
    pub fn start_proxy(&mut self, args: &[&str]) {
        self.start_proxy_with(&[], &[], args);
    }

    /// Like [`Node::start_proxy`], run under `wrapper` (e.g.
    /// `systemd-socket-activate -l SOCKET`) with extra environment.
    pub fn start_proxy_with(&mut self, wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) {
        self.proxy_wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self.proxy_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.proxy_args = args.iter().map(|s| s.to_string()).collect();
        self.spawn_proxy();
    }

    pub fn proxy_pid(&self) -> Option<u32> {
        self.proxy.as_ref().map(Child::id)
    }

    fn spawn_proxy(&mut self) {
        // An empty file keeps a host's /etc/attestgate/config.toml out of the test.
        std::fs::write(self.dir().join("no-config.toml"), "").expect("empty config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("proxy.log"))
            .expect("proxy log");
        let mut command = match self.proxy_wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(bin("attestgate-proxy"));
                c
            }
            None => Command::new(bin("attestgate-proxy")),
        };
        let child = command
            .envs(self.proxy_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--config")
            .arg(self.dir().join("no-config.toml"))
            .arg("--listen")
            .arg(&self.proxy_sock)
            .arg("--runtime-endpoint")
            .arg(&self.containerd_sock)
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--audit-log")
            .arg(&self.audit_log)
            .args(&self.proxy_args)
            .env("RUST_LOG", "info,attestgate_proxy=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn attestgate-proxy");
        self.proxy = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.proxy_sock).is_err() {
            if let Some(child) = self.proxy.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("attestgate-proxy exited ({status}): {}", self.proxy_log());
            }
            assert!(
                Instant::now() < deadline,
                "attestgate-proxy did not listen: {}",
                self.proxy_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the proxy as systemd runs a socket-activated service with
    /// `Restart=always`: `systemd-socket-activate` binds [`Node::proxy_sock`]
    /// and keeps it, and a supervisor shell under it runs the proxy with
    /// that socket as fd 3 (`LISTEN_FDS=1`, `LISTEN_PID` the proxy's own
    /// pid, set in a subshell that then execs the proxy), again each time
    /// it exits, once [`Node::let_proxy_restart`] says so. Clients that
    /// connect while no proxy runs wait in the kept socket's backlog.
    pub fn start_proxy_supervised(&mut self, args: &[&str]) {
        let gate = self.proxy_restart_gate();
        // The TERM trap passes the supervisor's stop on to the proxy, which
        // would otherwise outlive it; the gate lets a scenario hold the
        // proxy down as long as it needs to.
        let supervisor = format!(
            "trap 'kill -TERM \"$child\" 2>/dev/null; wait \"$child\"; exit 0' TERM\n\
             while :; do\n\
               (LISTEN_PID=$BASHPID exec \"$0\" \"$@\") & child=$!\n\
               wait \"$child\"\n\
               until [ -e '{gate}' ]; do sleep 0.02; done\n\
               rm -f '{gate}'\n\
             done",
            gate = gate.display()
        );
        let listen = self.proxy_sock.display().to_string();
        self.start_proxy_with(
            &[
                "systemd-socket-activate",
                "-l",
                &listen,
                "bash",
                "-c",
                &supervisor,
            ],
            &[],
            args,
        );
    }

    fn proxy_restart_gate(&self) -> PathBuf {
        self.dir().join("restart-proxy")
    }

    /// The pid of the proxy [`Node::start_proxy_supervised`]'s supervisor
    /// runs now, waiting up to 20 s for one.
    pub fn supervised_proxy_pid(&self) -> u32 {
        let supervisor = self.proxy_pid().expect("a supervised proxy");
        let exe = bin("attestgate-proxy");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let [pid] = crate::process::children(supervisor, &exe)[..] {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no proxy under supervisor {supervisor}: {}",
                self.proxy_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets the supervisor start the proxy again after it exited.
    pub fn let_proxy_restart(&self) {
        std::fs::write(self.proxy_restart_gate(), "").expect("restart gate");
    }

    /// SIGTERM (graceful), wait, and start it again with the same arguments.
    pub fn restart_proxy(&mut self) {
        self.stop_proxy();
        self.spawn_proxy();
    }

    pub fn stop_proxy(&mut self) {
        if let Some(mut child) = self.proxy.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Whether the proxy process is still running.
    pub fn proxy_running(&mut self) -> bool {
        self.proxy
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("proxy.log")).unwrap_or_default()
    }

    pub async fn via_proxy(&self) -> Cri {
        Cri::connect(&self.proxy_sock.display().to_string())
            .await
            .expect("connect to proxy")
    }

    pub async fn direct(&self) -> Cri {
        Cri::connect(&self.containerd_sock.display().to_string())
            .await
            .expect("connect to containerd")
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> k8s_cri::v1::PodSandboxConfig {
        let logs = self.dir().join("pod-logs").join(name);
        std::fs::create_dir_all(&logs).expect("pod log dir");
        crate::cri::pod_config(
            namespace,
            name,
            &logs.display().to_string(),
            &format!("/attestgate/{}/pod-{namespace}-{name}", self.cgroup_tag),
        )
    }

    /// Restarts containerd (same config, same state).
    pub fn restart_containerd(&self) {
        self.sh("ag_stop_pid \"$(cat \"$DIR/containerd/pid\")\" \"$DIR/containerd/config.toml\" 30 && rm -f \"$DIR/containerd/pid\" && ag_containerd_start \"$DIR\"");
    }

    /// SIGKILLs containerd, as a crash would, and waits until it is gone;
    /// its shims, and so the pods, live on. [`Node::start_containerd`]
    /// brings it back on the same socket and state.
    pub fn kill_containerd(&self) {
        self.sh("pid=\"$(cat \"$DIR/containerd/pid\")\"; ag__cmdline_has \"$pid\" \"$DIR/containerd/config.toml\" && kill -KILL \"$pid\"; while ag__pid_alive \"$pid\"; do sleep 0.02; done; rm -f \"$DIR/containerd/pid\"");
    }

    /// Starts containerd (same config, same state) and waits until its CRI
    /// is ready.
    pub fn start_containerd(&self) {
        self.sh("ag_containerd_start \"$DIR\"");
    }

    /// Writes the bundle's policy, as a whole: a proxy watching the bundle
    /// must not catch the file truncated and half written, which it would
    /// rightly count as a broken bundle.
    pub fn policy(&self, yaml: &str) {
        let staged = self.dir().join("policy.yaml.staged");
        std::fs::write(&staged, yaml).expect("policy");
        std::fs::rename(&staged, self.bundle.join("policy.yaml")).expect("policy");
    }

    /// Runs the attestgate CLI; panics unless it succeeds; returns stdout.
    pub fn attestgate(&self, args: &[&str]) -> String {
        let out = Command::new(bin("attestgate"))
            .args(args)
            .output()
            .expect("attestgate");
        assert!(
            out.status.success(),
            "attestgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A CI attestor with a fresh ECDSA key, installed in the bundle; returns
    /// the private key path.
    pub fn add_attestor(&self, name: &str) -> PathBuf {
        let key = self.dir().join(format!("{name}.key"));
        let public = self.dir().join(format!("{name}.pub"));
        self.attestgate(&[
            "keygen",
            "--algorithm",
            "ECDSA_P256_SHA256",
            "--private",
            &key.display().to_string(),
            "--public",
            &public.display().to_string(),
        ]);
        let yaml = self.attestgate(&[
            "attestor",
            "create",
            "--name",
            &format!("projects/e2e/attestors/{name}"),
            "--note",
            &format!("projects/e2e/notes/{name}"),
            "--public-key",
            &public.display().to_string(),
            "--algorithm",
            "ECDSA_P256_SHA256",
        ]);
        std::fs::write(
            self.bundle.join("attestors").join(format!("{name}.yaml")),
            yaml,
        )
        .expect("attestor");
        key
    }

    /// Signs `repository@digest` by attestor `name` into the bundle.
    pub fn attest(&self, name: &str, key: &Path, image_repository: &str, digest: &str) {
        let out = self
            .bundle
            .join("attestations")
            .join(format!("{name}-{}.json", &digest[7..19]));
        self.attestgate(&[
            "sign",
            "--artifact-url",
            &format!("{image_repository}@{digest}"),
            "--key",
            &key.display().to_string(),
            "--algorithm",
            "ECDSA_P256_SHA256",
            "--note",
            &format!("projects/e2e/notes/{name}"),
            "--out",
            &out.display().to_string(),
        ]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_proxy();
        let out = self.sh_output("ag_down \"$DIR\"");
        if !out.status.success() {
            eprintln!(
                "teardown of {} reported: {}",
                self.dir().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
