//! attestgate-proxy as a node daemon: socket activation, readiness
//! notification, stale sockets, graceful shutdown, metrics, SIGHUP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use attestgate_e2e::metrics::{await_metric, free_local_addr, scrape};
use attestgate_e2e::node::Node;

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

const ALLOW: &str = "defaultAdmissionRule:\n  evaluationMode: ALWAYS_ALLOW\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_and_ready_notification() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    let notify = node.dir().join("notify.sock");
    let notifications = UnixDatagram::bind(&notify).unwrap();
    notifications
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let listen = node.proxy_sock.display().to_string();
    // systemd-socket-activate binds the socket and passes it as fd 3
    // (LISTEN_FDS=1); the proxy must serve on it rather than bind its own.
    // It passes no environment of its own accord: NOTIFY_SOCKET goes by -E.
    let notify_env = format!("NOTIFY_SOCKET={}", notify.display());
    node.start_proxy_with(
        &["systemd-socket-activate", "-l", &listen, "-E", &notify_env],
        &[],
        &[],
    );
    let mut buf = [0u8; 256];
    let n = notifications.recv(&mut buf).expect("READY=1 within 20 s");
    assert!(std::str::from_utf8(&buf[..n]).unwrap().contains("READY=1"));
    let cri = node.via_proxy().await;
    cri.version().await.unwrap();
    assert!(
        node.proxy_log()
            .contains("using the socket passed by systemd"),
        "{}",
        node.proxy_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_file_does_not_stop_a_restart_but_a_live_one_does() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    // A socket file left by a crash: bound once, nobody listening now.
    drop(UnixListener::bind(&node.proxy_sock).unwrap());
    assert!(node.proxy_sock.exists());
    node.start_proxy(&[]);
    node.via_proxy().await.version().await.unwrap();

    // A second proxy on the same path must refuse, not steal the socket.
    let second = std::process::Command::new(attestgate_e2e::node::bin("attestgate-proxy"))
        .arg("--config")
        .arg(node.dir().join("no-config.toml"))
        .arg("--listen")
        .arg(&node.proxy_sock)
        .arg("--runtime-endpoint")
        .arg(&node.containerd_sock)
        .arg("--bundle")
        .arg(&node.bundle)
        .arg("--audit-log")
        .arg(node.dir().join("second-audit.jsonl"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another process"));
    node.via_proxy()
        .await
        .version()
        .await
        .expect("the first proxy still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_calls_in_flight_finish() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    node.start_proxy(&[]);
    let cri = node.via_proxy().await;
    let pod = node.pod("default", "slow");
    let image_id = cri.pull(&node.app_image, Some(pod.clone())).await.unwrap();
    let pod_id = cri.run_pod(&pod).await.unwrap();
    let id = cri
        .create_container(&pod_id, &pod, "app", &image_id, &node.app_image, &[])
        .await
        .unwrap();
    cri.start_container(&id).await.unwrap();

    let in_flight = {
        let cri = cri.clone();
        let id = id.clone();
        tokio::spawn(async move {
            cri.exec_sync(
                &id,
                &["/bin/sh", "-c", "touch /running; sleep 2; echo done"],
            )
            .await
        })
    };
    // SIGTERM only once the call is in containerd's hands: a call sent
    // after it is refused, as it should be.
    let direct = node.direct().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while direct
        .exec_sync(&id, &["/bin/test", "-e", "/running"])
        .await
        .map_or(true, |r| r.exit_code != 0)
    {
        assert!(Instant::now() < deadline, "the exec never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = node.proxy_pid().unwrap();
    let started = Instant::now();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let result = in_flight
        .await
        .unwrap()
        .expect("the call in flight completes");
    assert_eq!(result.stdout, b"done\n");
    // The proxy exits once it is done, well before the 30 s grace period.
    let mut exited = false;
    for _ in 0..300 {
        if !node.proxy_running() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        exited,
        "the proxy did not exit after SIGTERM: {}",
        node.proxy_log()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        node.proxy_log().contains("all calls finished"),
        "{}",
        node.proxy_log()
    );
}

/// A 127.0.0.1 address with a port nothing listens on, for the metrics server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_decisions_calls_and_bundle_errors() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy("defaultAdmissionRule:\n  evaluationMode: ALWAYS_DENY\n  enforcementMode: ENFORCED_BLOCK_AND_AUDIT_LOG\n");
    let addr = free_local_addr();
    node.start_proxy(&["--metrics-listen", &addr]);
    let cri = node.via_proxy().await;
    cri.version().await.unwrap();
    assert!(cri.pull(&node.app_image, None).await.is_err());
    let text = scrape(&addr).await;
    assert!(text.contains(r#"attestgate_decisions_total{operation="PullImage",decision="deny",reason="ALWAYS_DENY"} 1"#), "{text}");
    assert!(
        text.contains(
            r#"attestgate_forwarded_calls_total{method="runtime.v1.RuntimeService/Version"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains("attestgate_decision_duration_seconds_count{operation=\"PullImage\"} 1"),
        "{text}"
    );
    assert!(text.contains("attestgate_bundle_valid 1"), "{text}");
    assert!(text.contains("attestgate_bundle_age_seconds"), "{text}");

    // A broken bundle is counted; SIGHUP forces a reload.
    node.policy("defaultAdmissionRule: [");
    std::process::Command::new("kill")
        .arg("-HUP")
        .arg(node.proxy_pid().unwrap().to_string())
        .status()
        .unwrap();
    // The file watch and the HUP may each load the broken bundle: one
    // error or two, never none.
    let mut counted = false;
    for _ in 0..100 {
        let load_errors = scrape(&addr).await.lines().find_map(|l| {
            l.strip_prefix("attestgate_bundle_load_errors_total ")
                .and_then(|n| n.parse::<u64>().ok())
        });
        if load_errors.is_some_and(|n| n >= 1) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted, "{}", scrape(&addr).await);
    assert!(
        scrape(&addr).await.contains("attestgate_bundle_valid 1"),
        "the old bundle stays in force"
    );
}

/// Polls the metrics until `line` shows up; the text scraped last otherwise.
/// Whether the proxy ends `socket` (within its read timeout), after what
/// it relayed of containerd's preface.
fn closed_by_the_proxy(socket: &mut std::os::unix::net::UnixStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 256];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_make_room_and_silent_ones_go_first() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    let addr = free_local_addr();
    // A soft open-file limit below the hard one, as a shell often leaves it.
    node.start_proxy_with(
        &["prlimit", "--nofile=256:4096", "--"],
        &[],
        &[
            "--metrics-listen",
            &addr,
            "--max-connections",
            "2",
            "--handshake-timeout",
            "2s",
        ],
    );
    // The connection that checked the proxy was up may still hold a slot.
    await_metric(&addr, "attestgate_connections_open 0")
        .await
        .unwrap_or_else(|text| panic!("{text}"));
    let first = node.via_proxy().await;
    first.version().await.unwrap();
    let second = node.via_proxy().await;
    second.version().await.unwrap();
    await_metric(&addr, "attestgate_connections_open 2")
        .await
        .unwrap_or_else(|text| panic!("{text}"));

    // All slots taken by idle clients: a new connection makes room, and
    // the one idle longest is drained (GOAWAY), not the new one refused.
    let silent = std::os::unix::net::UnixStream::connect(&node.proxy_sock).unwrap();
    await_metric(
        &addr,
        r#"attestgate_connections_closed_total{reason="evicted"} 1"#,
    )
    .await
    .unwrap_or_else(|text| panic!("{text}"));
    second
        .version()
        .await
        .expect("the connection used last keeps working");

    // A connection that has not said hello is the first to go for the next.
    let mut silent = silent;
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let next = node.via_proxy().await;
    next.version()
        .await
        .expect("a new client is served at the cap");
    assert!(
        closed_by_the_proxy(&mut silent),
        "a connection that never said hello kept its slot"
    );
    await_metric(
        &addr,
        r#"attestgate_connections_closed_total{reason="evicted"} 2"#,
    )
    .await
    .unwrap_or_else(|text| panic!("{text}"));
    // The client drained first comes back, making room again.
    first.version().await.expect("a drained client reconnects");

    // One that never says hello is closed once its time is up, room or not.
    drop((first, second, next));
    await_metric(&addr, "attestgate_connections_open 0")
        .await
        .unwrap_or_else(|text| panic!("{text}"));
    let mut late = std::os::unix::net::UnixStream::connect(&node.proxy_sock).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let asked = std::time::Instant::now();
    assert!(
        closed_by_the_proxy(&mut late),
        "a connection that never said hello was kept"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    await_metric(
        &addr,
        r#"attestgate_connections_closed_total{reason="handshake_timeout"} 1"#,
    )
    .await
    .unwrap_or_else(|text| panic!("{text}"));

    // The soft open-file limit is raised so the cap, not EMFILE, bounds clients.
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", node.proxy_pid().unwrap())).unwrap();
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!((files[3], files[4]), ("4096", "4096"), "{limits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bundle_fails_closed_or_open_as_configured() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.start_proxy(&[]);
    let status = node
        .via_proxy()
        .await
        .pull(&node.app_image, None)
        .await
        .expect_err("closed by default");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("no valid policy"),
        "{}",
        status.message()
    );
    node.stop_proxy();
    node.start_proxy(&["--fail-mode", "open"]);
    node.via_proxy()
        .await
        .pull(&node.app_image, None)
        .await
        .expect("fail mode open admits");
    let reasons: Vec<String> = node
        .audit()
        .iter()
        .map(|l| format!("{} {}", l["decision"], l["reason"]))
        .collect();
    assert_eq!(reasons, [r#""deny" "NO_POLICY""#, r#""allow" "NO_POLICY""#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_log_fails_closed() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    // /dev/full opens fine and fails every write with ENOSPC: a full disk.
    node.audit_log = PathBuf::from("/dev/full");
    node.start_proxy(&[]);
    let status = node
        .via_proxy()
        .await
        .pull(&node.app_image, None)
        .await
        .expect_err("no audit record, no admission");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("audit log /dev/full cannot be written"),
        "{}",
        status.message()
    );
    assert!(
        node.direct()
            .await
            .image_status(&node.app_image)
            .await
            .unwrap()
            .is_none(),
        "the pulled image was removed"
    );
    node.stop_proxy();
    node.start_proxy(&["--fail-mode", "open"]);
    node.via_proxy()
        .await
        .pull(&node.app_image, None)
        .await
        .expect("fail mode open admits without a record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_that_cannot_be_reopened_after_rotation_fails_closed() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    node.start_proxy(&[]);
    let cri = node.via_proxy().await;
    cri.pull(&node.app_image, None).await.unwrap();
    // Rotated away, and the path cannot be created again.
    let log = node.audit_log.clone();
    std::fs::rename(&log, node.dir().join("rotated.jsonl")).unwrap();
    std::fs::create_dir(&log).unwrap();
    std::process::Command::new("kill")
        .arg("-HUP")
        .arg(node.proxy_pid().unwrap().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.proxy_log().contains("cannot reopen the audit log") {
        assert!(Instant::now() < deadline, "{}", node.proxy_log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Err(status) = cri.pull(&node.app_image, None).await else {
        panic!(
            "records must not go to the rotated file: {}",
            node.proxy_log()
        )
    };
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        std::fs::read_to_string(node.dir().join("rotated.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("ag-tmpfs")
            .tempdir()
            .unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount tmpfs (the end-to-end tests run as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a proxy still holding the log open (a test that panicked
        // before stopping it) must not leave the mount behind.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_torn_by_a_full_disk_does_not_swallow_the_next_record() {
    use std::io::Write as _;
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    let page: usize = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("PAGESIZE")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let disk = Tmpfs::mount(&format!("{}", 16 * page));
    // tmpfs, like a disk, writes what fits in the page a write starts in
    // and then fails with ENOSPC. The log ends 40 bytes short of a page
    // boundary, every other page is taken: the next record is cut after 40
    // bytes.
    let log = disk.0.path().join("audit.jsonl");
    let (pad, end) = ("{\"pad\":\"\"}\n", page - 40);
    let mut text = String::new();
    while text.len() + 2 * pad.len() <= end {
        text.push_str(pad);
    }
    let longer = "x".repeat(end - text.len() - pad.len());
    text.push_str(&format!("{{\"pad\":\"{longer}\"}}\n"));
    assert_eq!(text.len(), end);
    std::fs::write(&log, &text).unwrap();
    let filler = disk.0.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    while file.write_all(&vec![0; page]).is_ok() {}
    drop(file);

    node.audit_log = log.clone();
    node.start_proxy(&[]);
    let cri = node.via_proxy().await;
    let status = cri
        .pull(&node.app_image, None)
        .await
        .expect_err("no audit record, no admission");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let torn = std::fs::read(&log).unwrap();
    assert_eq!(torn.len(), page, "the record was cut at the page boundary");

    std::fs::remove_file(&filler).unwrap();
    cri.pull(&node.app_image, None)
        .await
        .expect("admitted once the record can be written");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let fragment = lines[lines.len() - 2];
    assert_eq!(fragment.len(), 40);
    assert!(fragment.starts_with("{\"time\":"), "{fragment}");
    let record: serde_json::Value = serde_json::from_str(lines[lines.len() - 1])
        .expect("the record after the torn line is a line of its own");
    assert_eq!(record["operation"], "PullImage");
    assert_eq!(record["decision"], "allow");
    node.stop_proxy();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_bundle_past_its_expiry_decides_nothing_without_any_reload() {
    let Some(mut node) = Node::up(&agcri()) else {
        return;
    };
    node.policy(ALLOW);
    // What attestgate-sync writes beside the bundle's files: expiring soon.
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 6;
    let expires = node.sh(&format!("date -u -d @{expires_at} +%Y-%m-%dT%H:%M:%SZ"));
    std::fs::write(
        node.bundle.join("sync.json"),
        format!(r#"{{"version": 5, "expires": "{}"}}"#, expires.trim()),
    )
    .unwrap();
    let addr = free_local_addr();
    node.start_proxy(&["--metrics-listen", &addr]);
    let cri = node.via_proxy().await;
    cri.pull(&node.app_image, None)
        .await
        .expect("allowed while the bundle is fresh");
    let text = scrape(&addr).await;
    assert!(
        text.contains(&format!(
            "attestgate_bundle_expiry_timestamp_seconds {expires_at}"
        )),
        "{text}"
    );
    let record = node.audit().pop().unwrap();
    assert_eq!(record["bundle"]["version"], 5, "{record}");

    // Nothing changes on disk: the time passes, and the bundle lapses.
    let wait = expires_at.saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    ) + 1;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let refused = cri
        .pull(&node.app_image, None)
        .await
        .expect_err("a lapsed bundle admits nothing when the node fails closed");
    assert!(
        refused
            .message()
            .contains("synced bundle version 5 expired"),
        "{refused:?}"
    );
    let record = node.audit().pop().unwrap();
    assert_eq!(record["reason"], "NO_POLICY", "{record}");
    assert_eq!(record["bundle"]["version"], 5, "{record}");
    let text = scrape(&addr).await;
    let left = attestgate_e2e::metrics::value(&text, "attestgate_bundle_expires_in_seconds");
    assert!(left.is_some_and(|s| s <= 0.0), "{left:?}");
}
