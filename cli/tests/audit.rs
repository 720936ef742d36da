//! `attestgate audit` end to end: records the node's own writer wrote,
//! rotated and compressed by the real gzip (and logrotate, when installed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;

mod audit_log;

use std::path::{Path, PathBuf};
use std::process::Command;

use binary::{attestgate, ok};

use attestgate_node::AuditLog;
use attestgate_policy::{Operation, Reason};
use audit_log::Entry;
use time::macros::datetime;

const DIGEST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The n-th record of the test log, one minute after the one before.
fn entry(n: usize) -> String {
    let (reason, namespace, repository, digest) = match n % 4 {
        0 => (Reason::Attested, "prod", "reg.example/team/web", DIGEST_A),
        1 => (
            Reason::MissingAttestations,
            "prod",
            "reg.example/team/api",
            DIGEST_B,
        ),
        2 => (
            Reason::AlwaysDeny,
            "dev",
            "reg.example/other/tool",
            DIGEST_B,
        ),
        _ => (
            Reason::SystemImage,
            "kube-system",
            "registry.k8s.io/pause",
            DIGEST_A,
        ),
    };
    Entry {
        time: datetime!(2026-12-01 00:00:00 UTC) + time::Duration::minutes(n as i64),
        operation: if n.is_multiple_of(2) {
            Operation::CreateContainer
        } else {
            Operation::PullImage
        },
        reason,
        namespace,
        pod: &format!("pod-{n}"),
        repository,
        tag: "1.0",
        digest_hex: digest,
    }
    .line()
}

fn append(log: &Path, records: std::ops::Range<usize>) {
    let writer = AuditLog::open(log).unwrap();
    for n in records {
        writer.append(&entry(n)).unwrap();
    }
}

fn gzip(path: &Path) -> PathBuf {
    let status = Command::new("gzip").arg("-n").arg(path).status().unwrap();
    assert!(status.success());
    PathBuf::from(format!("{}.gz", path.display()))
}

/// A log of 40 records: three rotations as logrotate leaves them with
/// `compress` and `delaycompress`, and the live log.
fn rotated_log(dir: &Path) -> PathBuf {
    let log = dir.join("audit.jsonl");
    for (name, records, compress) in [
        ("audit.jsonl.3", 0..10, true),
        ("audit.jsonl.2", 10..20, true),
        ("audit.jsonl.1", 20..30, false),
        ("audit.jsonl", 30..40, false),
    ] {
        let path = dir.join(name);
        append(&path, records);
        if compress {
            gzip(&path);
        }
    }
    log
}

fn lines(records: impl IntoIterator<Item = usize>) -> String {
    records.into_iter().map(|n| entry(n) + "\n").collect()
}

#[test]
fn json_output_is_every_rotation_oldest_first_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let log = log.to_str().unwrap();
    assert!(dir.path().join("audit.jsonl.3.gz").exists());
    assert_eq!(
        ok(&["audit", "--log", log, "--output", "json"]),
        lines(0..40)
    );
}

#[test]
fn dateext_rotations_are_read_in_date_order() {
    let dir = tempfile::tempdir().unwrap();
    for (name, records, compress) in [
        ("audit.jsonl-20261130", 0..5, true),
        ("audit.jsonl-20261201", 5..10, true),
        ("audit.jsonl-20261202", 10..15, false),
        ("audit.jsonl", 15..20, false),
    ] {
        let path = dir.path().join(name);
        append(&path, records);
        if compress {
            gzip(&path);
        }
    }
    let log = dir.path().join("audit.jsonl");
    assert_eq!(
        ok(&["audit", "--log", log.to_str().unwrap(), "--output", "json"]),
        lines(0..20)
    );
}

#[test]
fn filters_and_together_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let log = log.to_str().unwrap();
    let query = |filters: &[&str]| {
        let mut args = vec!["audit", "--log", log, "--output", "json"];
        args.extend_from_slice(filters);
        ok(&args)
    };
    let matching = |keep: fn(usize) -> bool| lines((0..40).filter(|n| keep(*n)));
    assert_eq!(
        query(&["--decision", "deny"]),
        matching(|n| n % 4 == 1 || n % 4 == 2)
    );
    assert_eq!(
        query(&["--decision", "deny", "--namespace", "prod"]),
        matching(|n| n % 4 == 1)
    );
    assert_eq!(
        query(&["--reason", "always_deny"]),
        matching(|n| n % 4 == 2)
    );
    assert_eq!(
        query(&["--operation", "pullimage", "--namespace", "kube-system"]),
        matching(|n| n % 4 == 3)
    );
    assert_eq!(
        query(&["--image", "reg.example/team/*"]),
        matching(|n| n % 4 <= 1)
    );
    assert_eq!(
        query(&["--image", "**@sha256:bbbb*"]),
        matching(|n| n % 4 == 1 || n % 4 == 2)
    );
    assert_eq!(query(&["--image", "reg.example/*"]), "");
    // Record n is at 00:n; the bounds are inclusive and exclusive.
    assert_eq!(
        query(&[
            "--since",
            "2026-12-01T00:08:00Z",
            "--until",
            "2026-12-01T00:25:00Z"
        ]),
        lines(8..25)
    );
    assert_eq!(
        query(&["--since", "2026-12-01T00:20:00Z", "--decision", "allow"]),
        matching(|n| n >= 20 && (n % 4 == 0 || n % 4 == 3))
    );
    assert_eq!(query(&["--until", "2026-12-01T00:00:00Z"]), "");
    let nothing = attestgate(&["audit", "--log", log, "--namespace", "none"]);
    assert!(nothing.status.success());
    assert!(nothing.stdout.is_empty() && nothing.stderr.is_empty());
}

#[test]
fn the_table_names_pod_and_short_digest() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let table = ok(&[
        "audit",
        "--log",
        log.to_str().unwrap(),
        "--until",
        "2026-12-01T00:02:00Z",
    ]);
    let expected = "\
TIME                         OPERATION        DECISION  REASON                NAMESPACE/POD  IMAGE
2026-12-01T00:00:00.000000Z  CreateContainer  allow     ATTESTED              prod/pod-0     reg.example/team/web:1.0@sha256:aaaaaaaaaaaa
2026-12-01T00:01:00.000000Z  PullImage        deny      MISSING_ATTESTATIONS  prod/pod-1     reg.example/team/api:1.0@sha256:bbbbbbbbbbbb
";
    assert_eq!(table, expected);
}

#[test]
fn the_table_escapes_control_characters_that_json_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    // Whoever creates a pod chooses its name and image reference.
    let forged = Entry {
        time: datetime!(2026-12-01 00:00:00 UTC),
        operation: Operation::PullImage,
        reason: Reason::MissingAttestations,
        namespace: "prod",
        pod: "web\u{1b}[2J\n2026-12-01T00:00:00.000000Z  PullImage  allow",
        repository: "reg.example/\u{1b}]0;owned\u{7}app",
        tag: "1.0\nx",
        digest_hex: DIGEST_A,
    }
    .line();
    std::fs::write(&log, format!("{forged}\n")).unwrap();
    let log = log.to_str().unwrap();
    assert_eq!(
        ok(&["audit", "--log", log, "--output", "json"]),
        format!("{forged}\n")
    );
    let table = ok(&["audit", "--log", log]);
    assert_eq!(table.matches('\n').count(), 2, "{table}");
    assert!(
        table.lines().all(|l| !l.chars().any(char::is_control)),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.contains(r"prod/web\x1b[2J\n2026-12-01T00:00:00.000000Z  PullImage  allow  "),
        "{row}"
    );
    assert!(
        row.ends_with(r"reg.example/\x1b]0;owned\x07app:1.0\nx@sha256:aaaaaaaaaaaa"),
        "{row}"
    );
    let summary = ok(&["audit", "summary", "--log", log]);
    assert!(
        summary.lines().all(|l| !l.chars().any(char::is_control)),
        "{summary}"
    );
}

#[test]
fn summary_counts_by_reason_namespace_and_image() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let log = log.to_str().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["audit", "summary", "--log", log, "--output", "json"])).unwrap();
    assert_eq!(json["records"], 40);
    assert_eq!(
        json["decisions"],
        serde_json::json!({"allow": 20, "deny": 20})
    );
    assert_eq!(
        json["reasons"],
        serde_json::json!([
            {"decision": "allow", "reason": "ATTESTED", "count": 10},
            {"decision": "allow", "reason": "SYSTEM_IMAGE", "count": 10},
            {"decision": "deny", "reason": "ALWAYS_DENY", "count": 10},
            {"decision": "deny", "reason": "MISSING_ATTESTATIONS", "count": 10},
        ])
    );
    assert_eq!(
        json["namespaces"],
        serde_json::json!([
            {"namespace": "prod", "count": 20, "denied": 10},
            {"namespace": "dev", "count": 10, "denied": 10},
            {"namespace": "kube-system", "count": 10, "denied": 0},
        ])
    );
    assert_eq!(json["images"].as_array().unwrap().len(), 4);
    assert_eq!(
        json["top_denied_images"],
        serde_json::json!([
            {"image": format!("reg.example/other/tool@sha256:{DIGEST_B}"), "count": 10, "denied": 10},
            {"image": format!("reg.example/team/api@sha256:{DIGEST_B}"), "count": 10, "denied": 10},
        ])
    );
    // The filters apply, whichever side of `summary` they are on.
    let prod: serde_json::Value = serde_json::from_str(&ok(&[
        "audit",
        "--namespace",
        "prod",
        "summary",
        "--log",
        log,
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        prod["decisions"],
        serde_json::json!({"allow": 10, "deny": 10})
    );
    let table = ok(&["audit", "summary", "--log", log, "--decision", "deny"]);
    assert!(
        table.starts_with("20 decisions: 0 allowed, 20 denied\n"),
        "{table}"
    );
    assert!(table.contains("\nMOST DENIED IMAGE"), "{table}");
}

#[test]
fn torn_and_foreign_lines_are_skipped_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let rotated = dir.path().join("audit.jsonl.1");
    // A line in the middle that is not JSON, and a last line the writer
    // was killed in the middle of.
    let mut text = std::fs::read_to_string(&rotated).unwrap();
    text.insert_str(text.find('\n').unwrap() + 1, "not json\n");
    std::fs::write(&rotated, text).unwrap();
    let torn = entry(40);
    let mut live = std::fs::read_to_string(&log).unwrap();
    live.push_str(&torn[..torn.len() / 2]);
    std::fs::write(&log, live).unwrap();
    let out = attestgate(&["audit", "--log", log.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), lines(0..40));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "1 line could not be read in {}",
            rotated.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("1 line could not be read in {}", log.display())),
        "{stderr}"
    );
    // The node's writer starts the next record on a line of its own.
    append(&log, 40..41);
    let out = attestgate(&["audit", "--log", log.to_str().unwrap(), "--output", "json"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), lines(0..41));
    let summary = ok(&["audit", "summary", "--log", log.to_str().unwrap()]);
    assert!(summary.starts_with("41 decisions"), "{summary}");
}

#[test]
fn a_run_of_nuls_without_newline_is_one_unreadable_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    // What a crash can leave in a file: megabytes of NULs, no newline,
    // between records.
    let mut text = lines(0..1).into_bytes();
    text.resize(text.len() + (3 << 20), 0);
    text.push(b'\n');
    text.extend_from_slice(lines(1..2).as_bytes());
    std::fs::write(&log, text).unwrap();
    let out = attestgate(&["audit", "--log", log.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), lines(0..2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "attestgate: 1 line could not be read in {}\n",
            log.display()
        )
    );
}

#[test]
fn a_missing_log_is_an_error_unless_it_was_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let out = attestgate(&["audit", "--log", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&log.display().to_string()), "{stderr}");
    // Rotated away and not yet written again.
    append(&dir.path().join("audit.jsonl.1"), 0..3);
    assert_eq!(
        ok(&["audit", "--log", log.to_str().unwrap(), "--output", "json"]),
        lines(0..3)
    );
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let log = log.to_str().unwrap();
    for bad in [
        &["--since", "yesterday"][..],
        &["--reason", "MISSING"],
        &["--operation", "Pull"],
        &["--decision", "maybe"],
        &["--image", ""],
        &["--since", "1h", "--until", "2h"],
        &["--output", "yaml"],
    ] {
        let mut args = vec!["audit", "--log", log];
        args.extend_from_slice(bad);
        assert_eq!(attestgate(&args).status.code(), Some(2), "{bad:?}");
    }
    // A rotation compressed otherwise than gzip: the rest is still read,
    // the query fails and says which file.
    std::fs::write(
        dir.path().join("audit.jsonl.4.xz"),
        b"\xfd7zXZ\x00rest of an xz stream",
    )
    .unwrap();
    let out = attestgate(&["audit", "--log", log, "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), lines(0..40));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("audit.jsonl.4.xz: xz-compressed"),
        "{stderr}"
    );
}

#[test]
fn a_gzip_rotation_cut_short_fails_the_query_after_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = rotated_log(dir.path());
    let compressed = dir.path().join("audit.jsonl.3.gz");
    let bytes = std::fs::read(&compressed).unwrap();
    std::fs::write(&compressed, &bytes[..bytes.len() - 10]).unwrap();
    let out = attestgate(&["audit", "--log", log.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.ends_with(&lines(10..40)), "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("reading {}", compressed.display())),
        "{stderr}"
    );
}

#[test]
fn a_reader_that_stops_early_is_no_failure() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    // Far more than a pipe holds.
    append(&log, 0..5_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_attestgate"))
        .args(["audit", "--log", log.to_str().unwrap(), "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = vec![0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}

/// Whether ATTESTGATE_E2E_REQUIRED is set (as CI does): a missing
/// logrotate then fails the test instead of skipping it.
fn e2e_required() -> bool {
    std::env::var_os("ATTESTGATE_E2E_REQUIRED").is_some_and(|v| v != "0" && !v.is_empty())
}

fn logrotate_installed() -> bool {
    let found = Command::new("logrotate").arg("--version").output().is_ok();
    if !found && e2e_required() {
        panic!("logrotate is missing (ATTESTGATE_E2E_REQUIRED is set): apt-get install logrotate");
    }
    if !found {
        eprintln!("skipped: logrotate is not installed (apt-get install logrotate)");
    }
    found
}

fn logrotate(dir: &Path, settings: &str) {
    let config = dir.join("logrotate.conf");
    std::fs::write(
        &config,
        format!(
            "{} {{\n  rotate 10\n  compress\n  delaycompress\n  missingok\n  nocreate\n{settings}}}\n",
            dir.join("audit.jsonl").display()
        ),
    )
    .unwrap();
    let out = Command::new("logrotate")
        .arg("--force")
        .arg("--state")
        .arg(dir.join("logrotate.state"))
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn logs_rotated_by_logrotate_read_in_order() {
    if !logrotate_installed() {
        return;
    }
    for (settings, pause) in [
        ("", false),
        // Rotations a second apart each get a name of their own.
        ("  dateext\n  dateformat -%Y%m%d-%s\n", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        for batch in 0..4 {
            append(&log, batch * 5..batch * 5 + 5);
            if batch < 3 {
                if pause && batch > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1100));
                }
                logrotate(dir.path(), settings);
            }
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("audit.jsonl"))
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".gz")).count(),
            2,
            "{names:?}"
        );
        assert_eq!(
            ok(&["audit", "--log", log.to_str().unwrap(), "--output", "json"]),
            lines(0..20),
            "{names:?}"
        );
    }
}
