//! A taken-out call's request head: the fields as the decoder gives them,
//! kept while the block is decoded, and made into the one request head the
//! call is handed out with. Decoded once: what is handed out is what was
//! classified, with no second decoding to disagree with the first.

/// The request head of a taken-out call, decoded, that we keep.
pub(super) const MAX_KEPT_HEAD: usize = 64 << 10;

/// The decoded fields of the last request head: names and values back to
/// back in `bytes`.
#[derive(Default)]
pub(super) struct HeadFields {
    bytes: Vec<u8>,
    /// (name start, value start, value end) in `bytes`.
    fields: Vec<(usize, usize, usize)>,
    complete: bool,
}

impl HeadFields {
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
        self.complete = true;
    }

    pub(super) fn push(&mut self, name: &[u8], value: &[u8]) {
        if !self.complete || self.bytes.len() + name.len() + value.len() > MAX_KEPT_HEAD {
            self.complete = false;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.fields
            .push((start, start + name.len(), self.bytes.len()));
    }

    /// What the kept fields take, as the head made of them will.
    pub(super) fn size(&self) -> usize {
        self.bytes.len() + self.fields.len() * 32
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|&(start, mid, end)| (&self.bytes[start..mid], &self.bytes[mid..end]))
    }

    /// The request head, held to RFC 9113 §8.3 as grpc-go holds it: each
    /// request pseudo-header at most once, none unknown, all before the
    /// regular fields, and the `:path` the call was classified by. What is
    /// decided must be the call that is made: a head with two `:path`s
    /// could otherwise be routed by one and sent on with the other.
    pub(super) fn request(&self, classified_path: &str) -> Result<http::request::Parts, String> {
        if !self.complete {
            return Err(format!("larger than {MAX_KEPT_HEAD} bytes"));
        }
        let mut request = http::Request::builder();
        let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
        let mut regular_seen = false;
        for (name, value) in self.iter() {
            let slot = match name {
                b":method" => &mut method,
                b":scheme" => &mut scheme,
                b":authority" => &mut authority,
                b":path" => &mut path,
                n if n.starts_with(b":") => {
                    return Err(format!(
                        "unknown pseudo-header {}",
                        String::from_utf8_lossy(n)
                    ));
                }
                _ => {
                    regular_seen = true;
                    request = request.header(name, value);
                    continue;
                }
            };
            if regular_seen {
                return Err(format!(
                    "pseudo-header {} after regular header fields",
                    String::from_utf8_lossy(name)
                ));
            }
            if slot.replace(value).is_some() {
                return Err(format!(
                    "pseudo-header {} given twice",
                    String::from_utf8_lossy(name)
                ));
            }
        }
        let path = path.ok_or_else(|| "no :path".to_string())?;
        if path != classified_path.as_bytes() {
            return Err(":path is not the method classified".into());
        }
        if let Some(method) = method {
            request = request.method(method);
        }
        // grpc-go, kubelet's and crictl's client, dialling a Unix socket by
        // its path sends that path as :authority
        // ("/run/containerd/containerd.sock"), which is no URI authority.
        // Nothing here routes by authority, and the call made upstream
        // names its own, so one that is not a URI authority is left out
        // rather than refused.
        let authority = authority.and_then(|a| http::uri::Authority::try_from(a).ok());
        let uri = match (scheme, authority) {
            (Some(scheme), Some(authority)) => http::Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(path)
                .build(),
            _ => http::Uri::builder().path_and_query(path).build(),
        }
        .map_err(|e| e.to_string())?;
        // The URI may not spell the path as it came (it would not be the
        // call classified): refused rather than handed out changed.
        if uri.path_and_query().map(|p| p.as_str().as_bytes()) != Some(path) {
            return Err(":path is not a request target as it stands".into());
        }
        let (parts, ()) = request
            .uri(uri)
            .body(())
            .map_err(|e| e.to_string())?
            .into_parts();
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&[u8], &[u8])]) -> HeadFields {
        let mut head = HeadFields::default();
        head.clear();
        for (name, value) in fields {
            head.push(name, value);
        }
        head
    }

    const PULL: &str = "/runtime.v1.ImageService/PullImage";
    const CREATE: &str = "/runtime.v1.RuntimeService/CreateContainer";

    #[test]
    fn the_request_head_is_the_block_decoded() {
        let parts = head(&[
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"localhost"),
            (b":path", PULL.as_bytes()),
            (b"grpc-timeout", b"120S"),
        ])
        .request(PULL)
        .unwrap();
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(
            parts.uri.to_string(),
            "http://localhost/runtime.v1.ImageService/PullImage"
        );
        assert_eq!(parts.headers["grpc-timeout"], "120S");

        // As grpc-go sends it when dialling a socket by its path.
        let parts = head(&[
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", PULL.as_bytes()),
            (b":authority", b"/run/attestgate/attestgate.sock"),
            (b"user-agent", b"grpc-go/1.51.0"),
        ])
        .request(PULL)
        .unwrap();
        assert_eq!(parts.uri.path(), PULL);
        assert_eq!(parts.uri.authority(), None);

        assert!(head(&[(b":method", b"POST")]).request(PULL).is_err());
    }

    #[test]
    fn heads_that_could_name_two_calls_are_refused() {
        let (create, pull) = (CREATE.as_bytes(), PULL.as_bytes());
        for fields in [
            &[
                (&b":method"[..], &b"POST"[..]),
                (b":path", create),
                (b":path", pull),
            ][..],
            &[(b":path", pull), (b":path", create)],
            &[
                (b":path", create),
                (b":method", b"POST"),
                (b":method", b"GET"),
            ],
            &[(b":path", create), (b":protocol", b"x")],
            &[(b"content-type", b"application/grpc"), (b":path", create)],
        ] {
            assert!(head(fields).request(CREATE).is_err(), "{fields:?}");
        }
        assert!(
            head(&[(b":path", create), (b"te", b"trailers")])
                .request(CREATE)
                .is_ok()
        );
        // Classified by one path, holding another.
        assert!(head(&[(b":path", pull)]).request(CREATE).is_err());
    }

    #[test]
    fn a_head_too_large_to_keep_is_refused() {
        let big = vec![b'x'; MAX_KEPT_HEAD];
        let error = head(&[(b":path", PULL.as_bytes()), (b"x-big", &big)])
            .request(PULL)
            .unwrap_err();
        assert!(error.contains("larger than"), "{error}");
    }
}
