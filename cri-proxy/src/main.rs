//! attestgate-proxy's command line: flags, logging, the runtime; the daemon
//! itself is the library's [`attestgate_proxy::run`].

use anyhow::Context as _;
use attestgate_proxy::config::{Config, Flags};
use clap::Parser as _;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let flags = Flags::parse();
    if let Some(dir) = &flags.write_manual {
        use clap::CommandFactory as _;
        attestgate_node::manual::write(Flags::command(), dir)
            .with_context(|| format!("cannot write the manual under {}", dir.display()))?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let check_only = flags.check_config;
    let config = Config::load(flags)?;
    if check_only {
        print!("{}", attestgate_proxy::check::effective_toml(&config));
        let problems = attestgate_proxy::check::problems(&config);
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        if problems.is_empty() {
            eprintln!("configuration is valid");
            return Ok(std::process::ExitCode::SUCCESS);
        }
        eprintln!("{} problem(s) found", problems.len());
        return Ok(std::process::ExitCode::from(1));
    }
    init_logging(config.log_json);

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("ATTESTGATE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        runtime.worker_threads(n);
    }
    runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(attestgate_proxy::run(config))?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // journald stores what the daemon writes: colour codes only on a
    // terminal.
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
