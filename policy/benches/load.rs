//! Loading a bundle of 100,000 attestations: wall time and peak RSS.
//!
//! `cargo bench -p attestgate-policy --bench load [-- N]`
//!
//! The bundle is written to a temporary directory as one
//! `attestations/*.json` file (what a `gcloud ... attestations list
//! --format=json` export looks like), streamed so that writing it does not
//! raise this process's peak RSS; then it is loaded five times and the
//! median time and the process's peak RSS (VmHWM) are printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::time::Instant;

use attestgate_policy::Bundle;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    // cargo bench passes `--bench`; the first numeric argument, if any, is N.
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let key = common::ecdsa_p256();
    std::fs::create_dir_all(dir.path().join("attestors")).unwrap();
    std::fs::create_dir_all(dir.path().join("attestations")).unwrap();
    std::fs::write(dir.path().join("policy.yaml"), common::POLICY).unwrap();
    std::fs::write(
        dir.path().join("attestors/ci.yaml"),
        common::attestor_yaml("projects/bench/attestors/ci", &key),
    )
    .unwrap();
    let key_id = attestgate_policy::parse::parse_attestors(&common::attestor_yaml(
        "projects/bench/attestors/ci",
        &key,
    ))
    .unwrap()[0]
        .public_keys[0]
        .id
        .clone();
    let template = common::occurrence_json(&key, &key_id, &common::digest(1));
    let d1 = common::digest(1);
    let file = std::fs::File::create(dir.path().join("attestations/export.json")).unwrap();
    let mut out = std::io::BufWriter::new(file);
    out.write_all(b"[\n").unwrap();
    for i in 0..n {
        if i > 0 {
            out.write_all(b",\n").unwrap();
        }
        out.write_all(template.replace(&d1, &common::digest(i + 1)).as_bytes())
            .unwrap();
    }
    out.write_all(b"\n]\n").unwrap();
    out.flush().unwrap();
    drop(out);
    let size = std::fs::metadata(dir.path().join("attestations/export.json"))
        .unwrap()
        .len();
    let rss_before = vm_hwm_kib();

    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let bundle = Bundle::load(dir.path()).unwrap();
        times.push(start.elapsed());
        assert_eq!(bundle.occurrence_count() as u64, n);
        assert!(bundle.warnings().is_empty());
    }
    times.sort();
    println!(
        "bundle: {n} attestations, {:.1} MB of JSON",
        size as f64 / 1e6
    );
    println!(
        "load time: median {:.3} s (min {:.3} s, max {:.3} s) over 5 loads",
        times[2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[4].as_secs_f64()
    );
    println!(
        "peak RSS: {:.1} MB (before loading: {:.1} MB)",
        vm_hwm_kib() as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
}
