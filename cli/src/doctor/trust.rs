//! The trust root as attestgate-sync takes it: a TUF root that parses and
//! is signed by a threshold of its own keys (registry's `Trust`).

use std::path::Path;

use attestgate_registry::tuf::Trust;

use super::report::Check;
use super::root::Root;

const NAME: &str = "trust_root";

/// `path`: the configured `trust_root`, or the syncer's default when
/// bundles are synced; none when neither applies.
pub fn check(root: &Root, path: Option<&Path>) -> Check {
    let Some(path) = path else {
        return Check::pass(
            NAME,
            "no trust_root and no bundle_source: bundles are not synced, nothing to trust",
        );
    };
    let shown = path.display();
    let remedy = format!(
        "install the bundle repository's first root: `install -D -m 0644 REPO/metadata/1.root.json {shown}`"
    );
    let bytes = match std::fs::read(root.path(path)) {
        Ok(bytes) => bytes,
        Err(e) => return Check::fail(NAME, format!("{shown}: {e}"), remedy),
    };
    // A throwaway state: doctor trusts nothing and keeps nothing.
    match Trust::ephemeral(&bytes) {
        Ok(trust) => Check::pass(
            NAME,
            format!(
                "{shown}: TUF root version {}, signed by a threshold of its own keys",
                trust.root_version()
            ),
        ),
        Err(e) => Check::fail(NAME, format!("{shown}: {e}"), remedy),
    }
}
