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

#[test]
fn shipped_config_is_valid() {
    let out = Command::new(bin("attestgate-proxy"))
        .arg("--config")
        .arg(packaging().join("config.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/run/attestgate/cri.sock") && text.contains("Closed"),
        "{text}"
    );
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
