//! A private Debian docker-registry (distribution 2.8) on 127.0.0.1, for
//! the bundle artifact and registry signature scenarios: its own port,
//! storage in a temporary directory, optionally HTTPS or behind htpasswd
//! (bcrypt) Basic auth, stopped by PID on drop, and an access log to count
//! requests by.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::node::required;

pub struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

/// Whether `program` is on PATH; when it is not, a scenario is skipped,
/// or fails when ATTESTGATE_E2E_REQUIRED is set.
pub fn tool_available(program: &str) -> bool {
    let package = match program {
        "htpasswd" => "apache2-utils",
        other => other,
    };
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if required() {
            panic!(
                "{program} is missing (ATTESTGATE_E2E_REQUIRED is set): apt-get install {package}"
            );
        }
        eprintln!("SKIPPED: {program} is missing (apt-get install {package})");
    }
    found
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Registry {
    /// Starts a registry anyone may push to; `None` when docker-registry
    /// is missing (skipped).
    pub fn start() -> Option<Registry> {
        Registry::start_with(None)
    }

    /// Starts a registry serving HTTPS with `certificate` and `key` (PEM
    /// files), or plain HTTP with `None`.
    pub fn start_with(tls: Option<(&Path, &Path)>) -> Option<Registry> {
        Registry::launch(tls, None)
    }

    /// Starts a plain-HTTP registry that wants `user`/`password` (HTTP
    /// Basic, from an htpasswd file); `None` when docker-registry or
    /// htpasswd is missing (skipped).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Option<Registry> {
        if !tool_available("htpasswd") {
            return None;
        }
        // distribution 2.8 reads only bcrypt entries.
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd");
        assert!(out.status.success(), "htpasswd failed");
        let line = String::from_utf8(out.stdout).expect("htpasswd line");
        Registry::launch(None, Some(&line))
    }

    fn launch(tls: Option<(&Path, &Path)>, htpasswd: Option<&str>) -> Option<Registry> {
        if !tool_available("docker-registry") {
            return None;
        }
        // Another test may take the port between our probe and the
        // registry's bind; then the registry exits and we try another.
        let mut log = String::new();
        for _ in 0..5 {
            match Registry::try_start(tls, htpasswd) {
                Ok(registry) => return Some(registry),
                Err(exited) => log = exited,
            }
        }
        panic!("docker-registry would not start on any port: {log}");
    }

    /// The registry once it answers, or its log when it exited first.
    fn try_start(tls: Option<(&Path, &Path)>, htpasswd: Option<&str>) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("ag-reg.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let auth = match htpasswd {
            Some(line) => {
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, line).expect("htpasswd file");
                format!(
                    "auth:\n  htpasswd:\n    realm: attestgate-test\n    path: {}\n",
                    path.display()
                )
            }
            None => String::new(),
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {addr}
{}{auth}",
                dir.path().join("data").display(),
                tls.map_or(String::new(), |(certificate, key)| format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    certificate.display(),
                    key.display()
                ))
            ),
        )
        .unwrap();
        // distribution writes its access log (one line per request) to
        // stdout, everything else to stderr.
        let access = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(access)
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let mut registry = Registry { dir, child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = match tls {
                None => registry.answers(),
                // The TLS handshake is the client's business; a listening
                // port is enough here.
                Some(_) => TcpStream::connect(&registry.addr).is_ok(),
            };
            if up {
                return Ok(registry);
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(format!("exited ({status}): {}", registry.log()));
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `GET /v2/` is answered: 200, or 401 from one with auth.
    fn answers(&self) -> bool {
        matches!(self.get_status("/v2/"), Some(200 | 401))
    }

    /// Where the registry keeps blob `digest` (`sha256:…`) on disk: a test
    /// may damage it to play a registry that serves wrong bytes.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The access log's request lines (`GET /v2/… HTTP/1.1`) so far.
    pub fn access_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.access_log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let start = line.find('"')? + 1;
                let end = start + line[start..].find('"')?;
                Some(line[start..end].to_string())
            })
            .collect()
    }

    /// The requests logged after the first `mark` ones, once the log has
    /// stopped growing (it is written as each request completes).
    pub fn requests_since(&self, mark: usize) -> Vec<String> {
        let mut last = self.access_lines().len();
        let mut still = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && still.elapsed() < Duration::from_millis(400) {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.access_lines().len();
            if now != last {
                last = now;
                still = Instant::now();
            }
        }
        self.access_lines().split_off(mark.min(last))
    }

    /// A stable count to measure from: [`Registry::requests_since`].
    pub fn mark(&self) -> usize {
        self.requests_since(0).len()
    }

    fn get_status(&self, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(&self.addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    /// Starts the registry again after [`Registry::stop`], on the same
    /// address and storage: a registry that was down and is back.
    pub fn restart(&mut self) {
        self.stop();
        let append = |name: &str| {
            std::fs::File::options()
                .append(true)
                .open(self.dir.path().join(name))
                .unwrap()
        };
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(append("access.log"))
            .stderr(append("registry.log"))
            .spawn()
            .expect("docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not come back: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the registry (by its PID) and waits for it; idempotent.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
