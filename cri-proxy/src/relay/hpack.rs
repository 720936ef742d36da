//! HPACK (RFC 7541). Decoding uses `loona-hpack`; encoding is ours and
//! deliberately stateless: every field is a literal *without indexing* (or
//! a full static-table match), so the peer's dynamic table never changes
//! because of what we send. That is what lets the relay drop whole streams
//! toward containerd, and slip its own replies into the client's connection,
//! without the two ends' compression contexts drifting apart.

use bytes::{BufMut, BytesMut};

/// Index of a static-table entry whose name and value both match.
fn static_full(name: &[u8], value: &[u8]) -> Option<u8> {
    Some(match (name, value) {
        (b":method", b"GET") => 2,
        (b":method", b"POST") => 3,
        (b":path", b"/") => 4,
        (b":scheme", b"http") => 6,
        (b":scheme", b"https") => 7,
        (b":status", b"200") => 8,
        _ => return None,
    })
}

/// Index of the first static-table entry (RFC 7541 Appendix A) with this
/// name; the names a gRPC call carries, and the other common ones.
fn static_name(name: &[u8]) -> Option<u8> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-encoding" => 16,
        b"accept" => 19,
        b"authorization" => 23,
        b"content-length" => 28,
        b"content-type" => 31,
        b"date" => 33,
        b"host" => 38,
        b"server" => 54,
        b"user-agent" => 58,
        _ => return None,
    })
}

/// An integer with an `prefix`-bit prefix, the other bits of the first
/// byte being `first`.
fn put_int(out: &mut BytesMut, value: usize, prefix: u8, first: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.put_u8((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

/// A string literal, not Huffman-coded.
fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_int(out, s.len(), 7, 0);
    out.put_slice(s);
}

/// Appends one header field to a block.
pub fn encode_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    if let Some(index) = static_full(name, value) {
        put_int(out, usize::from(index), 7, 0x80);
    } else if let Some(index) = static_name(name) {
        // Literal without indexing, indexed name (0000xxxx).
        put_int(out, usize::from(index), 4, 0);
        put_string(out, value);
    } else {
        out.put_u8(0);
        put_string(out, name);
        put_string(out, value);
    }
}

/// The header block of a response head or trailers.
pub fn encode_response(status: Option<u16>, headers: &http::HeaderMap) -> BytesMut {
    let mut out = BytesMut::with_capacity(64 + headers.len() * 32);
    if let Some(status) = status {
        encode_field(&mut out, b":status", status.to_string().as_bytes());
    }
    for (name, value) in headers {
        encode_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("HPACK: {0}")]
pub struct DecodeError(String);

/// The decoding context of one direction of one connection.
pub struct Decoder {
    inner: loona_hpack::Decoder<'static>,
}

impl Decoder {
    pub fn new() -> Decoder {
        let mut inner = loona_hpack::Decoder::new();
        inner.set_max_allowed_table_size(4096);
        Decoder { inner }
    }

    /// The table size the encoder may ask for: what the decoding side of
    /// the connection (containerd) advertised.
    pub fn allow_table_size(&mut self, size: usize) {
        self.inner.set_max_allowed_table_size(size.max(4096));
    }

    /// Decodes a complete header block, handing each field to `field`.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        let mut plain = BytesMut::new();
        let block = if without_huffman(block, &mut plain)? {
            &plain[..]
        } else {
            block
        };
        self.inner
            .decode_with_cb(block, |n, v| field(&n, &v))
            .map_err(|e| DecodeError(format!("{e:?}")))
    }
}

/// An HPACK integer with a `prefix`-bit prefix at the start of `buf`:
/// (value, bytes used). Values past 2^28 are refused, as no header block
/// we accept can need them.
fn get_int(buf: &[u8], prefix: u8) -> Result<(usize, usize), DecodeError> {
    let bad = || DecodeError("truncated or oversized integer".into());
    let max = (1usize << prefix) - 1;
    let first = usize::from(*buf.first().ok_or_else(bad)?) & max;
    if first < max {
        return Ok((first, 1));
    }
    let mut value = max;
    for (i, &b) in buf.iter().enumerate().skip(1).take(4) {
        value += usize::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(bad())
}

/// Rewrites `block` into `out` with every Huffman-coded string literal
/// spelled out plainly; false (and `out` untouched) when there was none.
/// Only the syntax is read here, so the compression context is unaffected.
/// `loona-hpack` rebuilds its Huffman table for every coded string, which
/// made it the proxy's largest cost per call; `httlib-huffman` decodes
/// from precomputed tables.
fn without_huffman(block: &[u8], out: &mut BytesMut) -> Result<bool, DecodeError> {
    let mut pos = 0;
    let mut copied = 0;
    let mut changed = false;
    while pos < block.len() {
        let b = block[pos];
        let (prefix, strings) = if b & 0x80 != 0 {
            (7, 0)
        } else if b & 0xc0 == 0x40 {
            (6, 1)
        } else if b & 0xe0 == 0x20 {
            (5, 0)
        } else {
            (4, 1)
        };
        let (index, used) = get_int(&block[pos..], prefix)?;
        pos += used;
        // A literal has a value string, and a name string when index is 0.
        let strings = if strings == 1 && index == 0 {
            2
        } else {
            strings
        };
        for _ in 0..strings {
            let rest = block.get(pos..).unwrap_or(&[]);
            let huffman = rest.first().is_some_and(|b| b & 0x80 != 0);
            let (len, used) = get_int(rest, 7)?;
            let data = rest
                .get(used..used + len)
                .ok_or_else(|| DecodeError("string longer than the block".into()))?;
            if huffman {
                out.extend_from_slice(&block[copied..pos]);
                let mut decoded = Vec::with_capacity(len * 8 / 5 + 1);
                httlib_huffman::decode(data, &mut decoded, httlib_huffman::DecoderSpeed::FiveBits)
                    .map_err(|e| DecodeError(format!("Huffman: {e:?}")))?;
                put_string(out, &decoded);
                copied = pos + used + len;
                changed = true;
            }
            pos += used + len;
        }
    }
    if changed {
        out.extend_from_slice(&block[copied..]);
    }
    Ok(changed)
}

/// Re-encodes a block from the client's context into our stateless form,
/// returning the request's `:path` when it has one.
pub fn reencode(
    decoder: &mut Decoder,
    block: &[u8],
    out: &mut BytesMut,
) -> Result<Option<Vec<u8>>, DecodeError> {
    let mut path = None;
    decoder.decode(block, |name, value| {
        if name == b":path" {
            path = Some(value.to_vec());
        }
        encode_field(out, name, value);
    })?;
    Ok(path)
}

/// A header field: name and value.
pub type Field = (Vec<u8>, Vec<u8>);

/// The fields of a block we encoded ourselves (no dynamic table needed).
pub fn fields_of_own(block: &[u8]) -> Result<Vec<Field>, DecodeError> {
    let mut fields = Vec::new();
    Decoder::new().decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))?;
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut fields = Vec::new();
        d.decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))
            .unwrap();
        fields
    }

    #[test]
    fn integers_follow_rfc7541_examples() {
        // C.1.1 - C.1.3.
        let mut out = BytesMut::new();
        put_int(&mut out, 10, 5, 0);
        assert_eq!(&out[..], &[10]);
        out.clear();
        put_int(&mut out, 1337, 5, 0);
        assert_eq!(&out[..], &[31, 154, 10]);
        out.clear();
        put_int(&mut out, 42, 8, 0);
        assert_eq!(&out[..], &[42]);
        out.clear();
        put_int(&mut out, 15, 4, 0);
        assert_eq!(&out[..], &[15, 0]);
    }

    #[test]
    fn reencoding_keeps_fields_and_leaves_no_table_state() {
        // A client block that indexes everything (as real encoders do):
        // literal with incremental indexing for a custom header.
        let mut client = Vec::new();
        client.extend_from_slice(&[0x83, 0x86]); // :method POST, :scheme http
        client.extend_from_slice(&[0x44, 0x05]); // :path, indexed, 5 bytes
        client.extend_from_slice(b"/a.B/");
        client.extend_from_slice(&[0x40, 0x02]); // new name, indexed
        client.extend_from_slice(b"te");
        client.push(0x08);
        client.extend_from_slice(b"trailers");
        let mut decoder = Decoder::new();
        let mut out = BytesMut::new();
        let path = reencode(&mut decoder, &client, &mut out).unwrap();
        assert_eq!(path.as_deref(), Some(&b"/a.B/"[..]));
        let expected = vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), b"/a.B/".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
        ];
        // A fresh decoder (containerd's, which never saw the client's
        // table) reads our block the same.
        assert_eq!(fields_of_own(&out).unwrap(), expected);

        // The client's next block refers to its dynamic table (62 = te,
        // 63 = :path); we must still resolve it.
        let mut out2 = BytesMut::new();
        let path = reencode(&mut decoder, &[0x83, 0x86, 0xbf, 0xbe], &mut out2).unwrap();
        assert_eq!(path.as_deref(), Some(&b"/a.B/"[..]));
        assert_eq!(fields_of_own(&out2).unwrap(), expected);
        // Our blocks never use incremental indexing (0x40) or size updates.
        let mut fresh = Decoder::new();
        decode_all(&mut fresh, &out2);
        assert!(fresh.inner.decode(&[0xbe]).is_err(), "table stays empty");
    }

    #[test]
    fn responses_encode_status_and_metadata() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.insert("grpc-status", "7".parse().unwrap());
        let block = encode_response(Some(200), &headers);
        assert_eq!(
            fields_of_own(&block).unwrap(),
            vec![
                (b":status".to_vec(), b"200".to_vec()),
                (b"content-type".to_vec(), b"application/grpc".to_vec()),
                (b"grpc-status".to_vec(), b"7".to_vec()),
            ]
        );
        let long = "x".repeat(300);
        headers.insert("grpc-message", long.parse().unwrap());
        let block = encode_response(None, &headers);
        assert_eq!(fields_of_own(&block).unwrap()[2].1, long.as_bytes());
    }

    #[test]
    fn huffman_strings_decode_like_loona_does() {
        // RFC 7541 C.4.1-C.4.3: three requests, Huffman-coded, indexing.
        let blocks: [&[u8]; 3] = [
            &[
                0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
                0x90, 0xf4, 0xff,
            ],
            &[
                0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
            ],
            &[
                0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f,
                0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
            ],
        ];
        let mut ours = Decoder::new();
        let mut reference = loona_hpack::Decoder::new();
        for block in blocks {
            let mut plain = BytesMut::new();
            assert!(without_huffman(block, &mut plain).unwrap());
            assert_eq!(
                decode_all(&mut ours, block),
                reference.decode(block).unwrap()
            );
        }
        let got = decode_all(&mut Decoder::new(), blocks[0]);
        assert_eq!(
            got[3],
            (b":authority".to_vec(), b"www.example.com".to_vec())
        );
        // Plain blocks are left alone.
        let mut plain = BytesMut::new();
        assert!(!without_huffman(&[0x82, 0x04, 0x01, b'/'], &mut plain).unwrap());
        // Truncated or bad Huffman strings are errors, not panics.
        assert!(without_huffman(&[0x41, 0x8c, 0xf1], &mut plain).is_err());
        assert!(without_huffman(&[0x41, 0x84, 0xff, 0xff, 0xff, 0xff], &mut plain).is_err());
        assert!(without_huffman(&[0x41, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut plain).is_err());
    }

    #[test]
    fn bad_blocks_and_oversized_tables_are_errors() {
        let mut d = Decoder::new();
        assert!(d.decode(&[0xff], |_, _| {}).is_err());
        assert!(d.decode(&[0x00, 0x05, b'a'], |_, _| {}).is_err());
        // Table size update to 8192 before containerd allowed it.
        let update = [0x3f, 0xe1, 0x3f, 0x82];
        assert!(d.decode(&update, |_, _| {}).is_err());
        d.allow_table_size(8192);
        assert!(d.decode(&update, |_, _| {}).is_ok());
    }
}
