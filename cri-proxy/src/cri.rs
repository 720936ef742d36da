//! The CRI as the proxy knows it: the API versions, how a call is routed,
//! what is served at all, and the facts about pods and images that the
//! decisions read. A leaf: it imports nothing else of the proxy.

use std::collections::BTreeMap;

use attestgate_policy::{Digest, ImageRef, PodContext, PodRef};

/// Which CRI version a request came in on; the proxy asks back in the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V1,
    V1alpha2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Pull(Api),
    Create(Api),
    /// Forwarded as it came, once no create by name is being checked (see
    /// `intercept::Unconfirmed`); never decoded.
    Start,
    /// Any other ImageService call, when `image_endpoint` is not the
    /// runtime's: forwarded there whole, since one relayed connection goes
    /// to one endpoint. Never what `route` gives: the relay's hooks choose it.
    Image,
    Forward,
}

pub fn route(path: &str) -> Route {
    // gRPC servers route on "service/method" after dropping one leading
    // slash (grpc-go before 1.79.3 even without it), so both spellings must
    // be decided: otherwise "runtime.v1.ImageService/PullImage" would pull
    // with no decision.
    match path.strip_prefix('/').unwrap_or(path) {
        "runtime.v1.ImageService/PullImage" => Route::Pull(Api::V1),
        "runtime.v1alpha2.ImageService/PullImage" => Route::Pull(Api::V1alpha2),
        "runtime.v1.RuntimeService/CreateContainer" => Route::Create(Api::V1),
        "runtime.v1alpha2.RuntimeService/CreateContainer" => Route::Create(Api::V1alpha2),
        "runtime.v1.RuntimeService/StartContainer"
        | "runtime.v1alpha2.RuntimeService/StartContainer" => Route::Start,
        _ => Route::Forward,
    }
}

/// Whether `path` is a call to the ImageService, either version.
pub fn is_image_service(path: &str) -> bool {
    let name = path.strip_prefix('/').unwrap_or(path);
    ["runtime.v1.ImageService/", "runtime.v1alpha2.ImageService/"]
        .iter()
        .any(|service| name.starts_with(service))
}

/// Whether a call is one this endpoint serves: the CRI, both versions,
/// methods added to it later included, and the gRPC health check.
///
/// containerd serves its own API (images, content, containers, tasks) on
/// the same socket as the CRI. Passed on from here, it would pull and run
/// any image with no decision and no record, for whoever may use this
/// socket. gRPC servers route by the service name before the last `/`
/// (after one leading slash, dropped), and only the CRI's services have
/// names under these prefixes.
pub fn served(path: &str) -> bool {
    let name = path.strip_prefix('/').unwrap_or(path);
    ["runtime.v1.", "runtime.v1alpha2.", "grpc.health.v1.Health/"]
        .iter()
        .any(|service| name.starts_with(service))
}

/// Pod identity and metadata: from a PodSandboxConfig, or as the runtime
/// recorded it for a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Pod {
    /// From a sandbox's metadata fields and its labels and annotations, as
    /// either CRI version carries them (config or status).
    pub fn new(
        namespace: String,
        name: String,
        uid: String,
        labels: impl IntoIterator<Item = (String, String)>,
        annotations: impl IntoIterator<Item = (String, String)>,
    ) -> Pod {
        Pod {
            namespace,
            name,
            uid,
            labels: labels.into_iter().collect(),
            annotations: annotations.into_iter().collect(),
        }
    }

    pub fn context(&self) -> PodContext {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        PodContext {
            namespace: non_empty(&self.namespace),
            name: non_empty(&self.name),
            uid: non_empty(&self.uid),
            // The CRI does not carry the pod's service account.
            service_account: None,
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
        }
    }

    pub fn record(&self) -> PodRef {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        PodRef {
            namespace: non_empty(&self.namespace),
            name: non_empty(&self.name),
            uid: non_empty(&self.uid),
        }
    }
}

/// A bare image id (`sha256:<64 hex>` or 64 hex), which names no repository.
pub fn is_image_id(image: &str) -> bool {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    // Lowercase only, as containerd parses digests: `sha256:<HEX>` is to it
    // the tag of an image named `sha256`, which can be moved.
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The repository digest of `image` among the runtime's repo digests
/// (`repo@sha256:…`), for the same normalised repository.
pub fn digest_for(image: &ImageRef, repo_digests: &[String]) -> Option<Digest> {
    repo_digests.iter().find_map(|rd| {
        let parsed = ImageRef::parse(rd).ok()?;
        (parsed.repository == image.repository)
            .then_some(parsed.digest)
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_pull_create_and_start_are_intercepted() {
        assert_eq!(
            route("/runtime.v1.ImageService/PullImage"),
            Route::Pull(Api::V1)
        );
        assert_eq!(
            route("/runtime.v1alpha2.RuntimeService/CreateContainer"),
            Route::Create(Api::V1alpha2)
        );
        // What grpc-go routes without the leading slash is decided too.
        assert_eq!(
            route("runtime.v1.ImageService/PullImage"),
            Route::Pull(Api::V1)
        );
        assert_eq!(
            route("runtime.v1.RuntimeService/CreateContainer"),
            Route::Create(Api::V1)
        );
        assert_eq!(route("//runtime.v1.ImageService/PullImage"), Route::Forward);
        // Held while a create by name is being checked, never decoded.
        for path in [
            "/runtime.v1.RuntimeService/StartContainer",
            "/runtime.v1alpha2.RuntimeService/StartContainer",
            "runtime.v1.RuntimeService/StartContainer",
        ] {
            assert_eq!(route(path), Route::Start, "{path}");
        }
        for path in [
            "/runtime.v1.RuntimeService/StopContainer",
            "/runtime.v1.ImageService/ImageStatus",
            "/runtime.v1.RuntimeService/GetContainerEvents",
            "/runtime.v2.RuntimeService/CreateContainer",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(route(path), Route::Forward, "{path}");
        }
    }

    #[test]
    fn only_the_cri_is_served() {
        for path in [
            "/runtime.v1.RuntimeService/Version",
            "runtime.v1.ImageService/PullImage",
            "/runtime.v1alpha2.RuntimeService/ExecSync",
            "/runtime.v1.RuntimeService/AMethodAddedLater",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(served(path), "{path}");
        }
        for path in [
            "/containerd.services.images.v1.Images/Create",
            "/containerd.services.content.v1.Content/Write",
            "/containerd.services.tasks.v1.Tasks/Create",
            "/containerd.services.version.v1.Version/Version",
            "//runtime.v1.ImageService/PullImage",
            "/x/runtime.v1.RuntimeService/Version",
            "",
        ] {
            assert!(!served(path), "{path}");
        }
    }

    #[test]
    fn image_ids_are_told_from_names() {
        let hex = "a".repeat(64);
        assert!(is_image_id(&format!("sha256:{hex}")));
        assert!(is_image_id(&hex));
        assert!(!is_image_id("registry.test/app:1"));
        assert!(!is_image_id(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_image_id(&format!("registry.test/app@sha256:{hex}")));
    }

    #[test]
    fn repo_digest_must_be_for_the_same_repository() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let digests = vec![
            format!("mirror.test/app@{d1}"),
            format!("docker.io/library/app@{d2}"),
        ];
        let image = ImageRef::parse("app:1").unwrap();
        assert_eq!(digest_for(&image, &digests).unwrap().as_str(), d2);
        assert!(digest_for(&ImageRef::parse("other.test/app:1").unwrap(), &digests).is_none());
    }
}
