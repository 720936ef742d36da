//! A bundle publisher for the sync scenarios, working as an operator does:
//! keys from openssl, a repository made and published with `attestgate
//! repo`, pushed to a registry with `attestgate repo push`; and
//! attestgate-sync run as the node runs it, once or as a daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::node::bin;

pub const ALLOW: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";
pub const DENY: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n";

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

fn ok(program: &Path, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn attestgate(args: &[&str]) -> String {
    ok(&bin("attestgate"), args)
}

pub fn s(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

pub struct Publisher {
    tmp: tempfile::TempDir,
    /// The TUF repository: metadata/, targets/.
    pub repo: PathBuf,
    /// The bundle directory each publish signs.
    pub bundle: PathBuf,
}

impl Publisher {
    /// A repository with one EC P-256 key per role, threshold 1, and an
    /// ALWAYS_ALLOW bundle not yet published.
    pub fn new() -> Publisher {
        Publisher::with_targets_keys(1, 1)
    }

    /// Like [`Publisher::new`] with `count` targets keys and `threshold`.
    pub fn with_targets_keys(count: usize, threshold: u64) -> Publisher {
        Publisher::create(None, count, threshold)
    }

    /// A second repository with `other`'s root, snapshot and timestamp
    /// keys and its first `count` targets keys, threshold 1: metadata a
    /// holder of those keys could sign, under a root of its own.
    pub fn with_keys_of(other: &Publisher, count: usize) -> Publisher {
        Publisher::create(Some(other), count, 1)
    }

    fn create(keys_of: Option<&Publisher>, count: usize, threshold: u64) -> Publisher {
        let tmp = tempfile::Builder::new()
            .prefix("ag-pub.")
            .tempdir_in("/tmp")
            .unwrap();
        let publisher = Publisher {
            repo: tmp.path().join("repo"),
            bundle: tmp.path().join("bundle"),
            tmp,
        };
        std::fs::create_dir_all(publisher.bundle.join("attestors")).unwrap();
        publisher.policy(ALLOW);
        if let Some(other) = keys_of {
            let keys = publisher.tmp.path().join("keys");
            std::fs::create_dir_all(&keys).unwrap();
            let mut names = vec!["root".to_string(), "snapshot".into(), "timestamp".into()];
            names.extend((0..count).map(|n| format!("targets{n}")));
            for name in names {
                std::fs::copy(other.key(&name), keys.join(format!("{name}.pem"))).unwrap();
            }
        }
        let mut args = vec![
            "repo".to_string(),
            "init".into(),
            s(&publisher.repo),
            "--root-key".into(),
            s(&publisher.key("root")),
            "--snapshot-key".into(),
            s(&publisher.key("snapshot")),
            "--timestamp-key".into(),
            s(&publisher.key("timestamp")),
            "--targets-threshold".into(),
            threshold.to_string(),
        ];
        for n in 0..count {
            args.push("--targets-key".into());
            args.push(s(&publisher.key(&format!("targets{n}"))));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        attestgate(&args);
        publisher
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// The PEM private key `name`, made with openssl the first time.
    pub fn key(&self, name: &str) -> PathBuf {
        let keys = self.tmp.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let path = keys.join(format!("{name}.pem"));
        if !path.exists() {
            ok(
                Path::new("openssl"),
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &s(&path),
                ],
            );
        }
        path
    }

    /// The root a node is installed with.
    pub fn root(&self) -> PathBuf {
        self.repo.join("metadata/1.root.json")
    }

    pub fn policy(&self, yaml: &str) {
        std::fs::write(self.bundle.join("policy.yaml"), yaml).unwrap();
    }

    /// Publishes the bundle as the next version, signing with every role's
    /// keys; `extra` flags after them (`--timestamp-expires 2s`).
    pub fn publish(&self, extra: &[&str]) -> String {
        let mut args = vec![
            "repo".to_string(),
            "publish".into(),
            s(&self.repo),
            "--bundle".into(),
            s(&self.bundle),
        ];
        for entry in std::fs::read_dir(self.tmp.path().join("keys")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("targets") || name == "snapshot.pem" || name == "timestamp.pem" {
                args.push("--key".into());
                args.push(s(&path));
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        attestgate(&args)
    }

    /// Pushes the repository to `registry` (`127.0.0.1:PORT`) as
    /// `bundles/NAME:TAG`; returns the `oci://` reference.
    pub fn push(&self, registry: &str, name_tag: &str) -> String {
        self.push_dir(&self.repo, registry, name_tag)
    }

    pub fn push_dir(&self, repo: &Path, registry: &str, name_tag: &str) -> String {
        let reference = format!("oci://{registry}/bundles/{name_tag}");
        attestgate(&[
            "repo",
            "push",
            &s(repo),
            &reference,
            "--plain-http",
            registry,
        ]);
        reference
    }

    /// The next root, signed by the root key `old` and the new root key
    /// `new` (made with openssl the first time).
    pub fn rotate_root(&self, old: &str, new: &str) {
        attestgate(&[
            "repo",
            "rotate-root",
            &s(&self.repo),
            "--key",
            &s(&self.key(old)),
            "--new-root-key",
            &s(&self.key(new)),
        ]);
    }

    /// A copy of the repository as it is now, to push back later.
    pub fn snapshot(&self, name: &str) -> PathBuf {
        let copy = self.tmp.path().join(name);
        ok(Path::new("cp"), &["-a", &s(&self.repo), &s(&copy)]);
        copy
    }
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new()
    }
}

/// A node's syncer: its own state directory and bundle path.
pub struct SyncNode {
    tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub bundle: PathBuf,
    pub trust_root: PathBuf,
    daemon: Option<Child>,
}

/// How one `attestgate-sync --once` ended.
pub struct Once {
    pub code: i32,
    pub log: String,
}

impl SyncNode {
    /// A node installed with `root` as its first trusted root.
    pub fn new(root: &Path) -> SyncNode {
        let tmp = tempfile::Builder::new()
            .prefix("ag-node.")
            .tempdir_in("/tmp")
            .unwrap();
        let trust_root = tmp.path().join("root.json");
        std::fs::copy(root, &trust_root).unwrap();
        // Flags only: not the machine's configuration file.
        std::fs::write(tmp.path().join("config.toml"), "").unwrap();
        SyncNode {
            state: tmp.path().join("sync"),
            bundle: tmp.path().join("bundle"),
            trust_root,
            tmp,
            daemon: None,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn args(&self, source: &str) -> Vec<String> {
        let mut args = vec![
            "--source".to_string(),
            source.into(),
            "--trust-root".into(),
            s(&self.trust_root),
            "--state".into(),
            s(&self.state),
            "--bundle".into(),
            s(&self.bundle),
            "--config".into(),
            s(&self.tmp.path().join("config.toml")),
        ];
        if let Some(host) = source
            .strip_prefix("oci://")
            .or_else(|| source.strip_prefix("http://"))
            .and_then(|rest| rest.split('/').next())
        {
            args.push("--plain-http".into());
            args.push(host.into());
        }
        args
    }

    pub fn once(&self, source: &str) -> Once {
        let mut args = self.args(source);
        args.push("--once".into());
        let out = Command::new(bin("attestgate-sync"))
            .args(&args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        Once {
            code: out.status.code().unwrap_or(-1),
            log: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the syncer as a daemon polling every second, its log in
    /// DIR/sync.log; stopped by PID on drop.
    pub fn start(&mut self, source: &str, extra: &[&str]) {
        let mut args = self.args(source);
        args.extend(["--interval".to_string(), "1s".into()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = std::fs::File::create(self.tmp.path().join("sync.log")).unwrap();
        self.daemon = Some(
            Command::new(bin("attestgate-sync"))
                .args(&args)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("sync.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The file `path` of the bundle in force.
    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.bundle.join(path)).ok()
    }

    /// The `sync.json` of the bundle in force.
    pub fn freshness(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.read("sync.json")?).ok()
    }

    /// The targets version of the bundle in force.
    pub fn version(&self) -> Option<u64> {
        self.freshness()?["version"].as_u64()
    }
}

impl Drop for SyncNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python with python-tuf installed (scripts/test.sh makes a venv and
/// exports ATTESTGATE_PYTUF_PYTHON); none skips, unless end-to-end
/// prerequisites are required.
pub fn pytuf_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("ATTESTGATE_PYTUF_PYTHON") {
        return Some(PathBuf::from(python));
    }
    if crate::node::required() {
        panic!(
            "python-tuf is required (ATTESTGATE_E2E_REQUIRED is set): set ATTESTGATE_PYTUF_PYTHON or run scripts/test.sh"
        );
    }
    eprintln!("SKIPPED: no python-tuf (set ATTESTGATE_PYTUF_PYTHON)");
    None
}

/// cli/tests/pytuf/NAME: the python-tuf scripts the CLI's tests use too.
pub fn pytuf_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cli/tests/pytuf")
        .join(name)
}
