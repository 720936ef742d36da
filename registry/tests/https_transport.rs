//! The https transport and the one-request timestamp poll against a real
//! web server on 127.0.0.1: Python's http.server, which sends Last-Modified
//! (no ETag) and answers If-Modified-Since with 304.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use attestgate_registry::https::{HttpsTransport, timestamp_unchanged};
use attestgate_registry::oci::RegistryOptions;
use futures_util::TryStreamExt;
use tough::{Transport, TransportErrorKind};
use url::Url;

struct WebServer {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl WebServer {
    /// Serves `root`, logging requests to `log`; `None` (skipped) without
    /// python3, unless ATTESTGATE_E2E_REQUIRED is set.
    fn start(root: &Path, log: PathBuf) -> Option<WebServer> {
        WebServer::start_trying(root, log, 3)
    }

    fn start_trying(root: &Path, log: PathBuf, tries: u32) -> Option<WebServer> {
        let required =
            std::env::var_os("ATTESTGATE_E2E_REQUIRED").is_some_and(|v| v != "0" && !v.is_empty());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if !required => {
                eprintln!("SKIPPED: python3 is missing: {e}");
                return None;
            }
            Err(e) => panic!("python3 is missing (ATTESTGATE_E2E_REQUIRED is set): {e}"),
        };
        let addr = format!("127.0.0.1:{port}");
        let mut server = WebServer { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&server.addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("http.server exited ({status})");
            }
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // What answered may be another test's server that took the port
        // first, this one having exited on "address in use": try again.
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(status)) = server.child.try_wait() {
            assert!(tries > 1, "http.server keeps exiting ({status})");
            return WebServer::start_trying(root, server.log.clone(), tries - 1);
        }
        Some(server)
    }

    /// The request lines logged so far (`GET /x HTTP/1.1" 304 -`).
    fn requests(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once('"').map(|(_, rest)| rest.to_string()))
            .collect()
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sets `path`'s modification time `seconds` into the past.
fn age(path: &Path, seconds: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(seconds))
        .unwrap();
}

fn options(server: &WebServer) -> RegistryOptions {
    RegistryOptions {
        plain_http: vec![server.addr.clone()],
        timeout: Duration::from_secs(5),
        ..RegistryOptions::default()
    }
}

#[tokio::test]
async fn files_stream_capped_and_missing_ones_are_not_found() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("www");
    std::fs::create_dir_all(root.join("metadata")).unwrap();
    std::fs::create_dir_all(root.join("targets")).unwrap();
    std::fs::write(root.join("metadata/1.root.json"), b"{\"root\":1}").unwrap();
    std::fs::write(root.join("targets/big"), vec![1u8; 4096]).unwrap();
    let Some(server) = WebServer::start(&root, work.path().join("server.log")) else {
        return;
    };
    let transport = HttpsTransport::new(&options(&server), 1024).unwrap();
    let base = Url::parse(&format!("http://{}/", server.addr)).unwrap();

    let stream = transport
        .fetch(base.join("metadata/1.root.json").unwrap())
        .await
        .unwrap();
    let chunks: Vec<tough::Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), b"{\"root\":1}");

    let missing = transport
        .fetch(base.join("metadata/2.root.json").unwrap())
        .await
        .err()
        .unwrap();
    assert_eq!(missing.kind(), TransportErrorKind::FileNotFound);

    let big = transport.fetch(base.join("targets/big").unwrap()).await;
    let error = match big {
        Err(e) => e,
        Ok(stream) => stream.try_collect::<Vec<_>>().await.unwrap_err(),
    };
    assert_eq!(error.kind(), TransportErrorKind::Other);
    assert!(
        std::error::Error::source(&error)
            .unwrap()
            .to_string()
            .contains("1024"),
        "{error}"
    );

    // Plain http only where listed: the same server by another name is not.
    let port = server.addr.rsplit(':').next().unwrap();
    let other = Url::parse(&format!("http://localhost:{port}/metadata/1.root.json")).unwrap();
    let error = transport.fetch(other).await.err().unwrap();
    assert_eq!(error.kind(), TransportErrorKind::UnsupportedUrlScheme);
}

#[tokio::test]
async fn an_unchanged_timestamp_costs_one_conditional_request() {
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("www/repo/metadata");
    std::fs::create_dir_all(&metadata).unwrap();
    let timestamp = metadata.join("timestamp.json");
    std::fs::write(&timestamp, b"{\"version\":1}").unwrap();
    age(&timestamp, 60);
    let Some(mut server) =
        WebServer::start(&work.path().join("www"), work.path().join("server.log"))
    else {
        return;
    };
    let options = options(&server);
    let base = Url::parse(&format!("http://{}/repo/", server.addr)).unwrap();

    let (unchanged, first) = timestamp_unchanged(&base, None, &options).await.unwrap();
    assert!(!unchanged);
    assert!(first.contains(" last-modified:"), "{first}");
    let before = server.requests().len();
    let (unchanged, second) = timestamp_unchanged(&base, Some(&first), &options)
        .await
        .unwrap();
    assert!(unchanged);
    assert_eq!(second, first);
    let requests = server.requests().split_off(before);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with("GET /repo/metadata/timestamp.json HTTP/1.1\" 304"),
        "{requests:?}"
    );

    // A new timestamp (modified later than the one seen) is seen.
    std::fs::write(&timestamp, b"{\"version\":2}").unwrap();
    age(&timestamp, 30);
    let (unchanged, third) = timestamp_unchanged(&base, Some(&second), &options)
        .await
        .unwrap();
    assert!(!unchanged);
    assert_ne!(third, second);

    // Just written: its date is not trusted, so the next poll is an
    // unconditional GET, still one request, decided by the content hash.
    std::fs::write(&timestamp, b"{\"version\":3}").unwrap();
    let (unchanged, fresh) = timestamp_unchanged(&base, Some(&third), &options)
        .await
        .unwrap();
    assert!(!unchanged);
    assert!(!fresh.contains("last-modified"), "{fresh}");
    let before = server.requests().len();
    let (unchanged, _) = timestamp_unchanged(&base, Some(&fresh), &options)
        .await
        .unwrap();
    assert!(unchanged);
    let requests = server.requests().split_off(before);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].contains("\" 200"), "{requests:?}");

    server.stop();
    let error = timestamp_unchanged(&base, Some(&fresh), &options)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "unreachable", "{error}");
    assert!(error.is_unreachable());
}
