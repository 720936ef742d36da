//! Image references, normalised the way docker and containerd do it, so the
//! policy sees `docker.io/library/nginx` whether the pod said `nginx`,
//! `library/nginx` or `index.docker.io/library/nginx`.

use std::fmt;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid image reference {reference:?}: {reason}")]
    Invalid {
        reference: String,
        reason: &'static str,
    },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        digest: String,
        reason: &'static str,
    },
}

/// A content digest (`sha256:<64 hex>`, `sha512:<128 hex>`), lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, ReferenceError> {
        let invalid = |reason| ReferenceError::InvalidDigest {
            digest: s.to_string(),
            reason,
        };
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("missing algorithm"))?;
        let expected_len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(invalid("unsupported algorithm (sha256 or sha512 expected)")),
        };
        if hex.len() != expected_len {
            return Err(invalid("wrong length for its algorithm"));
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid("not lower-case hexadecimal"));
        }
        Ok(Digest(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `domain/path`, e.g. `docker.io/library/nginx`, `127.0.0.1:5000/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises a reference as docker does.
    pub fn parse(reference: &str) -> Result<ImageRef, ReferenceError> {
        if reference.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let invalid = |reason| ReferenceError::Invalid {
            reference: reference.to_string(),
            reason,
        };
        let (name_and_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d)?)),
            None => (reference, None),
        };
        let last_slash = name_and_tag.rfind('/');
        let (name, tag) = match name_and_tag.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
            }
            _ => (name_and_tag, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid("invalid tag"));
        }
        if name.is_empty() {
            return Err(invalid("missing repository name"));
        }
        let (domain, path) = split_domain(name);
        if !valid_domain(domain) {
            return Err(invalid("invalid registry host"));
        }
        if !valid_path(&path) {
            return Err(invalid(
                "invalid repository path (lower-case letters, digits and separators)",
            ));
        }
        let repository = format!("{domain}/{path}");
        if repository.len() > MAX_NAME_LEN {
            return Err(invalid("repository name longer than 255 characters"));
        }
        Ok(ImageRef {
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `repository@digest` when there is a digest, else the reference itself.
    pub fn pinned(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.repository),
            None => self.to_string(),
        }
    }

    /// The same image pinned to `digest`, keeping repository and tag.
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            digest: Some(digest),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn split_domain(name: &str) -> (&str, std::borrow::Cow<'_, str>) {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        (
            domain,
            std::borrow::Cow::Owned(format!("{OFFICIAL_REPO_PREFIX}{rest}")),
        )
    } else {
        (domain, std::borrow::Cow::Borrowed(rest))
    }
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_alphanumeric() || *first == b'_' => {}
        _ => return false,
    }
    bytes.len() <= MAX_TAG_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // [IPv6]:port
        match rest.split_once(']') {
            Some((addr, after)) => {
                if addr.is_empty()
                    || !addr
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                match after {
                    "" => return true,
                    p => return p.strip_prefix(':').is_some_and(valid_port),
                }
            }
            None => return false,
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port
        && !valid_port(port)
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

fn valid_path(path: &str) -> bool {
    path.split('/').all(valid_path_component)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    let mut need_alnum = true;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            need_alnum = false;
            i += 1;
            continue;
        }
        if need_alnum {
            return false;
        }
        // A separator: '.', '_', '__' or one or more '-'.
        let start = i;
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > start);
        need_alnum = true;
    }
    !bytes.is_empty() && !need_alnum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx");
        assert_eq!(norm("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(norm("library/nginx"), "docker.io/library/nginx");
        assert_eq!(norm("bitnami/redis"), "docker.io/bitnami/redis");
        assert_eq!(
            norm("index.docker.io/library/nginx"),
            "docker.io/library/nginx"
        );
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx");
    }

    #[test]
    fn registries_with_ports_and_localhost_keep_their_host() {
        assert_eq!(norm("localhost/app"), "localhost/app");
        assert_eq!(norm("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(norm("127.0.0.1:5000/team/app"), "127.0.0.1:5000/team/app");
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app");
        assert_eq!(norm("gcr.io/p/web:1.0"), "gcr.io/p/web:1.0");
    }

    #[test]
    fn tag_is_only_after_last_slash() {
        let r = ImageRef::parse("reg:5000/app").unwrap();
        assert_eq!(r.repository, "reg:5000/app");
        assert_eq!(r.tag, None);
    }

    #[test]
    fn digests_are_validated() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("gcr.io/p/web:1@{d}")).unwrap();
        assert_eq!(r.digest.as_ref().unwrap().as_str(), d);
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert!(ImageRef::parse(&format!("gcr.io/p/web@sha256:{}", "a".repeat(63))).is_err());
        assert!(ImageRef::parse(&format!("gcr.io/p/web@sha256:{}", "A".repeat(64))).is_err());
        assert!(ImageRef::parse(&format!("gcr.io/p/web@md5:{}", "a".repeat(32))).is_err());
        assert!(ImageRef::parse("gcr.io/p/web@").is_err());
    }

    #[test]
    fn invalid_names_are_rejected() {
        for bad in [
            "",
            "gcr.io/Upper",
            "gcr.io/a//b",
            "gcr.io/a/",
            "gcr.io/-a",
            "a:",
            "a:-x",
            "gcr.io:x/a",
            "a b",
            "gcr.io/a..b",
            "gcr.io/a___b",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should be invalid");
        }
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn separators_follow_the_distribution_grammar() {
        for good in [
            "gcr.io/a.b",
            "gcr.io/a_b",
            "gcr.io/a__b",
            "gcr.io/a---b",
            "gcr.io/a-b.c_d",
        ] {
            assert!(ImageRef::parse(good).is_ok(), "{good} should be valid");
        }
    }
}
