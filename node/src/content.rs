//! The multi-arch link (SPEC §11): which platform manifest this node pulled
//! through an image index, read from containerd's own content store.
//!
//! containerd's image record for `repo:tag` (or `repo@<index digest>`)
//! targets the index, while the CRI image id is the platform's config
//! digest. A signature may name either manifest, so the proxy needs both
//! digests (the shim, which of an index's platforms a container can be
//! running), and it must not take the second from the registry or from the
//! index's labels: containerd labels *every* child of an index
//! (`containerd.io/gc.ref.content.m.<i>`), not only the one it pulled
//! (docs/design/registry-signatures.md §0.5, §4). The child that was pulled
//! is the one whose blob is in the content store and whose config label is
//! the image id; this module asks containerd for exactly that.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use attestgate_policy::Digest;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetImageRequest, InfoRequest, ReadContentRequest};
use sha2::Digest as _;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// The namespace containerd's CRI plugin keeps kubelet's images in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// An index names a few dozen manifests in a few KiB; four MiB is far past
/// any real one and still small enough to hold in memory for a pull.
pub const MAX_INDEX_BYTES: usize = 4 << 20;

/// The label containerd's pull puts on a manifest blob, naming its config.
const CONFIG_LABEL: &str = "containerd.io/gc.ref.content.config";

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The link between an image index and the platform manifest this node
/// pulled through it, read from containerd's content store, never assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformLink {
    pub index: Digest,
    pub platform: Digest,
}

/// An index and those of its children whose manifests containerd holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformsPresent {
    pub index: Digest,
    pub present: Vec<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("cannot reach containerd at {socket}: {source}")]
    Unreachable {
        socket: String,
        source: tonic::transport::Error,
    },
    #[error("containerd did not answer {what} within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("containerd: {what}: {status}")]
    Containerd { what: String, status: tonic::Status },
    #[error("namespace {0:?} cannot be sent to containerd")]
    Namespace(String),
    #[error("image {name}: containerd's record has no usable target: {reason}")]
    Target { name: String, reason: String },
    #[error("blob {digest} is larger than {limit} bytes")]
    TooLarge { digest: Digest, limit: usize },
    #[error("blob {digest} came back out of order (offset {offset}, expected {expected})")]
    Stream {
        digest: Digest,
        offset: i64,
        expected: usize,
    },
    #[error("blob {expected} hashes to {actual}")]
    DigestMismatch { expected: Digest, actual: String },
    #[error("index {digest} is not a readable image index: {reason}")]
    Unparsable { digest: Digest, reason: String },
    #[error("index {index}: more than one child is present with config {image_id}: {candidates:?}")]
    Ambiguous {
        index: Digest,
        image_id: String,
        candidates: Vec<Digest>,
    },
}

impl ContentError {
    /// Whether the connection itself may be at fault, so the next call
    /// should dial again rather than reuse it.
    fn reconnect(&self) -> bool {
        match self {
            ContentError::Unreachable { .. } | ContentError::Timeout { .. } => true,
            ContentError::Containerd { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            _ => false,
        }
    }
}

/// containerd's content store and image records, over its gRPC socket (the
/// CRI `runtime_endpoint`: containerd serves its own API there too).
pub struct ContentStore {
    socket: PathBuf,
    namespace: String,
    timeout: Duration,
    /// Dialled at the first call, dropped after a failure that may be the
    /// connection's, so a restarted containerd is reached again.
    channel: Mutex<Option<Channel>>,
}

impl ContentStore {
    /// Connects lazily: containerd may start after the proxy.
    pub fn new(socket: &Path, namespace: &str, timeout: Duration) -> ContentStore {
        ContentStore {
            socket: socket.to_path_buf(),
            namespace: namespace.to_string(),
            timeout,
            channel: Mutex::new(None),
        }
    }

    /// For the image containerd stores under `name` (a CRI image name, as
    /// in ImageStatus' repo_digests or repo_tags), whose CRI image id (the
    /// config digest) is `image_id`: `Ok(None)` when its target is a single
    /// manifest; for an index, the child this node pulled, proven by being
    /// in the content store with its config label equal to `image_id`
    /// (`Ok(None)` when no child is).
    pub async fn platform_link(
        &self,
        name: &str,
        image_id: &str,
    ) -> Result<Option<PlatformLink>, ContentError> {
        let channel = self.channel().await?;
        let containerd = Containerd {
            channel,
            namespace: &self.namespace,
            timeout: self.timeout,
        };
        let result = link(&containerd, name, image_id).await;
        if let Err(e) = &result
            && e.reconnect()
        {
            self.forget();
        }
        result
    }

    /// The platform manifests of the index `name` targets that are in the
    /// content store: what a container made from `name` can be running.
    /// None when `name` targets a single manifest.
    pub async fn platforms_present(
        &self,
        name: &str,
    ) -> Result<Option<PlatformsPresent>, ContentError> {
        let channel = self.channel().await?;
        let containerd = Containerd {
            channel,
            namespace: &self.namespace,
            timeout: self.timeout,
        };
        let result = children_present(&containerd, name).await;
        if let Err(e) = &result
            && e.reconnect()
        {
            self.forget();
        }
        Ok(result?.map(|(index, present)| PlatformsPresent {
            index,
            present: present.into_iter().map(|(child, _)| child).collect(),
        }))
    }

    async fn channel(&self) -> Result<Channel, ContentError> {
        if let Some(channel) = self.cached() {
            return Ok(channel);
        }
        let channel = tokio::time::timeout(self.timeout, containerd_client::connect(&self.socket))
            .await
            .map_err(|_| ContentError::Timeout {
                what: format!("a connection on {}", self.socket.display()),
                timeout: self.timeout,
            })?
            .map_err(|source| ContentError::Unreachable {
                socket: self.socket.display().to_string(),
                source,
            })?;
        // Two calls racing here each dial; the last one kept is as good.
        if let Ok(mut slot) = self.channel.lock() {
            *slot = Some(channel.clone());
        }
        Ok(channel)
    }

    fn cached(&self) -> Option<Channel> {
        // A poisoned lock only means a panic elsewhere mid-assignment of an
        // Option; dialling afresh is always correct.
        self.channel.lock().ok().and_then(|slot| slot.clone())
    }

    fn forget(&self) {
        if let Ok(mut slot) = self.channel.lock() {
            *slot = None;
        }
    }
}

/// The image record's target descriptor, as far as the link needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    media_type: String,
    digest: Digest,
    size: i64,
}

/// What the link reads from containerd: the seam between the walk below
/// and the real client, so the walk is tested without containerd.
trait Store {
    async fn target(&self, name: &str) -> Result<Target, ContentError>;
    /// The blob, at most `limit` bytes of it.
    async fn read(&self, digest: &Digest, limit: usize) -> Result<Vec<u8>, ContentError>;
    /// The blob's labels; `None` when it is not in the content store.
    async fn labels(
        &self,
        digest: &Digest,
    ) -> Result<Option<HashMap<String, String>>, ContentError>;
}

async fn link<S: Store>(
    store: &S,
    name: &str,
    image_id: &str,
) -> Result<Option<PlatformLink>, ContentError> {
    let Some((index, present)) = children_present(store, name).await? else {
        return Ok(None);
    };
    Ok(
        choose_platform(&index, image_id, present)?
            .map(|platform| PlatformLink { index, platform }),
    )
}

/// The index `name` targets, with those of its children whose blobs are in
/// the content store (each with its config label, if any); none when
/// `name` targets a single manifest.
async fn children_present<S: Store>(
    store: &S,
    name: &str,
) -> Result<Option<(Digest, Vec<(Digest, Option<String>)>)>, ContentError> {
    let target = store.target(name).await?;
    if !is_index(&target.media_type) {
        return Ok(None);
    }
    // The record's size is what containerd fetched; refuse before reading.
    if usize::try_from(target.size).map_or(true, |size| size > MAX_INDEX_BYTES) {
        return Err(ContentError::TooLarge {
            digest: target.digest,
            limit: MAX_INDEX_BYTES,
        });
    }
    let bytes = store.read(&target.digest, MAX_INDEX_BYTES).await?;
    verify_blob(&target.digest, &bytes)?;
    let children = parse_index(&target.digest, &bytes)?;
    let mut present = Vec::with_capacity(children.len());
    for child in children {
        if let Some(labels) = store.labels(&child).await? {
            present.push((child, labels.get(CONFIG_LABEL).cloned()));
        }
    }
    Ok(Some((target.digest, present)))
}

/// Whether a descriptor's media type is a list of manifests.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// The blob's bytes hash to its digest: containerd verified them once at
/// the pull, and this checks that what was read is that blob.
fn verify_blob(expected: &Digest, bytes: &[u8]) -> Result<(), ContentError> {
    let actual = match expected.as_str().split_once(':') {
        Some(("sha512", _)) => format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes))),
        // Digest::parse admits only sha256 and sha512.
        _ => format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))),
    };
    if actual == expected.as_str() {
        Ok(())
    } else {
        Err(ContentError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

/// The wire shape of an OCI image index / Docker manifest list: only what
/// the link reads.
#[derive(serde::Deserialize)]
struct IndexDocument {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    manifests: Vec<ChildDescriptor>,
}

#[derive(serde::Deserialize)]
struct ChildDescriptor {
    digest: String,
}

/// The index's children, in its order, each once. A child whose digest is
/// malformed makes the whole index unreadable: the index is what was
/// signed, and half of it is not what the signer saw.
fn parse_index(digest: &Digest, bytes: &[u8]) -> Result<Vec<Digest>, ContentError> {
    let unparsable = |reason: String| ContentError::Unparsable {
        digest: digest.clone(),
        reason,
    };
    let document: IndexDocument =
        serde_json::from_slice(bytes).map_err(|e| unparsable(e.to_string()))?;
    if document.schema_version != 2 {
        return Err(unparsable(format!(
            "schemaVersion {}, expected 2",
            document.schema_version
        )));
    }
    if let Some(media_type) = &document.media_type
        && !is_index(media_type)
    {
        return Err(unparsable(format!("mediaType {media_type}")));
    }
    let mut children: Vec<Digest> = Vec::with_capacity(document.manifests.len());
    for child in document.manifests {
        let child = Digest::parse(&child.digest).map_err(|e| unparsable(e.to_string()))?;
        if !children.contains(&child) {
            children.push(child);
        }
    }
    Ok(children)
}

/// Among the children present in the content store (with their config
/// label, if any), the one whose config is the image: none is `None`, two
/// different ones are an error, since neither can be proven the one pulled.
fn choose_platform(
    index: &Digest,
    image_id: &str,
    present: Vec<(Digest, Option<String>)>,
) -> Result<Option<Digest>, ContentError> {
    let mut matching: Vec<Digest> = present
        .into_iter()
        .filter(|(_, config)| config.as_deref() == Some(image_id))
        .map(|(child, _)| child)
        .collect();
    matching.dedup();
    match matching.len() {
        0 => Ok(None),
        1 => Ok(matching.pop()),
        _ => Err(ContentError::Ambiguous {
            index: index.clone(),
            image_id: image_id.to_string(),
            candidates: matching,
        }),
    }
}

/// Appends one streamed chunk at `offset`, refusing gaps, overlaps and
/// anything past `limit`.
fn append_chunk(
    digest: &Digest,
    blob: &mut Vec<u8>,
    offset: i64,
    data: &[u8],
    limit: usize,
) -> Result<(), ContentError> {
    if usize::try_from(offset).ok() != Some(blob.len()) {
        return Err(ContentError::Stream {
            digest: digest.clone(),
            offset,
            expected: blob.len(),
        });
    }
    if blob.len().saturating_add(data.len()) > limit {
        return Err(ContentError::TooLarge {
            digest: digest.clone(),
            limit,
        });
    }
    blob.extend_from_slice(data);
    Ok(())
}

/// The real store: containerd's Images and Content services.
struct Containerd<'a> {
    channel: Channel,
    namespace: &'a str,
    timeout: Duration,
}

impl Containerd<'_> {
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ContentError> {
        // containerd_client::with_namespace! would panic on a namespace
        // that is not a header value; ours comes from configuration.
        let value = MetadataValue::try_from(self.namespace)
            .map_err(|_| ContentError::Namespace(self.namespace.to_string()))?;
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("containerd-namespace", value);
        Ok(request)
    }

    async fn bounded<T>(
        &self,
        what: impl Fn() -> String,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, ContentError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ContentError::Timeout {
                what: what(),
                timeout: self.timeout,
            })?
            .map_err(|status| ContentError::Containerd {
                what: what(),
                status,
            })
    }
}

impl Store for Containerd<'_> {
    async fn target(&self, name: &str) -> Result<Target, ContentError> {
        let request = self.request(GetImageRequest {
            name: name.to_string(),
        })?;
        let response = self
            .bounded(
                || format!("image {name}"),
                ImagesClient::new(self.channel.clone()).get(request),
            )
            .await?;
        let no_target = |reason: &str| ContentError::Target {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let target = response
            .into_inner()
            .image
            .and_then(|image| image.target)
            .ok_or_else(|| no_target("no target descriptor"))?;
        let digest = Digest::parse(&target.digest).map_err(|e| no_target(&e.to_string()))?;
        Ok(Target {
            media_type: target.media_type,
            digest,
            size: target.size,
        })
    }

    async fn read(&self, digest: &Digest, limit: usize) -> Result<Vec<u8>, ContentError> {
        let what = || format!("reading {digest}");
        let request = self.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            // 0: to the end of the blob.
            size: 0,
        })?;
        // One bound for the whole blob, not per chunk: a containerd that
        // trickles bytes must not hold the caller longer than one call.
        tokio::time::timeout(self.timeout, async {
            let mut stream = ContentClient::new(self.channel.clone())
                .read(request)
                .await
                .map_err(|status| ContentError::Containerd {
                    what: what(),
                    status,
                })?
                .into_inner();
            let mut blob = Vec::new();
            while let Some(chunk) =
                stream
                    .message()
                    .await
                    .map_err(|status| ContentError::Containerd {
                        what: what(),
                        status,
                    })?
            {
                append_chunk(digest, &mut blob, chunk.offset, &chunk.data, limit)?;
            }
            Ok(blob)
        })
        .await
        .map_err(|_| ContentError::Timeout {
            what: what(),
            timeout: self.timeout,
        })?
    }

    async fn labels(
        &self,
        digest: &Digest,
    ) -> Result<Option<HashMap<String, String>>, ContentError> {
        let request = self.request(InfoRequest {
            digest: digest.to_string(),
        })?;
        match self
            .bounded(
                || format!("content info {digest}"),
                ContentClient::new(self.channel.clone()).info(request),
            )
            .await
        {
            Ok(response) => Ok(Some(
                response
                    .into_inner()
                    .info
                    .map(|info| info.labels)
                    .unwrap_or_default(),
            )),
            // Not fetched: another platform's manifest, listed but not pulled.
            Err(ContentError::Containerd { status, .. })
                if status.code() == tonic::Code::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn sha256(bytes: &[u8]) -> Digest {
        Digest::parse(&format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
        .unwrap()
    }

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn index_json(children: &[&Digest]) -> Vec<u8> {
        let manifests: Vec<_> = children
            .iter()
            .zip(["amd64", "arm64", "s390x"])
            .map(|(digest, arch)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest.as_str(),
                    "size": 500,
                    "platform": {"architecture": arch, "os": "linux"},
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        }))
        .unwrap()
    }

    #[test]
    fn index_media_types_are_recognised() {
        assert!(is_index(OCI_INDEX));
        assert!(is_index(DOCKER_MANIFEST_LIST));
        assert!(!is_index("application/vnd.oci.image.manifest.v1+json"));
        assert!(!is_index(
            "application/vnd.docker.distribution.manifest.v2+json"
        ));
        assert!(!is_index(""));
    }

    #[test]
    fn a_blob_that_hashes_to_its_digest_verifies() {
        let bytes = index_json(&[&d('a')]);
        verify_blob(&sha256(&bytes), &bytes).unwrap();
        let sha512 = Digest::parse(&format!(
            "sha512:{}",
            hex::encode(sha2::Sha512::digest(&bytes))
        ))
        .unwrap();
        verify_blob(&sha512, &bytes).unwrap();
    }

    #[test]
    fn verify_blob_failure_because_one_byte_differs() {
        let bytes = index_json(&[&d('a')]);
        let digest = sha256(&bytes);
        let mut tampered = bytes.clone();
        tampered[0] = b' ';
        let err = verify_blob(&digest, &tampered).unwrap_err();
        assert!(
            matches!(&err, ContentError::DigestMismatch { expected, actual }
                if *expected == digest && *actual == sha256(&tampered).to_string()),
            "{err:?}"
        );
    }

    #[test]
    fn an_index_lists_its_children_in_order_once_each() {
        let bytes = index_json(&[&d('a'), &d('b'), &d('a')]);
        let children = parse_index(&sha256(&bytes), &bytes).unwrap();
        assert_eq!(children, vec![d('a'), d('b')]);
    }

    #[test]
    fn a_docker_manifest_list_without_media_type_parses() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d('c')
        );
        let children = parse_index(&d('f'), bytes.as_bytes()).unwrap();
        assert_eq!(children, vec![d('c')]);
    }

    #[test]
    fn parse_index_failure_because_not_an_index() {
        let cases: &[&[u8]] = &[
            b"",
            b"not json",
            b"{\"schemaVersion\":2}",
            b"{\"schemaVersion\":1,\"manifests\":[]}",
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#,
            br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:short"}]}"#,
            br#"{"schemaVersion":2,"manifests":[{"digest":"md5:00"}]}"#,
        ];
        for bytes in cases {
            let err = parse_index(&d('f'), bytes).unwrap_err();
            assert!(
                matches!(&err, ContentError::Unparsable { digest, .. } if *digest == d('f')),
                "{}: {err:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn the_child_whose_config_is_the_image_is_the_platform() {
        let present = vec![
            (d('a'), Some("sha256:other".to_string())),
            (d('b'), Some("sha256:config".to_string())),
            (d('c'), None),
        ];
        assert_eq!(
            choose_platform(&d('f'), "sha256:config", present).unwrap(),
            Some(d('b'))
        );
    }

    #[test]
    fn no_child_with_the_images_config_is_no_link() {
        let present = vec![(d('a'), Some("sha256:other".to_string())), (d('c'), None)];
        assert_eq!(
            choose_platform(&d('f'), "sha256:config", present).unwrap(),
            None
        );
        assert_eq!(
            choose_platform(&d('f'), "sha256:config", vec![]).unwrap(),
            None
        );
    }

    #[test]
    fn choose_platform_failure_because_two_children_share_the_config() {
        let present = vec![
            (d('a'), Some("sha256:config".to_string())),
            (d('b'), Some("sha256:config".to_string())),
        ];
        let err = choose_platform(&d('f'), "sha256:config", present).unwrap_err();
        assert!(
            matches!(&err, ContentError::Ambiguous { candidates, .. } if *candidates == vec![d('a'), d('b')]),
            "{err:?}"
        );
    }

    #[test]
    fn chunks_append_in_order_up_to_the_limit() {
        let digest = d('a');
        let mut blob = Vec::new();
        append_chunk(&digest, &mut blob, 0, b"abc", 6).unwrap();
        append_chunk(&digest, &mut blob, 3, b"def", 6).unwrap();
        assert_eq!(blob, b"abcdef");
        assert!(matches!(
            append_chunk(&digest, &mut blob, 6, b"g", 6),
            Err(ContentError::TooLarge { limit: 6, .. })
        ));
        assert!(matches!(
            append_chunk(&digest, &mut blob, 2, b"", 6),
            Err(ContentError::Stream {
                offset: 2,
                expected: 6,
                ..
            })
        ));
        assert!(matches!(
            append_chunk(&digest, &mut blob, -1, b"", 6),
            Err(ContentError::Stream { .. })
        ));
    }

    /// containerd as the walk sees it: image records, blobs, and the
    /// labels of the blobs that are present.
    #[derive(Default)]
    struct FakeStore {
        targets: HashMap<String, Target>,
        blobs: HashMap<Digest, Vec<u8>>,
        labels: HashMap<Digest, HashMap<String, String>>,
    }

    impl Store for FakeStore {
        async fn target(&self, name: &str) -> Result<Target, ContentError> {
            self.targets
                .get(name)
                .cloned()
                .ok_or_else(|| ContentError::Containerd {
                    what: name.to_string(),
                    status: tonic::Status::not_found("image"),
                })
        }
        async fn read(&self, digest: &Digest, limit: usize) -> Result<Vec<u8>, ContentError> {
            let blob = self.blobs.get(digest).cloned().unwrap_or_default();
            let mut out = Vec::new();
            append_chunk(digest, &mut out, 0, &blob, limit)?;
            Ok(out)
        }
        async fn labels(
            &self,
            digest: &Digest,
        ) -> Result<Option<HashMap<String, String>>, ContentError> {
            Ok(self.labels.get(digest).cloned())
        }
    }

    /// An index of amd64 (`a`, pulled, config `sha256:amd64-config`) and
    /// arm64 (`b`, listed only), labelled as containerd labels it: both
    /// children on the index.
    fn pulled_index() -> (FakeStore, Digest) {
        let bytes = index_json(&[&d('a'), &d('b')]);
        let index = sha256(&bytes);
        let mut store = FakeStore::default();
        store.targets.insert(
            "reg/app:1".into(),
            Target {
                media_type: OCI_INDEX.into(),
                digest: index.clone(),
                size: bytes.len() as i64,
            },
        );
        store.blobs.insert(index.clone(), bytes);
        store.labels.insert(
            index.clone(),
            HashMap::from([
                (
                    "containerd.io/gc.ref.content.m.0".into(),
                    d('a').to_string(),
                ),
                (
                    "containerd.io/gc.ref.content.m.1".into(),
                    d('b').to_string(),
                ),
            ]),
        );
        store.labels.insert(
            d('a'),
            HashMap::from([(CONFIG_LABEL.into(), "sha256:amd64-config".into())]),
        );
        (store, index)
    }

    #[tokio::test]
    async fn the_pulled_child_is_linked_not_the_listed_one() {
        let (store, index) = pulled_index();
        let got = link(&store, "reg/app:1", "sha256:amd64-config")
            .await
            .unwrap();
        assert_eq!(
            got,
            Some(PlatformLink {
                index,
                platform: d('a')
            })
        );
    }

    #[tokio::test]
    async fn only_the_children_whose_blobs_are_held_are_present() {
        let (mut store, index) = pulled_index();
        let got = children_present(&store, "reg/app:1").await.unwrap();
        assert_eq!(
            got,
            Some((
                index.clone(),
                vec![(d('a'), Some("sha256:amd64-config".to_string()))]
            ))
        );
        // The other platform fetched too (`ctr pull --platform`).
        store.labels.insert(d('b'), HashMap::new());
        let (_, present) = children_present(&store, "reg/app:1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            present,
            vec![(d('a'), Some("sha256:amd64-config".into())), (d('b'), None)]
        );
    }

    #[tokio::test]
    async fn a_child_listed_but_not_pulled_is_no_link() {
        let (store, _) = pulled_index();
        // The arm64 config: labelled nowhere, since its manifest was never fetched.
        let got = link(&store, "reg/app:1", "sha256:arm64-config")
            .await
            .unwrap();
        assert_eq!(got, None);
    }

    #[tokio::test]
    async fn a_single_manifest_is_no_link() {
        let mut store = FakeStore::default();
        store.targets.insert(
            "reg/one:1".into(),
            Target {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: d('a'),
                size: 500,
            },
        );
        assert_eq!(link(&store, "reg/one:1", "sha256:x").await.unwrap(), None);
    }

    #[tokio::test]
    async fn link_failure_because_the_index_blob_is_not_its_digest() {
        let (mut store, index) = pulled_index();
        store
            .blobs
            .insert(index.clone(), index_json(&[&d('b'), &d('a')]));
        let err = link(&store, "reg/app:1", "sha256:amd64-config")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ContentError::DigestMismatch { expected, .. } if *expected == index),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn link_failure_because_the_index_is_too_large() {
        let (mut store, _) = pulled_index();
        if let Some(target) = store.targets.get_mut("reg/app:1") {
            target.size = MAX_INDEX_BYTES as i64 + 1;
        }
        let err = link(&store, "reg/app:1", "sha256:amd64-config")
            .await
            .unwrap_err();
        assert!(matches!(err, ContentError::TooLarge { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn link_failure_because_containerd_has_no_such_image() {
        let (store, _) = pulled_index();
        let err = link(&store, "reg/missing:1", "sha256:x").await.unwrap_err();
        assert!(
            matches!(&err, ContentError::Containerd { status, .. } if status.code() == tonic::Code::NotFound),
            "{err:?}"
        );
    }

    /// The proxy awaits the link on its multi-threaded runtime.
    #[test]
    fn the_link_can_be_awaited_from_any_thread() {
        fn send<T: Send>(_: &T) {}
        let store = ContentStore::new(Path::new("/nonexistent"), CRI_NAMESPACE, Duration::ZERO);
        send(&store.platform_link("reg/app:1", "sha256:x"));
    }

    #[tokio::test]
    async fn an_unreachable_containerd_is_an_error_and_is_dialled_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::new(
            &dir.path().join("absent.sock"),
            CRI_NAMESPACE,
            Duration::from_secs(5),
        );
        for _ in 0..2 {
            let err = store
                .platform_link("reg/app:1", "sha256:x")
                .await
                .unwrap_err();
            assert!(matches!(err, ContentError::Unreachable { .. }), "{err:?}");
            assert!(store.cached().is_none());
        }
    }
}
