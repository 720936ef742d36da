//! Forward mode, for containerd 2.x. There containerd runs a shim's `start`
//! only for a pod's first container; the pod's later containers reach the
//! shim as Task.Create on the socket `start` printed. So in this mode
//! `start` runs the runc shim's `start`, puts a forwarder in front of the
//! socket it printed, and prints the forwarder's address in the runc shim's
//! own reply form. The forwarder relays ttrpc frames both ways untouched,
//! whatever the service or version, except Task.Create requests, which it
//! decides first: allowed, the request goes on as it came; denied, the
//! forwarder answers PERMISSION_DENIED itself and the runc shim never hears
//! of the container.

use std::ffi::OsString;
use std::io::{BufRead as _, Write as _};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use ttrpc::proto::{
    Codec as _, MESSAGE_HEADER_LENGTH, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE,
};

use crate::args::{Invocation, SERVE_ACTION};
use crate::containerd::{Containerd, LookupError};
use crate::gate;
use crate::reply::StartReply;

/// containerd's ttrpc limit is 4 MiB; a frame beyond this bound is not
/// ttrpc, and the connection is dropped rather than buffered.
const FRAME_LIMIT: usize = 16 << 20;
const TASK_SERVICES: [&str; 2] = ["containerd.task.v2.Task", "containerd.task.v3.Task"];
/// How often the forwarder checks that the runc shim it fronts is alive.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// The two fields of a CreateTaskRequest the decision needs (the same
/// numbers in task API v2 and v3); prost skips the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct CreateTask {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    bundle: String,
}

/// `start` in forward mode; returns the bytes to print for containerd.
pub fn start(
    invocation: &Invocation,
    argv: &[OsString],
    runc_shim: &Path,
) -> Result<Vec<u8>, String> {
    let output = Command::new(runc_shim)
        .args(argv)
        .stdin(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", runc_shim.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} start: {}{}",
            runc_shim.display(),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let reply = StartReply::parse(&output.stdout).map_err(|e| e.to_string())?;
    let runc_socket = socket_of(&reply.address)?;
    let ours = forwarder_socket(&runc_socket, &reply.address);
    if StdUnixStream::connect(&ours).is_err() {
        spawn_forwarder(invocation, &ours, &reply.address)?;
    }
    // The bundle's `address` file keeps the runc shim's address: the runc
    // shim reads it back to remove its socket at Shutdown, and containerd
    // 2.x restores connections from the bootstrap.json it writes from our
    // reply. (containerd 1.x, which runs `start` for every container, would
    // reconnect existing tasks straight to runc after a restart, which
    // lets no container through: new ones still come through `start`.)
    Ok(reply.with_address(&format!("unix://{}", ours.display())))
}

fn socket_of(address: &str) -> Result<PathBuf, String> {
    address
        .strip_prefix("unix://")
        .map(PathBuf::from)
        .ok_or_else(|| format!("the runc shim listens on {address:?}, not a unix socket path"))
}

/// Beside the runc shim's socket (containerd's socket directory), named
/// after it, so every container the runc shim serves finds the same
/// forwarder.
fn forwarder_socket(runc_socket: &Path, runc_address: &str) -> PathBuf {
    let digest = Sha256::digest(format!("attestgate-forward:{runc_address}").as_bytes());
    runc_socket
        .parent()
        .unwrap_or(Path::new("/run/containerd/s"))
        .join(hex::encode(digest))
}

fn spawn_forwarder(
    invocation: &Invocation,
    socket: &Path,
    runc_address: &str,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut child = Command::new(exe)
        // The runc shim's own order, so `ps` shows the pair alike.
        .arg("-namespace")
        .arg(invocation.namespace.as_deref().unwrap_or_default())
        .arg("-id")
        .arg(invocation.id.as_deref().unwrap_or_default())
        .arg("-address")
        .arg(invocation.address.as_deref().unwrap_or_default())
        .arg(SERVE_ACTION)
        .arg(socket)
        .arg(runc_address)
        // containerd reads start's output until every writer closes it: the
        // forwarder must not hold it.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Not the first container's bundle, which goes before the forwarder.
        .current_dir("/")
        .spawn()
        .map_err(|e| format!("cannot start the forwarder: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| "the forwarder has no stdout".to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.trim() == "ready" => Ok(()),
        Ok(line) => {
            let _ = child.wait();
            Err(format!("the forwarder did not start: {}", line.trim()))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err("the forwarder did not start within 10s".into())
        }
    }
}

/// What the forwarder needs to decide a Create: where its decisions are
/// made.
struct Context {
    decisions: std::sync::mpsc::Sender<Held>,
}

/// A Create held for its decision, and where its frame goes either way.
struct Held {
    frame: Vec<u8>,
    stream_id: u32,
    create: CreateTask,
    to_upstream: mpsc::UnboundedSender<Vec<u8>>,
    to_client: mpsc::UnboundedSender<Vec<u8>>,
}

/// Decides the held Creates one after another, on one thread for the
/// forwarder's life (the decision blocks on containerd and the disk, so
/// not on the relay's runtime), through one connection to containerd,
/// made at the first Create and kept while it answers.
fn decide_creates(namespace: String, grpc_address: String) -> std::sync::mpsc::Sender<Held> {
    let (decisions, held) = std::sync::mpsc::channel::<Held>();
    std::thread::spawn(move || {
        let mut client: Option<Containerd> = None;
        for Held {
            frame,
            stream_id,
            create,
            to_upstream,
            to_client,
        } in held
        {
            let container = gate::Container {
                address: Some(&grpc_address),
                namespace: Some(&namespace),
                id: &create.id,
                task_bundle: Path::new(&create.bundle),
            };
            let mut lookup = |address: &str, namespace: &str, id: &str| {
                let connected = match &client {
                    Some(connected) => connected,
                    None => client.insert(Containerd::connect(address)?),
                };
                let found = connected.container_image(namespace, id);
                if matches!(
                    found,
                    Err(LookupError::Connect { .. } | LookupError::Timeout(_))
                ) {
                    client = None;
                }
                found
            };
            let config = attestgate_node::ConfigFile::discover(None);
            let verdict = gate::decide(&container, &mut lookup, config);
            if verdict.decision.allowed {
                let _ = to_upstream.send(frame);
            } else {
                let _ = to_client.send(denial(stream_id, verdict.deny_message()));
            }
        }
    });
    decisions
}

/// The forwarder process: listens on its socket and relays to the runc
/// shim's until that shim is gone.
pub fn serve(invocation: &Invocation) -> ExitCode {
    let (Some(listen), Some(runc_address)) = (invocation.rest.first(), invocation.rest.get(1))
    else {
        println!("usage: {SERVE_ACTION} SOCKET RUNC_ADDRESS");
        return ExitCode::FAILURE;
    };
    // Out of containerd's session: a signal to containerd's process group
    // must not take the pod's forwarder with it (the runc shim does the same).
    let _ = rustix::process::setsid();
    let listen = PathBuf::from(listen);
    let runc_socket = match socket_of(runc_address) {
        Ok(path) => path,
        Err(e) => {
            println!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match bind(&listen) {
        Ok(Some(listener)) => listener,
        // Another start of the same group got there first.
        Ok(None) => {
            println!("ready");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            println!("cannot listen on {}: {e}", listen.display());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let context = Arc::new(Context {
        decisions: decide_creates(
            invocation.namespace.clone().unwrap_or_default(),
            invocation.address.clone().unwrap_or_default(),
        ),
    });
    println!("ready");
    let _ = std::io::stdout().flush();
    runtime.block_on(accept_loop(listener, runc_socket, context));
    let _ = std::fs::remove_file(&listen);
    ExitCode::SUCCESS
}

/// Binds `path`, replacing a socket file nobody listens on; `None` when a
/// live forwarder already listens there.
fn bind(path: &Path) -> std::io::Result<Option<std::os::unix::net::UnixListener>> {
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if StdUnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path)?;
            std::os::unix::net::UnixListener::bind(path).map(Some)
        }
        Err(e) => Err(e),
    }
}

async fn accept_loop(
    listener: std::os::unix::net::UnixListener,
    runc_socket: PathBuf,
    context: Arc<Context>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(_) => return,
    };
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<()>();
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    // After a connection ends the runc shim may be on its way out (it
    // answers Shutdown, then exits): look again soon, not in WATCH_INTERVAL,
    // so the forwarder is gone with it.
    let mut soon = tokio::time::interval(Duration::from_millis(100));
    let mut looks_left = 0u32;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let runc_socket = runc_socket.clone();
                let context = context.clone();
                let ended = ended_tx.clone();
                tokio::spawn(async move {
                    let _ = relay(client, &runc_socket, context).await;
                    let _ = ended.send(());
                });
            }
            _ = ended_rx.recv() => {
                if !alive(&runc_socket) { return; }
                looks_left = 30;
            }
            _ = soon.tick(), if looks_left > 0 => {
                looks_left -= 1;
                if !alive(&runc_socket) { return; }
            }
            _ = watch.tick() => {
                if !alive(&runc_socket) { return; }
            }
        }
    }
}

/// The runc shim exits after containerd's Shutdown once it serves no
/// container, and its socket goes with it; so does the forwarder.
fn alive(runc_socket: &Path) -> bool {
    StdUnixStream::connect(runc_socket).is_ok()
}

async fn relay(
    client: UnixStream,
    runc_socket: &Path,
    context: Arc<Context>,
) -> std::io::Result<()> {
    let upstream = UnixStream::connect(runc_socket).await?;
    let (mut client_read, client_write) = client.into_split();
    let (mut upstream_read, upstream_write) = upstream.into_split();
    let (to_client, client_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (to_upstream, upstream_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let client_writer = tokio::spawn(write_frames(client_write, client_rx));
    let upstream_writer = tokio::spawn(write_frames(upstream_write, upstream_rx));

    let responses = async {
        while let Some(frame) = read_frame(&mut upstream_read).await? {
            if to_client.send(frame).is_err() {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let requests = async {
        while let Some(frame) = read_frame(&mut client_read).await? {
            match inbound(&frame) {
                Inbound::Create(stream_id, create) => {
                    decide_then_forward(
                        frame,
                        stream_id,
                        create,
                        &context,
                        to_upstream.clone(),
                        to_client.clone(),
                    );
                }
                Inbound::Unreadable(stream_id) => {
                    let refusal = error_response(
                        stream_id,
                        ttrpc::Code::INVALID_ARGUMENT,
                        "request frame is not a ttrpc request".into(),
                    );
                    if to_client.send(refusal).is_err() {
                        break;
                    }
                }
                Inbound::Other => {
                    if to_upstream.send(frame).is_err() {
                        break;
                    }
                }
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let result = tokio::select! {
        r = responses => r,
        r = requests => r,
    };
    // What was already relayed still goes out (a Shutdown's answer comes
    // right before the runc shim closes); then both sides are closed.
    drop(to_client);
    drop(to_upstream);
    let drain = async {
        let _ = client_writer.await;
        let _ = upstream_writer.await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    result
}

/// Holds a Create for its decision; other calls on the connection keep
/// flowing meanwhile. A Create that cannot be decided (the deciding thread
/// is gone) is refused, never passed on.
fn decide_then_forward(
    frame: Vec<u8>,
    stream_id: u32,
    create: CreateTask,
    context: &Context,
    to_upstream: mpsc::UnboundedSender<Vec<u8>>,
    to_client: mpsc::UnboundedSender<Vec<u8>>,
) {
    let held = Held {
        frame,
        stream_id,
        create,
        to_upstream,
        to_client,
    };
    if let Err(std::sync::mpsc::SendError(held)) = context.decisions.send(held) {
        let _ = held.to_client.send(denial(
            held.stream_id,
            "SignatureValidationFailed: the forwarder cannot decide: its deciding thread is gone"
                .into(),
        ));
    }
}

fn denial(stream_id: u32, message: String) -> Vec<u8> {
    error_response(stream_id, ttrpc::Code::PERMISSION_DENIED, message)
}

fn error_response(stream_id: u32, code: ttrpc::Code, message: String) -> Vec<u8> {
    let mut response = ttrpc::proto::Response::new();
    response.set_status(ttrpc::get_status(code, message));
    let payload = response.encode().unwrap_or_default();
    let mut frame = Vec::with_capacity(MESSAGE_HEADER_LENGTH + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.push(MESSAGE_TYPE_RESPONSE);
    frame.push(0);
    frame.extend_from_slice(&payload);
    frame
}

/// What a frame from containerd is to the forwarder.
enum Inbound {
    /// A Task.Create: held for a decision.
    Create(u32, CreateTask),
    /// A request that does not decode: refused here, not passed on, since
    /// the runc shim's parser might read a Create in it that ours did not.
    Unreadable(u32),
    /// Anything else: passed on as it is.
    Other,
}

fn inbound(frame: &[u8]) -> Inbound {
    if frame.get(8) != Some(&MESSAGE_TYPE_REQUEST) {
        return Inbound::Other;
    }
    let Some(stream_id) = frame
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return Inbound::Other;
    };
    let Some(request) = frame
        .get(MESSAGE_HEADER_LENGTH..)
        .and_then(|payload| ttrpc::proto::Request::decode(payload).ok())
    else {
        return Inbound::Unreadable(stream_id);
    };
    if request.method != "Create" || !TASK_SERVICES.contains(&request.service.as_str()) {
        return Inbound::Other;
    }
    // A Create whose payload does not decode is still decided: with no
    // container id nothing can be looked up, and that is refused.
    let create = CreateTask::decode(request.payload.as_slice()).unwrap_or_default();
    Inbound::Create(stream_id, create)
}

/// One whole frame (header and payload), or `None` at a clean end.
async fn read_frame(reader: &mut OwnedReadHalf) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; MESSAGE_HEADER_LENGTH];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length > FRAME_LIMIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("ttrpc frame of {length} bytes"),
        ));
    }
    let mut frame = vec![0u8; MESSAGE_HEADER_LENGTH + length];
    frame[..MESSAGE_HEADER_LENGTH].copy_from_slice(&header);
    reader
        .read_exact(&mut frame[MESSAGE_HEADER_LENGTH..])
        .await?;
    Ok(Some(frame))
}

/// Writes frames as they come, several per write when they queue up.
async fn write_frames(mut writer: OwnedWriteHalf, mut frames: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut batch = Vec::new();
    while let Some(mut frame) = frames.recv().await {
        // One frame, the usual case, goes out as it is.
        while let Ok(more) = frames.try_recv() {
            if batch.is_empty() {
                batch.append(&mut frame);
            }
            batch.extend_from_slice(&more);
        }
        let out = if batch.is_empty() { &frame } else { &batch };
        if writer.write_all(out).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request_frame(stream_id: u32, service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
        let mut request = ttrpc::proto::Request::new();
        request.set_service(service.into());
        request.set_method(method.into());
        request.set_payload(payload);
        let body = request.encode().unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&stream_id.to_be_bytes());
        frame.extend_from_slice(&[MESSAGE_TYPE_REQUEST, 0]);
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn only_task_creates_are_held_for_a_decision() {
        let create = CreateTask {
            id: "c1".into(),
            bundle: "/run/b/c1".into(),
        }
        .encode_to_vec();
        for service in TASK_SERVICES {
            let Inbound::Create(stream, found) =
                inbound(&request_frame(9, service, "Create", create.clone()))
            else {
                panic!("a {service} Create is held");
            };
            assert_eq!(stream, 9);
            assert_eq!(found.id, "c1");
            assert_eq!(found.bundle, "/run/b/c1");
        }
        assert!(matches!(
            inbound(&request_frame(3, TASK_SERVICES[0], "Start", create.clone())),
            Inbound::Other
        ));
        assert!(matches!(
            inbound(&request_frame(
                3,
                "containerd.runtime.sandbox.v1.Sandbox",
                "Create",
                create
            )),
            Inbound::Other
        ));
        let mut response = request_frame(5, TASK_SERVICES[0], "Create", Vec::new());
        response[8] = MESSAGE_TYPE_RESPONSE;
        assert!(matches!(inbound(&response), Inbound::Other));
        // A request that does not decode is not passed on.
        let mut garbage = request_frame(7, TASK_SERVICES[0], "Create", Vec::new());
        garbage.truncate(MESSAGE_HEADER_LENGTH);
        garbage.extend_from_slice(&[0x0a, 0x7f, 0x01]);
        assert!(matches!(inbound(&garbage), Inbound::Unreadable(7)));
        // A Create whose payload does not decode is held, with no id.
        let Inbound::Create(_, unreadable) = inbound(&request_frame(
            8,
            TASK_SERVICES[0],
            "Create",
            vec![0x0a, 0x7f],
        )) else {
            panic!("held for a decision");
        };
        assert!(unreadable.id.is_empty());
    }

    #[test]
    fn a_denial_is_a_permission_denied_response_on_the_same_stream() {
        let frame = denial(11, "SignatureValidationFailed: no".into());
        let length = u32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - MESSAGE_HEADER_LENGTH);
        assert_eq!(u32::from_be_bytes(frame[4..8].try_into().unwrap()), 11);
        assert_eq!(frame[8], MESSAGE_TYPE_RESPONSE);
        let response = ttrpc::proto::Response::decode(&frame[MESSAGE_HEADER_LENGTH..]).unwrap();
        assert_eq!(response.status().code(), ttrpc::Code::PERMISSION_DENIED);
        assert_eq!(response.status().message(), "SignatureValidationFailed: no");
    }

    #[test]
    fn every_container_of_a_runc_shim_finds_the_same_forwarder() {
        let runc = "unix:///run/containerd/s/0123";
        let a = forwarder_socket(&socket_of(runc).unwrap(), runc);
        let b = forwarder_socket(&socket_of(runc).unwrap(), runc);
        assert_eq!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/run/containerd/s")));
        assert_ne!(a, PathBuf::from("/run/containerd/s/0123"));
        assert!(socket_of("@abstract").is_err());
    }
}
