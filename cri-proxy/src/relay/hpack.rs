//! HPACK (RFC 7541), both ways ours.
//!
//! The decoder follows the client's compression context so that the relay
//! can read `:path` while passing every header block on untouched.
//!
//! The encoder is deliberately stateless: every field is a literal
//! *without indexing* (or a full static-table match), so the client's
//! dynamic table never changes because of the replies we slip into its
//! connection, and containerd's encoder and the client's decoder stay in
//! step.

use std::collections::VecDeque;

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
pub struct DecodeError(&'static str);

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// What an entry costs in the table (RFC 7541 §4.1).
fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// A dynamic-table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// The decoding context of one direction of one connection: the dynamic
/// table the peer's encoder fills. Fields are handed out as slices of the
/// block, of the tables or of a scratch buffer, so decoding a block that
/// refers to indexed fields (what every later request of a gRPC client
/// mostly is) allocates nothing.
pub struct Decoder {
    /// Newest first: index 62 is `table[0]`.
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// The largest size the encoder may pick: what the decoding side of the
    /// connection (containerd) advertised.
    allowed: usize,
    names: Vec<u8>,
    values: Vec<u8>,
    /// A Huffman string re-encoded, to hold its padding to RFC 7541 §5.2.
    huffman_check: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096,
            allowed: 4096,
            names: Vec::new(),
            values: Vec::new(),
            huffman_check: Vec::new(),
        }
    }

    /// containerd advertised SETTINGS_HEADER_TABLE_SIZE. Until the client
    /// acknowledges, it may use the old size or the new one, so the larger
    /// of the two stays allowed.
    pub fn allow_table_size(&mut self, size: usize) {
        self.allowed = self.allowed.max(size);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.table.pop_back() {
                Some((name, value)) => self.size -= entry_size(&name, &value),
                None => self.size = 0,
            }
        }
    }

    /// Decodes a complete header block, handing each field to `field`.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), DecodeError> {
        let mut pos = 0;
        let mut first = true;
        while pos < block.len() {
            let b = block[pos];
            let at_start = std::mem::replace(&mut first, false);
            if b & 0x80 != 0 {
                let (index, used) = get_int(&block[pos..], 7)?;
                pos += used;
                let (name, value) = self.entry(index)?;
                field(name, value);
                continue;
            }
            if b & 0xe0 == 0x20 {
                // Dynamic table size update. containerd's decoder (Go's
                // x/net hpack) takes one past the block's first
                // representation only while the table is empty: a second
                // update ahead of any field is refused too, unless the
                // first emptied the table. The proxy must take exactly
                // the blocks containerd takes: one containerd refuses
                // ends its connection, and a call read from it here would
                // be decided all the same.
                if !at_start && self.size > 0 {
                    return Err(DecodeError(
                        "table size update past the start of the block, with entries in the table",
                    ));
                }
                let (size, used) = get_int(&block[pos..], 5)?;
                pos += used;
                if size > self.allowed {
                    return Err(DecodeError("table size update past the allowed size"));
                }
                self.max_size = size;
                self.evict_to(size);
                continue;
            }
            // Literal: with incremental indexing (01), without (0000) or
            // never indexed (0001).
            let indexing = b & 0xc0 == 0x40;
            let (index, used) = get_int(&block[pos..], if indexing { 6 } else { 4 })?;
            pos += used;
            let Decoder {
                table,
                names,
                values,
                huffman_check,
                ..
            } = self;
            let name: &[u8] = if index == 0 {
                let (name, used) = get_string(&block[pos..], names, huffman_check)?;
                pos += used;
                name
            } else {
                entry_in(table, index)?.0
            };
            let (value, used) = get_string(&block[pos..], values, huffman_check)?;
            pos += used;
            field(name, value);
            if indexing {
                let entry: Entry = (name.into(), value.into());
                self.insert(entry);
            }
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
        entry_in(&self.table, index)
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry_size(&entry.0, &entry.1);
        if size > self.max_size {
            // Not an error: the table just ends up empty (RFC 7541 §4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.table.push_front(entry);
    }
}

fn entry_in(table: &VecDeque<Entry>, index: usize) -> Result<(&[u8], &[u8]), DecodeError> {
    match index {
        0 => Err(DecodeError("index 0")),
        1..=61 => Ok(STATIC_TABLE[index - 1]),
        _ => table
            .get(index - 62)
            .map(|(n, v)| (&n[..], &v[..]))
            .ok_or(DecodeError("index past the table")),
    }
}

/// A string literal at the start of `buf`: its bytes (from `buf`, or
/// Huffman-decoded into `scratch`) and the bytes it took. `check` is
/// scratch space of its own.
fn get_string<'a>(
    buf: &'a [u8],
    scratch: &'a mut Vec<u8>,
    check: &mut Vec<u8>,
) -> Result<(&'a [u8], usize), DecodeError> {
    let huffman = buf.first().is_some_and(|b| b & 0x80 != 0);
    let (len, used) = get_int(buf, 7)?;
    let data = buf
        .get(used..used + len)
        .ok_or(DecodeError("string longer than the block"))?;
    if !huffman {
        return Ok((data, used + len));
    }
    scratch.clear();
    httlib_huffman::decode(data, scratch, httlib_huffman::DecoderSpeed::FiveBits)
        .map_err(|_| DecodeError("bad Huffman string"))?;
    // httlib-huffman takes padding that is no prefix of EOS (zero bits,
    // say), which RFC 7541 §5.2 makes a decoding error, and so does
    // containerd. The one valid encoding of what was decoded is its codes
    // padded with ones to the byte: anything else is such a padding.
    check.clear();
    httlib_huffman::encode(scratch, check).map_err(|_| DecodeError("bad Huffman string"))?;
    if check[..] != data[..] {
        return Err(DecodeError("bad Huffman padding"));
    }
    Ok((&scratch[..], used + len))
}

/// An HPACK integer with a `prefix`-bit prefix at the start of `buf`:
/// (value, bytes used). Values past 2^28 are refused, as no header block
/// we accept can need them.
fn get_int(buf: &[u8], prefix: u8) -> Result<(usize, usize), DecodeError> {
    let bad = DecodeError("truncated or oversized integer");
    let max = (1usize << prefix) - 1;
    let first = usize::from(*buf.first().ok_or(bad)?) & max;
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
    Err(DecodeError("truncated or oversized integer"))
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

    fn fields(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn requests_decode_as_in_rfc7541_c3() {
        // C.3.1 - C.3.3: three requests, no Huffman, indexing.
        let blocks: [&[u8]; 3] = [
            b"\x82\x86\x84\x41\x0fwww.example.com",
            b"\x82\x86\x84\xbe\x58\x08no-cache",
            b"\x82\x87\x85\xbf\x40\x0acustom-key\x0ccustom-value",
        ];
        let mut d = Decoder::new();
        assert_eq!(
            decode_all(&mut d, blocks[0]),
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.size, 57);
        assert_eq!(
            decode_all(&mut d, blocks[1]),
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(
            decode_all(&mut d, blocks[2]),
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.size, 164);
        assert_eq!(d.table.len(), 3);
    }

    #[test]
    fn responses_with_eviction_decode_as_in_rfc7541_c6() {
        // C.6.1 - C.6.3: Huffman-coded responses in a 256-byte table, which
        // we reach with a size update ahead of the first block.
        let mut first = vec![0x3f, 0xe1, 0x01];
        first.extend_from_slice(&[
            0x48, 0x82, 0x64, 0x02, 0x58, 0x85, 0xae, 0xc3, 0x77, 0x1a, 0x4b, 0x61, 0x96, 0xd0,
            0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04, 0x0b, 0x81,
            0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff, 0x6e, 0x91, 0x9d, 0x29, 0xad, 0x17, 0x18,
            0x63, 0xc7, 0x8f, 0x0b, 0x97, 0xc8, 0xe9, 0xae, 0x82, 0xae, 0x43, 0xd3,
        ]);
        let second: &[u8] = &[0x48, 0x83, 0x64, 0x0e, 0xff, 0xc1, 0xc0, 0xbf];
        let third: &[u8] = &[
            0x88, 0xc1, 0x61, 0x96, 0xd0, 0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20,
            0x05, 0x95, 0x04, 0x0b, 0x81, 0x66, 0xe0, 0x84, 0xa6, 0x2d, 0x1b, 0xff, 0xc0, 0x5a,
            0x83, 0x9b, 0xd9, 0xab, 0x77, 0xad, 0x94, 0xe7, 0x82, 0x1d, 0xd7, 0xf2, 0xe6, 0xc7,
            0xb3, 0x35, 0xdf, 0xdf, 0xcd, 0x5b, 0x39, 0x60, 0xd5, 0xaf, 0x27, 0x08, 0x7f, 0x36,
            0x72, 0xc1, 0xab, 0x27, 0x0f, 0xb5, 0x29, 0x1f, 0x95, 0x87, 0x31, 0x60, 0x65, 0xc0,
            0x03, 0xed, 0x4e, 0xe5, 0xb1, 0x06, 0x3d, 0x50, 0x07,
        ];
        let mut d = Decoder::new();
        let date = "Mon, 21 Oct 2013 20:13:21 GMT";
        assert_eq!(
            decode_all(&mut d, &first),
            fields(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", date),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.size, 222);
        assert_eq!(
            decode_all(&mut d, second),
            fields(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", date),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.size, 222);
        assert_eq!(
            decode_all(&mut d, third),
            fields(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", "https://www.example.com"),
                ("content-encoding", "gzip"),
                (
                    "set-cookie",
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
                )
            ])
        );
        assert_eq!(d.size, 215);
        assert_eq!(d.table.len(), 3);
    }

    /// A tiny deterministic generator, so the comparison below is the same
    /// on every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    #[test]
    fn decoding_agrees_with_loona_through_many_evictions() {
        // An indexing encoder fed a mix of recurring and fresh fields, some
        // long enough to push most of the table out: the context must stay
        // in step block after block.
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut encoder = loona_hpack::Encoder::new();
        let mut reference = loona_hpack::Decoder::new();
        let mut ours = Decoder::new();
        let names = [
            ":path",
            "grpc-timeout",
            "user-agent",
            "x-a",
            "x-b",
            "content-type",
        ];
        for round in 0..2_000 {
            let mut list: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            list.push((b":method".to_vec(), b"POST".to_vec()));
            for _ in 0..rng.below(8) {
                let name = names[rng.below(names.len() as u64)].as_bytes().to_vec();
                let value = match rng.below(4) {
                    0 => format!("{}", rng.below(10)).into_bytes(),
                    1 => format!("v{round}").into_bytes(),
                    2 => vec![b'a' + rng.below(26) as u8; rng.below(1_500)],
                    _ => b"/runtime.v1.RuntimeService/Version".to_vec(),
                };
                list.push((name, value));
            }
            let block = encoder.encode(list.iter().map(|(n, v)| (&n[..], &v[..])));
            let expected = reference.decode(&block).unwrap();
            assert_eq!(expected, list);
            assert_eq!(decode_all(&mut ours, &block), list, "round {round}");
        }
        assert!(!ours.table.is_empty());
    }

    #[test]
    fn huffman_strings_decode_as_in_rfc7541_c4() {
        // C.4.1 - C.4.3: three requests, Huffman-coded, indexing.
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
        // Truncated or bad Huffman strings are errors, not panics.
        let mut d = Decoder::new();
        assert!(d.decode(&[0x41, 0x8c, 0xf1], |_, _| {}).is_err());
        assert!(
            d.decode(&[0x41, 0x84, 0xff, 0xff, 0xff, 0xff], |_, _| {})
                .is_err()
        );
        assert!(
            d.decode(&[0x41, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], |_, _| {})
                .is_err()
        );
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
    fn bad_blocks_and_oversized_tables_are_errors() {
        let mut d = Decoder::new();
        assert!(d.decode(&[0xff], |_, _| {}).is_err());
        assert!(d.decode(&[0x00, 0x05, b'a'], |_, _| {}).is_err());
        // Table size update to 8192 before containerd allowed it.
        let update = [0x3f, 0xe1, 0x3f, 0x82];
        assert!(d.decode(&update, |_, _| {}).is_err());
        d.allow_table_size(8192);
        assert!(d.decode(&update, |_, _| {}).is_ok());
        // An index past the table, index 0.
        assert!(d.decode(&[0xbe], |_, _| {}).is_err());
        assert!(d.decode(&[0x80], |_, _| {}).is_err());
        // An entry larger than the table empties it, without an error.
        let mut d = Decoder::new();
        assert!(d.decode(&[0x40, 0x01, b'a', 0x01, b'b'], |_, _| {}).is_ok());
        assert_eq!(d.table.len(), 1);
        let mut big = vec![0x40, 0x01, b'a', 0x7f, 0x81, 0x20];
        big.extend_from_slice(&[b'x'; 4_224]);
        let mut seen = 0;
        assert!(d.decode(&big, |_, v| seen = v.len()).is_ok());
        assert_eq!((seen, d.table.len(), d.size), (4_224, 0, 0));
    }

    #[test]
    fn huffman_padding_is_held_to_rfc7541() {
        // `:path: a`; "a" is 00011, padded with ones to the byte (0x1f).
        let mut got = Vec::new();
        let ok = Decoder::new().decode(&[0x04, 0x81, 0x1f], |n, v| {
            got.push((n.to_vec(), v.to_vec()));
        });
        assert!(ok.is_ok());
        assert_eq!(got, fields(&[(":path", "a")]));
        // Padded with bits that are no prefix of EOS (011, 000), or with a
        // whole byte more: httlib-huffman reads "a" from the first two,
        // containerd ends the connection over all three.
        for bad in [
            &[0x04, 0x81, 0x1b][..],
            &[0x04, 0x81, 0x18],
            &[0x04, 0x82, 0x1f, 0xff],
        ] {
            assert!(Decoder::new().decode(bad, |_, _| {}).is_err(), "{bad:02x?}");
        }
        // Before, the proxy read this call's :path, and decided the call,
        // from a block containerd refuses.
        let mut path = Vec::new();
        httlib_huffman::encode(b"/runtime.v1.ImageService/PullImage", &mut path).unwrap();
        let mut lenient = Vec::new();
        httlib_huffman::decode(&path, &mut lenient, httlib_huffman::DecoderSpeed::FiveBits)
            .unwrap();
        assert_eq!(path.last(), Some(&0x17));
        *path.last_mut().unwrap() = 0x15;
        let mut misread = Vec::new();
        httlib_huffman::decode(&path, &mut misread, httlib_huffman::DecoderSpeed::FiveBits)
            .unwrap();
        assert_eq!(misread, lenient);
        let mut block = vec![0x04, 0x80 | path.len() as u8];
        block.extend_from_slice(&path);
        assert!(Decoder::new().decode(&block, |_, _| {}).is_err());
    }

    #[test]
    fn table_size_updates_are_taken_where_containerd_takes_them() {
        let to_4096 = [0x3f, 0xe1, 0x1f];
        let with_entry = || {
            let mut d = Decoder::new();
            d.decode(&[0x40, 0x01, b'a', 0x01, b'b'], |_, _| {})
                .unwrap();
            assert_eq!(d.size, 34);
            d
        };
        // Ahead of the block's first field: as RFC 7541 §4.2 wants.
        assert!(
            with_entry()
                .decode(&[&to_4096[..], &[0x82]].concat(), |_, _| {})
                .is_ok()
        );
        // A second update, or one after a field, while the table holds
        // entries: containerd ends the connection, so the proxy must too
        // (it took both before).
        assert!(
            with_entry()
                .decode(&[to_4096, to_4096].concat(), |_, _| {})
                .is_err()
        );
        assert!(
            with_entry()
                .decode(&[&[0x82][..], &to_4096].concat(), |_, _| {})
                .is_err()
        );
        // With the table empty both are fine to containerd: the shrink to
        // nothing and growth again that an encoder sends after a change of
        // SETTINGS_HEADER_TABLE_SIZE, and an update after a field (which
        // the proxy refused before).
        let mut d = with_entry();
        assert!(
            d.decode(&[&[0x20][..], &to_4096, &[0x82]].concat(), |_, _| {})
                .is_ok()
        );
        assert_eq!((d.size, d.max_size), (0, 4096));
        let mut d = Decoder::new();
        assert!(d.decode(&[0x82, 0x3f, 0x01], |_, _| {}).is_ok());
        assert_eq!(d.max_size, 32);
    }
}
