//! The artifact's shape (SPEC §10): an OCI image manifest with
//! `artifactType: application/vnd.attestgate.bundle.v1`, the empty config,
//! and one layer per file titled with its path in the repository, as
//! `oras push` writes and `oras pull` unpacks.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::reference::check_digest;

pub const ARTIFACT_TYPE: &str = "application/vnd.attestgate.bundle.v1";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Each file is carried as it is, not as a tar: a type of our own keeps
/// tools that unpack image layers from mistaking it for one. `oras pull`
/// writes any titled layer whatever its type.
pub const FILE_MEDIA_TYPE: &str = "application/vnd.attestgate.bundle.file.v1";
pub const TITLE: &str = "org.opencontainers.image.title";
/// oras untars a layer annotated so, which would lay out a different tree
/// from ours.
const ORAS_UNPACK: &str = "io.deis.oras.content.unpack";
pub(crate) const EMPTY_CONFIG: &[u8] = b"{}";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One file of the repository: its path (the layer's title) and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub title: String,
    pub digest: String,
    pub size: u64,
}

/// A manifest that passed every check: what to fetch and where it goes.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// By title, each once.
    pub files: Vec<Layer>,
}

impl Artifact {
    /// Each digest once, with its size: what to fetch.
    pub fn blobs(&self) -> BTreeMap<&str, u64> {
        self.files
            .iter()
            .map(|f| (f.digest.as_str(), f.size))
            .collect()
    }
}

/// The manifest for `files` (sorted by title so the same tree always gives
/// the same manifest, and so the same digest).
pub(crate) fn build(files: &[Layer]) -> Vec<u8> {
    let mut layers: Vec<&Layer> = files.iter().collect();
    layers.sort_by(|a, b| a.title.cmp(&b.title));
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: Descriptor {
            media_type: EMPTY_CONFIG_MEDIA_TYPE.into(),
            digest: sha256_digest(EMPTY_CONFIG),
            size: EMPTY_CONFIG.len() as u64,
            // The OCI image spec's guidance for the empty descriptor.
            data: Some("e30=".into()),
            annotations: BTreeMap::new(),
        },
        layers: layers
            .into_iter()
            .map(|layer| Descriptor {
                media_type: FILE_MEDIA_TYPE.into(),
                digest: layer.digest.clone(),
                size: layer.size,
                data: None,
                annotations: BTreeMap::from([(TITLE.to_string(), layer.title.clone())]),
            })
            .collect(),
    };
    // A struct of strings and numbers always serialises.
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// Why a manifest is not a bundle artifact, or is one that exceeds limits.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Shape(String),
    TooLarge { what: String, size: u64, limit: u64 },
}

/// Checks `bytes` as a bundle artifact's manifest within `max_layers`,
/// `max_blob` (each layer) and `max_total` (all files written out).
pub fn parse(
    bytes: &[u8],
    max_layers: usize,
    max_blob: u64,
    max_total: u64,
) -> Result<Artifact, Refusal> {
    let shape = |why: String| Refusal::Shape(why);
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| shape(format!("the manifest is not an OCI image manifest: {e}")))?;
    if manifest.schema_version != 2 {
        return Err(shape(format!(
            "schemaVersion is {}, not 2",
            manifest.schema_version
        )));
    }
    if manifest.media_type.as_deref() != Some(MANIFEST_MEDIA_TYPE) {
        return Err(shape(format!(
            "mediaType is {:?}, not {MANIFEST_MEDIA_TYPE}",
            manifest.media_type
        )));
    }
    match manifest.artifact_type.as_deref() {
        Some(ARTIFACT_TYPE) => {
            if manifest.config.media_type != EMPTY_CONFIG_MEDIA_TYPE
                || manifest.config.size != EMPTY_CONFIG.len() as u64
                || manifest.config.digest != sha256_digest(EMPTY_CONFIG)
            {
                return Err(shape(format!(
                    "the config is not the empty descriptor ({EMPTY_CONFIG_MEDIA_TYPE}, {{}}) but {} {} ({} bytes)",
                    manifest.config.media_type, manifest.config.digest, manifest.config.size
                )));
            }
        }
        // What `oras push --image-spec v1.0` writes for the same artifact:
        // the type in the config's media type instead.
        None if manifest.config.media_type == ARTIFACT_TYPE => {}
        other => {
            return Err(shape(format!(
                "artifactType is {other:?}, not {ARTIFACT_TYPE}"
            )));
        }
    }
    if manifest.layers.len() > max_layers {
        return Err(Refusal::TooLarge {
            what: "the number of files".into(),
            size: manifest.layers.len() as u64,
            limit: max_layers as u64,
        });
    }
    let mut by_title: BTreeMap<String, Layer> = BTreeMap::new();
    let mut total: u64 = 0;
    for layer in manifest.layers {
        let title = layer
            .annotations
            .get(TITLE)
            .ok_or_else(|| shape(format!("layer {} has no {TITLE}", layer.digest)))?;
        check_title(title).map_err(|why| shape(format!("layer title {title:?}: {why}")))?;
        check_digest(&layer.digest).map_err(|why| shape(format!("layer {title:?}: {why}")))?;
        if layer
            .annotations
            .get(ORAS_UNPACK)
            .is_some_and(|v| v == "true")
        {
            return Err(shape(format!(
                "layer {title:?} asks to be unpacked ({ORAS_UNPACK}); files are carried as they are"
            )));
        }
        if layer.size > max_blob {
            return Err(Refusal::TooLarge {
                what: format!("file {title:?}"),
                size: layer.size,
                limit: max_blob,
            });
        }
        if let Some(seen) = by_title.get(title) {
            if seen.digest != layer.digest || seen.size != layer.size {
                return Err(shape(format!(
                    "two layers are titled {title:?} with different content"
                )));
            }
            continue;
        }
        total = total.saturating_add(layer.size);
        if total > max_total {
            return Err(Refusal::TooLarge {
                what: "the artifact's files together".into(),
                size: total,
                limit: max_total,
            });
        }
        by_title.insert(
            title.clone(),
            Layer {
                title: title.clone(),
                digest: layer.digest,
                size: layer.size,
            },
        );
    }
    // A file at a path another file needs as a directory cannot be laid out.
    let titles: BTreeSet<&str> = by_title.keys().map(String::as_str).collect();
    for title in &titles {
        let mut at = 0;
        while let Some(slash) = title[at..].find('/') {
            let parent = &title[..at + slash];
            if titles.contains(parent) {
                return Err(shape(format!(
                    "{parent:?} is both a file and the directory of {title:?}"
                )));
            }
            at += slash + 1;
        }
    }
    Ok(Artifact {
        files: by_title.into_values().collect(),
    })
}

/// The digests a stored manifest refers to (its config and layers), for
/// pruning a blob cache; a manifest that does not parse refers to nothing.
pub(crate) fn referenced_digests(bytes: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<Manifest>(bytes) {
        Ok(manifest) => std::iter::once(manifest.config.digest)
            .chain(manifest.layers.into_iter().map(|l| l.digest))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A title names a file of a TUF repository, relative and inside it: under
/// `metadata/` or `targets/`, no empty, `.` or `..` component, no
/// backslash or control character, within common path limits.
pub fn check_title(title: &str) -> Result<(), String> {
    if title.is_empty() {
        return Err("empty".into());
    }
    if title.len() > 1024 {
        return Err("longer than 1024 bytes".into());
    }
    if title.starts_with('/') {
        return Err("absolute".into());
    }
    if title.chars().any(|c| c == '\\' || c.is_control()) {
        return Err("contains a backslash or a control character".into());
    }
    let components: Vec<&str> = title.split('/').collect();
    for component in &components {
        match *component {
            "" => return Err("has an empty path component".into()),
            "." | ".." => return Err(format!("has a {component:?} component")),
            c if c.len() > 255 => return Err("has a component longer than 255 bytes".into()),
            _ => {}
        }
    }
    match components.first() {
        Some(&"metadata") | Some(&"targets") if components.len() >= 2 => Ok(()),
        _ => Err("not a file under metadata/ or targets/".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(title: &str, content: &[u8]) -> Layer {
        Layer {
            title: title.into(),
            digest: sha256_digest(content),
            size: content.len() as u64,
        }
    }

    const BIG: u64 = 1 << 30;

    #[test]
    fn built_manifests_parse_back() {
        let files = vec![
            layer("targets/policy.yaml", b"p"),
            layer("metadata/1.root.json", b"r"),
            layer("targets/attestors/ci.yaml", b"p"),
        ];
        let bytes = build(&files);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["artifactType"], ARTIFACT_TYPE);
        assert_eq!(value["config"]["mediaType"], EMPTY_CONFIG_MEDIA_TYPE);
        assert_eq!(value["config"]["size"], 2);
        assert_eq!(
            value["layers"][0]["annotations"][TITLE],
            "metadata/1.root.json"
        );
        let artifact = parse(&bytes, 10, BIG, BIG).unwrap();
        let titles: Vec<&str> = artifact.files.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "metadata/1.root.json",
                "targets/attestors/ci.yaml",
                "targets/policy.yaml"
            ]
        );
        assert_eq!(artifact.blobs().len(), 2, "same content, one blob");
        assert_eq!(build(&files), bytes, "deterministic");
    }

    #[test]
    fn titles_that_leave_the_repository_are_refused() {
        for bad in [
            "",
            "/etc/x",
            "../x",
            "targets/../../x",
            "targets/./x",
            "targets//x",
            "targets/",
            "targets",
            "x/y",
            "policy.yaml",
            "targets\\..\\x",
            "targets/a\nb",
        ] {
            assert!(check_title(bad).is_err(), "{bad:?}");
            let bytes = build(&[layer(bad, b"x")]);
            assert!(
                matches!(parse(&bytes, 10, BIG, BIG), Err(Refusal::Shape(_))),
                "{bad:?}"
            );
        }
        for good in [
            "metadata/1.root.json",
            "targets/attestors/ci.yaml",
            "targets/..hidden",
        ] {
            assert_eq!(check_title(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn duplicates_and_file_directory_clashes() {
        let same = build(&[layer("targets/a", b"1"), layer("targets/a", b"1")]);
        assert_eq!(parse(&same, 10, BIG, BIG).unwrap().files.len(), 1);
        let different = build(&[layer("targets/a", b"1"), layer("targets/a", b"2")]);
        assert!(matches!(
            parse(&different, 10, BIG, BIG),
            Err(Refusal::Shape(_))
        ));
        let clash = build(&[layer("targets/a", b"1"), layer("targets/a/b", b"2")]);
        assert!(matches!(
            parse(&clash, 10, BIG, BIG),
            Err(Refusal::Shape(_))
        ));
    }

    #[test]
    fn limits_apply_to_declared_sizes() {
        let files = [layer("targets/a", &[0; 100]), layer("targets/b", &[1; 100])];
        let bytes = build(&files);
        assert!(parse(&bytes, 2, 100, 200).is_ok());
        assert!(matches!(
            parse(&bytes, 1, 100, 200),
            Err(Refusal::TooLarge { .. })
        ));
        assert!(matches!(
            parse(&bytes, 2, 99, 200),
            Err(Refusal::TooLarge { .. })
        ));
        assert!(matches!(
            parse(&bytes, 2, 100, 199),
            Err(Refusal::TooLarge { .. })
        ));
    }

    #[test]
    fn other_shapes_are_refused() {
        let good: serde_json::Value =
            serde_json::from_slice(&build(&[layer("targets/a", b"1")])).unwrap();
        type Change = Box<dyn Fn(&mut serde_json::Value)>;
        let variants: Vec<Change> = vec![
            Box::new(|m| m["artifactType"] = "application/vnd.other".into()),
            Box::new(|m| m["schemaVersion"] = 1.into()),
            Box::new(|m| {
                m["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into()
            }),
            Box::new(|m| {
                m["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into()
            }),
            Box::new(|m| m["config"]["size"] = 3.into()),
            Box::new(|m| m["layers"][0]["annotations"] = serde_json::json!({})),
            Box::new(|m| m["layers"][0]["digest"] = "sha512:00".into()),
            Box::new(|m| m["layers"][0]["annotations"][ORAS_UNPACK] = "true".into()),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut m = good.clone();
            change(&mut m);
            let bytes = serde_json::to_vec(&m).unwrap();
            assert!(
                matches!(parse(&bytes, 10, BIG, BIG), Err(Refusal::Shape(_))),
                "variant {i}"
            );
        }
        assert!(matches!(
            parse(b"not json", 10, BIG, BIG),
            Err(Refusal::Shape(_))
        ));
        // The OCI 1.0 form oras writes with --image-spec v1.0.
        let mut v1 = good.clone();
        v1.as_object_mut().unwrap().remove("artifactType");
        v1["config"]["mediaType"] = ARTIFACT_TYPE.into();
        assert!(parse(&serde_json::to_vec(&v1).unwrap(), 10, BIG, BIG).is_ok());
    }
}
