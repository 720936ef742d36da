//! Repositories built with our own publishing code, then tampered with:
//! each refusal of SPEC §10 is checked through the reason a caller sees.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cloned_ref_to_slice_refs
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleType, Root, Signed, Timestamp};

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

fn openssl(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let out = Command::new("openssl")
        .args(args)
        .arg("-out")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn ec_key(dir: &Path, name: &str) -> PemKey {
    let path = openssl(
        dir,
        name,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
    );
    PemKey::from_file(&path).unwrap()
}

fn public_pem(dir: &Path, private: &Path) -> String {
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(private)
        .output()
        .unwrap();
    assert!(out.status.success());
    let _ = dir;
    String::from_utf8(out.stdout).unwrap()
}

struct Keys {
    root: PemKey,
    targets: PemKey,
    snapshot: PemKey,
    timestamp: PemKey,
}

impl Keys {
    fn new(dir: &Path) -> Keys {
        Keys {
            root: ec_key(dir, "root.pem"),
            targets: ec_key(dir, "targets.pem"),
            snapshot: ec_key(dir, "snapshot.pem"),
            timestamp: ec_key(dir, "timestamp.pem"),
        }
    }
    fn signing(&self) -> Vec<PemKey> {
        vec![
            self.targets.clone(),
            self.snapshot.clone(),
            self.timestamp.clone(),
        ]
    }
}

/// A temp directory with keys, a valid bundle and a repository at version 1.
struct Fixture {
    tmp: tempfile::TempDir,
    keys: Keys,
}

impl Fixture {
    async fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let keys = Keys::new(tmp.path());
        let fixture = Fixture { tmp, keys };
        fixture.write_bundle(true);
        init(&fixture.repo(), &fixture.init_options())
            .await
            .unwrap();
        fixture.publish().await;
        fixture
    }
    fn path(&self) -> &Path {
        self.tmp.path()
    }
    fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }
    fn bundle(&self) -> PathBuf {
        self.path().join("bundle")
    }
    fn root_bytes(&self) -> Vec<u8> {
        std::fs::read(self.repo().join("metadata/1.root.json")).unwrap()
    }
    fn init_options(&self) -> InitOptions {
        InitOptions {
            root_keys: vec![self.keys.root.clone()],
            root_threshold: 1,
            targets_keys: vec![self.keys.targets.clone()],
            targets_threshold: 1,
            snapshot_keys: vec![self.keys.snapshot.clone()],
            timestamp_keys: vec![self.keys.timestamp.clone()],
            expires: 365 * DAY,
        }
    }
    fn write_bundle(&self, with_attestor: bool) {
        let b = self.bundle();
        let _ = std::fs::remove_dir_all(&b);
        std::fs::create_dir_all(b.join("attestors")).unwrap();
        std::fs::write(
            b.join("policy.yaml"),
            "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
        )
        .unwrap();
        if with_attestor {
            let pem = public_pem(self.path(), &self.path().join("targets.pem"));
            let mut yaml = "name: projects/test/attestors/ci\nuserOwnedGrafeasNote:\n  noteReference: projects/test/notes/ci\n  publicKeys:\n  - pkixPublicKey:\n      signatureAlgorithm: ECDSA_P256_SHA256\n      publicKeyPem: |\n".to_owned();
            for line in pem.lines() {
                yaml.push_str(&format!("        {line}\n"));
            }
            std::fs::write(b.join("attestors/ci.yaml"), yaml).unwrap();
        }
        std::fs::write(b.join("README.md"), "not a bundle file\n").unwrap();
    }
    fn publish_options(&self) -> PublishOptions {
        PublishOptions {
            keys: self.keys.signing(),
            expires: 30 * DAY,
            timestamp_expires: 7 * DAY,
        }
    }
    async fn publish(&self) -> PublishReport {
        publish(&self.repo(), &self.bundle(), &self.publish_options())
            .await
            .unwrap()
    }
    async fn verify(&self) -> Result<Verified, TufError> {
        let trust = Trust::ephemeral(&self.root_bytes()).unwrap();
        verify_dir(&trust, &self.repo(), &Limits::default()).await
    }
    /// Runs `f` with `1.root.json` replaced by `fake` (signed by the real
    /// root key), then puts the real root back: how a forger with some
    /// keys but not the root's blessing would sign.
    async fn with_fake_root<F, Fut>(&self, edit: impl FnOnce(&mut Root), f: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let path = self.repo().join("metadata/1.root.json");
        let real = std::fs::read(&path).unwrap();
        let mut root: Signed<Root> = serde_json::from_slice(&real).unwrap();
        edit(&mut root.signed);
        let sources: Vec<Box<dyn KeySource>> = vec![Box::new(self.keys.root.clone())];
        let fake = SignedRole::new(
            root.signed.clone(),
            &KeyHolder::Root(root.signed.clone()),
            &sources,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .await
        .unwrap();
        std::fs::write(&path, fake.buffer()).unwrap();
        f().await;
        std::fs::write(&path, real).unwrap();
    }
}

fn reason(result: Result<Verified, TufError>) -> (&'static str, String) {
    let err = result.expect_err("verification should have been refused");
    (err.reason(), err.to_string())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn keys_of_each_pem_form_are_read_and_other_curves_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let forms: Vec<(&str, Vec<&str>)> = vec![
        (
            "p8ec.pem",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
        ),
        (
            "sec1.pem",
            vec!["ecparam", "-genkey", "-name", "prime256v1"],
        ),
        ("ed.pem", vec!["genpkey", "-algorithm", "ed25519"]),
        (
            "rsa8.pem",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
        ),
        ("rsa1.pem", vec!["genrsa", "-traditional"]),
    ];
    let mut ids = Vec::new();
    for (name, args) in &forms {
        let path = if *name == "rsa1.pem" {
            let path = d.join(name);
            let out = Command::new("openssl")
                .args(["genrsa", "-traditional", "-out"])
                .arg(&path)
                .arg("2048")
                .output()
                .unwrap();
            assert!(out.status.success());
            path
        } else {
            openssl(d, name, args)
        };
        let text = std::fs::read_to_string(&path).unwrap();
        if *name == "sec1.pem" {
            assert!(text.contains("EC PRIVATE KEY"), "{text}");
        }
        if *name == "rsa1.pem" {
            assert!(text.contains("RSA PRIVATE KEY"), "{text}");
        }
        let key = PemKey::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.key_id().len(), 64);
        ids.push(key.key_id().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), forms.len());

    let p384 = openssl(
        d,
        "p384.pem",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ],
    );
    let err = PemKey::from_file(&p384).unwrap_err().to_string();
    assert!(
        err.contains("ECDSA P-256, Ed25519 or RSA") && err.contains("P-384"),
        "{err}"
    );
    let sec1_384 = openssl(
        d,
        "sec1-384.pem",
        &["ecparam", "-genkey", "-name", "secp384r1"],
    );
    let err = PemKey::from_file(&sec1_384).unwrap_err().to_string();
    assert!(err.contains("P-384"), "{err}");
    let public = d.join("pub.pem");
    std::fs::write(&public, public_pem(d, &d.join("p8ec.pem"))).unwrap();
    let err = PemKey::from_file(&public).unwrap_err().to_string();
    assert!(err.contains("public key"), "{err}");
}

#[test]
fn bundle_paths_are_exactly_the_bundle_file_kinds() {
    for good in [
        "policy.yaml",
        "policy.json",
        "platform-policy.yaml",
        "platform-policy.yml",
        "platform-policy.json",
        "attestors/ci.yaml",
        "attestors/a.yml",
        "attestors/b.json",
        "attestations/app.json",
    ] {
        check_bundle_path(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "../policy.yaml",
        "/policy.yaml",
        "attestors/../policy.yaml",
        "attestors/x/ci.yaml",
        "attestations/app.yaml",
        "policy.yml",
        "README.md",
        "attestors/.hidden.yaml",
        "attestors\\ci.yaml",
        "attestors//ci.yaml",
        "./policy.yaml",
        "attestors/ci",
    ] {
        let err = check_bundle_path(bad).expect_err(bad);
        assert_eq!(err.reason(), "bad_path", "{bad}");
    }
}

#[tokio::test]
async fn a_published_bundle_verifies_with_its_files_and_versions() {
    let f = Fixture::new().await;
    let verified = f.verify().await.unwrap();
    assert_eq!(
        (
            verified.root_version,
            verified.targets_version,
            verified.snapshot_version,
            verified.timestamp_version
        ),
        (1, 1, 1, 1)
    );
    let names: Vec<&str> = verified.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["attestors/ci.yaml", "policy.yaml"]);
    assert_eq!(
        verified.files[1].1,
        std::fs::read(f.bundle().join("policy.yaml")).unwrap()
    );
    // The earliest expiry is the timestamp's, in whole seconds.
    let left = verified.expires - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::days(6) && left <= time::Duration::days(7),
        "{left}"
    );
    assert_eq!(verified.expires.nanosecond(), 0);
    let root = std::fs::read_to_string(f.repo().join("metadata/1.root.json")).unwrap();
    assert!(root.contains("\"consistent_snapshot\": false"), "{root}");
    assert!(!root.contains(".000"), "fractional expires: {root}");
}

#[tokio::test]
async fn publish_skips_other_files_rebuilds_targets_and_refuses_bad_bundles() {
    let f = Fixture::new().await;
    f.write_bundle(false);
    let report = f.publish().await;
    assert_eq!(report.targets_version, 2);
    assert_eq!(report.files, ["policy.yaml"]);
    assert_eq!(report.skipped, ["README.md"]);
    assert!(
        !f.repo().join("targets/attestors/ci.yaml").exists(),
        "stale target left behind"
    );
    let verified = f.verify().await.unwrap();
    assert_eq!(verified.files.len(), 1);

    std::fs::write(
        f.bundle().join("policy.yaml"),
        "defaultAdmissionRule:\n  evaluationMode: SOMETIMES\n",
    )
    .unwrap();
    let err = publish(&f.repo(), &f.bundle(), &f.publish_options())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "bundle", "{err}");
    // The refused publish left version 2 whole.
    assert_eq!(f.verify().await.unwrap().targets_version, 2);

    let err = publish(
        &f.repo(),
        &f.bundle(),
        &PublishOptions {
            keys: vec![f.keys.targets.clone()],
            ..f.publish_options()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("snapshot role needs 1"), "{err}");
}

#[tokio::test]
async fn init_refuses_an_existing_root_and_unreachable_thresholds() {
    let f = Fixture::new().await;
    let err = init(&f.repo(), &f.init_options()).await.unwrap_err();
    assert!(err.to_string().contains("already has a root"), "{err}");
    let options = InitOptions {
        targets_threshold: 2,
        targets_keys: vec![f.keys.targets.clone(), f.keys.targets.clone()],
        ..f.init_options()
    };
    let err = init(&f.path().join("other"), &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--targets-threshold 2 is more than the 1 distinct key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_target_changed_after_signing_is_refused() {
    let f = Fixture::new().await;
    let policy = f.repo().join("targets/policy.yaml");
    let original = std::fs::read(&policy).unwrap();
    let mut same_length = original.clone();
    same_length[0] ^= 0x20;
    std::fs::write(&policy, &same_length).unwrap();
    assert_eq!(reason(f.verify().await).0, "target_mismatch");
    let mut longer = original.clone();
    longer.extend_from_slice(b"# more\n");
    std::fs::write(&policy, &longer).unwrap();
    assert_eq!(reason(f.verify().await).0, "target_mismatch");
    std::fs::write(&policy, &original[..original.len() - 1]).unwrap();
    assert_eq!(reason(f.verify().await).0, "target_mismatch");
}

#[tokio::test]
async fn a_file_the_metadata_does_not_list_is_refused() {
    let f = Fixture::new().await;
    std::fs::write(f.repo().join("targets/attestors/extra.yaml"), "x: 1\n").unwrap();
    let (why, message) = reason(f.verify().await);
    assert_eq!(why, "unlisted_file");
    assert!(
        message.contains("targets/attestors/extra.yaml"),
        "{message}"
    );
    std::fs::remove_file(f.repo().join("targets/attestors/extra.yaml")).unwrap();
    std::fs::write(f.repo().join("metadata/2.root.json.bak"), "{}").unwrap();
    assert_eq!(reason(f.verify().await).0, "unlisted_file");
}

#[tokio::test]
async fn a_rollback_is_refused_even_after_a_restart_and_a_lost_datastore() {
    let f = Fixture::new().await;
    let state = f.path().join("state");
    let old_copy = f.path().join("v1");
    copy_dir(&f.repo(), &old_copy);
    f.publish().await;
    {
        let mut trust = Trust::open(&state, &f.root_bytes()).unwrap();
        let verified = verify_dir(&trust, &f.repo(), &Limits::default())
            .await
            .unwrap();
        assert_eq!(verified.targets_version, 2);
        verified.commit(&mut trust).unwrap();
    }
    let trust = Trust::open(&state, &f.root_bytes()).unwrap();
    let (why, message) = reason(verify_dir(&trust, &old_copy, &Limits::default()).await);
    assert_eq!(why, "rollback", "{message}");
    assert!(
        message.contains("version 1 is lower than version 2 already trusted: rollback refused"),
        "{message}"
    );

    // Without tough's datastore the high-water mark still refuses it.
    let target = std::fs::read_link(state.join("datastore")).unwrap();
    std::fs::remove_dir_all(state.join(target)).unwrap();
    let trust = Trust::open(&state, &f.root_bytes()).unwrap();
    let (why, message) = reason(verify_dir(&trust, &old_copy, &Limits::default()).await);
    assert_eq!(why, "rollback", "{message}");
    assert!(
        message.contains("timestamp.json version 1 is lower than version 2"),
        "{message}"
    );
    // The current version still verifies.
    verify_dir(&trust, &f.repo(), &Limits::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expired_timestamp_is_refused() {
    let f = Fixture::new().await;
    timestamp(
        &f.repo(),
        &[f.keys.timestamp.clone()],
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (why, message) = reason(f.verify().await);
    assert_eq!(why, "expired", "{message}");
    assert!(message.contains("timestamp.json"), "{message}");
}

#[tokio::test]
async fn a_timestamp_only_update_verifies_with_the_later_expiry() {
    let f = Fixture::new().await;
    let state = f.path().join("state");
    let mut trust = Trust::open(&state, &f.root_bytes()).unwrap();
    let first = verify_dir(&trust, &f.repo(), &Limits::default())
        .await
        .unwrap();
    let first_expires = first.expires;
    first.commit(&mut trust).unwrap();
    assert_eq!(
        timestamp(&f.repo(), &[f.keys.timestamp.clone()], 10 * DAY)
            .await
            .unwrap(),
        2
    );
    let renewed = verify_dir(&trust, &f.repo(), &Limits::default())
        .await
        .unwrap();
    assert_eq!(
        (
            renewed.timestamp_version,
            renewed.snapshot_version,
            renewed.targets_version
        ),
        (2, 1, 1)
    );
    assert!(renewed.expires > first_expires + time::Duration::days(2));
    renewed.commit(&mut trust).unwrap();
}

#[tokio::test]
async fn a_signature_from_a_key_the_root_does_not_name_is_refused() {
    let f = Fixture::new().await;
    let rogue = ec_key(f.path(), "rogue.pem");
    let rogue_id = rogue.decoded_key_id().unwrap();
    let rogue_key = rogue.tuf_key().unwrap();
    let repo = f.repo();
    f.with_fake_root(
        |root| {
            root.keys.insert(rogue_id.clone(), rogue_key);
            root.roles.get_mut(&RoleType::Timestamp).unwrap().keyids = vec![rogue_id];
        },
        || async {
            timestamp(&repo, &[rogue.clone()], DAY).await.unwrap();
        },
    )
    .await;
    let (why, message) = reason(f.verify().await);
    assert_eq!(why, "signature", "{message}");
    assert!(message.contains("timestamp.json"), "{message}");
}

#[tokio::test]
async fn too_few_signatures_for_a_threshold_two_targets_role_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let second = ec_key(tmp.path(), "targets2.pem");
    let f = Fixture { tmp, keys };
    f.write_bundle(true);
    let options = InitOptions {
        targets_keys: vec![f.keys.targets.clone(), second.clone()],
        targets_threshold: 2,
        ..f.init_options()
    };
    init(&f.repo(), &options).await.unwrap();
    let err = publish(&f.repo(), &f.bundle(), &f.publish_options())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("targets role needs 2 signature(s) but --key gives 1"),
        "{err}"
    );
    let mut all = f.publish_options();
    all.keys.push(second);
    publish(&f.repo(), &f.bundle(), &all).await.unwrap();
    f.verify().await.unwrap();

    let (repo, bundle, one) = (f.repo(), f.bundle(), f.publish_options());
    f.with_fake_root(
        |root| {
            root.roles.get_mut(&RoleType::Targets).unwrap().threshold = std::num::NonZeroU64::MIN
        },
        || async {
            publish(&repo, &bundle, &one).await.unwrap();
        },
    )
    .await;
    let (why, message) = reason(f.verify().await);
    assert_eq!(why, "signature", "{message}");
    assert!(message.contains("targets.json"), "{message}");
}

#[tokio::test]
async fn a_root_signed_only_by_new_keys_does_not_chain() {
    let f = Fixture::new().await;
    let new_key = ec_key(f.path(), "new-root.pem");
    let mut root: Signed<Root> = serde_json::from_slice(&f.root_bytes()).unwrap();
    root.signed.version = root.signed.version.checked_add(1).unwrap();
    let id = new_key.decoded_key_id().unwrap();
    root.signed
        .keys
        .insert(id.clone(), new_key.tuf_key().unwrap());
    root.signed.roles.get_mut(&RoleType::Root).unwrap().keyids = vec![id];
    let sources: Vec<Box<dyn KeySource>> = vec![Box::new(new_key)];
    let signed = SignedRole::new(
        root.signed.clone(),
        &KeyHolder::Root(root.signed.clone()),
        &sources,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .unwrap();
    std::fs::write(f.repo().join("metadata/2.root.json"), signed.buffer()).unwrap();
    let (why, message) = reason(f.verify().await);
    assert_eq!(why, "root_chain", "{message}");
}

#[tokio::test]
async fn a_correct_rotation_is_followed_and_remembered() {
    let f = Fixture::new().await;
    let new_root = ec_key(f.path(), "root2.pem");
    let new_timestamp = ec_key(f.path(), "timestamp2.pem");
    let version = rotate_root(
        &f.repo(),
        &RotateOptions {
            keys: vec![f.keys.root.clone()],
            new_root_keys: vec![new_root.clone()],
            root_threshold: None,
            targets_keys: None,
            targets_threshold: None,
            snapshot_keys: None,
            timestamp_keys: Some(vec![new_timestamp.clone()]),
            expires: 365 * DAY,
        },
    )
    .await
    .unwrap();
    assert_eq!(version, 2);
    // The old timestamp key no longer counts.
    let err = timestamp(&f.repo(), &[f.keys.timestamp.clone()], DAY)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("timestamp role needs 1"), "{err}");
    timestamp(&f.repo(), &[new_timestamp.clone()], DAY)
        .await
        .unwrap();

    let state = f.path().join("state");
    let mut trust = Trust::open(&state, &f.root_bytes()).unwrap();
    let verified = verify_dir(&trust, &f.repo(), &Limits::default())
        .await
        .unwrap();
    assert_eq!(verified.root_version, 2);
    verified.commit(&mut trust).unwrap();
    // After a restart the walk starts from root 2, not the installed root 1.
    let trust = Trust::open(&state, &f.root_bytes()).unwrap();
    assert_eq!(trust.root_version(), 2);
    let mut options = f.publish_options();
    options.keys = vec![
        f.keys.targets.clone(),
        f.keys.snapshot.clone(),
        new_timestamp,
    ];
    publish(&f.repo(), &f.bundle(), &options).await.unwrap();
    assert_eq!(
        verify_dir(&trust, &f.repo(), &Limits::default())
            .await
            .unwrap()
            .targets_version,
        2
    );
}

#[tokio::test]
async fn an_oversized_timestamp_is_refused() {
    let f = Fixture::new().await;
    let path = f.repo().join("metadata/timestamp.json");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::iter::repeat_n(b' ', 17 * 1024));
    std::fs::write(&path, bytes).unwrap();
    let (why, message) = reason(f.verify().await);
    assert_eq!(why, "too_large", "{message}");
    let small = Limits {
        max_file: 10,
        ..Limits::default()
    };
    std::fs::write(&path, std::fs::read(&path).unwrap().trim_ascii_end()).unwrap();
    let trust = Trust::ephemeral(&f.root_bytes()).unwrap();
    let err = verify_dir(&trust, &f.repo(), &small).await.unwrap_err();
    assert_eq!(err.reason(), "too_large", "{err}");
}

#[tokio::test]
async fn a_failed_run_leaves_the_committed_trust_unchanged() {
    let f = Fixture::new().await;
    let state = f.path().join("state");
    let mut trust = Trust::open(&state, &f.root_bytes()).unwrap();
    verify_dir(&trust, &f.repo(), &Limits::default())
        .await
        .unwrap()
        .commit(&mut trust)
        .unwrap();
    let snapshot_state = |state: &Path| {
        let mut all = Vec::new();
        for entry in walk(state) {
            all.push((entry.clone(), std::fs::read(&entry).unwrap_or_default()));
        }
        all.sort();
        all
    };
    let before = snapshot_state(&state);
    f.publish().await;
    std::fs::write(f.repo().join("targets/policy.yaml"), "tampered: true\n").unwrap();
    assert_eq!(
        reason(verify_dir(&trust, &f.repo(), &Limits::default()).await).0,
        "target_mismatch"
    );
    assert_eq!(
        snapshot_state(&state),
        before,
        "a refused run changed the state directory"
    );
    // A run that is never committed does not change it either.
    f.publish().await;
    let uncommitted = verify_dir(&trust, &f.repo(), &Limits::default())
        .await
        .unwrap();
    drop(uncommitted);
    assert_eq!(snapshot_state(&state), before);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_clock_stepped_backwards_is_refused_recognisably() {
    let f = Fixture::new().await;
    let state = f.path().join("state");
    let mut trust = Trust::open(&state, &f.root_bytes()).unwrap();
    verify_dir(&trust, &f.repo(), &Limits::default())
        .await
        .unwrap()
        .commit(&mut trust)
        .unwrap();
    std::fs::write(
        state.join("datastore/latest_known_time.json"),
        "\"2099-01-01T00:00:00Z\"",
    )
    .unwrap();
    let trust = Trust::open(&state, &f.root_bytes()).unwrap();
    let (why, message) = reason(verify_dir(&trust, &f.repo(), &Limits::default()).await);
    assert_eq!(why, "clock_backwards", "{message}");
    assert!(message.contains("clock stepped backwards"), "{message}");
}

#[tokio::test]
async fn an_unreachable_source_is_not_a_refusal() {
    #[derive(Debug, Clone)]
    struct Down;
    #[tough::async_trait]
    impl tough::Transport for Down {
        async fn fetch(
            &self,
            url: url::Url,
        ) -> Result<tough::TransportStream, tough::TransportError> {
            Err(tough::TransportError::new_with_cause(
                tough::TransportErrorKind::Other,
                url.as_str(),
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
            ))
        }
    }
    let f = Fixture::new().await;
    let trust = Trust::ephemeral(&f.root_bytes()).unwrap();
    let base = url::Url::parse("https://bundles.invalid/repo/metadata/").unwrap();
    let err = verify(
        &trust,
        base.clone(),
        base,
        Box::new(Down),
        None,
        &Limits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "unreachable", "{err}");
    assert!(err.is_unreachable());
    let _ = Timestamp::new;
}
