//! Continuous validation (SPEC §12) on real containerd: pods admitted
//! through the proxy keep running until a bundle change would deny them;
//! then the proxy records them within seconds and, with `cv_action =
//! stop`, stops them, never touching a pod admitted by break-glass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use attestgate_e2e::cri::Cri;
use attestgate_e2e::node::{Node, REQUIRE_CI};
use k8s_cri::v1::ContainerState;

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

const GLASS: &str = "alpha.image-policy.k8s.io/break-glass";

/// A node requiring the CI attestor, with two images it attested (the app
/// and `kept`) and one it did not (`unsigned`), and the proxy started with
/// `cv_action` and an interval no test waits for.
struct Scenario {
    node: Node,
    kept: String,
    unsigned: String,
    /// The attestation of the app image, whose removal revokes it.
    app_attestation: PathBuf,
}

fn scenario(cv_action: &str) -> Option<Scenario> {
    let mut node = Node::up(&agcri())?;
    let key = node.add_attestor("ci");
    let repository = |reference: &str| reference.rsplit_once(':').unwrap().0.to_string();
    node.attest("ci", &key, &repository(&node.app_image), &node.app_digest);
    let (kept, kept_digest) = node.push_image("kept", "1", "sleep 3600");
    node.attest("ci", &key, &repository(&kept), &kept_digest);
    let (unsigned, _) = node.push_image("unsigned", "1", "sleep 3600");
    node.policy(REQUIRE_CI);
    let app_attestation = node
        .bundle
        .join("attestations")
        .join(format!("ci-{}.json", &node.app_digest[7..19]));
    assert!(app_attestation.exists(), "{}", app_attestation.display());
    let pause_pattern = format!("{}/attestgate/pause*", node.registry);
    node.start_proxy(&[
        "--system-image",
        &pause_pattern,
        "--cv-interval",
        "1h",
        "--cv-action",
        cv_action,
    ]);
    Some(Scenario {
        node,
        kept,
        unsigned,
        app_attestation,
    })
}

/// Pulls `image` and runs it as container `app` of a new pod; its id.
async fn run(
    cri: &Cri,
    pod: &k8s_cri::v1::PodSandboxConfig,
    image: &str,
) -> Result<String, tonic::Status> {
    let image_id = cri.pull(image, Some(pod.clone())).await?;
    let pod_id = cri.run_pod(pod).await?;
    let id = cri
        .create_container(&pod_id, pod, "app", &image_id, image, &[])
        .await?;
    cri.start_container(&id).await?;
    Ok(id)
}

/// The app and `kept`, each running in a pod of its own in `prod`: their
/// container ids.
async fn run_both_attested(s: &Scenario, cri: &Cri) -> (String, String) {
    let node = &s.node;
    let app = run(cri, &node.pod("prod", "app-0"), &node.app_image)
        .await
        .expect("the attested app runs");
    let kept = run(cri, &node.pod("prod", "kept-0"), &s.kept)
        .await
        .expect("the other attested image runs");
    (app, kept)
}

fn revalidations(node: &Node) -> Vec<serde_json::Value> {
    node.audit()
        .into_iter()
        .filter(|r| r["operation"] == "ContinuousValidation")
        .collect()
}

/// Waits (for 30 s at most) until continuous validation has recorded
/// something about `container`.
fn wait_for_record(node: &Node, container: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(record) = revalidations(node)
            .into_iter()
            .find(|r| r["container_id"] == container)
        {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no ContinuousValidation record for {container}; log:\n{}",
            node.proxy_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn state(cri: &Cri, id: &str) -> i32 {
    cri.container_status(id).await.unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_attestation_flags_its_running_pod_and_no_other() {
    let Some(s) = scenario("log") else {
        return;
    };
    let node = &s.node;
    let cri = node.via_proxy().await;
    let (app, kept) = run_both_attested(&s, &cri).await;
    // A pass at start and any pass since: nothing running is denied.
    std::thread::sleep(Duration::from_secs(3));
    assert!(revalidations(node).is_empty(), "{:#?}", node.audit());

    std::fs::remove_file(&s.app_attestation).unwrap();
    let record = wait_for_record(node, &app);
    assert_eq!(record["decision"], "deny", "{record:#}");
    assert_eq!(record["reason"], "MISSING_ATTESTATIONS", "{record:#}");
    assert_eq!(record["action"], "logged", "{record:#}");
    assert_eq!(record["container"], "app", "{record:#}");
    assert_eq!(record["pod"]["namespace"], "prod", "{record:#}");
    assert_eq!(record["pod"]["name"], "app-0", "{record:#}");
    // containerd 1.6 keeps no pod spec image name: the digest decides.
    assert_eq!(record["image"]["digest"], node.app_digest.as_str());
    assert!(
        record["image"]["reference"]
            .as_str()
            .unwrap()
            .ends_with(&node.app_digest),
        "{record:#}"
    );
    // The pass that found it is over once the summary is logged.
    std::thread::sleep(Duration::from_secs(1));
    let found = revalidations(node);
    assert_eq!(found.len(), 1, "only the revoked pod: {found:#?}");
    // `log` leaves both running.
    assert_eq!(
        state(&cri, &app).await,
        ContainerState::ContainerRunning as i32
    );
    assert_eq!(
        state(&cri, &kept).await,
        ContainerState::ContainerRunning as i32
    );
    let log = node.proxy_log();
    assert!(log.contains("continuous validation pass done"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_stops_the_revoked_pod_and_never_a_break_glass_one() {
    let Some(s) = scenario("stop") else {
        return;
    };
    let node = &s.node;
    let cri = node.via_proxy().await;
    let (app, kept) = run_both_attested(&s, &cri).await;
    let mut glass_pod = node.pod("prod", "glass-0");
    glass_pod.annotations.insert(GLASS.into(), "true".into());
    let glass = run(&cri, &glass_pod, &s.unsigned)
        .await
        .expect("an unsigned image runs by break-glass");

    std::fs::remove_file(&s.app_attestation).unwrap();
    let record = wait_for_record(node, &app);
    assert_eq!(record["decision"], "deny", "{record:#}");
    assert_eq!(record["action"], "stop", "{record:#}");
    // Recorded first, then stopped: `sleep` as PID 1 ignores SIGTERM, so
    // the stop takes its whole grace period.
    let deadline = Instant::now() + Duration::from_secs(60);
    while state(&cri, &app).await != ContainerState::ContainerExited as i32 {
        assert!(
            Instant::now() < deadline,
            "the revoked pod's container was not stopped"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Another bundle change, another pass: still nothing about the others.
    std::fs::write(
        node.bundle.join("policy.yaml"),
        format!("{REQUIRE_CI}# touched\n"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let found = revalidations(node);
    assert!(
        found
            .iter()
            .all(|r| r["container_id"] != kept.as_str() && r["container_id"] != glass.as_str()),
        "{found:#?}"
    );
    for id in [&kept, &glass] {
        assert_eq!(
            state(&cri, id).await,
            ContainerState::ContainerRunning as i32,
            "{id} kept running"
        );
    }
}

/// A platform policy the node does not enforce at admission is still
/// evaluated on running pods: the check set their namespace scopes, with
/// what it cannot evaluate reported. `prod` trusts the test registry's
/// directory; `locked` denies everything; every other namespace meets a
/// vulnerability check, which needs Google's scanner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_policy_flags_running_pods_by_the_check_set_their_scope_picks() {
    let Some(s) = scenario("log") else {
        return;
    };
    let node = &s.node;
    let cri = node.via_proxy().await;
    let mut running = Vec::new();
    for namespace in ["prod", "locked", "dev"] {
        let id = run(&cri, &node.pod(namespace, "app-0"), &node.app_image)
            .await
            .expect("admission does not enforce the platform policy");
        running.push((namespace, id));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(revalidations(node).is_empty(), "{:#?}", node.audit());

    let platform = format!(
        "name: projects/e2e/platforms/gke/policies/node\ngkePolicy:\n  checkSets:\n  - displayName: prod\n    scope:\n      kubernetesNamespace: prod\n    checks:\n    - displayName: our-registry\n      trustedDirectoryCheck:\n        trustedDirPatterns: ['{}/attestgate']\n  - displayName: locked\n    scope:\n      kubernetesNamespace: locked\n    checks:\n    - displayName: nothing-runs\n      alwaysDeny: true\n  - displayName: everyone-else\n    checks:\n    - displayName: scanned\n      vulnerabilityCheck:\n        maximumFixableSeverity: MEDIUM\n",
        node.registry
    );
    std::fs::write(node.bundle.join("platform-policy.yaml"), platform).unwrap();
    let locked = wait_for_record(node, &running[1].1);
    let dev = wait_for_record(node, &running[2].1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(locked["reason"], "PLATFORM_POLICY", "{locked:#}");
    assert_eq!(
        locked["platform_policy"]["check_set"], "locked",
        "{locked:#}"
    );
    assert_eq!(
        locked["platform_policy"]["checks"][0]["kind"], "alwaysDeny",
        "{locked:#}"
    );
    assert_eq!(dev["platform_policy"]["check_set"], "everyone-else");
    assert!(
        dev["platform_policy"]["config_errors"]
            .to_string()
            .contains("scanned"),
        "{dev:#}"
    );
    let found = revalidations(node);
    assert!(
        found
            .iter()
            .all(|r| r["container_id"] != running[0].1.as_str()),
        "the prod pod's registry is trusted: {found:#?}"
    );
    let log = node.proxy_log();
    assert!(
        log.contains("platform policy configuration error"),
        "the unevaluable check is reported: {log}"
    );
}
