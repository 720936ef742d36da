//! The proxy as kubelet meets it: its socket answers a CRI `Version`
//! (which the proxy relays to the runtime behind it, so an answer means
//! both are up), only root may connect to it, and its metrics endpoint
//! serves attestgate's metrics.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::VersionRequest;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Endpoint, Uri};

use super::report::Check;
use super::root::Root;
use super::scrape;

const ANSWERS: &str = "proxy";
const SOCKET: &str = "proxy_socket";
const METRICS: &str = "metrics";

const START: &str = "start it: `systemctl enable --now attestgate-proxy.socket attestgate-proxy.service`; \
                     `journalctl -u attestgate-proxy` says why it stopped";

#[derive(Debug, thiserror::Error)]
enum VersionError {
    #[error("nothing answers on {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("no HTTP/2 connection to {path}: {message}")]
    Handshake { path: String, message: String },
    #[error("Version failed: {0}")]
    Call(tonic::Status),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

async fn version(socket: PathBuf, shown: String) -> Result<String, VersionError> {
    // Connected once here for the error it gives (no such file, refused),
    // which tonic's connector would only wrap.
    UnixStream::connect(&socket)
        .await
        .map_err(|source| VersionError::Connect {
            path: shown.clone(),
            source,
        })?;
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| VersionError::Handshake {
            path: shown,
            message: error_chain(&e),
        })?;
    let answer = RuntimeServiceClient::new(channel)
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(VersionError::Call)?
        .into_inner();
    Ok(format!(
        "{} {} (CRI {})",
        answer.runtime_name, answer.runtime_version, answer.runtime_api_version
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub fn check_answers(root: &Root, listen: &Path, timeout: Duration) -> Check {
    let shown = listen.display().to_string();
    let socket = root.path(listen);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return Check::fail(
                ANSWERS,
                format!("cannot start an async runtime: {e}"),
                "run doctor again",
            );
        }
    };
    let answer = runtime.block_on(async {
        tokio::time::timeout(timeout, version(socket, shown.clone()))
            .await
            .unwrap_or(Err(VersionError::Timeout(timeout)))
    });
    match answer {
        Ok(runtime) => Check::pass(
            ANSWERS,
            format!("{shown} answers CRI Version: runtime {runtime}"),
        ),
        Err(e @ (VersionError::Connect { .. } | VersionError::Handshake { .. })) => {
            Check::fail(ANSWERS, e.to_string(), START)
        }
        Err(e @ VersionError::Timeout(_)) => Check::fail(
            ANSWERS,
            format!("{shown}: {e}"),
            "the proxy or the runtime behind it hangs: `journalctl -u attestgate-proxy -u containerd`",
        ),
        Err(VersionError::Call(status)) => Check::fail(
            ANSWERS,
            format!(
                "{shown} is up but Version failed ({:?}: {}): the runtime behind it did not answer",
                status.code(),
                status.message()
            ),
            "check containerd (`systemctl status containerd`) and runtime_endpoint in the configuration",
        ),
    }
}

pub fn check_socket(root: &Root, listen: &Path) -> Check {
    let shown = listen.display();
    let meta = match std::fs::symlink_metadata(root.path(listen)) {
        Ok(meta) => meta,
        Err(e) => return Check::fail(SOCKET, format!("{shown}: {e}"), START),
    };
    if !meta.file_type().is_socket() {
        return Check::fail(
            SOCKET,
            format!("{shown} is not a socket"),
            format!("remove {shown} and restart attestgate-proxy.socket"),
        );
    }
    let mode = meta.mode() & 0o7777;
    let mut wrong = Vec::new();
    if meta.uid() != 0 {
        wrong.push(format!("owned by uid {}, not root", meta.uid()));
    }
    // Connecting to a Unix socket takes write permission on it.
    if mode & 0o002 != 0 {
        wrong.push("anyone may connect (others have write permission)".to_string());
    }
    if mode & 0o020 != 0 && meta.gid() != 0 {
        wrong.push(format!(
            "group {} may connect (group write permission)",
            meta.gid()
        ));
    }
    let what = format!(
        "{shown}: mode {mode:04o}, owner {}:{}",
        meta.uid(),
        meta.gid()
    );
    if wrong.is_empty() {
        Check::pass(SOCKET, format!("{what}: only root may connect"))
    } else {
        Check::fail(
            SOCKET,
            format!("{what}: {}", wrong.join("; ")),
            format!(
                "whoever may connect may run any container: `chown root:root {shown} && chmod 0660 {shown}` \
                 (attestgate-proxy.socket says SocketMode=0660; the proxy binds it so itself)"
            ),
        )
    }
}

pub fn check_metrics(metrics_listen: Option<&str>, timeout: Duration) -> Check {
    let Some(addr) = metrics_listen else {
        return Check::pass(
            METRICS,
            "metrics_listen is not set: no metrics endpoint to check",
        );
    };
    match scrape::metrics(addr, timeout) {
        Ok(body) => {
            let count = body
                .lines()
                .filter(|l| l.starts_with("attestgate_"))
                .count();
            if count == 0 {
                Check::fail(
                    METRICS,
                    format!(
                        "{addr} answers GET /metrics, but with no attestgate_ metrics: another program holds the address"
                    ),
                    "give the proxy a metrics_listen address of its own",
                )
            } else {
                Check::pass(
                    METRICS,
                    format!("{addr} serves {count} attestgate_ samples"),
                )
            }
        }
        Err(e) => Check::fail(
            METRICS,
            e.to_string(),
            "check metrics_listen, and that the proxy runs (`journalctl -u attestgate-proxy`)",
        ),
    }
}
