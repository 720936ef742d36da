//! Faults and load on real containerd: the proxy SIGKILLed in the middle
//! of decisions and restarted on the socket systemd keeps, containerd
//! SIGKILLed under calls in flight and brought back, a thousand
//! CreateContainer decisions at once, and a soak that watches the proxy's
//! memory and descriptors. Every decision is one whole audit record, and no
//! client is left hanging.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use attestgate_e2e::cri::Cri;
use attestgate_e2e::node::{Node, REQUIRE_CI};
use attestgate_e2e::process;
use attestgate_e2e::throttle::SlowRelay;
use k8s_cri::v1::PodSandboxConfig;

fn agcri() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agcri"))
}

/// How long any one call may take before the scenario calls it hung: far
/// past anything a healthy node needs, even under the thousand-create
/// burst on two CPUs.
const HUNG: Duration = Duration::from_secs(120);

/// A node requiring the CI attestor, with one image on it that the policy
/// allows (the attested app, pulled) and one it denies (imported, never
/// attested), each as kubelet names it: the image id and the pod spec's
/// reference.
struct Decided {
    node: Node,
    allowed: Image,
    denied: Image,
}

#[derive(Clone)]
struct Image {
    id: String,
    reference: String,
    digest: String,
}

impl Decided {
    async fn up() -> Option<Decided> {
        let node = Node::up(&agcri())?;
        let key = node.add_attestor("ci");
        node.attest("ci", &key, repository(&node.app_image), &node.app_digest);
        node.policy(REQUIRE_CI);
        let (denied, denied_digest) = node.import_image("unsigned", "1", "sleep 3600");
        let direct = node.direct().await;
        let allowed_id = direct.pull(&node.app_image, None).await.unwrap();
        let denied_id = direct.image_status(&denied).await.unwrap().unwrap().id;
        Some(Decided {
            allowed: Image {
                id: allowed_id,
                reference: node.app_image.clone(),
                digest: node.app_digest.clone(),
            },
            denied: Image {
                id: denied_id,
                reference: denied,
                digest: denied_digest,
            },
            node,
        })
    }

    /// The proxy's arguments: the pause image is a system image.
    fn proxy_args(&self) -> Vec<String> {
        vec![
            "--system-image".into(),
            format!("{}/attestgate/pause*", self.node.registry),
        ]
    }

    /// What a worker needs to create containers in `pod`, apart from the
    /// node.
    fn creator(&self, pod: &PodSandboxConfig, pod_id: &str) -> Creator {
        Creator {
            allowed: self.allowed.clone(),
            denied: self.denied.clone(),
            pod: pod.clone(),
            pod_id: pod_id.into(),
        }
    }
}

fn repository(reference: &str) -> &str {
    reference.rsplit_once(':').unwrap().0
}

#[derive(Clone)]
struct Creator {
    allowed: Image,
    denied: Image,
    pod: PodSandboxConfig,
    pod_id: String,
}

/// How a call the policy decides came back.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Created,
    /// Refused as SPEC §5 says a refusal looks.
    Denied,
    Failed(tonic::Code, String),
}

impl Outcome {
    fn of<T>(result: Result<T, tonic::Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Created,
            Err(status)
                if status.code() == tonic::Code::PermissionDenied
                    && status.message().starts_with("SignatureValidationFailed: ") =>
            {
                Outcome::Denied
            }
            Err(status) => Outcome::Failed(status.code(), status.message().into()),
        }
    }
}

impl Creator {
    /// CreateContainer `name` of the allowed image or the denied one, as
    /// kubelet 1.28+ sends it; panics if it is not answered within
    /// [`HUNG`].
    async fn create(&self, cri: &Cri, name: &str, allow: bool) -> Outcome {
        let image = if allow { &self.allowed } else { &self.denied };
        let call = cri.create_container(
            &self.pod_id,
            &self.pod,
            name,
            &image.id,
            &image.reference,
            &["/bin/sh", "-c", "sleep 3600"],
        );
        match tokio::time::timeout(HUNG, call).await {
            Ok(result) => Outcome::of(result),
            Err(_) => panic!("CreateContainer {name} hung for {HUNG:?}"),
        }
    }
}

/// What the policy says of container `name` in these scenarios: one in
/// five asks for the allowed image.
fn allowed_by_name(i: usize) -> bool {
    i.is_multiple_of(5)
}

/// Every line of the audit log as a record; a line that is not one whole
/// JSON object, or a last line without its newline, fails the scenario.
fn whole_records(log: &Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8(bytes).expect("the audit log is UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the audit log ends in a partial line: {:?}",
        text.lines().last()
    );
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let record: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("audit line {} is torn ({e}): {line}", n + 1));
            assert!(
                record["time"].is_string() && record["decision"].is_string(),
                "audit line {} is not a decision record: {line}",
                n + 1
            );
            record
        })
        .collect()
}

/// CreateContainer records by container name.
fn creates_by_name(records: &[serde_json::Value]) -> BTreeMap<String, Vec<String>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in records {
        if record["operation"] == "CreateContainer" {
            by_name
                .entry(record["container"].as_str().unwrap_or_default().into())
                .or_default()
                .push(record["decision"].as_str().unwrap_or_default().into());
        }
    }
    by_name
}

fn audit_lines(log: &Path) -> usize {
    std::fs::read(log)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn kill(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

async fn wait_until_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while process::alive(pid) {
        assert!(Instant::now() < deadline, "{what} ({pid}) outlived SIGKILL");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where the figures a scenario measured are written, beside the binaries.
fn figures(name: &str, value: &serde_json::Value) {
    let path = attestgate_e2e::node::bin_dir().join(format!("faults-{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    eprintln!("{name}: {value}\n(written to {})", path.display());
}

/// What a create worker was answered, by container name, in order, and
/// the failure that ended it (none if it was told to stop).
type WorkerRun = (Vec<(String, Outcome)>, Option<Outcome>);

/// Workers that create containers as fast as they are answered, each on
/// its own connection, until a call fails or `stop` is set.
fn create_workers(
    creator: &Creator,
    socket: &Path,
    workers: usize,
    allow: fn(usize) -> bool,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<WorkerRun>> {
    (0..workers)
        .map(|w| {
            let (creator, stop) = (creator.clone(), stop.clone());
            let socket = socket.display().to_string();
            tokio::spawn(async move {
                let cri = Cri::connect(&socket).await.unwrap();
                let mut answered = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return (answered, None);
                    }
                    let name = format!("w{w}-{i}");
                    match creator.create(&cri, &name, allow(i)).await {
                        failed @ Outcome::Failed(..) => return (answered, Some(failed)),
                        outcome => answered.push((name, outcome)),
                    }
                }
                unreachable!()
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_mid_decisions_leaves_whole_records_and_its_kept_socket_answers_after_restart()
 {
    let Some(mut s) = Decided::up().await else {
        return;
    };
    let args = s.proxy_args();
    s.node
        .start_proxy_supervised(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let socket = s.node.proxy_sock.clone();
    let cri = s.node.via_proxy().await;
    let pod = s.node.pod("prod", "burst");
    let pod_id = cri.run_pod(&pod).await.unwrap();
    let creator = s.creator(&pod, &pod_id);
    let first = s.node.supervised_proxy_pid();

    // Sixteen clients keep decisions in flight; the kill lands once a
    // hundred are recorded, in the middle of the rest.
    let stop = Arc::new(AtomicBool::new(false));
    let workers = create_workers(&creator, &socket, 16, allowed_by_name, &stop);
    let deadline = Instant::now() + HUNG;
    while audit_lines(&s.node.audit_log) < 100 {
        assert!(Instant::now() < deadline, "{}", s.node.proxy_log());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    kill("KILL", first);
    wait_until_gone(first, "the proxy").await;
    let mut answered = Vec::new();
    let mut lost = 0;
    for worker in workers {
        let (calls, end) = tokio::time::timeout(HUNG, worker).await.unwrap().unwrap();
        answered.extend(calls);
        match end {
            Some(Outcome::Failed(..)) => lost += 1,
            other => panic!("a client kept being answered by a killed proxy: {other:?}"),
        }
    }
    assert_eq!(lost, 16, "every client saw its connection go");

    let records = whole_records(&s.node.audit_log);
    let by_name = creates_by_name(&records);
    for (name, outcome) in &answered {
        let want = if *outcome == Outcome::Created {
            "allow"
        } else {
            "deny"
        };
        assert_eq!(
            by_name.get(name).map(Vec::as_slice),
            Some(&[want.to_string()][..]),
            "{name} was answered {outcome:?}, so it must have exactly one record"
        );
    }
    let recorded_unanswered = by_name.len() - answered.len();
    assert!(by_name.values().all(|d| d.len() == 1), "{by_name:?}");

    // The proxy is down; systemd's socket is not. Clients connect now and
    // wait in its backlog.
    let queued: Vec<_> = (0..4)
        .map(|q| {
            let (creator, socket) = (creator.clone(), socket.display().to_string());
            tokio::spawn(async move {
                let cri = Cri::connect(&socket).await.unwrap();
                let version = cri.version().await.map(|v| v.runtime_name);
                let denied = creator.create(&cri, &format!("q{q}-deny"), false).await;
                let allowed = creator.create(&cri, &format!("q{q}-allow"), true).await;
                (version, denied, allowed, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for q in &queued {
        assert!(
            !q.is_finished(),
            "a client was answered with no proxy running"
        );
    }
    let restarted = Instant::now();
    s.node.let_proxy_restart();
    let second = s.node.supervised_proxy_pid();
    assert_ne!(first, second);
    let mut queued_answered_after = Vec::new();
    for q in queued {
        let (version, denied, allowed, at) = tokio::time::timeout(HUNG, q).await.unwrap().unwrap();
        assert_eq!(version.expect("Version, queued"), "containerd");
        assert_eq!(denied, Outcome::Denied);
        assert_eq!(allowed, Outcome::Created);
        queued_answered_after.push(at.duration_since(restarted).as_millis());
    }

    // A client arriving now connects once and is served: no retrying.
    let fresh = Cri::connect(&socket.display().to_string())
        .await
        .expect("the first connect after the restart");
    fresh.version().await.expect("the first call after restart");
    assert_eq!(
        creator.create(&fresh, "after-deny", false).await,
        Outcome::Denied
    );
    assert_eq!(
        creator.create(&fresh, "after-allow", true).await,
        Outcome::Created
    );

    let records = whole_records(&s.node.audit_log);
    let by_name = creates_by_name(&records);
    for (name, want) in [
        ("q0-deny", "deny"),
        ("q1-deny", "deny"),
        ("q2-deny", "deny"),
        ("q3-deny", "deny"),
        ("q0-allow", "allow"),
        ("q1-allow", "allow"),
        ("q2-allow", "allow"),
        ("q3-allow", "allow"),
        ("after-deny", "deny"),
        ("after-allow", "allow"),
    ] {
        assert_eq!(
            by_name.get(name).map(Vec::as_slice),
            Some(&[want.to_string()][..]),
            "{name}"
        );
    }
    eprintln!(
        "killed with {} decisions answered and {recorded_unanswered} recorded whose answer the kill lost; {} audit lines, all whole; queued clients answered {queued_answered_after:?} ms after the restart was allowed",
        answered.len(),
        records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_killed_under_calls_in_flight_fails_each_at_once_and_the_same_proxy_serves_once_it_is_back()
 {
    let Some(mut s) = Decided::up().await else {
        return;
    };
    // An image of its own, pulled through a relay that trickles it out: the
    // pull is still fetching its layer when containerd dies.
    let (slow, slow_digest) = s.node.push_image("slow", "1", "sleep 3600");
    let relay = SlowRelay::start(&s.node.registry, 32 << 10).await;
    s.node.plain_http_registry(&relay.addr);
    let slow = slow.replacen(&s.node.registry, &relay.addr, 1);
    let key = s.node.dir().join("ci.key");
    s.node.attest("ci", &key, repository(&slow), &slow_digest);
    let args = s.proxy_args();
    s.node
        .start_proxy(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let proxy = s.node.proxy_pid().unwrap();
    let socket = s.node.proxy_sock.clone();
    let cri = s.node.via_proxy().await;
    let pod = s.node.pod("prod", "crash");
    let pod_id = cri.run_pod(&pod).await.unwrap();
    let creator = s.creator(&pod, &pod_id);
    assert_eq!(creator.create(&cri, "app", true).await, Outcome::Created);
    let app = cri
        .list_containers()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.metadata.as_ref().unwrap().name == "app")
        .unwrap()
        .id;
    cri.start_container(&app).await.unwrap();

    // In flight when containerd dies: a pull halfway through its layer, an
    // exec that sleeps in the app, and creates from four clients, decided
    // on what containerd says of their image.
    let pull = {
        let (cri, slow) = (cri.clone(), slow.clone());
        tokio::spawn(async move { tokio::time::timeout(HUNG, cri.pull(&slow, None)).await })
    };
    let exec = {
        let (cri, app) = (cri.clone(), app.clone());
        tokio::spawn(async move {
            let call = cri.exec_sync(&app, &["/bin/sh", "-c", "touch /running; sleep 60"]);
            tokio::time::timeout(HUNG, call).await
        })
    };
    // Their creates are of the denied image only: an allowed create cut off
    // by the kill can leave containerd (not the proxy) with a snapshot
    // directory its metadata lost, and later creates then fail in
    // containerd with "failed to rename …: file exists". Denied ones still
    // wait on containerd, for the image's digest.
    let stop = Arc::new(AtomicBool::new(false));
    let workers = create_workers(&creator, &socket, 4, |_| false, &stop);
    let direct = s.node.direct().await;
    let deadline = Instant::now() + HUNG;
    while relay.relayed.load(Ordering::Relaxed) < 64 << 10
        || direct
            .exec_sync(&app, &["/bin/test", "-e", "/running"])
            .await
            .map_or(true, |r| r.exit_code != 0)
    {
        assert!(Instant::now() < deadline, "the pull or the exec never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pull.is_finished(), "the pull was not slow enough");
    let killed = Instant::now();
    s.node.kill_containerd();

    let pull = pull.await.unwrap().expect("the pull hung");
    let exec = exec.await.unwrap().expect("the exec hung");
    let pull_failed = Outcome::of(pull);
    let exec_failed = exec.map(|_| ()).expect_err("an exec in a dead containerd");
    assert!(
        matches!(pull_failed, Outcome::Failed(..)),
        "the pull: {pull_failed:?}"
    );
    let answered_in = killed.elapsed();
    // Calls made while containerd is down fail too, rather than wait. The
    // proxy may end the connection before the client's handshake is
    // through: then the connect is what fails.
    let while_down = async {
        let down = Cri::connect(&socket.display().to_string())
            .await
            .map_err(|e| format!("connect: {e:#}"))?;
        let version = down.version().await.map_err(|e| format!("Version: {e:#}"));
        let create = creator.create(&down, "while-down", true).await;
        Ok::<_, String>((version, create))
    };
    let (version, create) = match tokio::time::timeout(HUNG, while_down)
        .await
        .expect("a call while containerd was down hung")
    {
        Ok((version, create)) => (
            version.expect_err("Version with no containerd"),
            format!("{create:?}"),
        ),
        Err(connect) => (connect, "not sent".into()),
    };
    assert!(!create.starts_with("Created"), "{create}");
    stop.store(true, Ordering::Relaxed);
    let mut ended = Vec::new();
    for worker in workers {
        let (_, end) = tokio::time::timeout(HUNG, worker).await.unwrap().unwrap();
        ended.push(end);
    }

    s.node.start_containerd();
    assert!(process::alive(proxy), "{}", s.node.proxy_log());
    relay.rate.store(0, Ordering::Relaxed);
    let back = Cri::connect(&socket.display().to_string()).await.unwrap();
    back.version()
        .await
        .expect("Version once containerd is back");
    assert_eq!(creator.create(&back, "back", true).await, Outcome::Created);
    assert_eq!(
        creator.create(&back, "back-deny", false).await,
        Outcome::Denied
    );
    back.pull(&slow, None)
        .await
        .expect("the pull once containerd is back");
    let hello = back
        .exec_sync(&app, &["/bin/echo", "hello"])
        .await
        .expect("the app outlived containerd");
    assert_eq!(hello.stdout, b"hello\n");
    // The client that was connected throughout: its next call is served.
    cri.version()
        .await
        .expect("the connection from before the crash");
    assert_eq!(s.node.proxy_pid(), Some(proxy), "the proxy never restarted");
    whole_records(&s.node.audit_log);
    eprintln!(
        "containerd killed: pull → {pull_failed:?}, exec → {exec_failed:#}, both within {answered_in:?}; while down Version → {version}, CreateContainer → {create}; creators ended with {ended:?}"
    );
}

/// How many CreateContainer calls the burst sends at once.
fn burst_size() -> usize {
    std::env::var("ATTESTGATE_BURST_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// One in how many of the burst's creates asks for the allowed image
/// (ATTESTGATE_BURST_ALLOW_EVERY, 5 unless set): allowed ones are real
/// containers, and 1 makes all thousand of them.
fn burst_allowed(i: usize) -> bool {
    let every = std::env::var("ATTESTGATE_BURST_ALLOW_EVERY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5);
    i.is_multiple_of(every)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_creates_at_once_are_each_answered_and_recorded_once() {
    let Some(mut s) = Decided::up().await else {
        return;
    };
    let args = s.proxy_args();
    s.node
        .start_proxy(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let n = burst_size();
    let socket = s.node.proxy_sock.display().to_string();
    // Four connections, as a few kubelets' worth of clients, each carrying
    // a quarter of the calls as concurrent HTTP/2 streams.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Cri::connect(&socket).await.unwrap());
    }
    let pod = s.node.pod("prod", "thousand");
    let pod_id = clients[0].run_pod(&pod).await.unwrap();
    let creator = s.creator(&pod, &pod_id);
    let started = Instant::now();
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (creator, cri) = (creator.clone(), clients[i % 4].clone());
            tokio::spawn(async move {
                let outcome = creator
                    .create(&cri, &format!("c{i}"), burst_allowed(i))
                    .await;
                (i, outcome, Instant::now())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    let wall = started.elapsed();
    let mut last_denied = Duration::ZERO;
    let mut last_created = Duration::ZERO;
    for (i, outcome, at) in &outcomes {
        let want = if burst_allowed(*i) {
            Outcome::Created
        } else {
            Outcome::Denied
        };
        assert_eq!(*outcome, want, "c{i}");
        let at = at.duration_since(started);
        if want == Outcome::Created {
            last_created = last_created.max(at);
        } else {
            last_denied = last_denied.max(at);
        }
    }
    let allowed = (0..n).filter(|&i| burst_allowed(i)).count();

    let by_name = creates_by_name(&whole_records(&s.node.audit_log));
    assert_eq!(by_name.len(), n, "one record per call");
    for i in 0..n {
        let want = if burst_allowed(i) { "allow" } else { "deny" };
        assert_eq!(
            by_name.get(&format!("c{i}")).map(Vec::as_slice),
            Some(&[want.to_string()][..]),
            "c{i}"
        );
    }
    let created = s
        .node
        .direct()
        .await
        .list_containers()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.pod_sandbox_id == pod_id)
        .count();
    assert_eq!(
        created, allowed,
        "exactly the allowed ones reached containerd"
    );
    figures(
        "burst",
        &serde_json::json!({
            "creates": n,
            "allowed": allowed,
            "denied": n - allowed,
            "connections": 4,
            "wall_ms": wall.as_millis(),
            "last_denied_answered_ms": last_denied.as_millis(),
            "last_created_answered_ms": last_created.as_millis(),
        }),
    );
}

/// How long the soak runs: ATTESTGATE_SOAK_SECS, else ten minutes where
/// the suite is required to run in full (CI), one elsewhere.
fn soak_duration() -> Duration {
    let secs = std::env::var("ATTESTGATE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if attestgate_e2e::node::required() {
            600
        } else {
            60
        });
    Duration::from_secs(secs)
}

const SAMPLE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: usize,
    calls: u64,
}

/// What one soak client did.
#[derive(Debug, Default)]
struct Tally {
    forwarded: u64,
    decided: u64,
    denied: u64,
    unexpected: Vec<String>,
}

/// One round of a soak client: three forwarded calls, then a pull by
/// digest and a create each allowed and denied; the created container is
/// removed again, so the node's state stays flat.
async fn soak_round(cri: &Cri, creator: &Creator, round: &str, tally: &mut Tally) {
    let expect = |what: &str, outcome: Outcome, want: Outcome, tally: &mut Tally| {
        tally.decided += 1;
        if outcome == Outcome::Denied {
            tally.denied += 1;
        }
        if outcome != want {
            tally
                .unexpected
                .push(format!("{what} {round}: {outcome:?}"));
        }
    };
    let forwarded = [
        cri.version().await.map(|_| ()),
        cri.list_containers().await.map(|_| ()),
        cri.image_status(&creator.allowed.reference)
            .await
            .map(|_| ()),
    ];
    for (n, result) in forwarded.into_iter().enumerate() {
        tally.forwarded += 1;
        if let Err(e) = result {
            tally
                .unexpected
                .push(format!("forwarded call {n} {round}: {e:#}"));
        }
    }
    for (image, want) in [
        (&creator.allowed, Outcome::Created),
        (&creator.denied, Outcome::Denied),
    ] {
        let by_digest = format!("{}@{}", repository(&image.reference), image.digest);
        let pulled = tokio::time::timeout(HUNG, cri.pull(&by_digest, None))
            .await
            .expect("a pull hung");
        expect("pull", Outcome::of(pulled), want, tally);
    }
    expect(
        "create",
        creator.create(cri, &format!("deny-{round}"), false).await,
        Outcome::Denied,
        tally,
    );
    let name = format!("allow-{round}");
    let image = &creator.allowed;
    let created = cri
        .create_container(
            &creator.pod_id,
            &creator.pod,
            &name,
            &image.id,
            &image.reference,
            &[],
        )
        .await;
    if let Ok(id) = &created {
        let removed = cri
            .runtime
            .clone()
            .remove_container(k8s_cri::v1::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await;
        tally.forwarded += 1;
        if let Err(e) = removed {
            tally.unexpected.push(format!("remove {name}: {e}"));
        }
    }
    expect("create", Outcome::of(created), Outcome::Created, tally);
}

/// The largest RSS and fd count among `samples` taken in `[from, to)` s.
fn peak(samples: &[Sample], from: f64, to: f64) -> (u64, usize) {
    samples
        .iter()
        .filter(|s| s.at_s >= from && s.at_s < to)
        .fold((0, 0), |(rss, fds), s| (rss.max(s.rss_kib), fds.max(s.fds)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_of_mixed_calls_errs_only_where_the_policy_denies_and_leaks_nothing() {
    let Some(mut s) = Decided::up().await else {
        return;
    };
    let args = s.proxy_args();
    s.node
        .start_proxy(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let proxy = s.node.proxy_pid().unwrap();
    let socket = s.node.proxy_sock.display().to_string();
    let setup = Cri::connect(&socket).await.unwrap();
    let pod = s.node.pod("prod", "soak");
    let pod_id = setup.run_pod(&pod).await.unwrap();
    let creator = s.creator(&pod, &pod_id);
    let duration = soak_duration();
    let started = Instant::now();
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (creator, socket, calls) = (creator.clone(), socket.clone(), calls.clone());
            tokio::spawn(async move {
                let cri = Cri::connect(&socket).await.unwrap();
                let mut tally = Tally::default();
                let mut round = 0;
                while started.elapsed() < duration {
                    soak_round(&cri, &creator, &format!("{c}-{round}"), &mut tally).await;
                    calls.fetch_add(8, Ordering::Relaxed);
                    round += 1;
                }
                tally
            })
        })
        .collect();
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        let (rss, _) = attestgate_e2e::metrics::rss(proxy);
        let sample = Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_kib: rss / 1024,
            fds: process::open_fds(proxy),
            calls: calls.load(Ordering::Relaxed),
        };
        eprintln!("soak sample {sample:?}");
        samples.push(sample);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let mut total = Tally::default();
    for client in clients {
        let tally = tokio::time::timeout(HUNG, client).await.unwrap().unwrap();
        total.forwarded += tally.forwarded;
        total.decided += tally.decided;
        total.denied += tally.denied;
        total.unexpected.extend(tally.unexpected);
    }
    let records = whole_records(&s.node.audit_log);

    // The first and the last minute, or quarter of a shorter soak.
    let secs = duration.as_secs_f64();
    let window = (secs / 4.0).min(60.0);
    let (first_rss, first_fds) = peak(&samples, 0.0, window);
    let (last_rss, last_fds) = peak(&samples, secs - window, secs + 1.0);
    figures(
        "soak",
        &serde_json::json!({
            "duration_s": secs,
            "window_s": window,
            "clients": 4,
            "forwarded_calls": total.forwarded,
            "decided_calls": total.decided,
            "denied": total.denied,
            "audit_records": records.len(),
            "first_window": {"rss_kib_max": first_rss, "fds_max": first_fds},
            "last_window": {"rss_kib_max": last_rss, "fds_max": last_fds},
            "samples": samples,
        }),
    );
    assert!(total.unexpected.is_empty(), "{:#?}", total.unexpected);
    assert_eq!(
        records.len() as u64,
        total.decided,
        "one record per decision"
    );
    assert!(
        last_fds <= first_fds + 8,
        "descriptors grew: {first_fds} in the first {window} s, {last_fds} in the last"
    );
    assert!(
        last_rss * 2 <= first_rss * 3 + 2 * 8 * 1024,
        "memory grew: {first_rss} KiB in the first {window} s, {last_rss} KiB in the last"
    );
}
