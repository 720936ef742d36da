//! Registries that hand out tokens (Docker Hub, ghcr, Harbor): the token
//! dance happens once, its token serves later polls, so an unchanged poll
//! stays one request; 5xx and 429 count as unreachable. A small fake on
//! 127.0.0.1 plays the registry and its token service, as distribution
//! with token auth needs a signing certificate setup out of proportion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use attestgate_registry::oci::{
    self, ARTIFACT_TYPE, Credentials, EMPTY_CONFIG_MEDIA_TYPE, Fetched, Limits, OciRef,
    RegistryOptions,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct Fake {
    /// Each request as `METHOD PATH auth=… inm=…`.
    seen: Vec<String>,
    /// Answer manifests with this status instead (503, 429).
    fail_with: Option<u16>,
}

fn manifest() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(b"{}"))),
            "size": 2
        },
        "layers": []
    }))
    .unwrap()
}

async fn serve(listener: TcpListener, fake: Arc<Mutex<Fake>>) {
    let addr = listener.local_addr().unwrap();
    let body = manifest();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.lines();
        let request = lines.next().unwrap_or_default().to_string();
        let header = |name: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let auth = header("authorization");
        let inm = header("if-none-match");
        let path = request.split(' ').nth(1).unwrap_or_default().to_string();
        let fail = {
            let mut fake = fake.lock().unwrap();
            fake.seen.push(format!(
                "{} auth={auth} inm={inm}",
                request.rsplit_once(' ').map_or(&*request, |(r, _)| r)
            ));
            fake.fail_with
        };
        let response = if path.starts_with("/token") {
            // Basic dXNlcjpwYXNz is user:pass.
            if auth == "Basic dXNlcjpwYXNz" && path.contains("scope=repository%3Ab%3Apull") {
                let token = br#"{"token":"T0K3N","expires_in":300}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    token.len(),
                    String::from_utf8_lossy(token)
                )
            } else {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            }
        } else if let Some(status) = fail {
            format!("HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        } else if auth != "Bearer T0K3N" {
            format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\",scope=\"repository:b:pull\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        } else if inm == format!("\"{digest}\"") {
            "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".into()
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {digest}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                String::from_utf8_lossy(&body)
            )
        };
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

#[tokio::test]
async fn a_token_is_fetched_once_and_serves_later_polls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = Arc::new(Mutex::new(Fake::default()));
    tokio::spawn(serve(listener, fake.clone()));
    let from = OciRef::parse(&format!("oci://{addr}/b:v1")).unwrap();
    let mut options = RegistryOptions {
        plain_http: vec![addr.clone()],
        credentials: Credentials::Basic {
            username: "user".into(),
            password: "pass".into(),
        },
        ..RegistryOptions::default()
    };
    let work = tempfile::tempdir().unwrap();
    let limits = Limits::default();

    let (fetched, traffic) = oci::fetch(
        &from,
        None,
        &work.path().join("a"),
        &work.path().join("blobs"),
        &options,
        &limits,
    )
    .await
    .unwrap();
    let Fetched::New {
        manifest_digest, ..
    } = fetched
    else {
        panic!("{fetched:?}")
    };
    assert_eq!(traffic.requests, 3, "challenge, token, manifest");
    let seen = std::mem::take(&mut fake.lock().unwrap().seen);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[0].contains("auth=Basic"),
        "credentials go first: {seen:?}"
    );
    assert!(seen[1].starts_with("GET /token?"), "{seen:?}");
    assert!(seen[2].contains("auth=Bearer T0K3N"), "{seen:?}");

    let (fetched, traffic) = oci::fetch(
        &from,
        Some(&manifest_digest),
        &work.path().join("b"),
        &work.path().join("blobs"),
        &options,
        &limits,
    )
    .await
    .unwrap();
    assert_eq!(fetched, Fetched::Unchanged);
    assert_eq!(traffic.requests, 1);
    let seen = std::mem::take(&mut fake.lock().unwrap().seen);
    assert_eq!(
        seen,
        [format!(
            "GET /v2/b/manifests/v1 auth=Bearer T0K3N inm=\"{manifest_digest}\""
        )]
    );

    for (status, reason) in [
        (503, "unreachable"),
        (429, "unreachable"),
        (400, "bad_response"),
    ] {
        fake.lock().unwrap().fail_with = Some(status);
        let error = oci::fetch(
            &from,
            Some(&manifest_digest),
            &work.path().join("c"),
            &work.path().join("blobs"),
            &options,
            &limits,
        )
        .await
        .unwrap_err();
        assert_eq!(error.reason(), reason, "{status}: {error}");
        assert!(error.is_unreachable(), "{status}");
    }
    fake.lock().unwrap().fail_with = None;

    // Wrong credentials: the token service refuses them.
    options.credentials = Credentials::Basic {
        username: "user".into(),
        password: "wrong".into(),
    };
    let error = oci::fetch(
        &from,
        None,
        &work.path().join("d"),
        &work.path().join("blobs"),
        &options,
        &limits,
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "unauthorized", "{error}");
    assert!(!error.to_string().contains("wrong"), "no secret in {error}");
}
