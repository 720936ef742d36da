//! A gate over a real bundle and audit log with one image and one pod
//! sandbox "on the node", for the decision code's unit tests.

use std::sync::Arc;
use std::time::Duration;

use attestgate_policy::{FailMode, NodeConfig};

use super::{Gate, Pod};
use crate::grpc::ProxyError;
use crate::resolve::{Api, ImageInfo, ImageRuntime};

/// One image on the node, known by `info`; `image_status` finds it by
/// anything containerd would (a name it carries, its id or a prefix).
pub struct OneImage(ImageInfo);

impl ImageRuntime for OneImage {
    async fn image_status(
        &self,
        _: Api,
        image: &str,
        _: Duration,
    ) -> Result<Option<ImageInfo>, ProxyError> {
        let hex = self.0.id.trim_start_matches("sha256:");
        let found = self.0.repo_tags.iter().any(|t| t == image)
            || self.0.repo_digests.iter().any(|d| d == image)
            || hex.starts_with(image.trim_start_matches("sha256:"));
        Ok(found.then(|| self.0.clone()))
    }

    async fn remove_image(&self, _: Api, _: &str, _: Duration) -> Result<(), ProxyError> {
        Ok(())
    }

    async fn pod_sandbox(
        &self,
        _: Api,
        sandbox_id: &str,
        _: Duration,
    ) -> Result<Option<Pod>, ProxyError> {
        Ok((sandbox_id == SANDBOX_ID).then(sandbox))
    }
}

/// The one pod sandbox on the node.
pub const SANDBOX_ID: &str = "5a4db0c5";

/// The pod that sandbox was started for.
pub fn sandbox() -> Pod {
    Pod {
        namespace: "prod".into(),
        name: "web-0".into(),
        uid: "0e5c".into(),
        ..Pod::default()
    }
}

/// A gate over a real bundle and audit log in `dir`, deciding for `image`.
pub fn gate(
    dir: &std::path::Path,
    policy: &str,
    fail_mode: FailMode,
    image: ImageInfo,
) -> Gate<OneImage> {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("policy.yaml"), policy).unwrap();
    let store = Arc::new(crate::bundle::BundleStore::new(bundle, metrics.clone()));
    store.reload(true);
    assert!(store.current().is_some(), "the test policy loads");
    Gate {
        store,
        node: NodeConfig {
            fail_mode,
            ..NodeConfig::default()
        },
        audit: crate::audit::AuditLog::open(&dir.join("audit.jsonl")).unwrap(),
        metrics,
        runtime: OneImage(image),
        upstream: crate::upstream::Upstream::new(dir.join("no-containerd.sock")),
    }
}
