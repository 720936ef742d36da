//! attestgate-sync end to end (SPEC §10): bundles published with `attestgate
//! repo`, pushed to a real docker-registry (distribution 2.8), synced by
//! the real binary into a node's bundle path; every refusal leaves the
//! bundle in force in place, says why, and is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use attestgate_e2e::publisher::{ALLOW, DENY, Once, Publisher, SyncNode, attestgate, s};
use attestgate_e2e::registry::Registry;

#[track_caller]
fn refused(once: &Once, reason: &str) {
    assert_eq!(once.code, 1, "expected a refusal ({reason}): {}", once.log);
    assert!(
        once.log.contains(&format!("reason=\"{reason}\""))
            || once.log.contains(&format!("reason={reason}")),
        "expected reason {reason}: {}",
        once.log
    );
    assert!(
        once.log.contains("the bundle in force stays"),
        "{}",
        once.log
    );
}

#[track_caller]
fn synced(once: &Once) {
    assert_eq!(once.code, 0, "{}", once.log);
}

/// What the node decides by: the policy in force must still be `policy`.
#[track_caller]
fn in_force(node: &SyncNode, version: u64, policy: &str) {
    assert_eq!(node.version(), Some(version));
    assert_eq!(node.read("policy.yaml").as_deref(), Some(policy));
}

/// Files below `dir`, at any depth.
fn walk_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk_count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn publish_push_sync_and_what_is_refused_leaves_the_bundle_in_force() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let publisher = Publisher::new();
    publisher.policy(DENY);
    publisher.publish(&[]);
    let v1 = publisher.snapshot("v1");
    let source = publisher.push(&registry.addr, "prod:live");
    let node = SyncNode::new(&publisher.root());
    synced(&node.once(&source));
    in_force(&node, 1, DENY);
    assert!(
        std::fs::symlink_metadata(&node.bundle)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Unchanged: current, one request.
    let mark = registry.mark();
    let again = node.once(&source);
    synced(&again);
    assert_eq!(
        registry.requests_since(mark).len(),
        1,
        "{:?}",
        registry.requests_since(mark)
    );

    publisher.policy(ALLOW);
    publisher.publish(&[]);
    publisher.push(&registry.addr, "prod:live");
    synced(&node.once(&source));
    in_force(&node, 2, ALLOW);

    let cached = || walk_count(&node.state.join("blobs"));
    let cached_in_force = cached();
    // Rollback: the older artifact pushed back to the tag.
    publisher.push_dir(&v1, &registry.addr, "prod:live");
    refused(&node.once(&source), "rollback");
    in_force(&node, 2, ALLOW);

    // A target changed after signing.
    let tampered = publisher.snapshot("tampered");
    std::fs::write(tampered.join("targets/policy.yaml"), DENY).unwrap();
    publisher.push_dir(&tampered, &registry.addr, "prod:live");
    refused(&node.once(&source), "target_mismatch");
    in_force(&node, 2, ALLOW);

    // A file in the artifact the targets do not list.
    let extra = publisher.snapshot("extra");
    std::fs::write(extra.join("targets/attestations.json"), "[]").unwrap();
    publisher.push_dir(&extra, &registry.addr, "prod:live");
    refused(&node.once(&source), "unlisted_file");

    // An oversized metadata file: a timestamp padded past 16 KiB.
    let padded = publisher.snapshot("padded");
    let path = padded.join("metadata/timestamp.json");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::iter::repeat_n(b' ', 20 << 10));
    std::fs::write(&path, bytes).unwrap();
    publisher.push_dir(&padded, &registry.addr, "prod:live");
    refused(&node.once(&source), "too_large");
    in_force(&node, 2, ALLOW);
    // What was refused is not kept: a source serving a new refused
    // artifact every poll cannot fill the node's disk.
    assert_eq!(cached(), cached_in_force);

    // The publisher goes on; the node follows.
    publisher.policy(DENY);
    publisher.publish(&[]);
    publisher.push(&registry.addr, "prod:live");
    synced(&node.once(&source));
    in_force(&node, 3, DENY);
    // Three versions kept.
    let kept = std::fs::read_dir(node.state.join("versions"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(kept, 3);

    // Pointed back by hand at a kept version: the next poll does not take
    // the registry's "not modified" for the version in force, and puts the
    // source's version back.
    let older = std::fs::read_dir(node.state.join("versions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("v2-"))
        .unwrap();
    let link = node.dir().join("bundle.by-hand");
    std::os::unix::fs::symlink(&older, &link).unwrap();
    std::fs::rename(&link, &node.bundle).unwrap();
    in_force(&node, 2, ALLOW);
    synced(&node.once(&source));
    in_force(&node, 3, DENY);
}

#[test]
fn signatures_the_root_does_not_allow_are_refused_and_a_rotation_that_chains_is_followed() {
    let Some(registry) = Registry::start() else {
        return;
    };
    // targets needs two signatures of two keys.
    let publisher = Publisher::with_targets_keys(2, 2);
    publisher.publish(&[]);
    let source = publisher.push(&registry.addr, "prod:live");
    let node = SyncNode::new(&publisher.root());
    synced(&node.once(&source));
    in_force(&node, 1, ALLOW);

    // Too few signatures: version 2's targets signed by one of the two
    // keys, its snapshot and timestamp by the right keys.
    publisher.policy(DENY);
    let one_key = Publisher::with_keys_of(&publisher, 1);
    one_key.policy(DENY);
    one_key.publish(&[]);
    one_key.publish(&[]);
    let one = with_metadata_of(&publisher, "one-signature", &one_key);
    publisher.push_dir(&one, &registry.addr, "prod:live");
    refused(&node.once(&source), "signature");
    in_force(&node, 1, ALLOW);

    // Signatures by keys the root does not name: another repository's
    // metadata under this root.
    let stranger = Publisher::new();
    stranger.policy(DENY);
    stranger.publish(&[]);
    stranger.publish(&[]);
    let foreign = with_metadata_of(&publisher, "foreign", &stranger);
    publisher.push_dir(&foreign, &registry.addr, "prod:live");
    refused(&node.once(&source), "signature");
    in_force(&node, 1, ALLOW);

    // A root that does not chain: version 2 signed by the stranger's keys.
    stranger.rotate_root("root", "root-next");
    let unchained = publisher.snapshot("unchained");
    std::fs::copy(
        stranger.repo.join("metadata/2.root.json"),
        unchained.join("metadata/2.root.json"),
    )
    .unwrap();
    publisher.push_dir(&unchained, &registry.addr, "prod:live");
    refused(&node.once(&source), "root_chain");
    in_force(&node, 1, ALLOW);

    // A rotation that does chain, to a new root key: followed, and what
    // is signed under the new root is accepted.
    publisher.rotate_root("root", "root2");
    publisher.publish(&[]);
    publisher.push(&registry.addr, "prod:live");
    let once = node.once(&source);
    synced(&once);
    assert!(
        node.bundle
            .canonicalize()
            .unwrap()
            .to_string_lossy()
            .ends_with("-r2")
    );
    in_force(&node, 2, DENY);
}

/// `publisher`'s repository (its roots) with `other`'s timestamp,
/// snapshot, targets metadata and target files.
fn with_metadata_of(publisher: &Publisher, name: &str, other: &Publisher) -> std::path::PathBuf {
    let copy = publisher.snapshot(name);
    for file in ["timestamp.json", "snapshot.json", "targets.json"] {
        std::fs::copy(
            other.repo.join("metadata").join(file),
            copy.join("metadata").join(file),
        )
        .unwrap();
    }
    std::fs::remove_dir_all(copy.join("targets")).unwrap();
    let out = std::process::Command::new("cp")
        .args([
            "-a",
            &s(&other.repo.join("targets")),
            &s(&copy.join("targets")),
        ])
        .status()
        .unwrap();
    assert!(out.success());
    copy
}

#[test]
fn a_frozen_source_and_expired_metadata_are_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let publisher = Publisher::new();
    publisher.publish(&["--timestamp-expires", "3s"]);
    let source = publisher.push(&registry.addr, "prod:live");
    let node = SyncNode::new(&publisher.root());
    synced(&node.once(&source));
    in_force(&node, 1, ALLOW);
    // The registry keeps serving the same old metadata past its expiry.
    std::thread::sleep(Duration::from_secs(4));
    let frozen = node.once(&source);
    refused(&frozen, "expired");
    assert!(frozen.log.contains("freeze"), "{}", frozen.log);
    in_force(&node, 1, ALLOW);

    // New metadata that has already expired when it arrives.
    publisher.policy(DENY);
    publisher.publish(&["--timestamp-expires", "1s"]);
    std::thread::sleep(Duration::from_secs(2));
    publisher.push(&registry.addr, "prod:live");
    refused(&node.once(&source), "expired");
    in_force(&node, 1, ALLOW);

    // A renewal (repo timestamp) brings the version back to life.
    attestgate(&[
        "repo",
        "timestamp",
        &s(&publisher.repo),
        "--key",
        &s(&publisher.key("timestamp")),
        "--expires",
        "1d",
    ]);
    publisher.push(&registry.addr, "prod:live");
    synced(&node.once(&source));
    in_force(&node, 2, DENY);
}

#[test]
fn a_repository_python_tuf_made_and_one_carried_on_removable_media_are_synced_from_a_directory() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(python) = attestgate_e2e::publisher::pytuf_python() else {
        return;
    };
    // python-tuf builds the repository from our bundle, with openssl keys.
    let publisher = Publisher::new();
    publisher.policy(DENY);
    let keys = publisher.dir().join("pytuf-keys");
    std::fs::create_dir_all(&keys).unwrap();
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let from = if role == "targets" { "targets0" } else { role };
        std::fs::copy(publisher.key(from), keys.join(format!("{role}.pem"))).unwrap();
    }
    let made = publisher.dir().join("pytuf-repo");
    let out = std::process::Command::new(&python)
        .arg(attestgate_e2e::publisher::pytuf_script("make_repo.py"))
        .args([&made, &publisher.bundle, &keys])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = SyncNode::new(&made.join("metadata/1.root.json"));
    let source = format!("file://{}", made.display());
    synced(&node.once(&source));
    in_force(&node, 1, DENY);
    // Unchanged: current, nothing rewritten.
    let before = node.bundle.canonicalize().unwrap();
    synced(&node.once(&source));
    assert_eq!(node.bundle.canonicalize().unwrap(), before);

    // Air gap: pulled from the registry to a directory, carried to a node
    // that never reaches the registry.
    publisher.publish(&[]);
    let reference = publisher.push(&registry.addr, "prod:live");
    let carried = publisher.dir().join("usb/repo");
    attestgate(&[
        "repo",
        "pull",
        &reference,
        &s(&carried),
        "--plain-http",
        &registry.addr,
    ]);
    let offline = SyncNode::new(&publisher.root());
    synced(&offline.once(&format!("file://{}", carried.display())));
    in_force(&offline, 1, DENY);
    let verified = attestgate(&[
        "repo",
        "verify",
        &s(&carried),
        "--root",
        &s(&publisher.root()),
    ]);
    assert!(verified.contains("targets version 1"), "{verified}");
}

#[test]
fn a_clock_stepped_backwards_is_refused_until_it_catches_up() {
    let publisher = Publisher::new();
    publisher.publish(&[]);
    let node = SyncNode::new(&publisher.root());
    let source = format!("file://{}", publisher.repo.display());
    synced(&node.once(&source));
    // The node has seen a time a day ahead of its clock now: its clock
    // was stepped back (no RTC, a bad NTP answer).
    let tomorrow = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let tomorrow = tomorrow
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    std::fs::write(
        node.state.join("tuf/datastore/latest_known_time.json"),
        format!("\"{tomorrow}\""),
    )
    .unwrap();
    publisher.policy(DENY);
    publisher.publish(&[]);
    refused(&node.once(&source), "clock_backwards");
    in_force(&node, 1, ALLOW);
}

/// A policy that says which version it is, and a large attestation file
/// that makes every write of a version take a while, so a kill lands in
/// the middle of one.
fn numbered(publisher: &Publisher, version: u64) {
    let rule = if version.is_multiple_of(2) {
        ALLOW
    } else {
        DENY
    };
    publisher.policy(&format!("description: version {version}\n{rule}"));
    let mut big = b"[]".to_vec();
    big.resize(BIG, b' ');
    std::fs::create_dir_all(publisher.bundle.join("attestations")).unwrap();
    std::fs::write(publisher.bundle.join("attestations/big.json"), big).unwrap();
}

const BIG: usize = 8 << 20;

#[test]
fn a_syncer_killed_mid_write_leaves_one_whole_version_in_force() {
    let publisher = Publisher::new();
    numbered(&publisher, 1);
    publisher.publish(&[]);
    let node = SyncNode::new(&publisher.root());
    let source = format!("file://{}", publisher.repo.display());
    synced(&node.once(&source));
    let whole = |node: &SyncNode| {
        let version = node.version().expect("a version in force");
        let policy = node.read("policy.yaml").unwrap();
        assert!(
            policy.starts_with(&format!("description: version {version}\n")),
            "{version}: {policy}"
        );
        let size = std::fs::metadata(node.bundle.join("attestations/big.json"))
            .unwrap()
            .len();
        assert_eq!(size, BIG as u64);
        version
    };
    let mut killed_before_the_switch = 0;
    let mut killed_after = 0;
    for version in 2..=9u64 {
        numbered(&publisher, version);
        publisher.publish(&[]);
        // Kill it at a different point of the pass each time.
        let mut child = std::process::Command::new(attestgate_e2e::node::bin("attestgate-sync"))
            .args([
                "--once",
                "--source",
                &source,
                "--trust-root",
                &s(&node.trust_root),
            ])
            .args(["--state", &s(&node.state), "--bundle", &s(&node.bundle)])
            .args(["--config", &s(&node.dir().join("config.toml"))])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(15 * (version - 1)));
        let _ = child.kill();
        let _ = child.wait();
        let in_force = whole(&node);
        if in_force == version {
            killed_after += 1;
        } else {
            assert_eq!(in_force, version - 1);
            killed_before_the_switch += 1;
        }
        // The next pass completes what the killed one did not.
        synced(&node.once(&source));
        assert_eq!(whole(&node), version);
    }
    eprintln!("killed before the switch {killed_before_the_switch}, after {killed_after}");
    assert!(
        killed_before_the_switch > 0,
        "no kill landed mid-pass: the test proves nothing"
    );
}

/// Waits up to `within` for `sample` to reach `at_least` in the syncer's
/// metrics; the last scrape if it does not.
async fn await_at_least(addr: &str, sample: &str, at_least: f64, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        // Until the syncer listens, there is nothing to read.
        let out = std::process::Command::new("curl")
            .args(["-fsS", &format!("http://{addr}/metrics")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if attestgate_e2e::metrics::value(&text, sample).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sample} did not reach {at_least}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_decides_by_each_synced_version_without_a_restart_and_the_syncer_rides_out_a_registry_outage()
 {
    let agcri = std::path::PathBuf::from(env!("CARGO_BIN_EXE_agcri"));
    let Some(mut node) = attestgate_e2e::node::Node::up(&agcri) else {
        return;
    };
    let Some(mut bundles) = Registry::start() else {
        return;
    };
    let publisher = Publisher::new();
    publisher.policy(DENY);
    publisher.publish(&[]);
    let v1 = publisher.snapshot("v1");
    let source = publisher.push(&bundles.addr, "node:live");
    // The node's bundle path becomes the syncer's symlink.
    std::fs::remove_dir_all(&node.bundle).unwrap();
    let mut sync = SyncNode::new(&publisher.root());
    sync.bundle = node.bundle.clone();
    let metrics = attestgate_e2e::metrics::free_local_addr();
    sync.start(&source, &["--metrics-listen", &metrics]);
    await_at_least(
        &metrics,
        "attestgate_sync_bundle_version",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    node.start_proxy(&[]);
    let cri = node.via_proxy().await;
    cri.pull(&node.app_image, None)
        .await
        .expect_err("version 1 denies every image");

    publisher.policy(ALLOW);
    publisher.publish(&[]);
    publisher.push(&bundles.addr, "node:live");
    await_at_least(
        &metrics,
        "attestgate_sync_bundle_version",
        2.0,
        Duration::from_secs(10),
    )
    .await;
    // The proxy takes the new version as it takes any bundle change.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while cri.pull(&node.app_image, None).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never took version 2: {}",
            node.proxy_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let record = node.audit().pop().unwrap();
    assert_eq!(record["decision"], "allow", "{record}");
    assert_eq!(record["bundle"]["version"], 2, "{record}");
    assert!(record["bundle"]["expires"].is_string(), "{record}");

    // Rollback, counted; the proxy goes on deciding by version 2.
    publisher.push_dir(&v1, &bundles.addr, "node:live");
    await_at_least(
        &metrics,
        "attestgate_sync_failures_total{reason=\"rollback\"}",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    cri.pull(&node.app_image, None)
        .await
        .expect("version 2 still in force");
    assert!(sync.log().contains("rollback refused"), "{}", sync.log());

    // The registry goes away, and comes back: the syncer recovers alone.
    publisher.push(&bundles.addr, "node:live");
    bundles.stop();
    await_at_least(
        &metrics,
        "attestgate_sync_failures_total{reason=\"unreachable\"}",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    cri.pull(&node.app_image, None)
        .await
        .expect("version 2 still in force");
    bundles.restart();
    publisher.policy(DENY);
    publisher.publish(&[]);
    publisher.push(&bundles.addr, "node:live");
    await_at_least(
        &metrics,
        "attestgate_sync_bundle_version",
        3.0,
        Duration::from_secs(15),
    )
    .await;
    let text = attestgate_e2e::metrics::scrape(&metrics).await;
    let left = attestgate_e2e::metrics::value(&text, "attestgate_sync_bundle_expires_in_seconds");
    assert!(left.is_some_and(|s| s > 86_400.0), "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while cri.pull(&node.app_image, None).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never took version 3"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sync.stop();
    node.stop_proxy();
}

/// `python3 -m http.server` over a directory, on 127.0.0.1; its request
/// log (one line per request) in `log`. Stopped by PID on drop.
struct WebServer {
    child: std::process::Child,
    addr: String,
    log: std::path::PathBuf,
}

impl WebServer {
    fn serve(dir: &std::path::Path, log: std::path::PathBuf) -> WebServer {
        let port = attestgate_e2e::registry::free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        WebServer { child, addr, log }
    }

    fn requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET "))
            .count()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_repository_on_a_web_server_is_polled_with_one_request_and_verified_the_same() {
    let publisher = Publisher::new();
    publisher.policy(DENY);
    publisher.publish(&[]);
    let server = WebServer::serve(&publisher.repo, publisher.dir().join("http.log"));
    let source = format!("http://{}/", server.addr);
    let node = SyncNode::new(&publisher.root());
    synced(&node.once(&source));
    in_force(&node, 1, DENY);

    let before = server.requests();
    synced(&node.once(&source));
    assert_eq!(
        server.requests() - before,
        1,
        "an unchanged poll is one request"
    );

    // http.server's Last-Modified has whole seconds: a publish within the
    // same second as the last poll must still be seen.
    publisher.policy(ALLOW);
    publisher.publish(&[]);
    synced(&node.once(&source));
    in_force(&node, 2, ALLOW);

    std::fs::write(publisher.repo.join("targets/policy.yaml"), DENY).unwrap();
    attestgate(&[
        "repo",
        "timestamp",
        &s(&publisher.repo),
        "--key",
        &s(&publisher.key("timestamp")),
    ]);
    refused(&node.once(&source), "target_mismatch");
    in_force(&node, 2, ALLOW);
    let verified = std::process::Command::new(attestgate_e2e::node::bin("attestgate"))
        .args(["repo", "verify", &source, "--root", &s(&publisher.root())])
        .args(["--plain-http", &server.addr])
        .output()
        .unwrap();
    assert_eq!(verified.status.code(), Some(1), "{verified:?}");
}

#[test]
fn without_a_source_there_is_nothing_to_sync_and_an_unreachable_one_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let out = std::process::Command::new(attestgate_e2e::node::bin("attestgate-sync"))
        .args(["--once", "--config", &s(&config)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to sync"),
        "{out:?}"
    );

    let publisher = Publisher::new();
    let node = SyncNode::new(&publisher.root());
    let port = attestgate_e2e::registry::free_port();
    let once = node.once(&format!("oci://127.0.0.1:{port}/bundles/prod:live"));
    assert_eq!(once.code, 2, "{}", once.log);
    assert!(once.log.contains("reason=\"unreachable\""), "{}", once.log);
    assert_eq!(node.version(), None);
}
