//! The bundle as the node loads it (node/src/store.rs): the policy,
//! attestors and attestations, and for a synced bundle its `sync.json`,
//! read through the directory the bundle path names now.

use std::path::Path;

use attestgate_node::freshness::Freshness;
use attestgate_policy::Bundle;
use time::OffsetDateTime;

use super::report::{Check, span};
use super::root::Root;

const NAME: &str = "bundle";

pub fn check(root: &Root, bundle: &Path, now: OffsetDateTime) -> Check {
    let shown = bundle.display();
    let dir = root.follow(bundle);
    let fix = format!(
        "fix the bundle: `attestgate policy check {shown}` names the file, line and field \
         (the node keeps deciding by the last good bundle it loaded, or by fail_mode if none)"
    );
    if !dir.is_dir() {
        return Check::fail(
            NAME,
            format!("{shown} is not a directory: no valid bundle, the fail mode applies"),
            format!(
                "put policy.yaml, attestors/ and attestations/ in {shown}, or configure bundle_source"
            ),
        );
    }
    let loaded = match Bundle::load(&dir) {
        Ok(bundle) => bundle,
        Err(e) => {
            let all: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
            return Check::fail(
                NAME,
                format!("{shown} is not a valid bundle: {}", all.join("; ")),
                fix,
            );
        }
    };
    let freshness = match Freshness::of(&dir) {
        Ok(freshness) => freshness,
        Err(e) => return Check::fail(NAME, format!("{shown}: {e}"), fix),
    };
    let contents = format!(
        "{shown}: valid ({} attestor(s), {} attestation(s), {} skipped) {}",
        loaded.attestors().count(),
        loaded.occurrence_count(),
        loaded.warnings().len(),
        loaded.digest()
    );
    match freshness {
        None => Check::pass(
            NAME,
            format!("{contents}; not synced (no sync.json): never expires"),
        ),
        Some(f) if f.expired(now) => Check::fail(
            NAME,
            format!(
                "{contents}; synced version {} expired {} ago: the node treats it as no bundle",
                f.version,
                span((now - f.expires).whole_seconds())
            ),
            "publish a new version, or renew it with `attestgate repo timestamp` at the source; \
             `journalctl -u attestgate-sync` says why the node has not taken a renewal",
        ),
        Some(f) => Check::pass(
            NAME,
            format!(
                "{contents}; synced version {}, expires in {}",
                f.version,
                span((f.expires - now).whole_seconds())
            ),
        ),
    }
}
