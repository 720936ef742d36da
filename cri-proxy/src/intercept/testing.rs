//! A gate over a real bundle and audit log with one image and one pod
//! sandbox "on the node", for the decision code's unit tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use attestgate_node::{AuditLog, BundleStore, Decider, FailMode};
use attestgate_policy::Settings;

use super::Gate;
use crate::cri::Api;
use crate::cri::Pod;
use crate::grpc::ProxyError;
use crate::resolve::{ImageInfo, ImageRuntime};

/// Images on the node, the first being the one a test decides for;
/// `image_status` finds one by anything containerd would (a name it
/// carries, its id or a prefix), and fails as containerd 1.6 does on a
/// prefix that more than one id shares. One container, created from
/// `created_from`, and the containers the gate removed.
pub struct FakeRuntime {
    pub images: Vec<ImageInfo>,
    pub created_from: Result<Option<String>, ()>,
    pub removed_containers: Mutex<Vec<String>>,
}

impl ImageRuntime for FakeRuntime {
    async fn image_status(
        &self,
        _: Api,
        image: &str,
        _: Duration,
    ) -> Result<Option<ImageInfo>, ProxyError> {
        let prefix_of = |info: &&ImageInfo| {
            let hex = info.id.trim_start_matches("sha256:");
            hex.starts_with(image.trim_start_matches("sha256:"))
        };
        if self.images.iter().filter(prefix_of).count() > 1 {
            return Err(ProxyError::Internal(format!(
                "ImageStatus: can not resolve {image:?} locally: ambiguous digest string (Unknown)"
            )));
        }
        Ok(self
            .images
            .iter()
            .find(|info| {
                info.repo_tags.iter().any(|t| t == image)
                    || info.repo_digests.iter().any(|d| d == image)
                    || prefix_of(info)
            })
            .cloned())
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

    async fn container_image(
        &self,
        _: Api,
        container_id: &str,
        _: Duration,
    ) -> Result<Option<String>, ProxyError> {
        match &self.created_from {
            Ok(image) => Ok(image.clone().filter(|_| container_id == CONTAINER_ID)),
            Err(()) => Err(ProxyError::Upstream("containerd is restarting".into())),
        }
    }

    async fn containers_named(
        &self,
        _: Api,
        sandbox_id: &str,
        name: &str,
        _: u32,
        _: Duration,
    ) -> Result<Vec<String>, ProxyError> {
        let made = match &self.created_from {
            Ok(image) => image.is_some(),
            Err(()) => return Err(ProxyError::Upstream("containerd is restarting".into())),
        };
        Ok(
            (made && SANDBOX_ID.starts_with(sandbox_id) && name == "app")
                .then(|| CONTAINER_ID.to_string())
                .into_iter()
                .collect(),
        )
    }

    async fn remove_container(
        &self,
        _: Api,
        container_id: &str,
        _: Duration,
    ) -> Result<(), ProxyError> {
        self.removed_containers
            .lock()
            .unwrap()
            .push(container_id.to_string());
        Ok(())
    }
}

/// The container the runtime created.
pub const CONTAINER_ID: &str = "c0ffee";

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
) -> Gate<FakeRuntime> {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("policy.yaml"), policy).unwrap();
    let store = Arc::new(BundleStore::new(bundle, metrics.clone()));
    store.reload(true);
    assert!(store.current().is_some(), "the test policy loads");
    Gate {
        decider: Arc::new(Decider::new(
            store,
            Settings::default(),
            fail_mode,
            AuditLog::open(&dir.join("audit.jsonl")).unwrap(),
            metrics.clone(),
        )),
        metrics,
        runtime: FakeRuntime {
            images: vec![image],
            created_from: Ok(None),
            removed_containers: Mutex::new(Vec::new()),
        },
        upstream: crate::upstream::Upstream::new(dir.join("no-containerd.sock")),
        images: crate::upstream::Upstream::new(dir.join("no-containerd.sock")),
        unconfirmed: super::Unconfirmed::default(),
        pull_timeout: super::DEFAULT_PULL_TIMEOUT,
        signatures: None,
        content: None,
    }
}
