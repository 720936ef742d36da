//! The packaged systemd units and configuration are valid as shipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use attestgate_e2e::node::bin;

fn packaging() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging"))
}

fn required() -> bool {
    std::env::var_os("ATTESTGATE_E2E_REQUIRED").is_some_and(|v| v != "0" && !v.is_empty())
}

#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !required(),
            "systemd-analyze is missing (ATTESTGATE_E2E_REQUIRED is set)"
        );
        eprintln!("SKIPPED: systemd-analyze is missing");
        return;
    }
    // Verify copies whose ExecStart points at the binary just built: the
    // check insists that the executable exists.
    let dir = tempfile::tempdir().unwrap();
    let units = [
        "attestgate-proxy.service",
        "attestgate-proxy.socket",
        "attestgate-sync.service",
    ];
    for unit in units {
        let text = std::fs::read_to_string(packaging().join("systemd").join(unit)).unwrap();
        let text = text
            .replace(
                "/usr/bin/attestgate-proxy",
                &bin("attestgate-proxy").display().to_string(),
            )
            .replace(
                "/usr/bin/attestgate-sync",
                &bin("attestgate-sync").display().to_string(),
            );
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|unit| dir.path().join(unit)))
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Units it cannot see on a build machine (containerd, kubelet) are not our errors.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("attestgate-")
                && !l.contains("containerd.service")
                && !l.contains("kubelet.service")
        })
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// The shipped file is the defaults spelt out: `--check-config` prints it
/// back as the configuration in force, and fails on the pieces of a node
/// that are not there (on a build machine, the bundle) until they are.
#[test]
fn shipped_config_is_valid() {
    let node = tempfile::tempdir().unwrap();
    let check = |extra: &[&str]| {
        Command::new(bin("attestgate-proxy"))
            .arg("--config")
            .arg(packaging().join("config.toml"))
            .args(extra)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let bundle = node.path().join("bundle");
    let audit = node.path().join("log/audit.jsonl");
    let runtime = node.path().join("containerd/containerd.sock");
    let flags = [
        "--bundle",
        bundle.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
        "--runtime-endpoint",
        runtime.to_str().unwrap(),
    ];
    let out = check(&flags);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: bundle ") && stderr.contains("error: runtime_endpoint "),
        "{stderr}"
    );

    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::create_dir_all(runtime.parent().unwrap()).unwrap();
    std::fs::write(
        bundle.join("policy.yaml"),
        "defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n",
    )
    .unwrap();
    let out = check(&flags);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let effective: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        effective["listen"].as_str(),
        Some("/run/attestgate/cri.sock")
    );
    assert_eq!(effective["fail_mode"].as_str(), Some("closed"));
    assert_eq!(effective["bundle"].as_str(), bundle.to_str());
    assert_eq!(effective["memory_budget"].as_str(), Some("64MiB"));
    // What it printed is a configuration file the proxy takes as it is.
    let again = node.path().join("effective.toml");
    std::fs::write(&again, text.as_bytes()).unwrap();
    let reread = Command::new(bin("attestgate-proxy"))
        .arg("--config")
        .arg(&again)
        .arg("--check-config")
        .output()
        .unwrap();
    let body = |out: &[u8]| {
        let text = String::from_utf8_lossy(out).into_owned();
        text.lines().skip(2).collect::<Vec<_>>().join("\n")
    };
    assert!(
        reread.status.success(),
        "{}",
        String::from_utf8_lossy(&reread.stderr)
    );
    assert_eq!(body(&reread.stdout), body(&out.stdout));
}

/// containerd (the one installed here, 1.6/1.7) loads the shipped runtime
/// snippet through `imports` and ends up with attestgate as the CRI's
/// default runtime.
#[test]
fn containerd_loads_the_runtime_snippet() {
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !required(),
            "containerd is missing (ATTESTGATE_E2E_REQUIRED is set)"
        );
        eprintln!("SKIPPED: containerd is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("config.toml");
    std::fs::write(
        &main,
        format!(
            "version = 2\nimports = [\"{}\"]\n",
            packaging()
                .join("containerd/attestgate-runtime-v2.toml")
                .display()
        ),
    )
    .unwrap();
    let out = Command::new("containerd")
        .arg("--config")
        .arg(&main)
        .args(["config", "dump"])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dump.contains("default_runtime_name = \"attestgate\""),
        "{dump}"
    );
    let runtime = dump
        .split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.attestgate]")
        .nth(1)
        .expect("the attestgate runtime");
    let runtime = runtime.split("\n\n").next().unwrap_or_default();
    assert!(
        runtime.contains("runtime_type = \"io.containerd.attestgate.v2\"")
            && runtime.contains("pod_annotations = [\"alpha.image-policy.k8s.io/break-glass\"]"),
        "{runtime}"
    );
    // The version 3 form is TOML that names the same runtime.
    let v3 =
        std::fs::read_to_string(packaging().join("containerd/attestgate-runtime-v3.toml")).unwrap();
    assert!(
        v3.contains("version = 3") && v3.contains("runtime_type = 'io.containerd.attestgate.v2'")
    );
    let runtime_class =
        std::fs::read_to_string(packaging().join("kubernetes/runtimeclass.yaml")).unwrap();
    assert!(runtime_class.contains("handler: attestgate"));
}

/// The alerting rules the package ships load in Prometheus and fire when
/// and only when their unit tests say (promtool, from Debian's prometheus).
#[test]
fn prometheus_rules_check_and_pass_their_tests() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            !required(),
            "promtool is missing (ATTESTGATE_E2E_REQUIRED is set)"
        );
        eprintln!("SKIPPED: promtool is missing");
        return;
    }
    let dir = packaging().join("prometheus");
    for args in [
        &["check", "rules", "attestgate.rules.yml"][..],
        &["test", "rules", "attestgate.rules.test.yml"][..],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert the issue names is there.
    let rules = std::fs::read_to_string(dir.join("attestgate.rules.yml")).unwrap();
    for alert in [
        "AttestgateBundleExpiringSoon",
        "AttestgateSyncFailing",
        "AttestgateDenialBurst",
        "AttestgateAuditWriteErrors",
        "AttestgateConnectionLimits",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}
