//! `trustedDirPatterns` of a trusted directory check. A pattern names a
//! directory, `registry/path/to/directory`; an image is in it when the
//! image's repository without its last component (the directory the image
//! sits in) matches. Wildcards, as GCP documents them: one leading `*` for
//! varying prefixes of the registry's first label (`*-docker.pkg.dev`,
//! `*.gcr.io`), and after `registry/` a trailing `*` (no `/`) or `**`
//! (anything). Nothing else may hold a `*`.

use crate::reference::ImageRef;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirPatternError {
    #[error("empty pattern")]
    Empty,
    #[error("pattern contains whitespace or control characters")]
    BadCharacter,
    #[error("a pattern is registry/path/to/directory; this one has no path")]
    NoPath,
    #[error("the registry must be two or more dot-separated words, e.g. gcr.io")]
    BadRegistry,
    #[error(
        "a leading \"*\" may only stand for the start of the registry's first label, before \"-\" or \".\""
    )]
    BadLeadingWildcard,
    #[error(
        "\"*\" is allowed only leading the registry or trailing the path (\"*\" or \"**\" after registry/)"
    )]
    MisplacedWildcard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tail {
    /// The directory path is exactly this.
    Exact(String),
    /// This prefix, then anything without `/`.
    Segment(String),
    /// This prefix, then anything.
    Anything(String),
}

/// One compiled trusted directory pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirPattern {
    pattern: String,
    /// With a leading `*`: what the registry host must end with (`-docker.pkg.dev`).
    host_suffix: Option<String>,
    /// Without one: the host exactly.
    host: String,
    tail: Tail,
}

impl DirPattern {
    pub fn parse(pattern: &str) -> Result<DirPattern, DirPatternError> {
        if pattern.is_empty() {
            return Err(DirPatternError::Empty);
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(DirPatternError::BadCharacter);
        }
        let (host, path) = pattern.split_once('/').ok_or(DirPatternError::NoPath)?;
        if path.is_empty() {
            return Err(DirPatternError::NoPath);
        }
        let (host_suffix, bare_host) = match host.strip_prefix('*') {
            Some(rest) => {
                if !(rest.starts_with('-') || rest.starts_with('.')) {
                    return Err(DirPatternError::BadLeadingWildcard);
                }
                (Some(rest.to_string()), rest.trim_start_matches(['-', '.']))
            }
            None => (None, host),
        };
        if bare_host.contains('*') {
            return Err(DirPatternError::MisplacedWildcard);
        }
        let domain = bare_host.split(':').next().unwrap_or_default();
        let labels: Vec<&str> = domain.split('.').collect();
        // `*-docker.pkg.dev` leaves `docker.pkg.dev`, still two words or more.
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
            return Err(DirPatternError::BadRegistry);
        }
        let tail = if let Some(prefix) = path.strip_suffix("**") {
            Tail::Anything(prefix.to_string())
        } else if let Some(prefix) = path.strip_suffix('*') {
            Tail::Segment(prefix.to_string())
        } else {
            Tail::Exact(path.to_string())
        };
        let fixed = match &tail {
            Tail::Exact(p) | Tail::Segment(p) | Tail::Anything(p) => p,
        };
        if fixed.contains('*') {
            return Err(DirPatternError::MisplacedWildcard);
        }
        if fixed.split('/').any(str::is_empty) && matches!(tail, Tail::Exact(_)) {
            return Err(DirPatternError::NoPath);
        }
        Ok(DirPattern {
            pattern: pattern.to_string(),
            host: if host_suffix.is_some() {
                String::new()
            } else {
                host.to_string()
            },
            host_suffix,
            tail,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `image` sits in a directory this pattern names.
    pub fn matches(&self, image: &ImageRef) -> bool {
        let Some((directory, _name)) = image.repository.rsplit_once('/') else {
            return false;
        };
        let Some((host, path)) = directory.split_once('/') else {
            // An image right under the registry has no directory to trust.
            return false;
        };
        let host_ok = match &self.host_suffix {
            Some(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| !head.is_empty() && !head.contains('.') && !head.contains(':')),
            None => host == self.host,
        };
        host_ok
            && match &self.tail {
                Tail::Exact(want) => path == want,
                Tail::Segment(prefix) => path
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| !rest.contains('/')),
                Tail::Anything(prefix) => path.starts_with(prefix.as_str()),
            }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn m(pattern: &str, image: &str) -> bool {
        DirPattern::parse(pattern)
            .unwrap()
            .matches(&ImageRef::parse(image).unwrap())
    }

    #[test]
    fn a_directory_holds_the_images_directly_in_it() {
        assert!(m(
            "gcr.io/my-project/my-repo",
            "gcr.io/my-project/my-repo/app:1"
        ));
        assert!(!m(
            "gcr.io/my-project/my-repo",
            "gcr.io/my-project/my-repo/sub/app"
        ));
        assert!(!m(
            "gcr.io/my-project/my-repo",
            "gcr.io/my-project/my-repo2/app"
        ));
        assert!(!m("gcr.io/my-project/my-repo", "gcr.io/my-project/app"));
        assert!(!m(
            "gcr.io/my-project/my-repo",
            "evil.io/my-project/my-repo/app"
        ));
    }

    #[test]
    fn trailing_wildcards_match_one_level_or_any() {
        assert!(m("gcr.io/my-project/*", "gcr.io/my-project/team/app"));
        assert!(!m("gcr.io/my-project/*", "gcr.io/my-project/team/sub/app"));
        assert!(m("gcr.io/my-project/**", "gcr.io/my-project/team/sub/app"));
        assert!(!m("gcr.io/my-project/**", "gcr.io/other/team/app"));
        assert!(m(
            "gcr.io/my-project/team-*",
            "gcr.io/my-project/team-a/app"
        ));
        assert!(!m("gcr.io/my-project/team-*", "gcr.io/my-project/ops/app"));
    }

    #[test]
    fn a_leading_wildcard_varies_the_registry_s_first_label_only() {
        assert!(m("*-docker.pkg.dev/p/repo", "us-docker.pkg.dev/p/repo/app"));
        assert!(m(
            "*-docker.pkg.dev/p/repo",
            "europe-west1-docker.pkg.dev/p/repo/app"
        ));
        assert!(!m("*-docker.pkg.dev/p/repo", "docker.pkg.dev/p/repo/app"));
        assert!(!m(
            "*-docker.pkg.dev/p/repo",
            "evil.us-docker.pkg.dev/p/repo/app"
        ));
        assert!(m("*.gcr.io/my-project", "eu.gcr.io/my-project/app"));
        assert!(!m("*.gcr.io/my-project", "gcr.io/my-project/app"));
    }

    #[test]
    fn the_documented_invalid_patterns_are_refused() {
        for bad in [
            "gcr.i*",
            "sub*domain.gcr.io/nginx",
            "*pkg.dev/my-project/my-repo",
            "**-docker.pkg.dev/p",
            "gcr.io/*/repo",
            "gcr.io",
            "gcr.io/",
            "localhost/p/repo",
            "",
            "gcr.io/a b",
        ] {
            assert!(DirPattern::parse(bad).is_err(), "{bad} should be invalid");
        }
    }
}
