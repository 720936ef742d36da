//! The Debian package as a node administrator meets it (SPEC §13): built by
//! `scripts/package.sh` (scripts/test.sh passes it as `ATTESTGATE_DEB`),
//! installed with `dpkg -i`, its units verified, its proxy started the way
//! its units start it in front of a real containerd and deciding, the audit
//! log rotated by its logrotate file, upgraded with an edited config and an
//! audit log kept, and purged without a file left behind.
//!
//! It installs into this machine's root: it runs only as root, and refuses
//! to touch a machine where attestgate is already installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attestgate_e2e::cri::{Cri, assert_denied};
use attestgate_e2e::node::{Node, REQUIRE_CI, required};

const CONFIG: &str = "/etc/attestgate/config.toml";
const AUDIT_LOG: &str = "/var/log/attestgate/audit.jsonl";
const BUNDLE: &str = "/var/lib/attestgate/bundle";

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

/// The package to test, or `None` (a skip) when there is none and none is
/// required.
fn package() -> Option<PathBuf> {
    let deb = std::env::var_os("ATTESTGATE_DEB").map(PathBuf::from);
    let why = match &deb {
        None => {
            "ATTESTGATE_DEB is not set (bash scripts/package.sh builds the package)".to_string()
        }
        Some(deb) if !deb.is_file() => format!("ATTESTGATE_DEB={} is no file", deb.display()),
        Some(_) if !rustix::process::geteuid().is_root() => "not root".to_string(),
        Some(_) => return deb,
    };
    assert!(!required(), "{why} (ATTESTGATE_E2E_REQUIRED is set)");
    eprintln!("SKIPPED: {why}");
    None
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed_version() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", "attestgate"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("install ok installed ")
        .map(str::to_string)
}

/// Every path under the system's directories whose name says attestgate:
/// what the package, its scripts or its programs could have left.
fn attestgate_paths() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, found: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("attestgate"))
            {
                found.insert(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, found);
            }
        }
    }
    let mut found = BTreeSet::new();
    for root in ["/etc", "/usr", "/lib", "/var", "/run", "/opt", "/srv"] {
        walk(Path::new(root), &mut found);
    }
    found
}

/// The installed proxy as its units start it: the socket unit's
/// `ListenStream=` held by systemd-socket-activate, the service's
/// `ExecStart=` run on it.
struct Proxy {
    child: Child,
    log: PathBuf,
}

fn unit_value(unit: &str, key: &str) -> String {
    let text = std::fs::read_to_string(Path::new("/lib/systemd/system").join(unit)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{unit} has no {key}="))
        .to_string()
}

impl Proxy {
    fn start(log: PathBuf) -> Proxy {
        let listen = unit_value("attestgate-proxy.socket", "ListenStream");
        // systemd removes it when the socket unit stops (RemoveOnStop=).
        let _ = std::fs::remove_file(&listen);
        let exec = unit_value("attestgate-proxy.service", "ExecStart");
        let exec: Vec<&str> = exec.split_whitespace().collect();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("systemd-socket-activate")
            .args(["-l", &listen])
            .args(&exec)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let proxy = Proxy { child, log };
        // As under systemd, the service starts at the first connection.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&listen).is_err() {
            assert!(Instant::now() < deadline, "{}", proxy.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        while !proxy
            .log_text()
            .contains("using the socket passed by systemd")
        {
            assert!(Instant::now() < deadline, "{}", proxy.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn audit_records() -> Vec<serde_json::Value> {
    std::fs::read_to_string(AUDIT_LOG)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// One signed pod admitted, one unsigned container refused, through the
/// installed proxy's socket.
async fn decide(node: &Node, unsigned: &str, pod_name: &str) {
    let listen = unit_value("attestgate-proxy.socket", "ListenStream");
    let cri = Cri::connect(&listen).await.unwrap();
    let pod = node.pod("prod", pod_name);
    // In containerd already (pulled around the proxy), so that its create
    // is decided on the image itself.
    node.direct().await.pull(unsigned, None).await.unwrap();
    let image_id = cri
        .pull(&node.app_image, Some(pod.clone()))
        .await
        .expect("the signed image pulls");
    let pod_id = cri.run_pod(&pod).await.expect("the pod runs");
    cri.create_container(&pod_id, &pod, "web", &image_id, &node.app_image, &[])
        .await
        .expect("the signed container is created");
    let refused = cri.pull(unsigned, Some(pod.clone())).await;
    assert!(refused.is_err(), "the unsigned image was pulled");
    assert_denied(
        cri.create_container(&pod_id, &pod, "unsigned", unsigned, unsigned, &[])
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_decides_upgrades_and_purges_clean() {
    let Some(deb) = package() else {
        return;
    };
    assert!(
        installed_version().is_none(),
        "attestgate is installed on this machine; this test installs and purges its own (dpkg --purge attestgate first)"
    );
    // Purge removes these: ones that were here before are someone's.
    for dir in [
        "/etc/attestgate",
        "/var/lib/attestgate",
        "/var/log/attestgate",
    ] {
        assert!(
            !Path::new(dir).exists(),
            "{dir} exists though attestgate is not installed; this test's purge would remove it (move it away first)"
        );
    }
    let before = attestgate_paths();
    let work = tempfile::tempdir().unwrap();

    // Install; a failure anywhere below still purges what this test put in.
    let installed = Installed;
    run("dpkg", &["-i", deb.to_str().unwrap()]);
    let version = installed_version().expect("installed");
    for path in [
        "/usr/bin/attestgate",
        "/usr/bin/attestgate-proxy",
        "/usr/bin/attestgate-sync",
        "/usr/bin/containerd-shim-attestgate-v2",
        "/lib/systemd/system/attestgate-proxy.socket",
        "/lib/systemd/system/attestgate-proxy.service",
        "/lib/systemd/system/attestgate-sync.service",
        CONFIG,
        "/etc/logrotate.d/attestgate",
        "/usr/lib/tmpfiles.d/attestgate.conf",
        "/usr/share/man/man1/attestgate-proxy.1.gz",
        "/usr/share/man/man1/attestgate-repo-publish.1.gz",
        "/usr/share/man/man8/containerd-shim-attestgate-v2.8.gz",
        "/usr/share/bash-completion/completions/attestgate",
        "/usr/share/zsh/vendor-completions/_attestgate",
        "/usr/share/attestgate/prometheus/attestgate.rules.yml",
        "/usr/share/doc/attestgate/copyright",
        "/usr/share/doc/attestgate/examples/kubelet/20-attestgate.conf",
        "/var/lib/attestgate",
        "/var/log/attestgate",
        "/run/attestgate",
    ] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let conffiles = run("dpkg-query", &["-W", "-f=${Conffiles}", "attestgate"]);
    assert!(
        conffiles.contains(CONFIG) && conffiles.contains("/etc/logrotate.d/attestgate"),
        "{conffiles}"
    );
    // md5sums shipped, and the installed files match them.
    run("dpkg", &["--verify", "attestgate"]);
    // Installing redirects nothing: kubelet's drop-in is only an example.
    assert!(!Path::new("/etc/systemd/system/kubelet.service.d/20-attestgate.conf").exists());
    let completion = run(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/attestgate && complete -p attestgate",
        ],
    );
    assert!(completion.contains("attestgate"), "{completion}");
    let man = run("zcat", &["/usr/share/man/man1/attestgate-proxy.1.gz"]);
    assert!(man.contains(".TH attestgate-proxy 1") && man.contains("check\\-config"));

    // The installed units, as systemd would load them.
    let verify = Command::new("systemd-analyze")
        .args([
            "verify",
            "/lib/systemd/system/attestgate-proxy.socket",
            "/lib/systemd/system/attestgate-proxy.service",
            "/lib/systemd/system/attestgate-sync.service",
        ])
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("attestgate")
                && !l.contains("containerd.service")
                && !l.contains("kubelet.service")
        })
        .collect();
    assert!(verify.status.success() && ours.is_empty(), "{stderr}");

    // A real containerd, a signed app and an unsigned one; the bundle where
    // the package looks for it; the config edited as an administrator would.
    let node = Node::up(&agcri()).expect("the node's containerd and registry");
    let key = node.add_attestor("ci");
    let repo = node.app_image.rsplit_once(':').unwrap().0.to_string();
    node.attest("ci", &key, &repo, &node.app_digest.clone());
    node.policy(REQUIRE_CI);
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    run("cp", &["-a", node.bundle.to_str().unwrap(), BUNDLE]);
    let shipped = std::fs::read_to_string(CONFIG).unwrap();
    let edited = shipped
        .replace(
            "runtime_endpoint = \"/run/containerd/containerd.sock\"",
            &format!("runtime_endpoint = \"{}\"", node.containerd_sock.display()),
        )
        .replace(
            "system_images = [\"registry.k8s.io/pause*\"]",
            &format!("system_images = [\"{}/attestgate/pause*\"]", node.registry),
        )
        // Continuous validation would add records of its own to the counts.
        + "\n# edited by the node's administrator\ncv_action = \"off\"\n";
    assert_ne!(edited, shipped);
    std::fs::write(CONFIG, &edited).unwrap();
    let check = Command::new("/usr/bin/attestgate-proxy")
        .args(["--config", CONFIG, "--check-config"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let proxy = Proxy::start(work.path().join("proxy.log"));
    decide(&node, &unsigned, "web-0").await;
    let records = audit_records();
    let decisions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("PullImage", "allow"),
            ("CreateContainer", "allow"),
            ("PullImage", "deny"),
            ("CreateContainer", "deny"),
        ],
        "{records:#?}"
    );

    // doctor on this machine: everything the package and the proxy own
    // passes; there is no kubelet here, and containerd's own config does
    // not name the shim, and doctor says so.
    let doctor = Command::new("/usr/bin/attestgate")
        .args(["doctor", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(doctor.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let status = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} check: {report:#}"))
    };
    for name in [
        "config",
        "proxy",
        "proxy_socket",
        "bundle",
        "audit_log",
        "shim",
        "sync",
    ] {
        assert_eq!(status(name), "pass", "{name}: {report:#}");
    }
    assert_eq!(status("kubelet"), "fail", "{report:#}");

    // The package's logrotate file: the proxy reopens on SIGHUP, so the
    // next record goes to a new file and the old ones stay whole.
    let state = work.path().join("logrotate.state");
    run(
        "logrotate",
        &[
            "-f",
            "-s",
            state.to_str().unwrap(),
            "/etc/logrotate.d/attestgate",
        ],
    );
    let rotated = std::fs::read_to_string(format!("{AUDIT_LOG}.1")).unwrap();
    assert_eq!(rotated.lines().count(), 4, "{rotated}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.log_text().contains("audit log reopened") {
        assert!(Instant::now() < deadline, "no reopen: {}", proxy.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let cri = Cri::connect(&unit_value("attestgate-proxy.socket", "ListenStream"))
        .await
        .unwrap();
    let pod = node.pod("prod", "web-0");
    assert_denied(
        cri.create_container("no-such-pod", &pod, "late", &unsigned, &unsigned, &[])
            .await,
    );
    assert_eq!(audit_records().len(), 1, "the new record in the new file");
    let query = run(
        "/usr/bin/attestgate",
        &["audit", "--log", AUDIT_LOG, "--output", "json"],
    );
    assert_eq!(query.lines().count(), 5, "rotated files included: {query}");
    proxy.stop();
    let audit_before_upgrade = (
        std::fs::read(AUDIT_LOG).unwrap(),
        std::fs::read(format!("{AUDIT_LOG}.1")).unwrap(),
    );

    // Upgrade to a newer build of the same tree: the edited config and the
    // audit log stay as they were, and the proxy decides again.
    let newer = repack_with_version(&deb, &format!("{version}+upgrade1"), work.path());
    run("dpkg", &["-i", newer.to_str().unwrap()]);
    assert_eq!(
        installed_version().as_deref(),
        Some(format!("{version}+upgrade1").as_str())
    );
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), edited);
    assert_eq!(
        (
            std::fs::read(AUDIT_LOG).unwrap(),
            std::fs::read(format!("{AUDIT_LOG}.1")).unwrap(),
        ),
        audit_before_upgrade
    );
    let proxy = Proxy::start(work.path().join("proxy-upgraded.log"));
    decide(&node, &unsigned, "web-1").await;
    assert_eq!(audit_records().len(), 5);
    proxy.stop();
    drop(node);

    // Purge: nothing of the package's or its programs' is left.
    std::mem::forget(installed);
    run("dpkg", &["--purge", "attestgate"]);
    assert!(installed_version().is_none());
    let after = attestgate_paths();
    let left: Vec<&PathBuf> = after.difference(&before).collect();
    assert!(left.is_empty(), "left behind by purge: {left:#?}");
}

/// Purges the package when a failing test unwinds past it, so that the
/// machine is left as the test found it (checked to have no attestgate).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "attestgate"])
            .stdin(Stdio::null())
            .output();
    }
}

/// The same package as a newer version, as a rebuild of the same tree
/// would be: unpacked, its control file's Version raised, packed again.
fn repack_with_version(deb: &Path, version: &str, work: &Path) -> PathBuf {
    let tree = work.join("repack");
    run(
        "dpkg-deb",
        &["-R", deb.to_str().unwrap(), tree.to_str().unwrap()],
    );
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text).unwrap();
    let out = work.join(format!("attestgate_{version}.deb"));
    run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-b",
            tree.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}
