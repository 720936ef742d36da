//! From document trees to validated model values. Formats are those gcloud
//! and the Binary Authorization / Container Analysis REST APIs print;
//! unknown fields are ignored, unknown enum values and missing required
//! fields are errors that name the field.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;

use crate::error::FieldError;
use crate::glob::NamePattern;
use crate::model::{
    AdmissionRule, Attestor, AttestorPublicKey, EnforcementMode, EvaluationMode,
    GlobalPolicyEvaluationMode, KeyMaterial, Occurrence, Policy, Signature,
};
use crate::names::{dns1123_label, dns1123_subdomain};
use crate::node::{Kind, Node, Obj, Path, list_items, scalar_string};
use crate::reference::ImageRef;
use crate::verify::{PgpKey, PkixKey, SignatureAlgorithm};

/// Parses a policy from YAML or JSON text.
pub fn parse_policy(text: &str) -> Result<Policy, FieldError> {
    policy_from_node(&Node::parse(text)?)
}

/// Parses attestors: one resource, a list, or `{"attestors": [...]}`.
pub fn parse_attestors(text: &str) -> Result<Vec<Attestor>, FieldError> {
    let root = Node::parse(text)?;
    let items = resource_list(&root, "attestors")?;
    items
        .into_iter()
        .map(|(path, node)| attestor_from_node(node, path))
        .collect()
}

/// Parses one occurrence document (object, array or `{"occurrences": [...]}`)
/// given as YAML or JSON. Returns the good occurrences and one error per bad
/// one: a bad occurrence never spoils the others.
pub fn parse_occurrences(text: &str) -> Result<(Vec<Occurrence>, Vec<FieldError>), FieldError> {
    let root = Node::parse(text)?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut notes = NoteInterner::default();
    for (path, node) in resource_list(&root, "occurrences")? {
        match occurrence_from_node(node, path, &mut notes) {
            Ok(o) => good.push(o),
            Err(e) => bad.push(e),
        }
    }
    Ok((good, bad))
}

/// The elements of a document that holds one resource, a list of them, or
/// a REST list response `{"<field>": [...], "nextPageToken": ...}`.
fn resource_list<'n>(root: &'n Node, field: &str) -> Result<Vec<(Path, &'n Node)>, FieldError> {
    match &root.kind {
        Kind::Seq(_) => list_items(root, &Path::root()),
        Kind::Map(entries) if entries.iter().any(|(k, _)| k == field) => {
            let obj = Obj::new(root, Path::root())?;
            obj.list(field)
        }
        Kind::Map(_) => Ok(vec![(Path::root(), root)]),
        Kind::Null => Ok(Vec::new()),
        _ => Err(Path::root().error(
            Some(root),
            format!("expected a mapping or a list, found {}", root.type_name()),
        )),
    }
}

fn enum_value<T: Copy>(
    obj: &Obj<'_>,
    field: &str,
    names: &[(&str, T)],
) -> Result<Option<T>, FieldError> {
    let Some(value) = obj.string(field)? else {
        return Ok(None);
    };
    let path = obj.path.field(field);
    if let Some((_, v)) = names.iter().find(|(n, _)| *n == value) {
        return Ok(Some(*v));
    }
    let allowed: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
    let message = if value.ends_with("_UNSPECIFIED") || value.is_empty() {
        format!("must be specified (one of {})", allowed.join(", "))
    } else {
        format!(
            "unknown value {value:?} (expected one of {})",
            allowed.join(", ")
        )
    };
    Err(path.error(obj.get(field), message))
}

pub(crate) fn policy_from_node(root: &Node) -> Result<Policy, FieldError> {
    let obj = Obj::new(root, Path::root())?;

    let global_policy_evaluation_mode = match obj.string("globalPolicyEvaluationMode")?.as_deref() {
        None | Some("GLOBAL_POLICY_EVALUATION_MODE_UNSPECIFIED") | Some("DISABLE") => {
            GlobalPolicyEvaluationMode::Disable
        }
        Some("ENABLE") => GlobalPolicyEvaluationMode::Enable,
        Some(other) => {
            return Err(obj.path.field("globalPolicyEvaluationMode").error(
                obj.get("globalPolicyEvaluationMode"),
                format!("unknown value {other:?} (expected one of ENABLE, DISABLE)"),
            ));
        }
    };

    let mut admission_whitelist_patterns = Vec::new();
    for (path, node) in obj.list("admissionWhitelistPatterns")? {
        let entry = Obj::new(node, path)?;
        let pattern = entry.required_string("namePattern")?;
        let compiled = NamePattern::parse(&pattern).map_err(|e| {
            entry.path.field("namePattern").error(
                entry.get("namePattern"),
                format!("invalid pattern {pattern:?}: {e}"),
            )
        })?;
        admission_whitelist_patterns.push(compiled);
    }

    let default_admission_rule = match obj.object("defaultAdmissionRule")? {
        Some(rule) => rule_from_obj(&rule)?,
        None => return Err(obj.missing("defaultAdmissionRule")),
    };

    let cluster_admission_rules = rule_map(&obj, "clusterAdmissionRules", validate_cluster_key)?;
    let kubernetes_namespace_admission_rules = rule_map(
        &obj,
        "kubernetesNamespaceAdmissionRules",
        validate_namespace_key,
    )?;
    let kubernetes_service_account_admission_rules = rule_map(
        &obj,
        "kubernetesServiceAccountAdmissionRules",
        validate_service_account_key,
    )?;
    let istio_service_identity_admission_rules = rule_map(
        &obj,
        "istioServiceIdentityAdmissionRules",
        validate_istio_key,
    )?;

    Ok(Policy {
        name: obj.string("name")?,
        description: obj.string("description")?,
        global_policy_evaluation_mode,
        admission_whitelist_patterns,
        default_admission_rule,
        cluster_admission_rules,
        kubernetes_namespace_admission_rules,
        kubernetes_service_account_admission_rules,
        istio_service_identity_admission_rules,
    })
}

fn rule_map(
    obj: &Obj<'_>,
    field: &str,
    validate_key: fn(&str) -> Result<(), String>,
) -> Result<HashMap<String, AdmissionRule>, FieldError> {
    let mut rules = HashMap::new();
    let Some(map) = obj.object(field)? else {
        return Ok(rules);
    };
    for (key, node) in map.entries {
        let path = map.path.key(key);
        validate_key(key).map_err(|m| path.error(Some(node), m))?;
        let rule = rule_from_obj(&Obj::new(node, path)?)?;
        rules.insert(key.clone(), rule);
    }
    Ok(rules)
}

fn rule_from_obj(obj: &Obj<'_>) -> Result<AdmissionRule, FieldError> {
    let evaluation_mode = enum_value(obj, "evaluationMode", EvaluationMode::NAMES)?
        .ok_or_else(|| obj.missing("evaluationMode"))?;
    let enforcement_mode = match enum_value(obj, "enforcementMode", EnforcementMode::NAMES)? {
        Some(mode) => mode,
        // An ALWAYS_ALLOW rule never denies, so what a denial would do is moot.
        None if evaluation_mode == EvaluationMode::AlwaysAllow => {
            EnforcementMode::EnforcedBlockAndAuditLog
        }
        None => return Err(obj.missing("enforcementMode")),
    };
    let mut require_attestations_by = Vec::new();
    for (path, node) in obj.list("requireAttestationsBy")? {
        let name = scalar_string(node, &path)?;
        validate_attestor_name(&name).map_err(|m| path.error(Some(node), m))?;
        if require_attestations_by.contains(&name) {
            return Err(path.error(Some(node), format!("attestor {name:?} is listed twice")));
        }
        require_attestations_by.push(name);
    }
    let field = obj.path.field("requireAttestationsBy");
    match evaluation_mode {
        EvaluationMode::RequireAttestation if require_attestations_by.is_empty() => {
            return Err(field.error(
                obj.get("requireAttestationsBy").or(Some(obj.node)),
                "REQUIRE_ATTESTATION needs at least one attestor",
            ));
        }
        EvaluationMode::AlwaysAllow | EvaluationMode::AlwaysDeny
            if !require_attestations_by.is_empty() =>
        {
            return Err(field.error(
                obj.get("requireAttestationsBy"),
                format!(
                    "must be empty when evaluationMode is {}",
                    evaluation_mode.name()
                ),
            ));
        }
        _ => {}
    }
    Ok(AdmissionRule {
        evaluation_mode,
        require_attestations_by,
        enforcement_mode,
    })
}

/// `projects/P/attestors/A`.
fn validate_attestor_name(name: &str) -> Result<(), String> {
    validate_resource_name(name, "attestors")
}

fn validate_resource_name(name: &str, collection: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = parts.len() == 4
        && parts[0] == "projects"
        && parts[2] == collection
        && [parts[1], parts[3]].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not of the form projects/PROJECT/{collection}/NAME"
        ))
    }
}

/// GCP form `location.clusterId`.
fn validate_cluster_key(key: &str) -> Result<(), String> {
    let ok = key.split_once('.').is_some_and(|(location, cluster)| {
        let label = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        label(location) && cluster.split('.').all(label)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cluster key {key:?} is not of the form location.clusterId"
        ))
    }
}

/// Kubernetes namespace names are DNS-1123 labels.
fn validate_namespace_key(key: &str) -> Result<(), String> {
    if dns1123_label(key) {
        Ok(())
    } else {
        Err(format!("{key:?} is not a valid Kubernetes namespace name"))
    }
}

fn validate_service_account_key(key: &str) -> Result<(), String> {
    match key.split_once(':') {
        Some((ns, sa)) if dns1123_label(ns) && dns1123_subdomain(sa) => Ok(()),
        _ => Err(format!(
            "{key:?} is not of the form namespace:serviceaccount"
        )),
    }
}

fn validate_istio_key(key: &str) -> Result<(), String> {
    let ok = key.strip_prefix("spiffe://").is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('/').collect();
        parts.len() == 5
            && !parts[0].is_empty()
            && parts[1] == "ns"
            && !parts[2].is_empty()
            && parts[3] == "sa"
            && !parts[4].is_empty()
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not of the form spiffe://DOMAIN/ns/NAMESPACE/sa/SERVICEACCOUNT"
        ))
    }
}

pub(crate) fn attestor_from_node(node: &Node, path: Path) -> Result<Attestor, FieldError> {
    let obj = Obj::new(node, path)?;
    let name = obj.required_string("name")?;
    validate_attestor_name(&name).map_err(|m| obj.path.field("name").error(obj.get("name"), m))?;
    let note = match (
        obj.object("userOwnedGrafeasNote")?,
        obj.object("userOwnedDrydockNote")?,
    ) {
        (Some(n), None) | (None, Some(n)) => n,
        (Some(_), Some(_)) => {
            return Err(obj.path.error(
                Some(node),
                "only one of userOwnedGrafeasNote and userOwnedDrydockNote may be set",
            ));
        }
        (None, None) => return Err(obj.missing("userOwnedGrafeasNote")),
    };
    let note_reference = note.required_string("noteReference")?;
    validate_resource_name(&note_reference, "notes").map_err(|m| {
        note.path
            .field("noteReference")
            .error(note.get("noteReference"), m)
    })?;
    let mut public_keys: Vec<AttestorPublicKey> = Vec::new();
    for (key_path, key_node) in note.list("publicKeys")? {
        let key = public_key_from_node(key_node, key_path.clone())?;
        if public_keys.iter().any(|k| k.id == key.id) {
            return Err(key_path
                .field("id")
                .error(Some(key_node), format!("key id {:?} appears twice", key.id)));
        }
        public_keys.push(key);
    }
    Ok(Attestor {
        name,
        description: obj.string("description")?,
        note_reference,
        public_keys,
    })
}

fn public_key_from_node(node: &Node, path: Path) -> Result<AttestorPublicKey, FieldError> {
    let obj = Obj::new(node, path)?;
    let id = obj.string("id")?.unwrap_or_default();
    let comment = obj.string("comment")?;
    let pkix = obj.object("pkixPublicKey")?;
    let pgp = obj.string("asciiArmoredPgpPublicKey")?;
    match (pkix, pgp) {
        (Some(pkix), None) => {
            let pem = pkix.required_string("publicKeyPem")?;
            let algorithm_name = pkix.required_string("signatureAlgorithm")?;
            let algorithm = SignatureAlgorithm::parse(&algorithm_name).ok_or_else(|| {
                let field = pkix.path.field("signatureAlgorithm");
                if algorithm_name == "SIGNATURE_ALGORITHM_UNSPECIFIED" {
                    field.error(pkix.get("signatureAlgorithm"), "must be specified")
                } else {
                    field.error(
                        pkix.get("signatureAlgorithm"),
                        format!("unknown value {algorithm_name:?}"),
                    )
                }
            })?;
            let key = PkixKey::from_pem(&pem, algorithm).map_err(|e| {
                pkix.path
                    .field("publicKeyPem")
                    .error(pkix.get("publicKeyPem"), e.to_string())
            })?;
            let id = if id.is_empty() { key.derived_id() } else { id };
            Ok(AttestorPublicKey {
                id,
                comment,
                material: KeyMaterial::Pkix(key),
            })
        }
        (None, Some(armored)) => {
            let field = obj.path.field("asciiArmoredPgpPublicKey");
            let key = PgpKey::from_armored(&armored)
                .map_err(|e| field.error(obj.get("asciiArmoredPgpPublicKey"), e.to_string()))?;
            let fingerprint = key.fingerprint().to_string();
            if !id.is_empty() && !id.eq_ignore_ascii_case(&fingerprint) {
                return Err(obj.path.field("id").error(
                    obj.get("id"),
                    format!("{id:?} is not the key's fingerprint {fingerprint}"),
                ));
            }
            Ok(AttestorPublicKey {
                id: fingerprint,
                comment,
                material: KeyMaterial::Pgp(key),
            })
        }
        (Some(_), Some(_)) => Err(obj.path.error(
            Some(node),
            "only one of pkixPublicKey and asciiArmoredPgpPublicKey may be set",
        )),
        (None, None) => Err(obj.path.error(
            Some(node),
            "one of pkixPublicKey or asciiArmoredPgpPublicKey is required",
        )),
    }
}

/// Interns note names: a bundle of 100,000 occurrences usually names a
/// handful of notes.
#[derive(Default)]
pub(crate) struct NoteInterner(HashSet<Arc<str>>);

impl NoteInterner {
    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(existing) = self.0.get(s) {
            return existing.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        self.0.insert(arc.clone());
        arc
    }
}

fn base64_field(obj: &Obj<'_>, field: &str) -> Result<Option<Vec<u8>>, FieldError> {
    let Some(text) = obj.string(field)? else {
        return Ok(None);
    };
    decode_base64(&text)
        .map(Some)
        .map_err(|m| obj.path.field(field).error(obj.get(field), m))
}

/// Bytes fields are standard base64 in the REST API; gcloud users also
/// paste URL-safe or unpadded forms, which decode to the same bytes.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    if let Ok(bytes) = STANDARD.decode(text) {
        return Ok(bytes);
    }
    // Line-wrapped base64 (as `base64` and openssl write it) is common in
    // hand-made files.
    let trimmed: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(&trimmed) {
            return Ok(bytes);
        }
    }
    Err("invalid base64".to_string())
}

pub(crate) fn occurrence_from_node(
    node: &Node,
    path: Path,
    notes: &mut NoteInterner,
) -> Result<Occurrence, FieldError> {
    let obj = Obj::new(node, path)?;
    if let Some(kind) = obj.string("kind")?
        && kind != "ATTESTATION"
    {
        return Err(obj
            .path
            .field("kind")
            .error(obj.get("kind"), format!("{kind:?} is not ATTESTATION")));
    }
    let note_name = obj.required_string("noteName")?;
    validate_resource_name(&note_name, "notes")
        .map_err(|m| obj.path.field("noteName").error(obj.get("noteName"), m))?;

    // v1 `resourceUri`, v1beta1 `resource.uri`.
    let (uri, uri_path, uri_node) = match obj.string("resourceUri")? {
        Some(uri) => (uri, obj.path.field("resourceUri"), obj.get("resourceUri")),
        None => match obj.object("resource")? {
            Some(resource) => (
                resource.required_string("uri")?,
                resource.path.field("uri"),
                resource.get("uri"),
            ),
            None => return Err(obj.missing("resourceUri")),
        },
    };
    let reference = uri.strip_prefix("https://").unwrap_or(&uri);
    let image = ImageRef::parse(reference).map_err(|e| uri_path.error(uri_node, e.to_string()))?;
    let Some(resource_digest) = image.digest else {
        return Err(uri_path.error(uri_node, format!("{uri:?} names no digest")));
    };

    let attestation = obj
        .object("attestation")?
        .ok_or_else(|| obj.missing("attestation"))?;
    let (serialized_payload, signatures) = match attestation.object("attestation")? {
        // v1beta1: attestation.attestation.{pgpSignedAttestation|genericSignedAttestation}
        Some(inner) => v1beta1_attestation(&inner)?,
        None => {
            let payload = base64_field(&attestation, "serializedPayload")?
                .ok_or_else(|| attestation.missing("serializedPayload"))?;
            (Some(payload), signature_list(&attestation)?)
        }
    };
    if signatures.is_empty() {
        return Err(attestation
            .path
            .field("signatures")
            .error(Some(attestation.node), "no signatures"));
    }
    Ok(Occurrence {
        name: obj.string("name")?,
        note_name: notes.intern(&note_name),
        resource_repository: image.repository,
        resource_digest,
        serialized_payload,
        signatures,
    })
}

fn v1beta1_attestation(inner: &Obj<'_>) -> Result<(Option<Vec<u8>>, Vec<Signature>), FieldError> {
    match (
        inner.object("pgpSignedAttestation")?,
        inner.object("genericSignedAttestation")?,
    ) {
        (Some(pgp), None) => {
            let signature = pgp.required_string("signature")?;
            let key_id = pgp.required_string("pgpKeyId")?;
            check_content_type(&pgp)?;
            Ok((
                None,
                vec![Signature::PgpAttached {
                    public_key_id: key_id,
                    message: signature.into_bytes(),
                }],
            ))
        }
        (None, Some(generic)) => {
            check_content_type(&generic)?;
            let payload = base64_field(&generic, "serializedPayload")?
                .ok_or_else(|| generic.missing("serializedPayload"))?;
            Ok((Some(payload), signature_list(&generic)?))
        }
        (Some(_), Some(_)) => Err(inner.path.error(
            Some(inner.node),
            "only one of pgpSignedAttestation and genericSignedAttestation may be set",
        )),
        (None, None) => Err(inner.missing("pgpSignedAttestation")),
    }
}

fn check_content_type(obj: &Obj<'_>) -> Result<(), FieldError> {
    match obj.string("contentType")?.as_deref() {
        None | Some("SIMPLE_SIGNING_JSON") | Some("CONTENT_TYPE_UNSPECIFIED") => Ok(()),
        Some(other) => Err(obj.path.field("contentType").error(
            obj.get("contentType"),
            format!("unknown value {other:?} (expected SIMPLE_SIGNING_JSON)"),
        )),
    }
}

fn signature_list(obj: &Obj<'_>) -> Result<Vec<Signature>, FieldError> {
    let mut signatures = Vec::new();
    for (path, node) in obj.list("signatures")? {
        let sig = Obj::new(node, path)?;
        let public_key_id = sig.required_string("publicKeyId")?;
        let bytes = base64_field(&sig, "signature")?.ok_or_else(|| sig.missing("signature"))?;
        if bytes.is_empty() {
            return Err(sig
                .path
                .field("signature")
                .error(sig.get("signature"), "empty signature"));
        }
        signatures.push(Signature::Detached {
            public_key_id,
            signature: bytes,
        });
    }
    Ok(signatures)
}

/// What a checked file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentKind {
    Policy,
    Attestors {
        count: usize,
    },
    Occurrences {
        count: usize,
    },
    /// A platform policy (SPEC §12) and how many check sets it has.
    PlatformPolicy {
        check_sets: usize,
    },
}

/// Validates one policy, platform policy, attestor or occurrence file on
/// its own. The kind comes from the file's place in a bundle (`policy.*`,
/// `platform-policy.*`, `attestors/`, `attestations/`), else from its
/// content. Every problem is returned.
pub fn check_file(path: &std::path::Path) -> Result<DocumentKind, Vec<FieldError>> {
    let text = std::fs::read(path)
        .map_err(|e| vec![FieldError::new("", None, format!("cannot read: {e}")).in_file(path)])?;
    let text = String::from_utf8(text)
        .map_err(|_| vec![FieldError::new("", None, "not UTF-8 text").in_file(path)])?;
    let root = Node::parse(&text).map_err(|e| vec![e.in_file(path)])?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let kind = if stem == "policy" {
        Kind_::Policy
    } else if stem == "platform-policy" {
        Kind_::PlatformPolicy
    } else if parent == "attestors" {
        Kind_::Attestors
    } else if parent == "attestations" {
        Kind_::Occurrences
    } else {
        sniff(&root)
    };
    let in_file = |e: FieldError| e.in_file(path);
    match kind {
        Kind_::Policy => policy_from_node(&root)
            .map(|_| DocumentKind::Policy)
            .map_err(|e| vec![in_file(e)]),
        Kind_::PlatformPolicy => crate::platform::parse::platform_policy_from_node(&root)
            .map(|p| DocumentKind::PlatformPolicy {
                check_sets: p.check_sets.len(),
            })
            .map_err(|e| vec![in_file(e)]),
        Kind_::Attestors => {
            let items = resource_list(&root, "attestors").map_err(|e| vec![in_file(e)])?;
            let mut errors = Vec::new();
            let count = items.len();
            for (p, n) in items {
                if let Err(e) = attestor_from_node(n, p) {
                    errors.push(in_file(e));
                }
            }
            if errors.is_empty() {
                Ok(DocumentKind::Attestors { count })
            } else {
                Err(errors)
            }
        }
        Kind_::Occurrences => {
            let items = resource_list(&root, "occurrences").map_err(|e| vec![in_file(e)])?;
            let mut notes = NoteInterner::default();
            let mut errors = Vec::new();
            let mut valid = 0;
            for (p, n) in items {
                match occurrence_from_node(n, p, &mut notes) {
                    Ok(_) => valid += 1,
                    Err(e) => errors.push(in_file(e)),
                }
            }
            if errors.is_empty() {
                Ok(DocumentKind::Occurrences { count: valid })
            } else {
                Err(errors)
            }
        }
    }
}

enum Kind_ {
    Policy,
    PlatformPolicy,
    Attestors,
    Occurrences,
}

fn sniff(root: &Node) -> Kind_ {
    let first = match &root.kind {
        Kind::Seq(items) => items.first(),
        _ => Some(root),
    };
    let has = |node: Option<&Node>, keys: &[&str]| match node.map(|n| &n.kind) {
        Some(Kind::Map(entries)) => entries.iter().any(|(k, _)| keys.contains(&k.as_str())),
        _ => false,
    };
    if has(first, &["gkePolicy"]) {
        Kind_::PlatformPolicy
    } else if has(
        first,
        &[
            "defaultAdmissionRule",
            "admissionWhitelistPatterns",
            "globalPolicyEvaluationMode",
            "clusterAdmissionRules",
        ],
    ) {
        Kind_::Policy
    } else if has(
        first,
        &["attestors", "userOwnedGrafeasNote", "userOwnedDrydockNote"],
    ) {
        Kind_::Attestors
    } else {
        Kind_::Occurrences
    }
}
