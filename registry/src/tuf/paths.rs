//! Which target names a bundle repository may hold: exactly the bundle's
//! file kinds, so a verified target can never be written outside the
//! bundle directory or be something the node does not read.

use super::error::TufError;

/// Accepts `policy.yaml`, `policy.json`, `platform-policy.{yaml,yml,json}`
/// (SPEC §12), `attestors/NAME.{yaml,yml,json}`
/// and `attestations/NAME.json`, where NAME is a plain file name (no
/// separators, not hidden). Everything else, including `..`, absolute
/// paths and backslashes, is a `bad_path` refusal.
pub fn check_bundle_path(path: &str) -> Result<(), TufError> {
    let bad = |why: &str| TufError::BadPath {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    if path.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if path.contains('\\') || path.contains('\0') {
        return Err(bad("backslash or NUL in the name"));
    }
    let components: Vec<&str> = path.split('/').collect();
    if components.iter().any(|c| *c == ".." || *c == ".") {
        return Err(bad("`.` or `..` component"));
    }
    if components.iter().any(|c| c.is_empty()) {
        return Err(bad("empty path component"));
    }
    let allowed = match components.as_slice() {
        ["policy.yaml"] | ["policy.json"] => true,
        // Every name the bundle loader reads a platform policy from.
        [name] if attestgate_policy::platform::FILE_NAMES.contains(name) => true,
        ["attestors", name] => is_plain_name(name, &["yaml", "yml", "json"]),
        ["attestations", name] => is_plain_name(name, &["json"]),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(bad(
            "not a bundle file (policy.yaml, policy.json, platform-policy.yaml|yml|json, attestors/*.yaml|yml|json, attestations/*.json)",
        ))
    }
}

/// Hidden files are skipped by the bundle loader, so a hidden target would
/// be signed but never read: refuse it rather than carry it.
fn is_plain_name(name: &str, extensions: &[&str]) -> bool {
    if name.starts_with('.') {
        return false;
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) => !stem.is_empty() && extensions.contains(&ext),
        None => false,
    }
}
