//! The distribution API over reqwest, request by request, so what a poll
//! costs is exactly what is sent: credentials go with the first request
//! (no ping), a token service is asked only when the registry says so, and
//! its token is kept for later polls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_LENGTH, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};

use super::error::OciError;
use super::options::{Credentials, RegistryOptions};
use super::reference::OciRef;

/// Tokens from registries' token services, by registry, repository, scope
/// and credentials, so an unchanged poll is one request on those registries
/// too.
static TOKENS: Mutex<Option<HashMap<TokenKey, (String, Instant)>>> = Mutex::new(None);

#[derive(Hash, PartialEq, Eq, Clone)]
struct TokenKey {
    registry: String,
    repository: String,
    scope: String,
    credentials: String,
}

/// A token response is a small JSON object.
const MAX_TOKEN_RESPONSE: u64 = 64 << 10;

pub(crate) struct Session {
    client: Client,
    /// `http(s)://registry/v2/repository`
    base: String,
    reference: OciRef,
    credentials: Credentials,
    pub(crate) timeout: Duration,
    plain_http: bool,
    pub(crate) requests: u32,
    pub(crate) bytes: u64,
}

impl Session {
    pub(crate) fn new(reference: &OciRef, options: &RegistryOptions) -> Result<Session, OciError> {
        let client = options
            .http_client()
            .map_err(|why| OciError::BadOptions { why })?;
        let plain_http = options.is_plain_http(&reference.registry);
        let scheme = if plain_http { "http" } else { "https" };
        Ok(Session {
            client,
            base: format!(
                "{scheme}://{}/v2/{}",
                reference.registry, reference.repository
            ),
            reference: reference.clone(),
            credentials: options.credentials.clone(),
            timeout: options.timeout,
            plain_http,
            requests: 0,
            bytes: 0,
        })
    }

    /// A session on a repository, not on one artifact of it: what an image's
    /// signatures are looked up in.
    pub(crate) fn for_repository(
        registry: &str,
        repository: &str,
        options: &RegistryOptions,
    ) -> Result<Session, OciError> {
        let reference = OciRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: None,
            digest: None,
        };
        let bad = |why: String| OciError::BadReference {
            reference: format!("{registry}/{repository}"),
            why,
        };
        super::reference::check_registry(registry).map_err(bad)?;
        super::reference::check_repository(repository).map_err(bad)?;
        Session::new(&reference, options)
    }

    pub(crate) fn reference(&self) -> String {
        self.reference.to_string()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// Where a relative `Location` from the registry points.
    pub(crate) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            return location.to_string();
        }
        let scheme = if self.plain_http { "http" } else { "https" };
        format!(
            "{scheme}://{}/{}",
            self.reference.registry,
            location.trim_start_matches('/')
        )
    }

    /// Sends what `build` makes, with credentials; when the registry answers
    /// 401 with a Bearer challenge, gets a token once and sends it again.
    pub(crate) async fn send(
        &mut self,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, OciError> {
        let cached = self.cached_token();
        let first = self.attach(build(&self.client), cached.as_deref());
        let response = self.dispatch(first).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = bearer_challenge(response.headers()) else {
            return Ok(response);
        };
        if let Some(key) = self.token_key(&challenge) {
            forget_token(&key);
        }
        let token = self.token(&challenge).await?;
        let again = build(&self.client).bearer_auth(&token);
        self.dispatch(again).await
    }

    fn attach(&self, request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
        match (token, &self.credentials) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            (None, Credentials::Bearer(token)) => request.bearer_auth(token),
            (None, Credentials::Anonymous) => request,
        }
    }

    async fn dispatch(&mut self, request: RequestBuilder) -> Result<Response, OciError> {
        self.requests += 1;
        request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, String::new()))
    }

    /// A request that failed underway: a timeout is told apart, so that a
    /// registry that hangs is counted as such.
    pub(crate) fn transport_error(&self, error: &reqwest::Error, doing: String) -> OciError {
        let why = if doing.is_empty() {
            chain(error)
        } else {
            format!("{doing}: {}", chain(error))
        };
        if error.is_timeout() {
            OciError::Timeout {
                reference: self.reference(),
                after: self.timeout,
                why,
            }
        } else {
            OciError::Unreachable {
                reference: self.reference(),
                why,
            }
        }
    }

    fn credentials_id(&self) -> String {
        match &self.credentials {
            Credentials::Anonymous => String::new(),
            Credentials::Basic { username, password } => {
                super::manifest::sha256_digest(format!("{username}\0{password}").as_bytes())
            }
            Credentials::Bearer(token) => super::manifest::sha256_digest(token.as_bytes()),
        }
    }

    fn token_key(&self, challenge: &Challenge) -> Option<TokenKey> {
        Some(TokenKey {
            registry: self.reference.registry.clone(),
            repository: self.reference.repository.clone(),
            scope: challenge.scope.clone().unwrap_or_default(),
            credentials: self.credentials_id(),
        })
    }

    /// A token cached for this repository (any scope: the registry says
    /// with a 401 when it needs another).
    fn cached_token(&self) -> Option<String> {
        let guard = TOKENS.lock().ok()?;
        let now = Instant::now();
        guard.as_ref()?.iter().find_map(|(key, (token, until))| {
            (key.registry == self.reference.registry
                && key.repository == self.reference.repository
                && key.credentials == self.credentials_id()
                && *until > now)
                .then(|| token.clone())
        })
    }

    async fn token(&mut self, challenge: &Challenge) -> Result<String, OciError> {
        let reference = self.reference();
        let unauthorized = |status: u16| OciError::Unauthorized {
            reference: reference.clone(),
            status,
            hint: String::new(),
        };
        let realm = url::Url::parse(&challenge.realm).map_err(|_| OciError::BadResponse {
            reference: self.reference(),
            why: format!("token realm {:?} is not a URL", challenge.realm),
        })?;
        // Credentials never travel in clear text unless the registry itself
        // is reached so.
        if realm.scheme() != "https" && !(self.plain_http && realm.scheme() == "http") {
            return Err(OciError::BadResponse {
                reference: self.reference(),
                why: format!("token realm {realm} is not https"),
            });
        }
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = &challenge.service {
            query.push(("service", service));
        }
        if let Some(scope) = &challenge.scope {
            query.push(("scope", scope));
        }
        let mut request = self.client.get(realm).query(&query).timeout(self.timeout);
        if let Credentials::Basic { username, password } = &self.credentials {
            request = request.basic_auth(username, Some(password));
        }
        let response = self.dispatch(request).await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(unauthorized(status.as_u16()));
        }
        if !status.is_success() {
            return Err(self.status_error(status, "the token"));
        }
        let body = self
            .read_capped(response, MAX_TOKEN_RESPONSE, "the token response")
            .await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| OciError::BadResponse {
                reference: self.reference(),
                why: format!("the token service's answer is not JSON: {e}"),
            })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OciError::BadResponse {
                reference: self.reference(),
                why: "the token service gave no token".into(),
            })?;
        // The distribution token spec's default lifetime is 60 s; keep a
        // margin so a token is not used as it expires.
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).clamp(10, 3600) - 5);
        if let (Some(key), Ok(mut guard)) = (self.token_key(challenge), TOKENS.lock()) {
            let map = guard.get_or_insert_with(HashMap::new);
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            map.insert(key, (token.clone(), now + lifetime));
        }
        Ok(token)
    }

    /// The error for an answer other than the one expected.
    pub(crate) fn status_error(&self, status: StatusCode, what: &str) -> OciError {
        let reference = self.reference();
        match status.as_u16() {
            401 | 403 => OciError::Unauthorized {
                reference,
                status: status.as_u16(),
                hint: match self.credentials {
                    Credentials::Anonymous => {
                        " — it needs credentials (registry_credentials)".into()
                    }
                    _ => String::new(),
                },
            },
            404 => OciError::NotFound {
                reference,
                what: what.to_string(),
            },
            429 | 500..=599 => OciError::Unreachable {
                reference,
                why: format!("{what}: HTTP {status}"),
            },
            _ => OciError::BadResponse {
                reference,
                why: format!("{what}: HTTP {status}"),
            },
        }
    }

    /// The whole body, refused as soon as it would pass `limit`: first by
    /// what Content-Length announces, then by what arrives.
    pub(crate) async fn read_capped(
        &mut self,
        mut response: Response,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, OciError> {
        let too_large = |size: u64| OciError::TooLarge {
            reference: self.reference.to_string(),
            what: what.to_string(),
            size,
            limit,
        };
        if let Some(length) = content_length(response.headers())
            && length > limit
        {
            return Err(too_large(length));
        }
        let mut body = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| self.transport_error(&e, format!("reading {what}")))?;
            let Some(chunk) = chunk else { break };
            self.bytes += chunk.len() as u64;
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn forget_token(key: &TokenKey) {
    if let Ok(mut guard) = TOKENS.lock()
        && let Some(map) = guard.as_mut()
    {
        map.retain(|k, _| {
            !(k.registry == key.registry
                && k.repository == key.repository
                && k.credentials == key.credentials)
        });
    }
}

/// An error with its causes: reqwest's own message alone rarely says why.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

struct Challenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

/// `Bearer realm="…",service="…",scope="…"` (RFC 6750 auth-params).
fn bearer_challenge(headers: &HeaderMap) -> Option<Challenge> {
    headers.get_all(WWW_AUTHENTICATE).iter().find_map(|value| {
        let value = value.to_str().ok()?;
        let (scheme, params) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(params);
        Some(Challenge {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    })
}

fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(name, value);
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let params = parse_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        let params = parse_params(r#"realm=https://x/t, error="invalid_token\"x""#);
        assert_eq!(params["realm"], "https://x/t");
        assert_eq!(params["error"], "invalid_token\"x");
    }
}
