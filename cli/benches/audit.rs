//! `attestgate audit` over a large log: records read per minute.
//!
//! `cargo bench -p attestgate --bench audit [-- RECORDS]` (default 1,000,000)
//!
//! Writes RECORDS decision records as the node writes them, spread over the
//! last 24 hours, into a temporary directory the way logrotate leaves it
//! with `delaycompress`: the oldest 40 % in `audit.jsonl.2.gz`, 30 % in
//! `audit.jsonl.1`, the newest 30 % in `audit.jsonl`. Then runs the
//! release binary five times per query, output to /dev/null, and prints the
//! median wall time and the records read per minute (every record of the
//! log, matched or not), as a Markdown table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/audit_log/mod.rs"]
mod audit_log;

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attestgate_policy::{Operation, Reason};
use audit_log::Entry;
use flate2::Compression;
use flate2::write::GzEncoder;

const RUNS: usize = 5;

const OPERATIONS: [Operation; 3] = [
    Operation::PullImage,
    Operation::CreateContainer,
    Operation::TaskCreate,
];
/// Mostly allowed, as on a working cluster.
const REASONS: [Reason; 10] = [
    Reason::Attested,
    Reason::Attested,
    Reason::Attested,
    Reason::Attested,
    Reason::Attested,
    Reason::SystemImage,
    Reason::Allowlisted,
    Reason::MissingAttestations,
    Reason::MissingAttestations,
    Reason::AlwaysDeny,
];

fn write_log(dir: &Path, records: usize, now: time::OffsetDateTime) {
    let namespaces: Vec<String> = (0..20).map(|i| format!("ns-{i:02}")).collect();
    let repositories: Vec<String> = (0..200)
        .map(|i| format!("reg.example/team-{}/app-{i:03}", i % 10))
        .collect();
    let digests: Vec<String> = (0..200u64)
        .map(|i| format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(4))
        .collect();
    let span = time::Duration::hours(24);
    let step = span / records as u32;
    let start = now - span;
    let gz_end = records * 4 / 10;
    let plain_end = records * 7 / 10;
    let mut gz = GzEncoder::new(
        BufWriter::new(File::create(dir.join("audit.jsonl.2.gz")).unwrap()),
        Compression::default(),
    );
    let mut rotated = BufWriter::new(File::create(dir.join("audit.jsonl.1")).unwrap());
    let mut live = BufWriter::new(File::create(dir.join("audit.jsonl")).unwrap());
    for i in 0..records {
        // A cheap scramble, so neighbouring records differ as on a node.
        let mix = (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 20;
        let image = (mix % 200) as usize;
        let entry = Entry {
            time: start + step * i as u32,
            operation: OPERATIONS[(mix % 3) as usize],
            reason: REASONS[(mix / 7 % 10) as usize],
            namespace: &namespaces[(mix / 3 % 20) as usize],
            pod: &format!("web-{}", mix % 50),
            repository: &repositories[image],
            tag: "1.2.3",
            digest_hex: &digests[image],
        };
        let mut line = entry.line();
        line.push('\n');
        let out: &mut dyn std::io::Write = if i < gz_end {
            &mut gz
        } else if i < plain_end {
            &mut rotated
        } else {
            &mut live
        };
        out.write_all(line.as_bytes()).unwrap();
    }
    gz.finish().unwrap().flush().unwrap();
    rotated.flush().unwrap();
    live.flush().unwrap();
}

fn median_run(args: &[&str]) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            let status = Command::new(env!("CARGO_BIN_EXE_attestgate"))
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            let took = started.elapsed();
            assert!(status.success(), "attestgate {args:?}: {status}");
            took
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; the first number is the record count.
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    write_log(dir.path(), records, now);
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
    eprintln!(
        "wrote {records} records in {:.1} s: audit.jsonl.2.gz {} MB, audit.jsonl.1 {} MB, audit.jsonl {} MB",
        started.elapsed().as_secs_f64(),
        size("audit.jsonl.2.gz") / 1_000_000,
        size("audit.jsonl.1") / 1_000_000,
        size("audit.jsonl") / 1_000_000,
    );
    // The compressed and the plain parts on their own, as the only rotation
    // beside a log that does not exist.
    for (part, name) in [("gz", "audit.jsonl.2.gz"), ("plain", "audit.jsonl.1")] {
        let part_dir = dir.path().join(part);
        std::fs::create_dir(&part_dir).unwrap();
        std::os::unix::fs::symlink(dir.path().join(name), part_dir.join(name)).unwrap();
    }
    let log = dir.path().join("audit.jsonl");
    let log = log.to_str().unwrap();
    let gz_log = dir.path().join("gz/audit.jsonl");
    let plain_log = dir.path().join("plain/audit.jsonl");
    let cases: Vec<(&str, Vec<&str>, usize)> = vec![
        (
            "`audit --output json` (every record printed)",
            vec!["audit", "--log", log, "--output", "json"],
            records,
        ),
        (
            "`audit --decision deny --namespace ns-07 --output json`",
            vec![
                "audit",
                "--log",
                log,
                "--decision",
                "deny",
                "--namespace",
                "ns-07",
                "--output",
                "json",
            ],
            records,
        ),
        (
            "`audit --reason missing-attestations --image 'reg.example/team-3/*'` (table)",
            vec![
                "audit",
                "--log",
                log,
                "--reason",
                "missing-attestations",
                "--image",
                "reg.example/team-3/*",
            ],
            records,
        ),
        (
            "`audit --since 1h` (table)",
            vec!["audit", "--log", log, "--since", "1h"],
            records,
        ),
        (
            "`audit summary`",
            vec!["audit", "summary", "--log", log],
            records,
        ),
        (
            "`audit summary --decision deny --output json`",
            vec![
                "audit",
                "summary",
                "--log",
                log,
                "--decision",
                "deny",
                "--output",
                "json",
            ],
            records,
        ),
        (
            "`audit summary`, the gzip part alone (40 %)",
            vec!["audit", "summary", "--log", gz_log.to_str().unwrap()],
            records * 4 / 10,
        ),
        (
            "`audit summary`, the plain rotated part alone (30 %)",
            vec!["audit", "summary", "--log", plain_log.to_str().unwrap()],
            plain_count(records),
        ),
    ];
    println!("| query ({records} records) | median of {RUNS} | records per minute |");
    println!("|---|---|---|");
    for (name, args, read) in cases {
        let took = median_run(&args);
        let per_minute = read as f64 / took.as_secs_f64() * 60.0;
        println!(
            "| {name} | {:.3} s | {:.0} million |",
            took.as_secs_f64(),
            per_minute / 1e6
        );
    }
}

fn plain_count(records: usize) -> usize {
    records * 7 / 10 - records * 4 / 10
}
