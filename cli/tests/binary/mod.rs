//! The built `attestgate` binary, run as a user runs it, and the openssl
//! that makes its keys: shared by the CLI's end-to-end test files.

#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Command, Output};

pub fn attestgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attestgate"))
        .args(args)
        .output()
        .unwrap()
}

/// Stdout of a run that must succeed.
pub fn ok(args: &[&str]) -> String {
    let out = attestgate(args);
    assert!(
        out.status.success(),
        "attestgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs openssl, which must succeed: the tests' keys are made by another
/// tool than the one that reads them.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An EC P-256 private key in PKCS#8 PEM at `path`, as `openssl genpkey`
/// writes it.
pub fn openssl_ec_key(path: &str) {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path,
    ]);
}
