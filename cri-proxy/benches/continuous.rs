//! Continuous validation over 1,000 running containers (SPEC §12), with
//! containerd's side held in memory (`continuous::fake`) and everything
//! else real: the bundle store, the decider, ECDSA P-256 attestations
//! verified on every decision, the audit log on disk.
//!
//! 1. A pass unpaced, all containers still allowed (what a pass costs) and
//!    all denied (1,000 records written).
//! 2. CreateContainer decisions, one every 20 ms on the proxy's runtime
//!    (two workers, as on these machines), round by round while idle and
//!    while a paced pass (the default 200 containers a second) runs: the
//!    latency the pass adds to decided CRI calls. Forwarded calls are
//!    relayed on threads of their own and never wait for the runtime.
//!
//! `cargo bench -p attestgate-proxy --bench continuous [-- ROUNDS]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use attestgate_node::{AuditLog, BundleStore, Decider, FailMode, Request};
use attestgate_policy::{ImageRef, Operation, PodContext, Settings};
use attestgate_proxy::config::CvAction;
use attestgate_proxy::continuous::fake::FakeContainers;
use attestgate_proxy::continuous::{CONTAINERS_PER_SECOND, Validator};
use attestgate_proxy::cri::Pod;
use attestgate_proxy::metrics::Metrics;
use attestgate_proxy::resolve::ImageInfo;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;

const CONTAINERS: usize = 1000;
const IMAGES: usize = 100;
const REPO: &str = "registry.example/team/app";
const ATTESTOR: &str = "projects/bench/attestors/ci";
const NOTE: &str = "projects/bench/notes/ci";
const POLICY: &str = "defaultAdmissionRule:\n  evaluationMode: REQUIRE_ATTESTATION\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n  requireAttestationsBy: [projects/bench/attestors/ci]\n";

fn digest(i: usize) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest((i as u64).to_be_bytes()))
    )
}

/// A bundle requiring the CI attestor, which attested every image.
fn write_bundle(dir: &std::path::Path) {
    let key = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let pem = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    let indented: String = pem.lines().map(|l| format!("        {l}\n")).collect();
    std::fs::create_dir_all(dir.join("attestors")).unwrap();
    std::fs::create_dir_all(dir.join("attestations")).unwrap();
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.join("attestors/ci.yaml"),
        format!(
            "name: {ATTESTOR}\nuserOwnedGrafeasNote:\n  noteReference: {NOTE}\n  publicKeys:\n  - id: bench-key\n    pkixPublicKey:\n      signatureAlgorithm: ECDSA_P256_SHA256\n      publicKeyPem: |\n{indented}"
        ),
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let occurrences: Vec<String> = (0..IMAGES)
        .map(|i| {
            let url = format!("{REPO}@{}", digest(i));
            let payload = attestgate_policy::payload::signature_payload(&url).unwrap();
            let signature: p256::ecdsa::Signature = key.sign(payload.as_bytes());
            format!(
                r#"{{"name":"projects/bench/occurrences/{i}","resourceUri":"https://{url}","noteName":"{NOTE}","kind":"ATTESTATION","attestation":{{"serializedPayload":"{}","signatures":[{{"publicKeyId":"bench-key","signature":"{}"}}]}}}}"#,
                b64.encode(payload.as_bytes()),
                b64.encode(signature.to_der().as_bytes()),
            )
        })
        .collect();
    std::fs::write(
        dir.join("attestations/all.json"),
        format!("[{}]", occurrences.join(",\n")),
    )
    .unwrap();
}

/// 1,000 containers in pods of their own, over 100 images, each asked for
/// by its tag.
fn containers() -> FakeContainers {
    let mut fake = FakeContainers::default();
    for c in 0..CONTAINERS {
        let i = c % IMAGES;
        let image = ImageInfo {
            id: format!("sha256:{:064x}", i + 1),
            repo_tags: vec![format!("{REPO}:v{i}")],
            repo_digests: vec![format!("{REPO}@{}", digest(i))],
        };
        let pod = Pod {
            namespace: "prod".into(),
            name: format!("pod-{c}"),
            uid: format!("uid-{c}"),
            ..Pod::default()
        };
        fake.add(
            &format!("c{c:04}"),
            &format!("s{c:04}"),
            pod,
            &format!("{REPO}:v{i}"),
            image,
        );
    }
    fake
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[at]
}

/// CreateContainer decisions every 20 ms for `window`, as the proxy makes
/// them (a task on the runtime, the decision off its workers): their
/// latencies in ms.
async fn decisions_for(decider: &Arc<Decider>, window: Duration) -> Vec<f64> {
    let mut latencies = Vec::new();
    let end = Instant::now() + window;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let image = ImageRef::parse(&format!("{REPO}@{}", digest(7))).unwrap();
    let reference = format!("{REPO}:v7");
    while Instant::now() < end {
        tick.tick().await;
        let decider = decider.clone();
        let image = image.clone();
        let reference = reference.clone();
        let asked = Instant::now();
        tokio::spawn(async move {
            tokio::task::block_in_place(|| {
                let pod = PodContext::default();
                let request = Request {
                    operation: Operation::CreateContainer,
                    pod: &pod,
                    pod_ref: None,
                    container: Some("app"),
                };
                let decision = decider.decide(&request, &reference, &image, Instant::now());
                assert!(decision.allowed);
            });
        })
        .await
        .unwrap();
        latencies.push(asked.elapsed().as_secs_f64() * 1e3);
    }
    latencies
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    write_bundle(&bundle);
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(BundleStore::new(bundle.clone(), metrics.clone()));
    store.reload(true);
    assert!(store.current().is_some(), "{:?}", store.error());
    let decider = Arc::new(Decider::new(
        store.clone(),
        Settings::default(),
        FailMode::Closed,
        AuditLog::open(&dir.path().join("audit.jsonl")).unwrap(),
        metrics.clone(),
    ));
    let validator = |rate: u32| Validator {
        decider: decider.clone(),
        containers: containers(),
        metrics: metrics.clone(),
        action: CvAction::Log,
        interval: Duration::from_secs(3600),
        attestation_cache: None,
        rate,
        recorded: std::sync::Mutex::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("continuous validation: {CONTAINERS} containers, {IMAGES} images, ECDSA P-256 attestations, {rounds} rounds");
        let unpaced = validator(u32::MAX);
        // Cold: the first pass after a bundle change, every image's
        // attestation verified anew (a bundle loaded afresh has an empty
        // verdict cache); warm: the pass after it, the interval's.
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // A changed bundle: loaded afresh, so nothing is verified yet.
            std::fs::write(bundle.join("policy.yaml"), format!("{POLICY}# {round}\n")).unwrap();
            store.reload(true);
            for times in [&mut cold, &mut warm] {
                let started = Instant::now();
                let summary = unpaced.pass().await.unwrap();
                assert_eq!(summary.allowed as usize, CONTAINERS);
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        for (what, times) in [("after a bundle change", &mut cold), ("again", &mut warm)] {
            let low = times.iter().copied().fold(f64::MAX, f64::min);
            let high = times.iter().copied().fold(0.0, f64::max);
            let mid = median(times);
            println!(
                "pass, unpaced, all allowed, {what}: median {mid:.1} ms [{low:.1}, {high:.1}], {:.1} µs a container",
                mid * 1e3 / CONTAINERS as f64
            );
        }
        // The attestations gone: every container denied and recorded.
        std::fs::remove_file(bundle.join("attestations/all.json")).unwrap();
        store.reload(true);
        let mut denied = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let summary = unpaced.pass().await.unwrap();
            assert_eq!(summary.denied as usize, CONTAINERS);
            denied.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let low = denied.iter().copied().fold(f64::MAX, f64::min);
        let high = denied.iter().copied().fold(0.0, f64::max);
        let mid = median(&mut denied);
        println!(
            "pass, unpaced, all denied (1,000 records written): median {mid:.1} ms [{low:.1}, {high:.1}]"
        );
        write_bundle(&bundle);
        store.reload(true);

        let paced = Arc::new(validator(CONTAINERS_PER_SECOND));
        let window = Duration::from_secs_f64(CONTAINERS as f64 / f64::from(CONTAINERS_PER_SECOND));
        let mut ratios = Vec::new();
        let (mut idle_all, mut busy_all) = (Vec::new(), Vec::new());
        let mut pass_ms = Vec::new();
        for round in 0..rounds {
            // Idle first on even rounds, during a pass first on odd ones.
            let mut measured = [Vec::new(), Vec::new()];
            for during_pass in [round % 2 == 1, round % 2 == 0] {
                if during_pass {
                    let passing = paced.clone();
                    let started = Instant::now();
                    let pass = tokio::spawn(async move { passing.pass().await });
                    measured[1] = decisions_for(&decider, window).await;
                    pass.await.unwrap().unwrap();
                    pass_ms.push(started.elapsed().as_secs_f64() * 1e3);
                } else {
                    measured[0] = decisions_for(&decider, window).await;
                }
            }
            let [mut idle, mut busy] = measured;
            let (i, b) = (median(&mut idle), median(&mut busy));
            ratios.push(b / i);
            println!("round {round}: decision median idle {i:.3} ms, during a pass {b:.3} ms, ratio {:.3}", b / i);
            idle_all.extend(idle);
            busy_all.extend(busy);
        }
        let low = ratios.iter().copied().fold(f64::MAX, f64::min);
        let high = ratios.iter().copied().fold(0.0, f64::max);
        let mid = median(&mut ratios);
        println!(
            "paced pass ({CONTAINERS_PER_SECOND}/s): median {:.0} ms",
            median(&mut pass_ms)
        );
        println!(
            "CreateContainer decision during a pass / idle, round by round: median {mid:.3} [{low:.3}, {high:.3}]"
        );
        println!(
            "decision latency idle: p50 {:.3} ms p99 {:.3} ms; during a pass: p50 {:.3} ms p99 {:.3} ms",
            percentile(&mut idle_all, 0.5),
            percentile(&mut idle_all, 0.99),
            percentile(&mut busy_all, 0.5),
            percentile(&mut busy_all, 0.99)
        );
    });
}
