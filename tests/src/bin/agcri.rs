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
    /// Pull IMAGE, run a pod NAMESPACE/NAME and start a container in it,
    /// as kubelet would (crictl run).
    Run {
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        image: String,
        /// Directory for the pod's container logs.
        #[arg(long, default_value = "/tmp/agcri-logs")]
        log_dir: String,
        #[arg(long, default_value = "")]
        cgroup_parent: String,
        /// Pod labels KEY=VALUE (e.g. image-policy.k8s.io/break-glass=true).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
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
        Command::Run {
            namespace,
            name,
            image,
            log_dir,
            cgroup_parent,
            labels,
        } => {
            let log_dir = format!("{log_dir}/{namespace}_{name}");
            std::fs::create_dir_all(&log_dir)?;
            let mut pod =
                attestgate_e2e::cri::pod_config(&namespace, &name, &log_dir, &cgroup_parent);
            for label in labels {
                let (k, v) = label
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--label {label:?}: expected KEY=VALUE"))?;
                pod.labels.insert(k.to_string(), v.to_string());
            }
            let image_id = cri.pull(&image, Some(pod.clone())).await?;
            let pod_id = cri.run_pod(&pod).await?;
            let container = match cri
                .create_container(&pod_id, &pod, &name, &image_id, &image, &[])
                .await
            {
                Ok(id) => id,
                Err(status) => {
                    let _ = cri.stop_pod(&pod_id).await;
                    let _ = cri.remove_pod(&pod_id).await;
                    return Err(status.into());
                }
            };
            cri.start_container(&container).await?;
            println!("pod {namespace}/{name} ({pod_id}) running container {container}");
            Ok(())
        }

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
