//! attestgate-proxy between a CRI client and real containerd: scenarios
//! from SPEC §5, §6, §8 and §9, each on its own node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use attestgate_e2e::node::Node;

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

const REQUIRE_CI: &str = "globalPolicyEvaluationMode: ENABLE
defaultAdmissionRule:
  evaluationMode: REQUIRE_ATTESTATION
  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG
  requireAttestationsBy: [projects/e2e/attestors/ci]
";

/// A node whose policy requires the CI attestor, with the app image signed.
fn signed_node() -> Option<(Node, PathBuf)> {
    let mut node = Node::up(&agcri())?;
    let key = node.add_attestor("ci");
    let repo = node.app_image.rsplit_once(':').unwrap().0.to_string();
    node.attest("ci", &key, &repo, &node.app_digest.clone());
    node.policy(REQUIRE_CI);
    let pause_pattern = format!("{}/attestgate/pause*", node.registry);
    node.start_proxy(&["--system-image", &pause_pattern]);
    Some((node, key))
}

fn assert_denied(result: Result<String, tonic::Status>) -> tonic::Status {
    let status = result.expect_err("the call should have been refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().starts_with("SignatureValidationFailed: "), "{}", status.message());
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_image_runs_as_a_pod() {
    let Some((node, _)) = signed_node() else { return };
    let cri = node.via_proxy().await;
    let pod = node.pod("prod", "web-0");
    let image_id = cri.pull(&node.app_image, Some(pod.clone())).await.expect("signed image pulls");
    let pod_id = cri.run_pod(&pod).await.expect("pod runs");
    let id = cri.create_container(&pod_id, &pod, "web", &image_id, &node.app_image, &[]).await.expect("container created");
    cri.start_container(&id).await.expect("container starts");
    let status = cri.container_status(&id).await.unwrap();
    assert_eq!(status.state, k8s_cri::v1::ContainerState::ContainerRunning as i32);

    let audit = node.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_eq!(audit[0]["operation"], "PullImage");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(audit[0]["reason"], "ATTESTED");
    assert_eq!(audit[0]["image"]["digest"], node.app_digest.as_str());
    assert_eq!(audit[1]["operation"], "CreateContainer");
    assert_eq!(audit[1]["decision"], "allow");
    assert_eq!(audit[1]["image"]["reference"], node.app_image.as_str());
    assert_eq!(audit[1]["pod"]["namespace"], "prod");
    assert_eq!(audit[1]["pod"]["name"], "web-0");
    assert_eq!(audit[1]["container"], "web");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_image_is_refused_at_pull_and_not_left_on_the_node() {
    let Some((node, _)) = signed_node() else { return };
    let (unsigned, digest) = node.push_image("unsigned", "1", "echo unsigned; sleep 3600");
    let cri = node.via_proxy().await;
    let direct = node.direct().await;

    let status = assert_denied(cri.pull(&unsigned, None).await);
    assert!(status.message().contains("MISSING") || status.message().contains("not satisfied"), "{}", status.message());
    assert!(direct.image_status(&unsigned).await.unwrap().is_none(), "denied image left on the node");

    let by_digest = format!("{}@{digest}", unsigned.rsplit_once(':').unwrap().0);
    assert_denied(cri.pull(&by_digest, None).await);
    assert!(direct.image_status(&by_digest).await.unwrap().is_none());

    let audit = node.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    for line in &audit {
        assert_eq!(line["operation"], "PullImage");
        assert_eq!(line["decision"], "deny");
        assert_eq!(line["reason"], "MISSING_ATTESTATIONS");
        assert_eq!(line["image"]["digest"], digest.as_str());
    }
}
