//! The last sync, from what attestgate-sync leaves (sync/src/versions.rs):
//! `STATE/last.json`, rewritten whenever a poll fetched the source whole,
//! naming the source and the version directory it led to, and the bundle
//! symlink pointing into `STATE/versions/`. A poll that found the source
//! unchanged writes nothing, so only the syncer's metrics, when it serves
//! them, tell how the last poll ended.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;

use super::report::{Check, span};
use super::root::Root;
use super::scrape;

const NAME: &str = "sync";

/// What doctor reads of `last.json`; the syncer writes more.
#[derive(Deserialize)]
struct Last {
    source: String,
    #[serde(default)]
    version: Option<String>,
}

pub struct Sync<'a> {
    pub source: Option<&'a str>,
    pub state: &'a Path,
    pub bundle: &'a Path,
    pub metrics_listen: Option<&'a str>,
}

pub fn check(root: &Root, sync: &Sync<'_>, now: OffsetDateTime, timeout: Duration) -> Check {
    let Some(source) = sync.source else {
        return Check::pass(
            NAME,
            "bundle_source is not set: sync is not configured, the bundle directory is loaded as it is",
        );
    };
    let state = sync.state.display();
    let run = "run `attestgate-sync --config /etc/attestgate/config.toml --once` (0 updated, 1 refused, \
               2 unreachable: it says why), then `systemctl enable --now attestgate-sync.service`";
    let last_path = sync.state.join("last.json");
    let real_last = root.path(&last_path);
    let text = match std::fs::read(&real_last) {
        Ok(text) => text,
        Err(e) => {
            return Check::fail(
                NAME,
                format!(
                    "no sync recorded from {source}: {}: {e}",
                    last_path.display()
                ),
                run,
            );
        }
    };
    let last: Last = match serde_json::from_slice(&text) {
        Ok(last) => last,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("{}: not the syncer's record: {e}", last_path.display()),
                format!("remove {} and {run}", last_path.display()),
            );
        }
    };
    if last.source != source {
        return Check::fail(
            NAME,
            format!(
                "the last sync recorded in {state} was from {}, not bundle_source {source}",
                last.source
            ),
            run,
        );
    }
    let Some(version) = last.version else {
        return Check::fail(
            NAME,
            format!("{} names no version", last_path.display()),
            run,
        );
    };
    let age = std::fs::metadata(&real_last)
        .and_then(|m| m.modified())
        .map(|t| span((now - OffsetDateTime::from(t)).whole_seconds()))
        .unwrap_or_else(|_| "an unknown time".into());
    let expected = root.path(&sync.state.join("versions").join(&version));
    let in_force = root.follow(sync.bundle);
    let same = match (expected.canonicalize(), in_force.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return Check::fail(
            NAME,
            format!(
                "the bundle path {} is not the version {version} the last sync from {source} made current",
                sync.bundle.display()
            ),
            format!(
                "let attestgate-sync own {}: move a hand-made bundle away, then {run}",
                sync.bundle.display()
            ),
        );
    }
    let fetched = format!("last fetched {version} from {source} {age} ago, in force");
    let Some(addr) = sync.metrics_listen else {
        return Check::pass(
            NAME,
            format!(
                "{fetched} (polls that find nothing new leave no record: set sync_metrics_listen to see the last one)"
            ),
        );
    };
    let body = match scrape::metrics(addr, timeout) {
        Ok(body) => body,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("{fetched}, but its metrics do not answer: {e}"),
                "is attestgate-sync running? `systemctl status attestgate-sync`",
            );
        }
    };
    let success = scrape::samples(&body, "attestgate_sync_last_success_timestamp_seconds")
        .map(|(_, v)| v)
        .fold(0.0, f64::max);
    let failure = scrape::samples(&body, "attestgate_sync_last_failure_timestamp_seconds").fold(
        None,
        |best: Option<(&str, f64)>, (labels, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((labels, v)),
        },
    );
    let ago = |t: f64| span(now.unix_timestamp() - t as i64);
    match failure {
        Some((labels, at)) if at > success => Check::fail(
            NAME,
            format!(
                "{fetched}; the last poll failed {} ago ({labels}){}",
                ago(at),
                if success > 0.0 {
                    format!(", the last good one was {} ago", ago(success))
                } else {
                    ", none has succeeded since the syncer started".into()
                }
            ),
            "`journalctl -u attestgate-sync` says why (refused: what the source serves; unreachable: the network or the registry)",
        ),
        _ if success > 0.0 => Check::pass(
            NAME,
            format!("{fetched}; the last poll succeeded {} ago", ago(success)),
        ),
        _ => Check::fail(
            NAME,
            format!("{fetched}; the syncer at {addr} has not finished a poll yet"),
            "wait a sync_interval, or `journalctl -u attestgate-sync`",
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read as _, Write as _};

    use super::*;

    /// A syncer's state whose last fetch is in force, and a metrics
    /// endpoint that answers `body` once.
    fn synced(body: &'static str) -> (tempfile::TempDir, Root, String) {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p);
        std::fs::create_dir_all(at("state/versions/v2-t2-r1")).unwrap();
        std::fs::write(
            at("state/last.json"),
            r#"{"source":"file:///repo","validator":"x","version":"v2-t2-r1"}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink("/state/versions/v2-t2-r1", at("bundle")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    return;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(answer.as_bytes()).unwrap();
        });
        let root = Root::new(dir.path().to_path_buf());
        (dir, root, addr)
    }

    fn run(root: &Root, addr: &str, now: i64) -> Check {
        check(
            root,
            &Sync {
                source: Some("file:///repo"),
                state: Path::new("/state"),
                bundle: Path::new("/bundle"),
                metrics_listen: Some(addr),
            },
            OffsetDateTime::from_unix_timestamp(now).unwrap(),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn the_syncer_s_metrics_tell_how_the_last_poll_ended() {
        let (_dir, root, addr) = synced(
            "attestgate_sync_last_success_timestamp_seconds 1000\n\
             attestgate_sync_last_failure_timestamp_seconds{reason=\"expired\"} 900\n",
        );
        let good = run(&root, &addr, 1060);
        assert!(good.ok, "{good:?}");
        assert!(good.detail.contains("succeeded 1m ago"), "{good:?}");

        let (_dir, root, addr) = synced(
            "attestgate_sync_last_success_timestamp_seconds 1000\n\
             attestgate_sync_last_failure_timestamp_seconds{reason=\"signature\"} 1030\n",
        );
        let bad = run(&root, &addr, 1060);
        assert!(!bad.ok, "{bad:?}");
        assert!(
            bad.detail.contains("failed 30s ago (reason=\"signature\")"),
            "{bad:?}"
        );

        let (_dir, root, addr) = synced("attestgate_sync_last_success_timestamp_seconds 0\n");
        assert!(!run(&root, &addr, 1060).ok);
    }

    #[test]
    fn without_a_source_sync_is_not_configured_and_a_missing_state_fails() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().to_path_buf());
        let mut sync = Sync {
            source: None,
            state: Path::new("/state"),
            bundle: Path::new("/bundle"),
            metrics_listen: None,
        };
        let now = OffsetDateTime::now_utc();
        let timeout = Duration::from_secs(1);
        assert!(check(&root, &sync, now, timeout).ok);
        sync.source = Some("file:///repo");
        let missing = check(&root, &sync, now, timeout);
        assert!(
            !missing.ok && missing.detail.contains("no sync recorded"),
            "{missing:?}"
        );
    }
}
