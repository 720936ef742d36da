//! `oci://HOST[:PORT]/REPO:TAG` and `oci://HOST[:PORT]/REPO@sha256:HEX`:
//! always with the registry's host, so a bundle source never silently
//! means Docker Hub.

use std::fmt;
use std::str::FromStr;

use super::error::OciError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// `host` or `host:port` (`[v6]:port` for IPv6), as written.
    pub registry: String,
    /// The repository inside the registry: `bundles/prod`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`; pins the artifact when given.
    pub digest: Option<String>,
}

impl OciRef {
    pub fn parse(text: &str) -> Result<OciRef, OciError> {
        let bad = |why: &str| OciError::BadReference {
            reference: text.to_string(),
            why: why.to_string(),
        };
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the registry host"))?;
        check_registry(registry).map_err(|why| bad(&why))?;
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => {
                check_digest(digest).map_err(|why| bad(&why))?;
                (path, Some(digest.to_string()))
            }
            None => (path, None),
        };
        // A colon in the last component is the tag; a repository name never
        // contains one.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => {
                check_tag(tag).map_err(|why| bad(&why))?;
                (repository, Some(tag.to_string()))
            }
            _ => (path, None),
        };
        check_repository(repository).map_err(|why| bad(&why))?;
        if tag.is_none() && digest.is_none() {
            return Err(bad("no :TAG or @sha256:DIGEST"));
        }
        Ok(OciRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// What the manifest is asked for by: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest,
            (None, Some(tag)) => tag,
            (None, None) => "latest",
        }
    }

    /// The host without the port, as `plain_http` entries may name it.
    pub fn host(&self) -> &str {
        if let Some(v6) = self.registry.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6);
        }
        self.registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(host, _)| host)
    }
}

impl FromStr for OciRef {
    type Err = OciError;
    fn from_str(text: &str) -> Result<OciRef, OciError> {
        OciRef::parse(text)
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `sha256:` and 64 lowercase hex digits, the only digests we ask for or
/// accept: anything else could not be checked.
pub(crate) fn check_digest(digest: &str) -> Result<&str, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest:?} is not sha256:…"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} is not sha256: and 64 lowercase hex digits"
        ));
    }
    Ok(hex)
}

pub(crate) fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let (address, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("registry {registry:?}: unclosed ["))?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry {registry:?}: not an IPv6 address"));
        }
        match after {
            "" => return Ok(()),
            _ => (
                address,
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("registry {registry:?}: junk after ]"))?,
            ),
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, port),
            None => (registry, ""),
        }
    };
    if !registry.starts_with('[') {
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Err(format!(
                "registry host {host:?} is not a host name or address"
            ));
        }
    }
    if (registry.contains(':') && !registry.starts_with('[')) || registry.contains("]:") {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("registry port {port:?} is not a port number")),
        }
    }
    Ok(())
}

/// The distribution spec's repository grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub(crate) fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository name is empty".into());
    }
    if repository.len() > 255 {
        return Err("the repository name is longer than 255 characters".into());
    }
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let ok = !bytes.is_empty()
            && bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && bytes
                .iter()
                .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.")
            && !component.contains(".-")
            && !component.contains("-.")
            && !component.contains("_-")
            && !component.contains("-_");
        if !ok {
            return Err(format!(
                "repository {repository:?}: {component:?} is not lowercase letters and digits joined by . _ or -"
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is not 1 to 128 letters, digits, _ . or - (not starting with . or -)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = OciRef::parse("oci://127.0.0.1:5000/bundles/prod:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "bundles/prod");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);
        assert_eq!(r.host(), "127.0.0.1");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/bundles/prod:v1");

        let d = format!("sha256:{}", "a".repeat(64));
        let r = OciRef::parse(&format!("oci://registry.example/b@{d}")).unwrap();
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.tag, None);
        let r = OciRef::parse(&format!("oci://[::1]:5000/b:t@{d}")).unwrap();
        assert_eq!(r.host(), "::1");
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.tag.as_deref(), Some("t"));
    }

    #[test]
    fn malformed_references_are_refused() {
        for wrong in [
            "127.0.0.1:5000/b:v1",
            "https://h/b:v1",
            "oci://h/b",
            "oci://h",
            "oci:///b:v1",
            "oci://h:0/b:v1",
            "oci://h:99999/b:v1",
            "oci://h:x/b:v1",
            "oci://h/B:v1",
            "oci://h/b/:v1",
            "oci://h//b:v1",
            "oci://h/b:",
            "oci://h/b:-x",
            "oci://h/b@sha256:abc",
            "oci://h/b@md5:00",
            "oci://h_x/b:v1",
            "oci://[zz]:1/b:v1",
        ] {
            let e = OciRef::parse(wrong).unwrap_err();
            assert_eq!(e.reason(), "bad_reference", "{wrong}");
            assert!(e.to_string().contains(wrong), "{e}");
        }
    }
}
