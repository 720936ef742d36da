//! Decision latency: warm (verdict cached), cold per signature algorithm,
//! and cold with 100 vs 100,000 attestations in the bundle.
//!
//! `cargo bench -p attestgate-policy --bench decide`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use attestgate_policy::{ImageRef, PodContext, Settings, evaluate};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn decide(c: &mut Criterion) {
    let node = Settings::default();
    let pod = PodContext {
        namespace: Some("prod".into()),
        ..PodContext::default()
    };
    let reference = format!("{}@{}", common::REPO, common::digest(0));
    let image = ImageRef::parse(&reference).unwrap();

    let p256 = common::ecdsa_p256();
    let bundle = common::bundle(&p256, 100);
    assert!(evaluate(&bundle, &node, &reference, &image, &pod).allowed);
    c.bench_function("warm decision (cached verdict)", |b| {
        b.iter(|| black_box(evaluate(&bundle, &node, &reference, &image, &pod)))
    });

    for (label, key) in [
        ("cold decision RSA-2048 PKCS#1", common::rsa_pkcs1_2048()),
        ("cold decision RSA-2048 PSS", common::rsa_pss_2048()),
        ("cold decision ECDSA P-256", p256),
    ] {
        let bundle = common::bundle(&key, 100);
        assert!(evaluate(&bundle, &node, &reference, &image, &pod).allowed);
        c.bench_function(label, |b| {
            b.iter(|| {
                bundle.clear_verification_cache();
                black_box(evaluate(&bundle, &node, &reference, &image, &pod))
            })
        });
    }

    let key = common::rsa_pkcs1_2048();
    for n in [100u64, 100_000] {
        let bundle = common::bundle(&key, n);
        assert!(evaluate(&bundle, &node, &reference, &image, &pod).allowed);
        c.bench_function(&format!("cold decision, {n} attestations in bundle"), |b| {
            b.iter(|| {
                bundle.clear_verification_cache();
                black_box(evaluate(&bundle, &node, &reference, &image, &pod))
            })
        });
        c.bench_function(&format!("warm decision, {n} attestations in bundle"), |b| {
            b.iter(|| black_box(evaluate(&bundle, &node, &reference, &image, &pod)))
        });
    }
}

criterion_group!(benches, decide);
criterion_main!(benches);
