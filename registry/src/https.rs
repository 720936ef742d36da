//! A bundle repository on a web server (`https://HOST/PATH/`, SPEC §10), as
//! a tough transport on reqwest: the site's extra CA and timeout apply,
//! bodies stream with a byte cap, and plain `http://` is allowed only for
//! hosts listed in `plain_http` (tests on 127.0.0.1). Plus the cheap poll:
//! one conditional GET of `metadata/timestamp.json`.

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::{DATE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sha2::{Digest, Sha256};
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

use crate::oci::RegistryOptions;
use crate::oci::wire::{chain, content_length};

/// What may go wrong reaching a web server.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("{url}: {why}")]
    BadUrl { url: String, why: String },
    #[error("{url}: server unreachable: {why}")]
    Unreachable { url: String, why: String },
    #[error("{url}: not found ({status})")]
    NotFound { url: String, status: u16 },
    #[error("{url}: the server refused access ({status})")]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: unexpected answer: {why}")]
    BadResponse { url: String, why: String },
    #[error("{url}: more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

impl HttpsError {
    /// A stable snake_case name for logs and metrics, as for OCI sources.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpsError::BadUrl { .. } => "bad_reference",
            HttpsError::Unreachable { .. } => "unreachable",
            HttpsError::NotFound { .. } => "not_found",
            HttpsError::Unauthorized { .. } => "unauthorized",
            HttpsError::BadResponse { .. } => "bad_response",
            HttpsError::TooLarge { .. } => "too_large",
            HttpsError::Setup(_) => "local",
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            HttpsError::Unreachable { .. }
                | HttpsError::NotFound { .. }
                | HttpsError::Unauthorized { .. }
                | HttpsError::BadResponse { .. }
        )
    }
}

/// A tough transport for `https://` (and listed `http://`) sources.
#[derive(Debug, Clone)]
pub struct HttpsTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    options: RegistryOptions,
    max_bytes: u64,
}

impl HttpsTransport {
    /// `max_bytes` caps every file fetched, whatever tough asks for (tough
    /// applies its own, usually smaller, limits on top).
    pub fn new(options: &RegistryOptions, max_bytes: u64) -> Result<HttpsTransport, HttpsError> {
        Ok(HttpsTransport {
            inner: Arc::new(Inner {
                client: options.http_client().map_err(HttpsError::Setup)?,
                options: options.clone(),
                max_bytes,
            }),
        })
    }

    async fn get(&self, url: &Url) -> Result<reqwest::Response, HttpsError> {
        check_scheme(url, &self.inner.options)?;
        self.inner
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| HttpsError::Unreachable {
                url: url.to_string(),
                why: chain(&e),
            })
    }
}

fn check_scheme(url: &Url, options: &RegistryOptions) -> Result<(), HttpsError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = url.host_str().unwrap_or_default();
            let authority = match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            if options.is_plain_http(&authority) {
                Ok(())
            } else {
                Err(HttpsError::BadUrl {
                    url: url.to_string(),
                    why: format!(
                        "plain http is allowed only for hosts listed in registries (plain_http); {authority} is not"
                    ),
                })
            }
        }
        other => Err(HttpsError::BadUrl {
            url: url.to_string(),
            why: format!("{other}: is not http(s)"),
        }),
    }
}

#[tough::async_trait]
impl Transport for HttpsTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let other =
            |why: HttpsError| TransportError::new_with_cause(TransportErrorKind::Other, &url, why);
        let response = match self.get(&url).await {
            Ok(response) => response,
            Err(HttpsError::BadUrl { url: u, why }) => {
                return Err(TransportError::new_with_cause(
                    TransportErrorKind::UnsupportedUrlScheme,
                    &url,
                    HttpsError::BadUrl { url: u, why },
                ));
            }
            Err(e) => return Err(other(e)),
        };
        let status = response.status();
        // tough reads "not found" as "there is no such file", which ends the
        // root walk at the newest root; a server that hides files behind 403
        // (S3 does for missing keys) means the same.
        if status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN {
            return Err(TransportError::new(TransportErrorKind::FileNotFound, &url));
        }
        if !status.is_success() {
            return Err(other(HttpsError::BadResponse {
                url: url.to_string(),
                why: format!("HTTP {status}"),
            }));
        }
        let limit = self.inner.max_bytes;
        if content_length(response.headers()).is_some_and(|length| length > limit) {
            return Err(other(HttpsError::TooLarge {
                url: url.to_string(),
                limit,
            }));
        }
        Ok(capped_stream(response, url, limit))
    }
}

/// The body as tough wants it (a `Send + Sync` stream, which reqwest's is
/// not): chunks read by a task and handed over a channel, ending in an
/// error as soon as they pass `limit`.
fn capped_stream(mut response: reqwest::Response, url: Url, limit: u64) -> TransportStream {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, TransportError>>(4);
    tokio::spawn(async move {
        let mut total: u64 = 0;
        loop {
            let item = match response.chunk().await {
                Ok(Some(chunk)) => {
                    total += chunk.len() as u64;
                    if total > limit {
                        Err(TransportError::new_with_cause(
                            TransportErrorKind::Other,
                            &url,
                            HttpsError::TooLarge {
                                url: url.to_string(),
                                limit,
                            },
                        ))
                    } else {
                        Ok(chunk)
                    }
                }
                Ok(None) => return,
                Err(e) => Err(TransportError::new_with_cause(
                    TransportErrorKind::Other,
                    &url,
                    HttpsError::Unreachable {
                        url: url.to_string(),
                        why: chain(&e),
                    },
                )),
            };
            let stop = item.is_err();
            // The reader went away: nothing more to do.
            if sender.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ))
}

/// The biggest `timestamp.json` read when polling; tough checks the real
/// one against its own limit.
const MAX_TIMESTAMP: u64 = 1 << 20;

/// Whether the repository at `base` (`https://HOST/PATH/`, holding
/// `metadata/` and `targets/`) still has the `timestamp.json` that
/// `previous` (a validator this function returned) describes, in one GET:
/// conditional on the previous ETag (or Last-Modified date) when the
/// server gave one, and compared by content hash in any case. Returns the
/// answer and the validator to pass next time.
pub async fn timestamp_unchanged(
    base: &Url,
    previous: Option<&str>,
    options: &RegistryOptions,
) -> Result<(bool, String), HttpsError> {
    let url = metadata_url(base, "timestamp.json")?;
    check_scheme(&url, options)?;
    let client = options.http_client().map_err(HttpsError::Setup)?;
    let previous = previous.map(Validator::parse);
    let mut request = client.get(url.clone()).timeout(options.timeout);
    if let Some(previous) = &previous {
        if let Some(etag) = &previous.etag {
            request = request.header(IF_NONE_MATCH, etag);
        } else if let Some(date) = &previous.last_modified {
            request = request.header(IF_MODIFIED_SINCE, date);
        }
    }
    let unreachable = |e: reqwest::Error| HttpsError::Unreachable {
        url: url.to_string(),
        why: chain(&e),
    };
    let mut response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return match previous {
            Some(previous) => Ok((true, previous.to_string())),
            None => Err(HttpsError::BadResponse {
                url: url.to_string(),
                why: "304 Not Modified to an unconditional request".into(),
            }),
        };
    }
    match status.as_u16() {
        200..=299 => {}
        404 | 410 => {
            return Err(HttpsError::NotFound {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        401 | 403 => {
            return Err(HttpsError::Unauthorized {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        429 | 500..=599 => {
            return Err(HttpsError::Unreachable {
                url: url.to_string(),
                why: format!("HTTP {status}"),
            });
        }
        _ => {
            return Err(HttpsError::BadResponse {
                url: url.to_string(),
                why: format!("HTTP {status}"),
            });
        }
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(ETAG).filter(|e| !e.contains(' '));
    let last_modified =
        header(LAST_MODIFIED).filter(|modified| settled(modified, header(DATE).as_deref()));
    let too_large = HttpsError::TooLarge {
        url: url.to_string(),
        limit: MAX_TIMESTAMP,
    };
    if content_length(response.headers()).is_some_and(|length| length > MAX_TIMESTAMP) {
        return Err(too_large);
    }
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        total += chunk.len() as u64;
        if total > MAX_TIMESTAMP {
            return Err(too_large);
        }
        hasher.update(&chunk);
    }
    let next = Validator {
        sha256: hex::encode(hasher.finalize()),
        etag,
        last_modified,
    };
    let unchanged = previous.is_some_and(|p| p.sha256 == next.sha256);
    Ok((unchanged, next.to_string()))
}

/// Whether a Last-Modified date can stand for the content: dates have
/// whole seconds, so a file changed again within the second it was served
/// would still look unmodified. Only a date older than the response's own
/// (by more than a second) is kept for If-Modified-Since; otherwise the
/// next poll is unconditional and compared by hash, still one request.
fn settled(last_modified: &str, date: Option<&str>) -> bool {
    let parse = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()
    };
    match (parse(last_modified), date.and_then(parse)) {
        (Some(modified), Some(date)) => date - modified > time::Duration::seconds(1),
        _ => false,
    }
}

/// `base` + `metadata/NAME`, `base` read as a directory.
pub fn metadata_url(base: &Url, name: &str) -> Result<Url, HttpsError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(&format!("metadata/{name}"))
        .map_err(|e| HttpsError::BadUrl {
            url: base.to_string(),
            why: e.to_string(),
        })
}

/// What identifies a version of `timestamp.json`, written
/// `sha256:HEX[ etag:ETAG| last-modified:DATE]`: its content hash always
/// (servers that ignore conditional requests are still one request), and
/// the server's validator when it gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Validator {
    sha256: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validator {
    fn parse(text: &str) -> Validator {
        let (hash, rest) = text.split_once(' ').unwrap_or((text, ""));
        Validator {
            sha256: hash.strip_prefix("sha256:").unwrap_or(hash).to_string(),
            etag: rest.strip_prefix("etag:").map(str::to_string),
            last_modified: rest.strip_prefix("last-modified:").map(str::to_string),
        }
    }
}

impl std::fmt::Display for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.sha256)?;
        if let Some(etag) = &self.etag {
            write!(f, " etag:{etag}")
        } else if let Some(date) = &self.last_modified {
            write!(f, " last-modified:{date}")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_round_trip() {
        for text in [
            "sha256:ab",
            "sha256:ab etag:\"x-1\"",
            "sha256:ab last-modified:Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(Validator::parse(text).to_string(), text);
        }
    }

    #[test]
    fn only_settled_modification_dates_are_trusted() {
        let modified = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert!(settled(modified, Some("Wed, 21 Oct 2015 07:28:02 GMT")));
        assert!(!settled(modified, Some("Wed, 21 Oct 2015 07:28:01 GMT")));
        assert!(!settled(modified, Some("Wed, 21 Oct 2015 07:28:00 GMT")));
        assert!(!settled(modified, None));
        assert!(!settled("yesterday", Some("Wed, 21 Oct 2015 07:28:02 GMT")));
    }

    #[test]
    fn plain_http_only_for_listed_hosts() {
        let options = RegistryOptions {
            plain_http: vec!["127.0.0.1:8080".into()],
            ..RegistryOptions::default()
        };
        let ok = |u: &str| check_scheme(&Url::parse(u).unwrap(), &options).is_ok();
        assert!(ok("https://example.com/x"));
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(!ok("http://127.0.0.1:8081/x"));
        assert!(!ok("http://example.com/x"));
        assert!(!ok("ftp://example.com/x"));
    }

    #[test]
    fn metadata_urls_treat_the_base_as_a_directory() {
        let base = Url::parse("https://h/repo").unwrap();
        assert_eq!(
            metadata_url(&base, "timestamp.json").unwrap().as_str(),
            "https://h/repo/metadata/timestamp.json"
        );
        let base = Url::parse("https://h/repo/").unwrap();
        assert_eq!(
            metadata_url(&base, "1.root.json").unwrap().as_str(),
            "https://h/repo/metadata/1.root.json"
        );
    }
}
