//! attestgate-sync end to end (SPEC §10): bundles published with `attestgate
//! repo`, pushed to a real docker-registry (distribution 2.8), synced by
//! the real binary into a node's bundle path; every refusal leaves the
//! bundle in force in place, says why, and is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
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
    attestgate(&[
        "repo",
        "rotate-root",
        &s(&stranger.repo),
        "--key",
        &s(&stranger.key("root")),
        "--new-root-key",
        &s(&stranger.key("root-next")),
    ]);
    let unchained = publisher.snapshot("unchained");
    std::fs::copy(
        stranger.repo.join("metadata/2.root.json"),
        unchained.join("metadata/2.root.json"),
    )
    .unwrap();
    publisher.push_dir(&unchained, &registry.addr, "prod:live");
    refused(&node.once(&source), "root_chain");
    in_force(&node, 1, ALLOW);

    // A rotation that does chain, to a new root key and timestamp key:
    // followed, and what the new keys sign is accepted.
    attestgate(&[
        "repo",
        "rotate-root",
        &s(&publisher.repo),
        "--key",
        &s(&publisher.key("root")),
        "--new-root-key",
        &s(&publisher.key("root2")),
    ]);
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
