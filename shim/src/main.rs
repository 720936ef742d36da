//! containerd-shim-attestgate-v2: containerd's runtime `io.containerd.attestgate.v2`.
//!
//! containerd runs `<shim> … start` once per container, in the container's
//! task bundle, before any task exists. That is where the image is decided
//! (SPEC §5, Task.Create): allowed, the process becomes
//! `containerd-shim-runc-v2` with the same invocation, and every Task call
//! is served by runc's shim as if attestgate were not there; denied,
//! containerd gets `SignatureValidationFailed: …` and nothing was created.
//! Every other invocation (`delete`, `-v`, …) goes to the runc shim as is.

mod args;
mod containerd;
mod delegate;
mod gate;
mod spec;

use std::ffi::OsString;
use std::process::ExitCode;

use args::{Action, Invocation};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let invocation = Invocation::parse(&argv);
    if invocation.version {
        println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    }
    if invocation.action() == Action::Start {
        let cwd = match std::env::current_dir() {
            Ok(cwd) => cwd,
            Err(e) => {
                eprintln!("SignatureValidationFailed: cannot find the task bundle: {e}");
                return ExitCode::FAILURE;
            }
        };
        let verdict = gate::decide(&invocation, &cwd);
        if !verdict.decision.allowed {
            // containerd reports start's output as the error of the call.
            eprintln!("{}", verdict.deny_message());
            return ExitCode::FAILURE;
        }
    }
    let shim = match delegate::runc_shim() {
        Ok(shim) => shim,
        Err(e) => {
            eprintln!("{}: {e}", env!("CARGO_PKG_NAME"));
            return ExitCode::FAILURE;
        }
    };
    let e = delegate::exec(&shim, &argv);
    eprintln!(
        "{}: cannot run {}: {e}",
        env!("CARGO_PKG_NAME"),
        shim.display()
    );
    ExitCode::FAILURE
}
