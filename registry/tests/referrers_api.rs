//! A registry with the OCI referrers API (distribution-spec 1.1: zot,
//! Harbor, ghcr, and the cloud registries), which the registries that
//! install here (distribution 2.8) do not have: a small fake on 127.0.0.1
//! answers it, so that the listing's answer is what the lookup reads and
//! the fallback tag is not asked for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use attestgate_policy::{Digest, RegistrySignature};
use attestgate_registry::oci::RegistryOptions;
use attestgate_registry::signatures::{
    SIGSTORE_BUNDLE_V03, SignatureLimits, lookup, referrers_tag, sig_tag,
};
use base64::Engine as _;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What the fake serves: paths under `/v2/app/` with their media type and
/// body; anything else is 404. Every request line is kept.
#[derive(Default)]
struct Fake {
    routes: HashMap<String, (String, Vec<u8>)>,
    seen: Vec<String>,
}

async fn serve(listener: TcpListener, fake: Arc<Mutex<Fake>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let fake = fake.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let Ok(n) = stream.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            let request = text.lines().next().unwrap_or_default().to_string();
            let target = request.split(' ').nth(1).unwrap_or_default().to_string();
            let path = target.split('?').next().unwrap_or_default().to_string();
            let found = {
                let mut fake = fake.lock().unwrap();
                fake.seen.push(target.clone());
                fake.routes.get(&path).cloned()
            };
            let head_only = request.starts_with("HEAD ");
            let response = match found {
                Some((media_type, body)) => {
                    let mut response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {media_type}\r\nDocker-Content-Digest: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        sha256(&body),
                        body.len()
                    )
                    .into_bytes();
                    if !head_only {
                        response.extend_from_slice(&body);
                    }
                    response
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Serves `fake` on 127.0.0.1 for the test's life; returns it shared, its
/// address, and options that reach it over plain HTTP.
async fn start(fake: Fake) -> (Arc<Mutex<Fake>>, String, RegistryOptions) {
    let fake = Arc::new(Mutex::new(fake));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve(listener, fake.clone()));
    let options = RegistryOptions {
        plain_http: vec![addr.clone()],
        ..RegistryOptions::default()
    };
    (fake, addr, options)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A sigstore bundle v0.3 holding a DSSE envelope, as cosign 3 writes it.
fn bundle(payload: &[u8], sig: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "mediaType": SIGSTORE_BUNDLE_V03,
        "verificationMaterial": {"publicKey": {"hint": "aGludA=="}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64(payload),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": b64(sig), "keyid": ""}],
        },
    }))
    .unwrap()
}

/// A referrer manifest: one layer of `layer_type` holding `blob`, with
/// `subject` as its subject.
fn referrer(subject: &str, layer_type: &str, blob: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": layer_type,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": sha256(b"{}"),
            "size": 2,
        },
        "layers": [{"mediaType": layer_type, "digest": sha256(blob), "size": blob.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 500},
    }))
    .unwrap()
}

fn descriptor(artifact_type: &str, manifest: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "digest": sha256(manifest),
        "size": manifest.len(),
    })
}

#[tokio::test]
async fn the_referrers_api_s_listing_is_read_and_the_fallback_tag_is_not() {
    let image = Digest::parse(&sha256(b"the image manifest")).unwrap();
    let other = sha256(b"another image");
    let statement = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;

    let mut fake = Fake::default();
    let mut put = |path: String, media_type: &str, body: Vec<u8>| {
        fake.routes.insert(path, (media_type.to_string(), body));
    };
    let signed_bundle = bundle(statement, b"signature-bytes");
    let signed = referrer(image.as_str(), SIGSTORE_BUNDLE_V03, &signed_bundle);
    // A referrer of another image, listed anyway: not trusted.
    let decoy_bundle = bundle(statement, b"decoy");
    let decoy = referrer(&other, SIGSTORE_BUNDLE_V03, &decoy_bundle);
    // An SBOM: the API may ignore the artifactType filter.
    let sbom_blob = b"{\"spdxVersion\":\"SPDX-2.3\"}".to_vec();
    let sbom = referrer(image.as_str(), "application/spdx+json", &sbom_blob);
    let listing = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(SIGSTORE_BUNDLE_V03, &signed),
            descriptor(SIGSTORE_BUNDLE_V03, &decoy),
            descriptor("application/spdx+json", &sbom),
        ],
    }))
    .unwrap();
    put(format!("/v2/app/referrers/{image}"), OCI_INDEX, listing);
    for (manifest, blob) in [
        (&signed, &signed_bundle),
        (&decoy, &decoy_bundle),
        (&sbom, &sbom_blob),
    ] {
        put(
            format!("/v2/app/manifests/{}", sha256(manifest)),
            OCI_MANIFEST,
            manifest.clone(),
        );
        put(
            format!("/v2/app/blobs/{}", sha256(blob)),
            "application/octet-stream",
            blob.clone(),
        );
    }
    let (fake, addr, options) = start(fake).await;

    let found = lookup(&options, &addr, "app", &image, &SignatureLimits::default())
        .await
        .unwrap();
    assert_eq!(
        found.signatures,
        vec![RegistrySignature::Dsse {
            payload_type: "application/vnd.in-toto+json".into(),
            payload: statement.to_vec(),
            signatures: vec![b"signature-bytes".to_vec()],
        }],
        "{:?}",
        found.problems
    );
    assert!(
        found
            .problems
            .iter()
            .any(|p| p.contains(&format!("its subject is {other}"))),
        "{:?}",
        found.problems
    );
    let seen = fake.lock().unwrap().seen.clone();
    let asked = |path: &str| seen.iter().any(|s| s.starts_with(path));
    assert!(
        seen.iter()
            .any(|s| s.starts_with(&format!("/v2/app/referrers/{image}?artifactType="))),
        "the listing is asked for bundles: {seen:?}"
    );
    assert!(
        asked(&format!("/v2/app/manifests/{}", sig_tag(&image))),
        "cosign's tag is looked at too: {seen:?}"
    );
    assert!(
        !seen.iter().any(|s| {
            let fallback = format!("/v2/app/manifests/{}", referrers_tag(&image));
            s == &fallback || s.starts_with(&format!("{fallback}?"))
        }),
        "the fallback tag was read though the API answered: {seen:?}"
    );
    assert!(
        !asked(&format!("/v2/app/manifests/{}", sha256(&sbom))),
        "an artifact of another type was fetched: {seen:?}"
    );
}

#[tokio::test]
async fn a_referrers_listing_that_is_no_index_adds_nothing() {
    let image = Digest::parse(&sha256(b"the image manifest")).unwrap();
    let mut fake = Fake::default();
    fake.routes.insert(
        format!("/v2/app/referrers/{image}"),
        (OCI_INDEX.into(), b"<html>not json</html>".to_vec()),
    );
    let (_, addr, options) = start(fake).await;
    let found = lookup(&options, &addr, "app", &image, &SignatureLimits::default())
        .await
        .unwrap();
    assert!(found.signatures.is_empty());
    assert!(
        found
            .problems
            .iter()
            .any(|p| p.contains("not an image index")),
        "{:?}",
        found.problems
    );
}
