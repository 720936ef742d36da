//! `attestgate repo` end to end with keys openssl makes, and both
//! directions of interoperability with python-tuf (cli/tests/pytuf/).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

use std::path::{Path, PathBuf};
use std::process::Command;

use binary::{attestgate, ok, openssl, openssl_ec_key};

fn exit_code(args: &[&str]) -> (i32, String) {
    let out = attestgate(args);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// root: PKCS#8 EC P-256; targets: SEC1 EC; snapshot: RSA 3072 (PKCS#8);
/// timestamp: Ed25519 — every form `--key` promises.
fn make_keys(dir: &Path) -> PathBuf {
    let k = dir.join("keys");
    std::fs::create_dir_all(&k).unwrap();
    let p = |name: &str| k.join(name).to_str().unwrap().to_owned();
    openssl_ec_key(&p("root.pem"));
    openssl(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-out",
        &p("targets.pem"),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        &p("snapshot.pem"),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        &p("timestamp.pem"),
    ]);
    assert!(
        std::fs::read_to_string(k.join("targets.pem"))
            .unwrap()
            .contains("EC PRIVATE KEY")
    );
    k
}

fn write_bundle(dir: &Path, keys: &Path) -> PathBuf {
    let b = dir.join("bundle");
    std::fs::create_dir_all(b.join("attestors")).unwrap();
    std::fs::write(
        b.join("policy.yaml"),
        "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
    )
    .unwrap();
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(keys.join("root.pem"))
        .output()
        .unwrap();
    let mut yaml = "name: projects/test/attestors/ci\nuserOwnedGrafeasNote:\n  noteReference: projects/test/notes/ci\n  publicKeys:\n  - pkixPublicKey:\n      signatureAlgorithm: ECDSA_P256_SHA256\n      publicKeyPem: |\n".to_owned();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        yaml.push_str(&format!("        {line}\n"));
    }
    std::fs::write(b.join("attestors/ci.yaml"), yaml).unwrap();
    b
}

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    keys: PathBuf,
    bundle: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let keys = make_keys(tmp.path());
        let bundle = write_bundle(tmp.path(), &keys);
        let dir = tmp.path().join("repo");
        Repo {
            _tmp: tmp,
            dir,
            keys,
            bundle,
        }
    }
    fn s(&self, p: &Path) -> String {
        p.to_str().unwrap().to_owned()
    }
    fn key(&self, name: &str) -> String {
        self.s(&self.keys.join(name))
    }
    fn repo(&self) -> String {
        self.s(&self.dir)
    }
    fn root1(&self) -> String {
        self.s(&self.dir.join("metadata/1.root.json"))
    }
    fn init(&self) {
        ok(&[
            "repo",
            "init",
            &self.repo(),
            "--root-key",
            &self.key("root.pem"),
            "--targets-key",
            &self.key("targets.pem"),
            "--snapshot-key",
            &self.key("snapshot.pem"),
            "--timestamp-key",
            &self.key("timestamp.pem"),
        ]);
    }
    fn publish(&self, timestamp_key: &str) -> String {
        ok(&[
            "repo",
            "publish",
            &self.repo(),
            "--bundle",
            &self.s(&self.bundle),
            "--key",
            &self.key("targets.pem"),
            "--key",
            &self.key("snapshot.pem"),
            "--key",
            &self.key(timestamp_key),
        ])
    }
    fn verify(&self) -> String {
        ok(&["repo", "verify", &self.repo(), "--root", &self.root1()])
    }
    fn rotate(&self) {
        let new_root = self.key("root2.pem");
        ok(&[
            "keygen",
            "--algorithm",
            "ed25519",
            "--private",
            &new_root,
            "--public",
            &self.key("root2.pub"),
        ]);
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &self.key("timestamp2.pem"),
        ]);
        ok(&[
            "repo",
            "rotate-root",
            &self.repo(),
            "--key",
            &self.key("root.pem"),
            "--new-root-key",
            &new_root,
            "--timestamp-key",
            &self.key("timestamp2.pem"),
        ]);
    }
}

#[test]
fn repo_commands_end_to_end_with_openssl_keys() {
    let r = Repo::new();
    r.init();
    let (code, err) = exit_code(&[
        "repo",
        "init",
        &r.repo(),
        "--root-key",
        &r.key("root.pem"),
        "--targets-key",
        &r.key("targets.pem"),
        "--snapshot-key",
        &r.key("snapshot.pem"),
        "--timestamp-key",
        &r.key("timestamp.pem"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already has a root"), "{err}");

    let published = r.publish("timestamp.pem");
    assert!(
        published.contains("published version 1 (2 file(s))"),
        "{published}"
    );
    let out = r.verify();
    assert!(
        out.contains("root version 1, targets version 1, snapshot version 1, timestamp version 1"),
        "{out}"
    );
    assert!(
        out.contains("attestors/ci.yaml ") && out.contains("policy.yaml "),
        "{out}"
    );
    let url = format!("file://{}", r.repo());
    assert!(ok(&["repo", "verify", &url, "--root", &r.root1()]).contains("verified"));

    ok(&[
        "repo",
        "timestamp",
        &r.repo(),
        "--key",
        &r.key("timestamp.pem"),
        "--expires",
        "2d",
    ]);
    assert!(r.verify().contains("timestamp version 2"));

    // A target edited after signing: refused, exit 1.
    let policy = r.dir.join("targets/policy.yaml");
    let original = std::fs::read(&policy).unwrap();
    std::fs::write(&policy, b"tampered: true\n").unwrap();
    let (code, err) = exit_code(&["repo", "verify", &r.repo(), "--root", &r.root1()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused (target_mismatch)"), "{err}");
    std::fs::write(&policy, original).unwrap();

    // Keys that do not cover a role's threshold: bad input, exit 2.
    let (code, err) = exit_code(&[
        "repo",
        "publish",
        &r.repo(),
        "--bundle",
        &r.s(&r.bundle),
        "--key",
        &r.key("targets.pem"),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("snapshot role needs 1"), "{err}");

    r.rotate();
    assert!(r.dir.join("metadata/2.root.json").exists());
    // The old timestamp key no longer signs; the new one does.
    let (code, _) = exit_code(&[
        "repo",
        "timestamp",
        &r.repo(),
        "--key",
        &r.key("timestamp.pem"),
    ]);
    assert_eq!(code, 2);
    r.publish("timestamp2.pem");
    let out = r.verify();
    assert!(out.contains("root version 2, targets version 2"), "{out}");

    let (code, err) = exit_code(&[
        "repo",
        "verify",
        "oci://registry.test/bundles:v1",
        "--root",
        &r.root1(),
    ]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_p384_key_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("p384.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        key.to_str().unwrap(),
    ]);
    let k = key.to_str().unwrap();
    let (code, err) = exit_code(&[
        "repo",
        "init",
        tmp.path().join("repo").to_str().unwrap(),
        "--root-key",
        k,
        "--targets-key",
        k,
        "--snapshot-key",
        k,
        "--timestamp-key",
        k,
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "TUF metadata can be signed with ECDSA P-256, Ed25519 or RSA; this key is P-384"
        ),
        "{err}"
    );
}

/// The python of a venv with tuf 7.0.1 (scripts/test.sh makes one). Tests
/// skip without it, unless ATTESTGATE_E2E_REQUIRED=1 (CI) makes that a failure.
fn pytuf_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("ATTESTGATE_PYTUF_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let candidate = target.join("pytuf-venv/bin/python");
    if candidate.exists() {
        return Some(candidate);
    }
    if std::env::var("ATTESTGATE_E2E_REQUIRED").as_deref() == Ok("1") {
        panic!(
            "python-tuf is required (ATTESTGATE_E2E_REQUIRED=1): set ATTESTGATE_PYTUF_PYTHON or run scripts/test.sh"
        );
    }
    eprintln!("skipped: no python-tuf venv (set ATTESTGATE_PYTUF_PYTHON)");
    None
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pytuf")
        .join(name)
}

fn python(python: &Path, args: &[&Path]) -> String {
    let out = Command::new(python).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn python_tuf_verifies_attestgate_repositories_across_a_rotation() {
    let Some(py) = pytuf_python() else { return };
    let r = Repo::new();
    r.init();
    r.publish("timestamp.pem");
    let client = r.dir.parent().unwrap().join("pyclient");
    let verify = script("verify_repo.py");
    let root1 = PathBuf::from(r.root1());
    let seen: serde_json::Value =
        serde_json::from_str(&python(&py, &[&verify, &r.dir, &root1, &client])).unwrap();
    assert_eq!(seen["root"], 1);
    assert_eq!(seen["targets"], 1);
    let ours = r.verify();
    for (name, sha) in seen["files"].as_object().unwrap() {
        assert!(
            ours.contains(&format!("{name} ")) && ours.contains(sha.as_str().unwrap()),
            "{name}: {ours}"
        );
    }
    assert_eq!(seen["files"].as_object().unwrap().len(), 2);

    r.rotate();
    r.publish("timestamp2.pem");
    let seen: serde_json::Value =
        serde_json::from_str(&python(&py, &[&verify, &r.dir, &root1, &client])).unwrap();
    assert_eq!(seen["root"], 2, "{seen}");
    assert_eq!(seen["targets"], 2, "{seen}");
    assert_eq!(seen["timestamp"], 2, "{seen}");
}

#[test]
fn attestgate_verifies_python_tuf_repositories() {
    let Some(py) = pytuf_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let keys = make_keys(tmp.path());
    let bundle = write_bundle(tmp.path(), &keys);
    let repo = tmp.path().join("pyrepo");
    python(&py, &[&script("make_repo.py"), &repo, &bundle, &keys]);
    let root = repo.join("metadata/1.root.json");
    let out = ok(&[
        "repo",
        "verify",
        repo.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(out.contains("root version 1, targets version 1"), "{out}");
    assert!(
        out.contains("attestors/ci.yaml ") && out.contains("policy.yaml "),
        "{out}"
    );
    // An extra file beside what python-tuf signed is still refused.
    std::fs::write(repo.join("targets/extra.json"), "{}").unwrap();
    let (code, err) = exit_code(&[
        "repo",
        "verify",
        repo.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unlisted_file"), "{err}");
}
