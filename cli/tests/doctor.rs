//! `attestgate doctor` over a whole node laid out in a temporary root:
//! kubelet's units and kubeadm's files, containerd's config importing the
//! packaged runtime, the node's config, a bundle synced by the real
//! attestgate-sync from a repository `attestgate repo` made, and the real
//! attestgate-proxy answering on its socket in front of a fake CRI
//! runtime. Wired right, every check passes; then one piece at a time is
//! broken, and exactly the checks that depend on it fail, in the text and
//! in the JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use binary::{attestgate, ok, openssl_ec_key};
use k8s_cri::v1::{VersionRequest, VersionResponse};
use tonic::codegen::http;
use tonic::{Request, Response, Status};

/// The target directory's binaries: the other packages' are not this
/// test's `CARGO_BIN_EXE_*`, so they are found beside it (tests/src/node.rs
/// does the same).
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// containerd, as far as doctor's Version call through the proxy goes:
/// the CRI RuntimeService's Version, everything else unimplemented.
#[derive(Clone)]
struct FakeRuntime;

impl tonic::server::NamedService for FakeRuntime {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

struct Version;

impl tonic::server::UnaryService<VersionRequest> for Version {
    type Response = VersionResponse;
    type Future = std::future::Ready<Result<Response<VersionResponse>, Status>>;

    fn call(&mut self, _: Request<VersionRequest>) -> Self::Future {
        std::future::ready(Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake-containerd".into(),
            runtime_version: "v1.7.0-fake".into(),
            runtime_api_version: "v1".into(),
        })))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for FakeRuntime {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if request.uri().path() == "/runtime.v1.RuntimeService/Version" {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(Version, request).await)
            } else {
                Ok(Status::unimplemented("the fake runtime answers Version only").into_http())
            }
        })
    }
}

/// Serves the fake runtime at `socket` until the returned runtime is
/// dropped.
fn fake_runtime(socket: &Path) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(async { tokio::net::UnixListener::bind(socket) })
        .unwrap();
    runtime.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(FakeRuntime)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
    });
    runtime
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const KUBEADM_DROP_IN: &str = r#"[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"#;

/// A containerd config that leaves the CRI plugin's section to the files
/// it imports: containerd takes a plugin's section from one file whole.
const CONTAINERD_MAIN: &str = r#"version = 2
imports = ["/etc/containerd/conf.d/*.toml"]
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
"#;

fn packaged(path: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging")
            .join(path),
    )
    .unwrap()
}

/// A node under a temporary root, and the processes it runs.
struct Node {
    tmp: tempfile::TempDir,
    root: PathBuf,
    proxy: Option<Child>,
    _runtime: tokio::runtime::Runtime,
    source: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_proxy();
    }
}

impl Node {
    fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    fn s(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    /// Wired as packaging/README.md says.
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("node");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let at = |p: &str| root.join(p.trim_start_matches('/'));

        // kubelet as kubeadm installs it, and attestgate's drop-in.
        write(
            &at("/lib/systemd/system/kubelet.service"),
            "[Unit]\nDescription=kubelet\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n",
        );
        write(
            &at("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"),
            KUBEADM_DROP_IN,
        );
        write(
            &at("/var/lib/kubelet/kubeadm-flags.env"),
            "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.9\"\n",
        );
        write(
            &at("/var/lib/kubelet/config.yaml"),
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n",
        );
        write(
            &at("/etc/systemd/system/kubelet.service.d/20-attestgate.conf"),
            &packaged("kubelet/20-attestgate.conf"),
        );

        // containerd importing the packaged runtime, and the shim on PATH.
        write(&at("/etc/containerd/config.toml"), CONTAINERD_MAIN);
        write(
            &at("/etc/containerd/conf.d/attestgate.toml"),
            &packaged("containerd/attestgate-runtime-v2.toml"),
        );
        let shim = at("/usr/bin/containerd-shim-attestgate-v2");
        write(&shim, "#!/bin/sh\nexit 0\n");
        std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();

        // A bundle repository, published and synced by the real syncer.
        let keys: Vec<PathBuf> = ["root", "targets", "snapshot", "timestamp"]
            .iter()
            .map(|role| {
                let key = work.join(format!("{role}.pem"));
                openssl_ec_key(key.to_str().unwrap());
                key
            })
            .collect();
        let bundle_src = work.join("bundle");
        write(
            &bundle_src.join("policy.yaml"),
            "admissionWhitelistPatterns:\n- namePattern: registry.k8s.io/pause*\n\
             defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
        );
        let repo = work.join("repo");
        ok(&[
            "repo",
            "init",
            Self::s(&repo),
            "--root-key",
            Self::s(&keys[0]),
            "--targets-key",
            Self::s(&keys[1]),
            "--snapshot-key",
            Self::s(&keys[2]),
            "--timestamp-key",
            Self::s(&keys[3]),
        ]);
        ok(&[
            "repo",
            "publish",
            Self::s(&repo),
            "--bundle",
            Self::s(&bundle_src),
            "--key",
            Self::s(&keys[1]),
            "--key",
            Self::s(&keys[2]),
            "--key",
            Self::s(&keys[3]),
        ]);
        std::fs::create_dir_all(at("/etc/attestgate")).unwrap();
        std::fs::copy(
            repo.join("metadata/1.root.json"),
            at("/etc/attestgate/root.json"),
        )
        .unwrap();
        let source = format!("file://{}", repo.display());
        let empty_config = work.join("empty.toml");
        write(&empty_config, "");
        let bundle = at("/var/lib/attestgate/bundle");
        let synced = Command::new(bin("attestgate-sync"))
            .env_remove("ATTESTGATE_CONFIG")
            .args(["--config", Self::s(&empty_config), "--source", &source])
            .args(["--trust-root", Self::s(&at("/etc/attestgate/root.json"))])
            .args(["--state", Self::s(&at("/var/lib/attestgate/sync"))])
            .args(["--bundle", Self::s(&bundle), "--once"])
            .output()
            .unwrap();
        assert!(
            synced.status.success(),
            "attestgate-sync --once: {}",
            String::from_utf8_lossy(&synced.stderr)
        );
        // The syncer links the version by its real path; on the node that
        // path is under `/`, so the link is made relative to serve both
        // the proxy (real paths) and doctor (paths under the root).
        let version = std::fs::read_link(&bundle).unwrap();
        let name = version.file_name().unwrap().to_owned();
        std::fs::remove_file(&bundle).unwrap();
        std::os::unix::fs::symlink(Path::new("sync/versions").join(name), &bundle).unwrap();

        std::fs::create_dir_all(at("/var/log/attestgate")).unwrap();
        std::fs::create_dir_all(at("/run/containerd")).unwrap();
        let metrics = format!("127.0.0.1:{}", free_port());
        write(
            &at("/etc/attestgate/config.toml"),
            &format!(
                "listen = \"/run/attestgate/cri.sock\"\n\
                 runtime_endpoint = \"/run/containerd/containerd.sock\"\n\
                 bundle = \"/var/lib/attestgate/bundle\"\n\
                 audit_log = \"/var/log/attestgate/audit.jsonl\"\n\
                 metrics_listen = \"{metrics}\"\n\
                 fail_mode = \"closed\"\n\
                 bundle_source = \"{source}\"\n\
                 trust_root = \"/etc/attestgate/root.json\"\n"
            ),
        );

        let runtime = fake_runtime(&at("/run/containerd/containerd.sock"));
        let mut node = Node {
            tmp,
            root,
            proxy: None,
            _runtime: runtime,
            source,
        };
        node.start_proxy(&empty_config, &metrics);
        node
    }

    /// The real proxy, its paths given as flags: it knows nothing of the
    /// root the configuration's node paths are under.
    fn start_proxy(&mut self, empty_config: &Path, metrics: &str) {
        let listen = self.path("/run/attestgate/cri.sock");
        let log = self.tmp.path().join("work/proxy.log");
        let child = Command::new(bin("attestgate-proxy"))
            .env_remove("ATTESTGATE_CONFIG")
            .env_remove("LISTEN_FDS")
            .args(["--config", Self::s(empty_config)])
            .args(["--listen", Self::s(&listen)])
            .args([
                "--runtime-endpoint",
                Self::s(&self.path("/run/containerd/containerd.sock")),
            ])
            .args([
                "--bundle",
                Self::s(&self.path("/var/lib/attestgate/bundle")),
            ])
            .args([
                "--audit-log",
                Self::s(&self.tmp.path().join("work/proxy-audit.jsonl")),
            ])
            .args([
                "--attestation-cache",
                Self::s(&self.tmp.path().join("work/attestations")),
            ])
            .args(["--metrics-listen", metrics, "--cv-action", "off"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.proxy = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&listen).is_err()
            || std::net::TcpStream::connect(metrics).is_err()
        {
            if let Some(status) = self.proxy.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "attestgate-proxy exited {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "attestgate-proxy did not listen: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_proxy(&mut self) {
        if let Some(mut child) = self.proxy.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs doctor in text and in JSON; returns the exit code and the
    /// checks that failed, after checking that both outputs agree.
    fn doctor(&self) -> (i32, BTreeSet<String>, String) {
        let args = |output: &'static str| {
            vec![
                "doctor".to_string(),
                "--root".into(),
                Self::s(&self.root).into(),
                "--output".into(),
                output.into(),
            ]
        };
        let run = |output| {
            let args = args(output);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            attestgate(&args)
        };
        let text_run = run("text");
        let text = String::from_utf8(text_run.stdout).unwrap();
        let json_run = run("json");
        let json: serde_json::Value = serde_json::from_slice(&json_run.stdout).unwrap();
        assert_eq!(text_run.status.code(), json_run.status.code(), "{text}");
        let code = text_run.status.code().unwrap();

        let from_text: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("FAIL "))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        let checks = json["checks"].as_array().unwrap();
        let from_json: BTreeSet<String> = checks
            .iter()
            .filter(|c| c["status"] == "fail")
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(from_text, from_json, "{text}\n{json:#}");
        assert_eq!(json["ok"], from_json.is_empty());
        assert_eq!(
            text.lines().count(),
            checks.len(),
            "one line per check: {text}"
        );
        for check in checks {
            let failed = check["status"] == "fail";
            assert_eq!(check["ok"], !failed);
            // A failure says what to do; a pass has nothing to fix.
            assert_eq!(check["remedy"].is_string(), failed, "{check}");
            assert!(!check["detail"].as_str().unwrap().is_empty());
        }
        for line in text.lines().filter(|l| l.starts_with("FAIL ")) {
            assert!(line.contains(" — fix: "), "{line}");
        }
        (code, from_json, text)
    }

    fn expect_failing(&self, broken: &[&str], what: &str) -> String {
        let (code, failed, text) = self.doctor();
        let expected: BTreeSet<String> = broken.iter().map(|s| s.to_string()).collect();
        assert_eq!(failed, expected, "{what}:\n{text}");
        assert_eq!(
            code,
            if broken.is_empty() { 0 } else { 1 },
            "{what}:\n{text}"
        );
        text
    }

    /// Moves a node file away for the length of `f`.
    fn without(&self, node_path: &str, f: impl FnOnce()) {
        let path = self.path(node_path);
        let aside = self.tmp.path().join("aside");
        std::fs::rename(&path, &aside).unwrap();
        f();
        std::fs::rename(&aside, &path).unwrap();
    }

    /// Replaces a node file's content for the length of `f`.
    fn with_content(&self, node_path: &str, text: &str, f: impl FnOnce()) {
        let path = self.path(node_path);
        let before = std::fs::read(&path).unwrap();
        std::fs::write(&path, text).unwrap();
        f();
        std::fs::write(&path, before).unwrap();
    }
}

fn line<'t>(text: &'t str, name: &str) -> &'t str {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
}

/// Who owns what this test process creates: the proxy's socket is
/// root-only only when the test runs as root.
fn running_as_root() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

#[test]
fn a_node_wired_right_passes_and_each_broken_piece_is_named() {
    let mut node = Node::new();
    // Wired right. A test run by a user other than root cannot make a
    // root-owned socket; the check must say so rather than pass.
    let socket_check: &[&str] = if running_as_root() {
        &[]
    } else {
        &["proxy_socket"]
    };
    let text = node.expect_failing(socket_check, "wired right");
    assert!(
        line(&text, "kubelet").contains("20-attestgate.conf"),
        "{text}"
    );
    assert!(
        line(&text, "containerd").contains("default runtime"),
        "{text}"
    );
    assert!(
        line(&text, "proxy").contains("fake-containerd v1.7.0-fake"),
        "{text}"
    );
    assert!(line(&text, "metrics").contains("attestgate_"), "{text}");
    assert!(
        line(&text, "bundle").contains("synced version 1, expires in"),
        "{text}"
    );
    assert!(line(&text, "sync").contains(&node.source), "{text}");
    assert!(
        line(&text, "trust_root").contains("root version 1"),
        "{text}"
    );

    let with = |broken: &[&str]| -> Vec<String> {
        socket_check
            .iter()
            .chain(broken)
            .map(|s| s.to_string())
            .collect()
    };
    let failing = |node: &Node, broken: &[&str], what: &str| {
        let names = with(broken);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        node.expect_failing(&names, what)
    };

    // kubelet without attestgate's drop-in goes by kubeadm's flags file,
    // straight to containerd.
    node.without(
        "/etc/systemd/system/kubelet.service.d/20-attestgate.conf",
        || {
            let text = failing(&node, &["kubelet"], "no kubelet drop-in");
            assert!(
                line(&text, "kubelet").contains("kubeadm-flags.env"),
                "{text}"
            );
            assert!(line(&text, "kubelet").contains("directly"), "{text}");
        },
    );
    // The kubelet package's /etc/default/kubelet empties KUBELET_EXTRA_ARGS
    // (an environment file wins over Environment=): the packaged drop-in
    // puts the endpoints on the command line itself, so it still holds.
    write(&node.path("/etc/default/kubelet"), "KUBELET_EXTRA_ARGS=\n");
    node.expect_failing(&[], "/etc/default/kubelet beside the packaged drop-in");
    // A drop-in that sets them through that variable is overridden.
    node.with_content(
        "/etc/systemd/system/kubelet.service.d/20-attestgate.conf",
        "[Service]\nEnvironment=\"KUBELET_EXTRA_ARGS=--container-runtime-endpoint=unix:///run/attestgate/cri.sock --image-service-endpoint=unix:///run/attestgate/cri.sock\"\n",
        || {
            failing(
                &node,
                &["kubelet"],
                "/etc/default/kubelet overrides the drop-in",
            );
        },
    );
    std::fs::remove_file(node.path("/etc/default/kubelet")).unwrap();

    // containerd without the imported runtime.
    node.without("/etc/containerd/conf.d/attestgate.toml", || {
        let text = failing(&node, &["containerd"], "no attestgate runtime");
        assert!(line(&text, "containerd").contains("io.containerd.attestgate.v2"));
    });
    // A second import with a CRI section of its own (a registry mirror):
    // it replaces the runtime's file's section whole.
    let mirror = node.path("/etc/containerd/conf.d/zz-registry.toml");
    std::fs::write(
        &mirror,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    )
    .unwrap();
    let text = failing(
        &node,
        &["containerd"],
        "an import replacing the CRI section",
    );
    assert!(
        line(&text, "containerd").contains("zz-registry.toml's CRI plugin section replaces"),
        "{text}"
    );
    std::fs::remove_file(&mirror).unwrap();
    node.without("/usr/bin/containerd-shim-attestgate-v2", || {
        failing(&node, &["shim"], "no shim on PATH");
    });

    // An invalid bundle, and an expired one.
    let version_dir = node.path("/var/lib/attestgate/bundle");
    let policy = std::fs::canonicalize(&version_dir)
        .unwrap()
        .join("policy.yaml");
    let policy_node_path = format!("/{}", policy.strip_prefix(&node.root).unwrap().display());
    node.with_content(
        &policy_node_path,
        "defaultAdmissionRule:\n  evaluationMode: SOMETIMES\n",
        || {
            let text = failing(&node, &["bundle"], "invalid bundle");
            assert!(line(&text, "bundle").contains("SOMETIMES"), "{text}");
        },
    );
    let sync_json = policy_node_path.replace("policy.yaml", "sync.json");
    node.with_content(
        &sync_json,
        r#"{"version": 1, "expires": "2020-01-01T00:00:00Z"}"#,
        || {
            let text = failing(&node, &["bundle"], "expired bundle");
            assert!(line(&text, "bundle").contains("expired"), "{text}");
        },
    );

    // A sync recorded from another source than the one configured.
    let config = std::fs::read_to_string(node.path("/etc/attestgate/config.toml")).unwrap();
    node.with_content(
        "/etc/attestgate/config.toml",
        &config.replace(
            &node.source,
            "oci://registry.example/attestgate/bundles:prod",
        ),
        || {
            failing(&node, &["sync"], "another source");
        },
    );
    node.with_content(
        "/etc/attestgate/config.toml",
        &format!("{config}listne = \"/typo\"\n"),
        || {
            let (code, failed, text) = node.doctor();
            assert_eq!(code, 1);
            assert!(
                failed.contains("config") && failed.contains("bundle"),
                "{text}"
            );
            assert!(line(&text, "config").contains("listne"), "{text}");
        },
    );

    // The audit log's directory missing, and the log a directory.
    node.without("/var/log/attestgate", || {
        failing(&node, &["audit_log"], "no audit directory");
    });
    std::fs::create_dir(node.path("/var/log/attestgate/audit.jsonl")).unwrap();
    failing(&node, &["audit_log"], "audit log is a directory");
    std::fs::remove_dir(node.path("/var/log/attestgate/audit.jsonl")).unwrap();

    // A trust root that is not one.
    node.with_content("/etc/attestgate/root.json", "{\"signed\": 1}", || {
        failing(&node, &["trust_root"], "garbage trust root");
    });

    // Everything restored.
    failing(&node, &[], "restored");

    // The proxy down: nothing answers, no metrics.
    node.stop_proxy();
    let text = failing(&node, &["proxy", "metrics"], "proxy down");
    assert!(line(&text, "proxy").contains("nothing answers"), "{text}");
    std::fs::remove_file(node.path("/run/attestgate/cri.sock")).unwrap();
    failing(
        &node,
        &["proxy", "proxy_socket", "metrics"],
        "proxy down, socket gone",
    );
}

#[test]
fn bad_usage_exits_2() {
    let out = attestgate(&["doctor", "--output", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
}
