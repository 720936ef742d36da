//! Allowlist name patterns with Binary Authorization's semantics: a trailing
//! `*` matches any characters except `/`, a trailing `**` matches any
//! characters, and a pattern without wildcards names a repository (any tag
//! or digest) or, with a tag or digest, exactly that.

use crate::reference::{ImageRef, ReferenceError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("empty pattern")]
    Empty,
    #[error("wildcards are only allowed at the end of a pattern (\"*\" or \"**\")")]
    MisplacedWildcard,
    #[error("pattern contains whitespace or control characters")]
    BadCharacter,
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// Prefix followed by `*`: the rest has no `/`.
    Segment(String),
    /// Prefix followed by `**`.
    Anything(String),
    /// A repository, possibly pinned to a tag and/or digest.
    Exact(ImageRef),
}

/// One compiled allowlist or system-image pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    pattern: String,
    matcher: Matcher,
}

impl NamePattern {
    pub fn parse(pattern: &str) -> Result<NamePattern, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PatternError::BadCharacter);
        }
        let matcher = if let Some(prefix) = pattern.strip_suffix("**") {
            Matcher::Anything(wildcard_prefix(prefix)?)
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            Matcher::Segment(wildcard_prefix(prefix)?)
        } else {
            Matcher::Exact(ImageRef::parse(pattern)?)
        };
        Ok(NamePattern {
            pattern: pattern.to_string(),
            matcher,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the (normalised) image matches: its repository, its
    /// `repository:tag` and its `repository@digest` are each tried.
    pub fn matches(&self, image: &ImageRef) -> bool {
        match &self.matcher {
            Matcher::Exact(want) => {
                want.repository == image.repository
                    && want
                        .tag
                        .as_ref()
                        .is_none_or(|t| image.tag.as_ref() == Some(t))
                    && want
                        .digest
                        .as_ref()
                        .is_none_or(|d| image.digest.as_ref() == Some(d))
            }
            Matcher::Segment(prefix) | Matcher::Anything(prefix) => {
                let segment_only = matches!(self.matcher, Matcher::Segment(_));
                let accepts = |candidate: &str| match candidate.strip_prefix(prefix.as_str()) {
                    Some(rest) => !segment_only || !rest.contains('/'),
                    None => false,
                };
                // The three forms share the repository as their prefix, so
                // each is checked without building a string.
                let repo = image.repository.as_str();
                if accepts(repo) {
                    return true;
                }
                let with_suffix = |sep: char, suffix: &str| {
                    if prefix.len() <= repo.len() {
                        repo.starts_with(prefix.as_str())
                            && (!segment_only
                                || !repo[prefix.len()..].contains('/') && !suffix.contains('/'))
                    } else {
                        let mut candidate = String::with_capacity(repo.len() + 1 + suffix.len());
                        candidate.push_str(repo);
                        candidate.push(sep);
                        candidate.push_str(suffix);
                        accepts(&candidate)
                    }
                };
                image.tag.as_deref().is_some_and(|t| with_suffix(':', t))
                    || image
                        .digest
                        .as_ref()
                        .is_some_and(|d| with_suffix('@', d.as_str()))
            }
        }
    }
}

fn wildcard_prefix(prefix: &str) -> Result<String, PatternError> {
    if prefix.contains('*') {
        return Err(PatternError::MisplacedWildcard);
    }
    Ok(prefix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, image: &str) -> bool {
        NamePattern::parse(pattern)
            .unwrap()
            .matches(&ImageRef::parse(image).unwrap())
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn single_star_stops_at_slash() {
        assert!(m(
            "gcr.io/google_containers/*",
            "gcr.io/google_containers/pause"
        ));
        assert!(m(
            "gcr.io/google_containers/*",
            "gcr.io/google_containers/pause:3.1"
        ));
        assert!(m(
            "gcr.io/google_containers/*",
            &format!("gcr.io/google_containers/pause@{D}")
        ));
        assert!(!m(
            "gcr.io/google_containers/*",
            "gcr.io/google_containers/sub/pause"
        ));
        assert!(!m(
            "gcr.io/google_containers/*",
            "gcr.io/google_containers_evil/pause"
        ));
    }

    #[test]
    fn double_star_matches_everything_below() {
        assert!(m("k8s.gcr.io/**", "k8s.gcr.io/a/b/c:1"));
        assert!(m("gcr.io/p/**", &format!("gcr.io/p/x/y@{D}")));
        assert!(!m("gcr.io/p/**", "gcr.io/q/x"));
    }

    #[test]
    fn star_after_partial_name_matches_tags() {
        assert!(m("registry.k8s.io/pause*", "registry.k8s.io/pause:3.9"));
        assert!(m("registry.k8s.io/pause*", "registry.k8s.io/pause"));
        assert!(!m("registry.k8s.io/pause*", "registry.k8s.io/pause/evil"));
        assert!(m("gcr.io/p/app:v1*", "gcr.io/p/app:v1.2"));
        assert!(!m("gcr.io/p/app:v1*", "gcr.io/p/app:v2"));
    }

    #[test]
    fn exact_repository_matches_any_tag_or_digest() {
        assert!(m("gcr.io/p/app", "gcr.io/p/app:1"));
        assert!(m("gcr.io/p/app", &format!("gcr.io/p/app@{D}")));
        assert!(!m("gcr.io/p/app", "gcr.io/p/app2"));
        assert!(!m("gcr.io/p/app", "gcr.io/p/app/sub"));
    }

    #[test]
    fn exact_tag_or_digest_matches_only_that() {
        assert!(m("gcr.io/p/app:1", "gcr.io/p/app:1"));
        assert!(!m("gcr.io/p/app:1", "gcr.io/p/app:2"));
        assert!(!m("gcr.io/p/app:1", &format!("gcr.io/p/app@{D}")));
        assert!(m(
            &format!("gcr.io/p/app@{D}"),
            &format!("gcr.io/p/app:9@{D}")
        ));
        assert!(!m(&format!("gcr.io/p/app@{D}"), "gcr.io/p/app:9"));
    }

    #[test]
    fn exact_patterns_are_normalised_like_images() {
        assert!(m("nginx", "docker.io/library/nginx:1"));
        assert!(m("docker.io/library/nginx", "nginx"));
    }

    #[test]
    fn misplaced_wildcards_are_rejected() {
        for bad in [
            "gcr.io/*/app",
            "*gcr.io",
            "gcr.io/a***",
            "gcr.io/*a*",
            "",
            "gcr.io/a b*",
        ] {
            assert!(NamePattern::parse(bad).is_err(), "{bad} should be invalid");
        }
    }
}
