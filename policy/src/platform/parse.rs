//! `platform-policy.yaml` into a [`PlatformPolicy`]. As for the other
//! bundle files, unknown fields are ignored and errors name the field,
//! line and column, with one exception: inside a check, any field that is
//! not one of the checks the node evaluates is taken as a check kind of its
//! own, which parses and never passes (a configuration error, SPEC §12).

use crate::error::FieldError;
use crate::glob::NamePattern;
use crate::model::{Attestor, AttestorPublicKey, KeyMaterial};
use crate::names::{dns1123_label, dns1123_subdomain};
use crate::node::{Kind, Node, Obj, Path, scalar_string};
use crate::verify::{PkixKey, SignatureAlgorithm};

use super::dir_pattern::DirPattern;
use super::model::{Check, CheckKind, CheckSet, PlatformPolicy, Scope};

/// The check kinds GKE documents that need its services to evaluate.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "vulnerabilityCheck",
    "slsaCheck",
    "imageFreshnessCheck",
    "trustedBuilderCheck",
];

/// Fields of a check that are not its kind.
const CHECK_ATTRIBUTES: &[&str] = &["displayName", "imageAllowlist"];

/// cosign signs with ECDSA over the curve's own hash and RSA with
/// PKCS#1 v1.5 over SHA-256; a sigstore public key names no algorithm, so
/// these are tried in turn and the first the key fits is its algorithm.
const SIGSTORE_ALGORITHMS: &[SignatureAlgorithm] = &[
    SignatureAlgorithm::EcdsaP256Sha256,
    SignatureAlgorithm::EcdsaP384Sha384,
    SignatureAlgorithm::EcdsaP521Sha512,
    SignatureAlgorithm::RsaSignPkcs1_2048Sha256,
    SignatureAlgorithm::RsaSignPkcs1_3072Sha256,
    SignatureAlgorithm::RsaSignPkcs1_4096Sha256,
];

/// Parses a platform policy from YAML or JSON text.
pub fn parse_platform_policy(text: &str) -> Result<PlatformPolicy, FieldError> {
    platform_policy_from_node(&Node::parse(text)?)
}

pub(crate) fn platform_policy_from_node(root: &Node) -> Result<PlatformPolicy, FieldError> {
    let obj = Obj::new(root, Path::root())?;
    let gke = obj
        .object("gkePolicy")?
        .ok_or_else(|| obj.missing("gkePolicy"))?;
    let image_allowlist = allowlist(&gke, "imageAllowlist")?;
    let mut check_sets: Vec<CheckSet> = Vec::new();
    for (index, (path, node)) in gke.list("checkSets")?.into_iter().enumerate() {
        let set = check_set_from_node(node, path.clone(), index)?;
        check_set_order(&check_sets, &set).map_err(|m| path.error(Some(node), m))?;
        check_sets.push(set);
    }
    Ok(PlatformPolicy {
        name: obj.string("name")?,
        description: obj.string("description")?,
        update_time: obj.string("updateTime")?,
        etag: obj.string("etag")?,
        image_allowlist,
        check_sets,
    })
}

/// GCP's server-side validation: the first check set to match a pod must
/// be the most specific one that does, so a set that an earlier one always
/// shadows, or a service account's set after its namespace's, is refused.
fn check_set_order(earlier: &[CheckSet], set: &CheckSet) -> Result<(), String> {
    for previous in earlier {
        let shadowed = match (&previous.scope, &set.scope) {
            (Scope::Everything, _) => true,
            (Scope::Namespace(a), Scope::Namespace(b)) => a == b,
            (Scope::Namespace(a), Scope::ServiceAccount { namespace, .. }) => a == namespace,
            (
                Scope::ServiceAccount { namespace, name },
                Scope::ServiceAccount {
                    namespace: ns,
                    name: n,
                },
            ) => namespace == ns && name == n,
            _ => false,
        };
        if shadowed {
            return Err(format!(
                "check set with scope {} can never apply: {} (scope {}) comes first and matches every pod it would",
                set.scope.label(),
                previous.name,
                previous.scope.label()
            ));
        }
    }
    Ok(())
}

fn check_set_from_node(node: &Node, path: Path, index: usize) -> Result<CheckSet, FieldError> {
    let obj = Obj::new(node, path)?;
    let name = obj
        .string("displayName")?
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("checkSets[{index}]"));
    let scope = match obj.object("scope")? {
        Some(scope) => scope_from_obj(&scope)?,
        None => Scope::Everything,
    };
    let image_allowlist = allowlist(&obj, "imageAllowlist")?;
    let mut checks = Vec::new();
    for (i, (check_path, check_node)) in obj.list("checks")?.into_iter().enumerate() {
        checks.push(check_from_node(
            check_node,
            check_path,
            format!("checkSets[{index}].checks[{i}]"),
        )?);
    }
    Ok(CheckSet {
        name,
        scope,
        image_allowlist,
        checks,
    })
}

fn scope_from_obj(scope: &Obj<'_>) -> Result<Scope, FieldError> {
    let namespace = scope
        .string("kubernetesNamespace")?
        .filter(|s| !s.is_empty());
    let account = scope
        .string("kubernetesServiceAccount")?
        .filter(|s| !s.is_empty());
    match (namespace, account) {
        (None, None) => Ok(Scope::Everything),
        (Some(_), Some(_)) => Err(scope.path.error(
            Some(scope.node),
            "only one of kubernetesNamespace and kubernetesServiceAccount may be set",
        )),
        (Some(ns), None) => {
            if dns1123_label(&ns) {
                Ok(Scope::Namespace(ns))
            } else {
                Err(scope.path.field("kubernetesNamespace").error(
                    scope.get("kubernetesNamespace"),
                    format!("{ns:?} is not a valid Kubernetes namespace name"),
                ))
            }
        }
        (None, Some(account)) => match account.split_once(':') {
            Some((ns, name)) if dns1123_label(ns) && dns1123_subdomain(name) => {
                Ok(Scope::ServiceAccount {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(scope.path.field("kubernetesServiceAccount").error(
                scope.get("kubernetesServiceAccount"),
                format!("{account:?} is not of the form namespace:serviceaccount"),
            )),
        },
    }
}

/// An `imageAllowlist: {allowPattern: [...]}` field, its patterns compiled
/// (the project policy's name patterns); none when absent.
fn allowlist(obj: &Obj<'_>, field: &str) -> Result<Vec<NamePattern>, FieldError> {
    let Some(list) = obj.object(field)? else {
        return Ok(Vec::new());
    };
    let items = list.list("allowPattern")?;
    if items.is_empty() {
        return Err(list.path.field("allowPattern").error(
            list.get("allowPattern").or(Some(list.node)),
            "an image allowlist needs at least one pattern",
        ));
    }
    items
        .into_iter()
        .map(|(path, node)| {
            let pattern = scalar_string(node, &path)?;
            NamePattern::parse(&pattern)
                .map_err(|e| path.error(Some(node), format!("invalid pattern {pattern:?}: {e}")))
        })
        .collect()
}

fn check_from_node(node: &Node, path: Path, fallback_name: String) -> Result<Check, FieldError> {
    let obj = Obj::new(node, path)?;
    let name = obj
        .string("displayName")?
        .filter(|n| !n.is_empty())
        .unwrap_or(fallback_name);
    let image_allowlist = allowlist(&obj, "imageAllowlist")?;

    // `alwaysDeny: false` is how protobuf JSON leaves the check unset.
    let mut kinds: Vec<&str> = Vec::new();
    let mut unsupported: Vec<&str> = Vec::new();
    for (field, value) in obj.entries {
        if CHECK_ATTRIBUTES.contains(&field.as_str()) || value.is_null() {
            continue;
        }
        match field.as_str() {
            "alwaysDeny" => match &value.kind {
                Kind::Bool(true) => kinds.push("alwaysDeny"),
                Kind::Bool(false) => {}
                _ => {
                    return Err(obj.path.field("alwaysDeny").error(
                        Some(value),
                        format!("expected a boolean, found {}", value.type_name()),
                    ));
                }
            },
            "trustedDirectoryCheck"
            | "simpleSigningAttestationCheck"
            | "sigstoreSignatureCheck" => kinds.push(field.as_str()),
            other => unsupported.push(other),
        }
    }
    let kind = match (kinds.as_slice(), unsupported.as_slice()) {
        (_, [_, ..]) => {
            // Whatever else the check holds, it cannot be evaluated whole.
            let mut all: Vec<&str> = unsupported.clone();
            all.extend(kinds.iter().copied());
            CheckKind::Unsupported {
                kind: all.join("+"),
            }
        }
        ([], []) if !image_allowlist.is_empty() => CheckKind::ImageAllowlist,
        ([], []) => {
            return Err(obj.path.error(
                Some(node),
                format!(
                    "a check needs one of alwaysDeny, imageAllowlist, trustedDirectoryCheck, simpleSigningAttestationCheck, sigstoreSignatureCheck (or {})",
                    KNOWN_UNSUPPORTED.join(", ")
                ),
            ));
        }
        ([one], []) => supported_kind(&obj, one)?,
        (many, []) => {
            return Err(obj.path.error(
                Some(node),
                format!(
                    "a check is one kind of check; this one is {}",
                    many.join(" and ")
                ),
            ));
        }
    };
    Ok(Check {
        name,
        image_allowlist,
        kind,
    })
}

fn supported_kind(obj: &Obj<'_>, field: &str) -> Result<CheckKind, FieldError> {
    if field == "alwaysDeny" {
        return Ok(CheckKind::AlwaysDeny);
    }
    let body = obj.object(field)?.ok_or_else(|| obj.missing(field))?;
    match field {
        "trustedDirectoryCheck" => {
            let items = body.list("trustedDirPatterns")?;
            if items.is_empty() {
                return Err(body.missing("trustedDirPatterns"));
            }
            let patterns = items
                .into_iter()
                .map(|(path, node)| {
                    let pattern = scalar_string(node, &path)?;
                    DirPattern::parse(&pattern).map_err(|e| {
                        path.error(Some(node), format!("invalid pattern {pattern:?}: {e}"))
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(CheckKind::TrustedDirectory { patterns })
        }
        "simpleSigningAttestationCheck" => {
            let mut attestation_projects = Vec::new();
            for (path, node) in body.list("containerAnalysisAttestationProjects")? {
                let project = scalar_string(node, &path)?;
                let valid = project
                    .strip_prefix("projects/")
                    .is_some_and(|id| !id.is_empty() && !id.contains('/'));
                if !valid {
                    return Err(path.error(
                        Some(node),
                        format!("{project:?} is not of the form projects/PROJECT_ID"),
                    ));
                }
                attestation_projects.push(project);
            }
            let mut authenticators = Vec::new();
            for (i, (path, node)) in body
                .list("attestationAuthenticators")?
                .into_iter()
                .enumerate()
            {
                authenticators.push(authenticator_from_node(node, path, i)?);
            }
            if authenticators.is_empty() {
                return Err(body.missing("attestationAuthenticators"));
            }
            Ok(CheckKind::SimpleSigningAttestation {
                attestation_projects,
                authenticators,
            })
        }
        _ => {
            let mut authorities = Vec::new();
            for (i, (path, node)) in body.list("sigstoreAuthorities")?.into_iter().enumerate() {
                authorities.push(authority_from_node(node, path, i)?);
            }
            if authorities.is_empty() {
                return Err(body.missing("sigstoreAuthorities"));
            }
            Ok(CheckKind::SigstoreSignature { authorities })
        }
    }
}

/// An attestation authenticator as an attestor with no note: its PKIX key
/// set, each key with its `keyId` or the id GCP derives.
fn authenticator_from_node(node: &Node, path: Path, index: usize) -> Result<Attestor, FieldError> {
    let obj = Obj::new(node, path)?;
    let name = obj
        .string("displayName")?
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("attestationAuthenticators[{index}]"));
    let set = obj
        .object("pkixPublicKeySet")?
        .ok_or_else(|| obj.missing("pkixPublicKeySet"))?;
    let mut public_keys = Vec::new();
    for (key_path, key_node) in set.list("pkixPublicKeys")? {
        let key = Obj::new(key_node, key_path)?;
        let pem = key.required_string("publicKeyPem")?;
        let algorithm_name = key.required_string("signatureAlgorithm")?;
        let algorithm = SignatureAlgorithm::parse(&algorithm_name).ok_or_else(|| {
            key.path.field("signatureAlgorithm").error(
                key.get("signatureAlgorithm"),
                format!("unknown value {algorithm_name:?}"),
            )
        })?;
        let pkix = PkixKey::from_pem(&pem, algorithm).map_err(|e| {
            key.path
                .field("publicKeyPem")
                .error(key.get("publicKeyPem"), e.to_string())
        })?;
        let id = key
            .string("keyId")?
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| pkix.derived_id());
        public_keys.push(AttestorPublicKey {
            id,
            comment: None,
            material: KeyMaterial::Pkix(pkix),
        });
    }
    if public_keys.is_empty() {
        return Err(set.missing("pkixPublicKeys"));
    }
    Ok(Attestor {
        name,
        description: None,
        note_reference: String::new(),
        public_keys,
    })
}

/// A sigstore authority as an attestor with no note: its public keys,
/// which name no algorithm (see [`SIGSTORE_ALGORITHMS`]).
fn authority_from_node(node: &Node, path: Path, index: usize) -> Result<Attestor, FieldError> {
    let obj = Obj::new(node, path)?;
    let name = obj
        .string("displayName")?
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("sigstoreAuthorities[{index}]"));
    let set = obj
        .object("publicKeySet")?
        .ok_or_else(|| obj.missing("publicKeySet"))?;
    let mut public_keys = Vec::new();
    for (key_path, key_node) in set.list("publicKeys")? {
        let key = Obj::new(key_node, key_path)?;
        let pem = key.required_string("publicKeyPem")?;
        let mut first_error = None;
        let pkix = SIGSTORE_ALGORITHMS.iter().find_map(|algorithm| {
            match PkixKey::from_pem(&pem, *algorithm) {
                Ok(pkix) => Some(pkix),
                Err(e) => {
                    first_error.get_or_insert(e);
                    None
                }
            }
        });
        let Some(pkix) = pkix else {
            let why = match first_error {
                Some(crate::verify::KeyError::InvalidPem(m)) => m,
                _ => "not an ECDSA P-256/P-384/P-521 key or an RSA key of 2048, 3072 or 4096 bits"
                    .to_string(),
            };
            return Err(key
                .path
                .field("publicKeyPem")
                .error(key.get("publicKeyPem"), why));
        };
        public_keys.push(AttestorPublicKey {
            id: pkix.derived_id(),
            comment: None,
            material: KeyMaterial::Pkix(pkix),
        });
    }
    if public_keys.is_empty() {
        return Err(set.missing("publicKeys"));
    }
    Ok(Attestor {
        name,
        description: None,
        note_reference: String::new(),
        public_keys,
    })
}
