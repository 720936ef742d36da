//! Registry signatures laid out as other tools lay them out (SPEC §11),
//! from their published formats and with nothing of attestgate's between
//! the test and the registry: cosign's `.sig` manifest, a sigstore bundle
//! v0.3 referrer and the OCI referrers fallback tag, pushed with raw HTTP
//! requests; keys and signatures made by the `openssl` command.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use serde_json::json;
use sha2::Digest as _;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Pushes blobs and manifests to one repository as any client would.
pub struct Raw {
    client: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Raw {
    /// `addr` is `host:port` over plain HTTP; `repository` the path.
    pub fn new(addr: &str, repository: &str, auth: Option<(&str, &str)>) -> Raw {
        Raw {
            client: reqwest::Client::new(),
            base: format!("http://{addr}/v2/{repository}"),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    fn with_auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((u, p)) => request.basic_auth(u, Some(p)),
            None => request,
        }
    }

    pub async fn blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let begun = self
            .with_auth(self.client.post(format!("{}/blobs/uploads/", self.base)))
            .send()
            .await
            .expect("upload start");
        assert_eq!(begun.status(), 202, "upload start");
        let location = begun.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!(
                "{}{location}",
                self.base.split("/v2/").next().unwrap_or_default()
            )
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        self.put(
            &format!("{location}{separator}digest={digest}"),
            "application/octet-stream",
            bytes,
            "blob upload",
        )
        .await;
        digest
    }

    /// PUTs `manifest` under `reference` (a tag, or None for its digest);
    /// its digest.
    pub async fn manifest(
        &self,
        reference: Option<&str>,
        media_type: &str,
        manifest: &[u8],
    ) -> String {
        let digest = sha256(manifest);
        let reference = reference.unwrap_or(&digest);
        self.put(
            &format!("{}/manifests/{reference}", self.base),
            media_type,
            manifest,
            &format!("manifest {reference}"),
        )
        .await;
        digest
    }

    /// PUTs `body` as `content_type` to `url`, which must answer 201.
    async fn put(&self, url: &str, content_type: &str, body: &[u8], what: &str) {
        let put = self
            .with_auth(
                self.client
                    .put(url)
                    .header("content-type", content_type)
                    .body(body.to_vec()),
            )
            .send()
            .await
            .expect(what);
        assert_eq!(
            put.status(),
            201,
            "{what}: {}",
            put.text().await.unwrap_or_default()
        );
    }

    pub async fn get(&self, path: &str, accept: &str) -> Vec<u8> {
        let response = self
            .with_auth(
                self.client
                    .get(format!("{}/{path}", self.base))
                    .header("accept", accept),
            )
            .send()
            .await
            .expect("get");
        assert!(response.status().is_success(), "GET {path}");
        response.bytes().await.expect("body").to_vec()
    }

    /// A small image (config + one layer) under `tag`, never run; its
    /// digest.
    pub async fn image(&self, tag: &str, seed: &str) -> String {
        let config = json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}, "seed": seed}).to_string();
        let layer = format!("layer of {seed}").into_bytes();
        let config_digest = self.blob(config.as_bytes()).await;
        let layer_digest = self.blob(&layer).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}]
        })
        .to_string();
        self.manifest(Some(tag), OCI_MANIFEST, manifest.as_bytes())
            .await
    }

    /// A `.sig` manifest of `layers` (payload, annotation value) under
    /// cosign's tag for `digest`, in `media_type`'s flavour; its bytes.
    pub async fn sig(
        &self,
        digest: &str,
        layers: &[(Vec<u8>, String)],
        media_type: &str,
    ) -> Vec<u8> {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (payload, annotation) in layers {
            let d = self.blob(payload).await;
            diff_ids.push(d.clone());
            descriptors.push(json!({
                "mediaType": COSIGN_SIMPLESIGNING,
                "size": payload.len(),
                "digest": d,
                "annotations": {COSIGN_SIGNATURE_ANNOTATION: annotation}
            }));
        }
        let config = json!({"architecture":"","created":"0001-01-01T00:00:00Z","os":"","rootfs":{"type":"layers","diff_ids":diff_ids},"config":{}}).to_string();
        let config_digest = self.blob(config.as_bytes()).await;
        let config_type = if media_type == DOCKER_MANIFEST {
            DOCKER_CONFIG
        } else {
            OCI_CONFIG
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest},
            "layers": descriptors
        })
        .to_string()
        .into_bytes();
        let tag = format!("{}.sig", digest.replace(':', "-"));
        self.manifest(Some(&tag), media_type, &manifest).await;
        manifest
    }

    /// A referrer manifest (bundle layer, empty config, `subject`) pushed
    /// by digest; its descriptor for the fallback index.
    pub async fn referrer(&self, subject: &str, bundle: &[u8]) -> serde_json::Value {
        let empty = self.blob(b"{}").await;
        let layer = self.blob(bundle).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SIGSTORE_BUNDLE_V03,
            "config": {"mediaType": EMPTY, "digest": empty, "size": 2},
            "layers": [{"mediaType": SIGSTORE_BUNDLE_V03, "digest": layer, "size": bundle.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
            "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"}
        })
        .to_string()
        .into_bytes();
        let digest = self.manifest(None, OCI_MANIFEST, &manifest).await;
        json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(), "artifactType": SIGSTORE_BUNDLE_V03})
    }

    /// The fallback index of `digest` (tag `sha256-<hex>`) listing
    /// `descriptors`.
    pub async fn fallback_index(&self, digest: &str, descriptors: Vec<serde_json::Value>) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
            .to_string();
        let tag = digest.replace(':', "-");
        self.manifest(Some(&tag), OCI_INDEX, index.as_bytes()).await;
    }
}

/// Key pairs made by openssl, signatures made and checked by openssl.
pub struct Keys {
    dir: tempfile::TempDir,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new()
    }
}

impl Keys {
    pub fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().expect("key dir"),
        }
    }

    pub fn openssl(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl");
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.unwrap_or_default())
                .expect("openssl stdin");
        }
        let out = child.wait_with_output().expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `name.pem` (private) and `name.pub` (PKIX); `kind` is `ec`
    /// (ecparam, SEC1), `ec8` (genpkey, PKCS#8) or `rsa`. The private
    /// key's path.
    pub fn make(&self, name: &str, kind: &str) -> PathBuf {
        let private = format!("{name}.pem");
        match kind {
            "ec" => self.openssl(
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &private,
                ],
                None,
            ),
            "ec8" => self.openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &private,
                ],
                None,
            ),
            _ => self.openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    &private,
                ],
                None,
            ),
        };
        self.openssl(
            &[
                "pkey",
                "-in",
                &private,
                "-pubout",
                "-out",
                &format!("{name}.pub"),
            ],
            None,
        );
        self.dir.path().join(private)
    }

    pub fn public_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pub"))
    }

    pub fn public_pem(&self, name: &str) -> String {
        std::fs::read_to_string(self.public_path(name)).expect("public key")
    }

    /// SHA-256 and the key's own scheme: DER ECDSA, PKCS#1 v1.5 RSA.
    pub fn sign(&self, name: &str, data: &[u8]) -> Vec<u8> {
        self.openssl(
            &["dgst", "-sha256", "-sign", &format!("{name}.pem")],
            Some(data),
        )
    }

    pub fn verifies(&self, name: &str, data: &[u8], signature: &[u8]) -> bool {
        let sig = self.dir.path().join("check.sig");
        if std::fs::write(&sig, signature).is_err() {
            return false;
        }
        Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                &format!("{name}.pub"),
                "-signature",
            ])
            .arg(&sig)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(data)?;
                }
                child.wait()
            })
            .is_ok_and(|s| s.success())
    }
}

/// cosign's simple-signing payload, written out from its published shape.
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{docker_reference}\"}},\"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
    )
    .into_bytes()
}

/// The in-toto statement cosign 3 signs for an image.
pub fn statement(digest: &str) -> Vec<u8> {
    let hex = digest.trim_start_matches("sha256:");
    format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#
    )
    .into_bytes()
}

/// DSSE's pre-authentication encoding, from the DSSE protocol text.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A key-signed sigstore bundle of `statement`.
pub fn bundle(media_type: &str, statement: &[u8], signature: &[u8]) -> Vec<u8> {
    json!({
        "mediaType": media_type,
        "verificationMaterial": {"publicKey": {"hint": "aGludA=="}},
        "dsseEnvelope": {
            "payload": b64(statement),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": b64(signature), "keyid": ""}]
        }
    })
    .to_string()
    .into_bytes()
}
