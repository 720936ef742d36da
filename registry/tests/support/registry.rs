//! A private Debian docker-registry (distribution 2.8) on 127.0.0.1 for
//! one test: its own port and storage in a temporary directory, optionally
//! behind htpasswd (bcrypt) Basic auth, stopped by PID on drop. Shared by
//! the registry and CLI tests (`#[path]`), so it uses std and tempfile
//! only.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

/// Whether end-to-end prerequisites must be there (CI) rather than skipped.
pub fn required() -> bool {
    std::env::var_os("ATTESTGATE_E2E_REQUIRED").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether `program` is on PATH; when it is not, the test is skipped, or
/// fails when ATTESTGATE_E2E_REQUIRED is set.
pub fn tool_available(program: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !required(),
            "{program} is missing (ATTESTGATE_E2E_REQUIRED is set): apt-get install {package}"
        );
        eprintln!("SKIPPED: {program} is missing (apt-get install {package})");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Registry {
    /// A registry anyone may push to; `None` when docker-registry is
    /// missing (skipped).
    pub fn start() -> Option<Registry> {
        Registry::start_with(None)
    }

    /// A registry that wants `user`/`password` (HTTP Basic); `None` when
    /// docker-registry or htpasswd is missing.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Option<Registry> {
        if !tool_available("htpasswd", "apache2-utils") {
            return None;
        }
        // distribution 2.8 reads only bcrypt entries.
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd");
        assert!(out.status.success(), "htpasswd failed");
        Registry::start_with(Some(String::from_utf8(out.stdout).expect("htpasswd line")))
    }

    fn start_with(htpasswd: Option<String>) -> Option<Registry> {
        if !tool_available("docker-registry", "docker-registry") {
            return None;
        }
        // Another test may take the port between our probe and the
        // registry's bind; then the registry exits and we try another.
        for _ in 0..5 {
            if let Some(registry) = Registry::try_start(htpasswd.as_deref()) {
                return Some(registry);
            }
        }
        panic!("docker-registry would not start on any port");
    }

    fn try_start(htpasswd: Option<&str>) -> Option<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("ag-sigreg.")
            .tempdir()
            .expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
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
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth}",
                dir.path().join("data").display(),
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let access = std::fs::File::create(dir.path().join("access.log")).expect("log");
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
            // 401 is an answer too: the registry with auth is up.
            if matches!(registry.get_status("/v2/"), Some(200 | 401)) {
                return Some(registry);
            }
            if let Ok(Some(_)) = registry.child.try_wait() {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
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

    /// Stops the registry by its PID and waits for it; idempotent.
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
