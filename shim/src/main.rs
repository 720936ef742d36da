//! containerd-shim-attestgate-v2: containerd's runtime `io.containerd.attestgate.v2`.
//!
//! containerd runs `<shim> … start` in a container's task bundle before any
//! task exists. On containerd 1.x it does so for every container, so that
//! is where the image is decided (SPEC §5, Task.Create): allowed, the
//! process becomes `containerd-shim-runc-v2` with the same invocation and
//! every Task call is served by runc's shim as if attestgate were not
//! there; denied, containerd gets `SignatureValidationFailed: …` and nothing
//! was created. containerd 2.x skips `start` for a pod's later containers,
//! so there `start` puts a forwarder in front of the runc shim that decides
//! every Task.Create instead (`forward.rs`). Every other invocation
//! (`delete`, `-v`, …) goes to the runc shim as is.

mod args;
mod containerd;
mod delegate;
mod forward;
mod gate;
mod reply;
mod spec;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use args::{Action, Invocation};
use attestgate_node::ConfigFile;
use containerd::Containerd;
use delegate::{ShimKeys, ShimMode};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let invocation = Invocation::parse(&argv);
    // Each decision loads its keys afresh and verifies a few signatures:
    // tables built for fast repeated verification would never pay off.
    attestgate_policy::verify::verify_without_tables();
    if invocation.version {
        println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    }
    match invocation.action() {
        Action::Forward => forward::serve(&invocation),
        Action::Start => start(&invocation, &argv),
        Action::Other => hand_over(&argv, delegate::configured_runc_shim()),
    }
}

fn start(invocation: &Invocation, argv: &[OsString]) -> ExitCode {
    let bundle_dir = match invocation.bundle.as_deref() {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::current_dir() {
            Ok(cwd) => cwd,
            Err(e) => {
                eprintln!("SignatureValidationFailed: cannot find the task bundle: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let loaded = ConfigFile::discover(None).and_then(|file| {
        let own: ShimKeys = file.keys_of(attestgate_node::config::SHIM)?;
        Ok((file, own))
    });
    // A configuration that cannot be read is refused by the exec path.
    let mode = loaded
        .as_ref()
        .map_or(ShimMode::Exec, |(_, own)| own.shim_mode.unwrap_or_default());
    let configured_shim = loaded
        .as_ref()
        .ok()
        .and_then(|(_, own)| own.runc_shim.clone());
    // Forward mode decides later, in the forwarder: no containerd client here.
    let client = (mode != ShimMode::Forward)
        .then(|| invocation.address.as_deref().map(Containerd::connect))
        .flatten();
    let forward = match mode {
        ShimMode::Forward => true,
        ShimMode::Exec => false,
        ShimMode::Auto => client
            .as_ref()
            .and_then(|c| c.as_ref().ok())
            .and_then(|c| c.major_version().ok())
            .is_some_and(|major| major >= 2),
    };

    if forward {
        let Some(shim) = runc_shim(configured_shim) else {
            return ExitCode::FAILURE;
        };
        return match forward::start(invocation, argv, &shim) {
            Ok(reply) => {
                let mut stdout = std::io::stdout();
                if stdout
                    .write_all(&reply)
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", env!("CARGO_PKG_NAME"));
                ExitCode::FAILURE
            }
        };
    }

    let container = gate::Container {
        address: invocation.address.as_deref(),
        namespace: invocation.namespace.as_deref(),
        id: invocation.id.as_deref().unwrap_or_default(),
        task_bundle: &bundle_dir,
    };
    let verdict = gate::decide(
        &container,
        &mut gate::lookup_once(client),
        loaded.map(|(file, _)| file),
    );
    if !verdict.decision.allowed {
        // containerd reports start's output as the error of the call.
        eprintln!("{}", verdict.deny_message());
        return ExitCode::FAILURE;
    }
    hand_over(argv, configured_shim)
}

/// The runc shim to hand over to, or why there is none (on stderr).
fn runc_shim(configured: Option<PathBuf>) -> Option<PathBuf> {
    delegate::runc_shim(configured)
        .map_err(|e| eprintln!("{}: {e}", env!("CARGO_PKG_NAME")))
        .ok()
}

/// Becomes the runc shim; returns only if that fails.
fn hand_over(argv: &[OsString], configured_shim: Option<PathBuf>) -> ExitCode {
    let Some(shim) = runc_shim(configured_shim) else {
        return ExitCode::FAILURE;
    };
    let e = delegate::exec(&shim, argv);
    eprintln!(
        "{}: cannot run {}: {e}",
        env!("CARGO_PKG_NAME"),
        shim.display()
    );
    ExitCode::FAILURE
}
