//! The credentials kubelet hands the runtime with a PullImage request
//! (CRI `AuthConfig`), read the way containerd reads them, so a lookup
//! beside the pull sees the registry as the pull does.

use base64::Engine as _;

use crate::oci::Credentials;

/// CRI's `AuthConfig`, field for field; empty strings for fields not set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CriAuth {
    pub username: String,
    pub password: String,
    /// base64 of `user:password`.
    pub auth: String,
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

// Secrets stay out of logs.
impl std::fmt::Debug for CriAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "" } else { "***" };
        f.debug_struct("CriAuth")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("auth", &set(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

/// The credentials `auth` gives for `registry` (`host` or `host:port`):
///
/// - `server_address` set and naming another host (scheme and path
///   aside): anonymous, as containerd does, so credentials never go to a
///   registry they were not meant for;
/// - else `username` (with `password`): Basic;
/// - else `identity_token`: **anonymous**. containerd trades it for an
///   access token at the registry's token service (an OAuth2 refresh-token
///   grant), which our client does not do; rather than send a refresh
///   token where a password is expected, the lookup goes without, and a
///   registry that needs credentials answers 401 (logged and counted);
/// - else `auth`: base64 `user:password`, split at the first `:`, trailing
///   NULs trimmed from the password; anonymous when it does not decode
///   (kubelet's credentials for this image are broken, and other
///   credentials are not substituted for them);
/// - else `registry_token`: Bearer (containerd leaves it unused);
/// - nothing set: `None`, and the caller falls back to
///   `registry_credentials`.
pub fn credentials_from_cri(auth: &CriAuth, registry: &str) -> Option<Credentials> {
    let given = [
        &auth.username,
        &auth.password,
        &auth.auth,
        &auth.identity_token,
        &auth.registry_token,
    ]
    .iter()
    .any(|field| !field.is_empty());
    if !given {
        return None;
    }
    if !auth.server_address.is_empty()
        && !same_registry(&server_host(&auth.server_address), registry)
    {
        return Some(Credentials::Anonymous);
    }
    if !auth.username.is_empty() {
        return Some(Credentials::Basic {
            username: auth.username.clone(),
            password: auth.password.clone(),
        });
    }
    if !auth.identity_token.is_empty() {
        return Some(Credentials::Anonymous);
    }
    if !auth.auth.is_empty() {
        return Some(decode_auth(&auth.auth).unwrap_or(Credentials::Anonymous));
    }
    if !auth.registry_token.is_empty() {
        return Some(Credentials::Bearer(auth.registry_token.clone()));
    }
    // Only a password: nothing containerd would send either.
    Some(Credentials::Anonymous)
}

fn decode_auth(auth: &str) -> Option<Credentials> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(Credentials::Basic {
        username: username.to_string(),
        password: password.trim_end_matches('\0').to_string(),
    })
}

/// `https://host:port/v1/` → `host:port`.
fn server_host(address: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or(rest)
        .to_ascii_lowercase()
}

/// Host names compare without case; Docker Hub answers to several names,
/// and kubelet's keyring writes its server as `https://index.docker.io/v1/`.
fn same_registry(server: &str, registry: &str) -> bool {
    let hub = |host: &str| {
        matches!(
            host,
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
        )
    };
    let registry = registry.to_ascii_lowercase();
    server == registry || (hub(server) && hub(&registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Option<Credentials> {
        Some(Credentials::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn cri_credentials_are_read_as_containerd_reads_them() {
        let reg = "reg.example:5000";
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let with = |f: &dyn Fn(&mut CriAuth)| {
            let mut auth = CriAuth::default();
            f(&mut auth);
            credentials_from_cri(&auth, reg)
        };
        assert_eq!(with(&|_| {}), None);
        assert_eq!(with(&|a| a.server_address = reg.into()), None);
        assert_eq!(
            with(&|a| {
                a.username = "u".into();
                a.password = "p".into();
            }),
            basic("u", "p")
        );
        // username wins over auth and tokens.
        assert_eq!(
            with(&|a| {
                a.username = "u".into();
                a.auth = b64("x:y");
                a.registry_token = "t".into();
            }),
            basic("u", "")
        );
        assert_eq!(
            with(&|a| a.auth = b64("user:pa:ss\0\0")),
            basic("user", "pa:ss")
        );
        assert_eq!(
            with(&|a| a.auth = "%%%".into()),
            Some(Credentials::Anonymous)
        );
        assert_eq!(
            with(&|a| a.auth = b64("nocolon")),
            Some(Credentials::Anonymous)
        );
        assert_eq!(
            with(&|a| a.registry_token = "tok".into()),
            Some(Credentials::Bearer("tok".into()))
        );
        // An identity token is not traded for an access token: anonymous,
        // even when auth is also set (containerd would use the token).
        assert_eq!(
            with(&|a| {
                a.identity_token = "refresh".into();
                a.auth = b64("u:p");
            }),
            Some(Credentials::Anonymous)
        );
        // The server address must name this registry.
        for (server, expected) in [
            ("https://reg.example:5000/v1/", basic("u", "p")),
            ("reg.example:5000", basic("u", "p")),
            ("http://REG.example:5000", basic("u", "p")),
            ("https://reg.example/v1/", Some(Credentials::Anonymous)),
            ("https://other.example:5000", Some(Credentials::Anonymous)),
        ] {
            assert_eq!(
                with(&|a| {
                    a.server_address = server.into();
                    a.auth = b64("u:p");
                }),
                expected,
                "{server}"
            );
        }
        let hub = CriAuth {
            server_address: "https://index.docker.io/v1/".into(),
            username: "u".into(),
            ..CriAuth::default()
        };
        assert_eq!(credentials_from_cri(&hub, "docker.io"), basic("u", ""));
        assert!(
            !format!(
                "{:?}",
                CriAuth {
                    password: "hunter2".into(),
                    ..CriAuth::default()
                }
            )
            .contains("hunter2")
        );
    }
}
