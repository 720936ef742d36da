//! agcri: a small CRI client (a crictl stand-in; Debian has no crictl) built
//! from the same k8s-cri protos as the proxy. Prints responses as JSON.
//! A gRPC error prints `rpc error: code = CODE desc = MESSAGE` and exits 3.

#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use attestgate_e2e::cri::Cri;
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    /// unix:///path/to.sock or a path.
    #[arg(
        long,
        short = 'e',
        global = true,
        default_value = "unix:///run/containerd/containerd.sock"
    )]
    endpoint: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Version,
    Status,
    Pods,
    Stopp {
        id: String,
    },
    Rmp {
        id: String,
    },
    Pull {
        image: String,
    },
    Images,
    Inspecti {
        image: String,
    },
    Rmi {
        image: String,
    },
    Ps,
    /// Print a TCP port on 127.0.0.1 that was free a moment ago.
    FreePort,
    /// Exit 0 when a Unix socket accepts a connection.
    ProbeSocket {
        path: String,
    },
}

fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        Command::FreePort => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            return Ok(());
        }
        Command::ProbeSocket { path } => {
            std::os::unix::net::UnixStream::connect(path)?;
            return Ok(());
        }
        _ => {}
    }
    let cri = Cri::connect(&args.endpoint).await?;
    match args.command {
        Command::Version => json(&cri.version().await?),
        Command::Status => json(&cri.status().await?),
        Command::Pods => json(&cri.list_pods().await?),
        Command::Stopp { id } => cri.stop_pod(&id).await,
        Command::Rmp { id } => cri.remove_pod(&id).await,
        Command::Pull { image } => {
            println!("{}", cri.pull(&image, None).await?);
            Ok(())
        }
        Command::Images => json(&cri.list_images().await?),
        Command::Inspecti { image } => json(&cri.image_status(&image).await?),
        Command::Rmi { image } => cri.remove_image(&image).await,
        Command::Ps => json(&cri.list_containers().await?),
        Command::FreePort | Command::ProbeSocket { .. } => Ok(()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!(
                    "rpc error: code = {:?} desc = {}",
                    status.code(),
                    status.message()
                ),
                None => eprintln!("agcri: {e:#}"),
            }
            ExitCode::from(3)
        }
    }
}
