//! A syncer switching the bundle under a node that is deciding: SPEC §10
//! promises the proxy and the shim pick a new version up as they do any
//! bundle change, which is only safe if no decision falls between two
//! versions. Version 1 allows the image and version 2 denies it, so a
//! decision made by a mixed bundle (one version's policy under the other's
//! `sync.json`) shows as an outcome its record's version does not give.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/repo.rs"]
mod repo;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use attestgate_node::hooks::NoHooks;
use attestgate_node::{AuditLog, BundleStore, Decider, FailMode, Request};
use attestgate_policy::{ImageRef, Operation, PodContext, Reason, Settings};
use attestgate_registry::oci::RegistryOptions;
use attestgate_sync::pass::{Outcome, Syncer};

use repo::{ALLOW, DENY, Publisher, attestor_yaml};

const DECIDERS: usize = 50;
const IMAGE: &str =
    "registry.test/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_during_50_concurrent_decisions_drops_none_and_each_names_one_version() {
    let work = tempfile::tempdir().unwrap();
    let publisher = Publisher::new(work.path()).await;
    let attestor = |description: &str| {
        vec![(
            "attestors/ci.yaml".to_string(),
            attestor_yaml("ci", description, &publisher.attestor_pem),
        )]
    };
    publisher.write_bundle(ALLOW, &attestor("first"));
    assert_eq!(publisher.publish().await.targets_version, 1);

    let node = work.path().join("node");
    let bundle = node.join("bundle");
    let mut syncer = Syncer::new(
        &format!("file://{}", publisher.repo().display()),
        &node.join("state"),
        &publisher.trust_root(),
        &bundle,
        RegistryOptions::default(),
    )
    .unwrap();
    let outcome = syncer.pass().await;
    assert!(
        matches!(outcome, Outcome::Updated { version: 1, .. }),
        "{outcome:?}"
    );

    // Wired as the proxy wires it (cri-proxy/src/lib.rs): one store, loaded
    // once before serving, one decider over it, the watcher reloading.
    let store = Arc::new(BundleStore::new(bundle.clone(), Arc::new(NoHooks)));
    {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.reload(true))
            .await
            .unwrap();
    }
    assert_eq!(store.current().unwrap().reference.version, Some(1));
    let audit = node.join("audit.jsonl");
    let decider = Arc::new(Decider::new(
        store.clone(),
        Settings::default(),
        FailMode::Closed,
        AuditLog::open(&audit).unwrap(),
        Arc::new(NoHooks),
    ));
    attestgate_node::store::spawn_watcher(store.clone(), || {}).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicU64::new(0));
    let mut deciders = Vec::new();
    for _ in 0..DECIDERS {
        let (decider, stop, decided) = (decider.clone(), stop.clone(), decided.clone());
        deciders.push(std::thread::spawn(move || {
            let image = ImageRef::parse(IMAGE).unwrap();
            let pod = PodContext::default();
            let request = Request {
                operation: Operation::CreateContainer,
                pod: &pod,
                pod_ref: None,
                container: Some("app"),
            };
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let decision = decider.decide(&request, IMAGE, &image, Instant::now());
                outcomes.push((decision.allowed, decision.reason));
                decided.fetch_add(1, Ordering::Relaxed);
            }
            outcomes
        }));
    }
    // The watcher's tick lands on the rename only by luck; a reloader
    // that never pauses (as a burst of SIGHUPs would) makes a load
    // overlap the switch on every run.
    let reloader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reloads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                store.reload(true);
                reloads += 1;
            }
            reloads
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.write_bundle(DENY, &attestor("second"));
    assert_eq!(publisher.publish().await.targets_version, 2);
    let before_switch = decided.load(Ordering::Relaxed);
    let outcome = syncer.pass().await;
    assert!(
        matches!(outcome, Outcome::Updated { version: 2, .. }),
        "{outcome:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.current().and_then(|c| c.reference.version) != Some(2) {
        assert!(Instant::now() < deadline, "the node never took version 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_switch = decided.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut outcomes = Vec::new();
    for decider in deciders {
        outcomes.extend(decider.join().unwrap());
    }
    let reloads = reloader.join().unwrap();
    assert!(before_switch > 0 && at_switch > before_switch);

    // None failed: every decision was made by a policy, never NO_POLICY
    // nor an error, and each is what one of the two versions says.
    for (allowed, reason) in &outcomes {
        assert!(
            matches!(
                (allowed, reason),
                (true, Reason::AlwaysAllow) | (false, Reason::AlwaysDeny)
            ),
            "a decision neither version gives: allowed {allowed}, {reason:?}"
        );
    }
    // Each was recorded, naming exactly one version, the one that decided.
    let text = std::fs::read_to_string(&audit).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), outcomes.len(), "a decision went unrecorded");
    let mut by_version = [0usize; 3];
    for record in &records {
        let version = record["bundle"]["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("a record without one bundle version: {record}"));
        let expected = match version {
            1 => ("allow", "ALWAYS_ALLOW"),
            2 => ("deny", "ALWAYS_DENY"),
            other => panic!("version {other} was never published: {record}"),
        };
        assert_eq!(
            (
                record["decision"].as_str().unwrap(),
                record["reason"].as_str().unwrap()
            ),
            expected,
            "a record whose outcome its version does not give (a mixed bundle): {record}"
        );
        by_version[version as usize] += 1;
    }
    assert!(
        by_version[1] > 0 && by_version[2] > 0,
        "the switch did not happen while deciding: {by_version:?}"
    );
    eprintln!(
        "{} decisions by {DECIDERS} threads ({} by version 1, {} by version 2), {reloads} reloads",
        records.len(),
        by_version[1],
        by_version[2]
    );
}
