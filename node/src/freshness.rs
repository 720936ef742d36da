//! A synced bundle's freshness (SPEC §10): the version of the TUF metadata
//! it was verified with and the earliest `expires` of that metadata,
//! written by attestgate-sync beside the bundle's files as `sync.json`.
//! Past it the bundle is no valid bundle: a node cut off from its source
//! (a frozen mirror, a registry held back by an attacker) must not go on
//! deciding by a policy its publisher has let lapse.

use std::path::Path;

use attestgate_policy::FieldError;
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The file attestgate-sync writes into every bundle version it makes.
pub const FILE: &str = "sync.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub version: u64,
    pub expires: OffsetDateTime,
}

#[derive(Deserialize)]
struct Written {
    version: u64,
    expires: String,
}

impl Freshness {
    /// The freshness of the bundle at `dir`: none for a bundle that was not
    /// synced (no `sync.json`); an error names what is wrong with one that
    /// is there, and makes the bundle invalid, since a bundle that says it
    /// was synced but cannot say until when is not to be trusted.
    pub fn of(dir: &Path) -> Result<Option<Freshness>, FieldError> {
        let path = dir.join(FILE);
        let wrong = |field: &str, message: String| FieldError {
            file: Some(path.clone()),
            location: None,
            path: field.into(),
            message,
        };
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(wrong("", format!("cannot read: {e}"))),
        };
        let written: Written = serde_json::from_slice(&text).map_err(|e| {
            wrong(
                "",
                format!("expected {{\"version\": N, \"expires\": RFC 3339 time}}: {e}"),
            )
        })?;
        let expires = OffsetDateTime::parse(&written.expires, &Rfc3339).map_err(|e| {
            wrong(
                "expires",
                format!("{:?} is not an RFC 3339 time: {e}", written.expires),
            )
        })?;
        Ok(Some(Freshness {
            version: written.version,
            expires,
        }))
    }

    /// `sync.json` as attestgate-sync writes it, with where the bundle came
    /// from for the operator who looks (readers ignore it).
    pub fn render(&self, source: &str) -> String {
        let expires = self
            .expires
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.expires.unix_timestamp().to_string());
        format!(
            "{}\n",
            serde_json::json!({"version": self.version, "expires": expires, "source": source})
        )
    }

    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires <= now
    }

    /// Why the bundle may not decide at `now`, if it may not.
    pub fn lapsed(&self, now: OffsetDateTime) -> Option<String> {
        self.expired(now).then(|| {
            format!(
                "synced bundle version {} expired at {} (its TUF metadata has not been renewed)",
                self.version,
                attestgate_policy::decision::format_time(self.expires)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_bundle_says_until_when_or_it_is_not_a_synced_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Freshness::of(dir.path()), Ok(None));
        std::fs::write(
            dir.path().join(FILE),
            r#"{"version": 7, "expires": "2026-12-09T00:00:00Z", "source": "oci://r/b:p"}"#,
        )
        .unwrap();
        let f = Freshness::of(dir.path()).unwrap().unwrap();
        assert_eq!(f.version, 7);
        assert_eq!(f.expires, time::macros::datetime!(2026-12-09 0:00 UTC));
        assert!(!f.expired(time::macros::datetime!(2026-12-08 23:59:59 UTC)));
        assert!(f.expired(time::macros::datetime!(2026-12-09 0:00 UTC)));
        let rendered = Freshness {
            version: 9,
            expires: time::macros::datetime!(2027-01-02 3:04:05 UTC),
        };
        std::fs::write(dir.path().join(FILE), rendered.render("file:///m")).unwrap();
        assert_eq!(Freshness::of(dir.path()), Ok(Some(rendered)));
        for wrong in [
            r#"{"version": 7}"#,
            r#"{"version": -1, "expires": "2026-12-09T00:00:00Z"}"#,
            r#"{"version": 7, "expires": "next week"}"#,
            "not json",
        ] {
            std::fs::write(dir.path().join(FILE), wrong).unwrap();
            let e = Freshness::of(dir.path()).unwrap_err().to_string();
            assert!(e.contains("sync.json"), "{e}");
        }
    }
}
