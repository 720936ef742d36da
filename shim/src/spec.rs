//! Pod context from the OCI spec containerd wrote into the task bundle. The
//! CRI plugin annotates every container it creates (`io.kubernetes.cri.*`);
//! pod annotations appear too when the runtime's `pod_annotations` lets them
//! through. Containers made without the CRI carry none of this.

use std::collections::BTreeMap;
use std::path::Path;

use attestgate_policy::{PodContext, PodRef};
use serde::Deserialize;

const CRI_PREFIX: &str = "io.kubernetes.cri.";
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an OCI runtime spec: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// What the spec says about the container's place in a pod.
#[derive(Debug, Clone, Default)]
pub struct SpecContext {
    annotations: BTreeMap<String, String>,
}

impl SpecContext {
    pub fn read(bundle: &Path) -> Result<SpecContext, SpecError> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let spec: Spec = serde_json::from_slice(&text).map_err(|source| SpecError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        Ok(SpecContext {
            annotations: spec.annotations,
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.annotations
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether the CRI made this container (a pod's sandbox or app container).
    pub fn is_cri(&self) -> bool {
        self.get(CONTAINER_TYPE).is_some()
    }

    pub fn is_sandbox(&self) -> bool {
        self.get(CONTAINER_TYPE) == Some("sandbox")
    }

    /// The image name the CRI recorded, for when containerd's record has none.
    pub fn image_name(&self) -> Option<&str> {
        self.get(IMAGE_NAME)
    }

    pub fn container_name(&self) -> Option<&str> {
        self.get(CONTAINER_NAME)
    }

    /// The pod, for CRI containers; its annotations are the spec's own
    /// minus the CRI's bookkeeping, so a break-glass annotation passed
    /// through `pod_annotations` counts.
    pub fn pod(&self) -> Option<(PodContext, PodRef)> {
        if !self.is_cri() {
            return None;
        }
        let owned = |key| self.get(key).map(str::to_string);
        let context = PodContext {
            namespace: owned(SANDBOX_NAMESPACE),
            name: owned(SANDBOX_NAME),
            uid: owned(SANDBOX_UID),
            service_account: None,
            labels: BTreeMap::new(),
            annotations: self
                .annotations
                .iter()
                .filter(|(k, _)| !k.starts_with(CRI_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let record = PodRef {
            namespace: context.namespace.clone(),
            name: context.name.clone(),
            uid: context.uid.clone(),
        };
        Some((context, record))
    }

    /// Annotations on a container made without the CRI, which may still ask
    /// for break-glass the way a pod does.
    pub fn plain_context(&self) -> PodContext {
        PodContext {
            annotations: self.annotations.clone(),
            ..PodContext::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cri_annotations_give_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{},"annotations":{
                "io.kubernetes.cri.container-type":"container",
                "io.kubernetes.cri.container-name":"web",
                "io.kubernetes.cri.sandbox-namespace":"prod",
                "io.kubernetes.cri.sandbox-name":"web-0",
                "io.kubernetes.cri.sandbox-uid":"u-1",
                "io.kubernetes.cri.image-name":"reg.test/app:1",
                "alpha.image-policy.k8s.io/break-glass":"true"}}"#,
        )
        .unwrap();
        let spec = SpecContext::read(dir.path()).unwrap();
        assert!(spec.is_cri() && !spec.is_sandbox());
        assert_eq!(spec.container_name(), Some("web"));
        assert_eq!(spec.image_name(), Some("reg.test/app:1"));
        let (pod, record) = spec.pod().unwrap();
        assert_eq!(pod.namespace.as_deref(), Some("prod"));
        assert_eq!(record.uid.as_deref(), Some("u-1"));
        assert!(pod.break_glass());
        assert_eq!(
            pod.annotations.len(),
            1,
            "CRI bookkeeping is not a pod annotation"
        );
    }

    #[test]
    fn plain_containers_have_no_pod_and_bad_specs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        let spec = SpecContext::read(dir.path()).unwrap();
        assert!(spec.pod().is_none());
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        assert!(SpecContext::read(dir.path()).is_err());
        assert!(SpecContext::read(&dir.path().join("none")).is_err());
    }
}
