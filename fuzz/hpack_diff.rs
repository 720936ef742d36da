//! The differential check of the proxy's HPACK decoder
//! (`attestgate_proxy::relay::hpack`), shared by the fuzz target `hpack`
//! and the CI test `cri-proxy/tests/hpack_go.rs`.
//!
//! The proxy routes a call by the `:path` it decodes, then passes the
//! client's bytes on for containerd to decode again. The two must never
//! read different header lists. containerd's CRI server is grpc-go, which
//! decodes with golang.org/x/net/http2's Framer and hpack package; the
//! `go-hpack` helper (fuzz/go-hpack) runs exactly that, and loona-hpack is
//! a second, in-process reference.
//!
//! An input is one client connection: header blocks decoded in one
//! compression context, and the SETTINGS_HEADER_TABLE_SIZE values
//! containerd's SETTINGS may carry (relay/upstream.rs hands those to
//! `Decoder::allow_table_size`). Records, until the input ends:
//!
//! ```text
//! tag even: a header block; u16be length, then that many bytes (or what is
//!           left). containerd reads it in frames of tag >> 1 bytes of it
//!           (0: one frame), as the client may cut it into CONTINUATIONs.
//! tag odd:  a table size containerd advertises; u32be (zero-filled).
//! ```

// Each includer uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use attestgate_proxy::relay::hpack;

/// grpc-go's decoder table size, which it never changes: containerd does
/// not advertise another.
pub const CONTAINERD_TABLE_SIZE: u32 = 4096;

pub type Field = (Vec<u8>, Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Block { block: Vec<u8>, fragment: usize },
    TableSize(u32),
}

/// The records of an input (see the module's documentation).
pub fn parse(mut input: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = input.split_first() {
        input = rest;
        if tag & 1 == 0 {
            let len = match input {
                [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
                _ => 0,
            };
            input = input.get(2..).unwrap_or_default();
            let (block, rest) = input.split_at(len.min(input.len()));
            input = rest;
            ops.push(Op::Block {
                block: block.to_vec(),
                fragment: usize::from(tag >> 1),
            });
        } else {
            let mut value = [0; 4];
            let n = input.len().min(4);
            value[..n].copy_from_slice(&input[..n]);
            input = &input[n..];
            ops.push(Op::TableSize(u32::from_be_bytes(value)));
        }
    }
    ops
}

/// The input `parse` reads back as `ops` (blocks past 64 KiB are cut).
pub fn serialize(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Block { block, fragment } => {
                let len = block.len().min(usize::from(u16::MAX));
                out.push((fragment.min(&127) << 1) as u8);
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&block[..len]);
            }
            Op::TableSize(size) => {
                out.push(1);
                out.extend_from_slice(&size.to_be_bytes());
            }
        }
    }
    out
}

// ---- containerd's side: the go-hpack helper ----

/// What containerd's Framer made of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A request grpc-go routes by this `:path`, if it has one.
    Accepted { path: Option<Vec<u8>> },
    /// Decoded, but past the header list limit: the stream is reset.
    Truncated,
    /// Decoded, but refused (invalid field, pseudo-headers): the stream is
    /// reset, the connection and its compression context go on.
    StreamError(String),
    /// COMPRESSION_ERROR (or another connection error): containerd ends
    /// the connection and decodes nothing more of it.
    ConnectionError(String),
}

#[derive(Debug, Clone)]
pub struct GoBlock {
    pub verdict: Verdict,
    /// Every field of the block, from a decoder that never stops emitting.
    pub fields: Result<Vec<Field>, String>,
}

/// A running go-hpack, one request and one answer per connection.
pub struct GoHpack {
    child: Child,
    to: Option<BufWriter<ChildStdin>>,
    from: BufReader<ChildStdout>,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl GoHpack {
    pub fn spawn(path: &Path) -> Result<GoHpack, String> {
        let mut child = Command::new(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("go-hpack: no pipes".into());
        };
        Ok(GoHpack {
            child,
            to: Some(BufWriter::new(to)),
            from: BufReader::new(from),
            request: Vec::new(),
            answer: Vec::new(),
        })
    }

    /// How containerd reads the blocks of one connection.
    pub fn connection(&mut self, ops: &[Op]) -> Result<Vec<GoBlock>, String> {
        let r = &mut self.request;
        r.clear();
        let mut allowed = CONTAINERD_TABLE_SIZE;
        let mut blocks = 0;
        for op in ops {
            match op {
                Op::TableSize(size) => {
                    // As the proxy: until the client acknowledges, either
                    // size may be in use, so the largest stays allowed.
                    allowed = allowed.max(*size);
                    r.push(b'S');
                    r.extend_from_slice(&allowed.to_be_bytes());
                }
                Op::Block { block, fragment } => {
                    blocks += 1;
                    let fragments: Vec<&[u8]> = if *fragment == 0 || block.is_empty() {
                        vec![&block[..]]
                    } else {
                        block.chunks(*fragment).collect()
                    };
                    r.push(b'B');
                    r.extend_from_slice(&(fragments.len() as u32).to_be_bytes());
                    for f in fragments {
                        r.extend_from_slice(&(f.len() as u32).to_be_bytes());
                        r.extend_from_slice(f);
                    }
                }
            }
        }
        let broken = |e: std::io::Error| format!("go-hpack: {e}");
        let to = self.to.as_mut().ok_or("go-hpack: closed")?;
        to.write_all(&(r.len() as u32).to_be_bytes())
            .map_err(broken)?;
        to.write_all(r).map_err(broken)?;
        to.flush().map_err(broken)?;
        let mut len = [0; 4];
        self.from.read_exact(&mut len).map_err(broken)?;
        self.answer.resize(u32::from_be_bytes(len) as usize, 0);
        self.from.read_exact(&mut self.answer).map_err(broken)?;
        let results = read_answer(&self.answer)?;
        if results.len() > blocks {
            return Err("go-hpack: more results than blocks".into());
        }
        Ok(results)
    }
}

impl Drop for GoHpack {
    fn drop(&mut self) {
        // End of input ends the helper.
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

fn read_answer(mut a: &[u8]) -> Result<Vec<GoBlock>, String> {
    fn take<'a>(a: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if a.len() < n {
            return Err("go-hpack: truncated answer".into());
        }
        let (v, rest) = a.split_at(n);
        *a = rest;
        Ok(v)
    }
    fn u32_(a: &mut &[u8]) -> Result<usize, String> {
        let b = take(a, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn bytes(a: &mut &[u8]) -> Result<Vec<u8>, String> {
        let n = u32_(a)?;
        Ok(take(a, n)?.to_vec())
    }
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let mut out = Vec::new();
    while !a.is_empty() {
        let verdict = take(&mut a, 1)?[0];
        let detail = bytes(&mut a)?;
        let verdict = match verdict {
            0 => Verdict::Accepted { path: Some(detail) },
            4 => Verdict::Accepted { path: None },
            1 => Verdict::Truncated,
            2 => Verdict::StreamError(text(detail)),
            3 => Verdict::ConnectionError(text(detail)),
            v => return Err(format!("go-hpack: verdict {v}")),
        };
        let fields = if take(&mut a, 1)?[0] == 0 {
            let n = u32_(&mut a)?;
            let mut fields = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let name = bytes(&mut a)?;
                let value = bytes(&mut a)?;
                take(&mut a, 1)?;
                fields.push((name, value));
            }
            Ok(fields)
        } else {
            Err(text(bytes(&mut a)?))
        };
        out.push(GoBlock { verdict, fields });
    }
    Ok(out)
}

// ---- the comparison ----

/// Disagreements that are understood and safe, by name, with why.
///
/// The proxy refusing a block ends the client's connection before the
/// block reaches containerd (COMPRESSION_ERROR): nothing is decided or
/// forwarded, so refusing more than containerd fails closed, and only
/// matters if real clients sent such blocks. No encoder does for these.
pub const KNOWN: &[(&str, &str)] = &[
    (
        "long-integer",
        "the proxy refuses an integer of more than five bytes (an overlong \
         encoding, or past 2^28), which Go reads up to ten bytes: no encoder \
         writes one, and no block the proxy takes needs one",
    ),
    (
        "unread-string",
        "after a field it refuses (or past its header list limit) containerd \
         stops emitting, and does not even decode the strings of a literal it \
         need not index, so a bad Huffman string there is no error to it; \
         the proxy refuses the block, containerd would have reset the stream",
    ),
    (
        "loona-trailing-size-update",
        "loona-hpack refuses a block that ends with a table size update, which \
         RFC 7541 allows and Go takes",
    ),
    (
        "loona-late-size-update",
        "loona-hpack takes a table size update anywhere in a block; Go (and \
         so the proxy) takes one past the block's first representation only \
         while the table is empty",
    ),
];

#[derive(Debug, Default)]
pub struct Stats {
    pub connections: u64,
    pub blocks: u64,
    /// Accepted by both with the same fields, by containerd's verdict.
    pub routed: u64,
    pub stream_errors: u64,
    pub truncated: u64,
    /// Refused by both; the connection ends.
    pub refused_by_both: u64,
    /// Blocks compared with loona-hpack too.
    pub loona_blocks: u64,
    /// Understood disagreements (see `KNOWN`): count and the first input.
    pub known: BTreeMap<&'static str, (u64, Vec<u8>)>,
}

impl Stats {
    fn known(&mut self, class: &'static str, ops: &[Op]) -> bool {
        let entry = self.known.entry(class).or_insert((0, Vec::new()));
        entry.0 += 1;
        let first = entry.0 == 1;
        if first {
            entry.1 = serialize(ops);
        }
        first
    }

    pub fn report(&self) -> String {
        let mut s = format!(
            "{} connections, {} blocks: {} accepted alike ({} routable), {} stream errors, \
             {} past the header list limit, {} refused by both; {} also against loona-hpack",
            self.connections,
            self.blocks,
            self.routed + self.stream_errors + self.truncated,
            self.routed,
            self.stream_errors,
            self.truncated,
            self.refused_by_both,
            self.loona_blocks,
        );
        for (class, (n, input)) in &self.known {
            let _ = write!(s, "\n  {class}: {n}, first: {}", short_hex(input));
        }
        s
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// At most 256 bytes' worth: blocks and inputs can be long.
pub fn short_hex(bytes: &[u8]) -> String {
    if bytes.len() <= 256 {
        return hex(bytes);
    }
    format!("{}... ({} bytes)", hex(&bytes[..256]), bytes.len())
}

fn show(fields: &[Field]) -> String {
    let shown = |b: &[u8]| {
        let s = String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
        if b.len() > 80 {
            format!("{s}... ({} bytes)", b.len())
        } else {
            s
        }
    };
    let list: Vec<String> = fields
        .iter()
        .map(|(n, v)| format!("{}: {}", shown(n), shown(v)))
        .collect();
    format!("[{}]", list.join(", "))
}

fn loona_class(proxy: &Result<(), String>, loona: &Result<(), String>) -> Option<&'static str> {
    match (proxy, loona) {
        (Ok(()), Err(e)) if e.contains("SizeUpdateAtEnd") => Some("loona-trailing-size-update"),
        (Err(e), Ok(())) if e.contains("table size update past the start") => {
            Some("loona-late-size-update")
        }
        _ => None,
    }
}

/// Decodes the connection `ops` describe with the proxy's decoder, Go's
/// and loona-hpack's, and returns why they disagree when they do in a way
/// that is not understood (see `KNOWN`).
///
/// What must hold, block by block, while both ends would go on:
/// - the proxy accepts only blocks containerd accepts, and then reads the
///   same fields, in order (hence the same `:path`, which grpc-go routes
///   by when its Framer accepts the request);
/// - where the proxy refuses a block containerd accepts, the reason is a
///   known one (the proxy ends the connection: it fails closed);
/// - loona-hpack reads the same fields where both accept, and disagrees on
///   acceptance only as `KNOWN` says (its context is not followed after);
/// - the proxy's own re-encoding of what it read (the head an intercepted
///   call is decided on) reads back the same.
///
/// `with_loona`: loona-hpack builds a Huffman table for every string it
/// decodes, which under the fuzzer's instrumentation costs more than all
/// the rest; the fuzz target asks for it on some inputs only.
pub fn check(
    ops: &[Op],
    go: &mut GoHpack,
    stats: &mut Stats,
    with_loona: bool,
    mut first_seen: impl FnMut(&'static str, &[Op]),
) -> Result<(), String> {
    stats.connections += 1;
    let theirs = go.connection(ops)?;
    let mut theirs = theirs.into_iter();
    let mut proxy = hpack::Decoder::new();
    let mut loona = with_loona.then(loona_hpack::Decoder::new);
    let mut allowed = CONTAINERD_TABLE_SIZE;
    if let Some(l) = loona.as_mut() {
        l.set_max_allowed_table_size(allowed as usize);
    }
    for (at, op) in ops.iter().enumerate() {
        let block = match op {
            Op::TableSize(size) => {
                proxy.allow_table_size(*size as usize);
                allowed = allowed.max(*size);
                if let Some(l) = loona.as_mut() {
                    l.set_max_allowed_table_size(allowed as usize);
                }
                continue;
            }
            Op::Block { block, .. } => block,
        };
        stats.blocks += 1;
        let here = |what: String| format!("record {at} (block {}): {what}", short_hex(block));
        let Some(go_block) = theirs.next() else {
            return Err(here("go-hpack gave no result".into()));
        };
        let mut ours = Vec::new();
        let result = proxy
            .decode(block, |n, v| ours.push((n.to_vec(), v.to_vec())))
            .map_err(|e| e.to_string());

        if let Some(l) = loona.as_mut() {
            stats.loona_blocks += 1;
            let mut reference = Vec::new();
            let loona_result = l
                .decode_with_cb(block, |n, v| {
                    reference.push((n.into_owned(), v.into_owned()))
                })
                .map_err(|e| format!("{e:?}"));
            match (&result, &loona_result) {
                (Ok(()), Ok(())) if ours != reference => {
                    return Err(here(format!(
                        "loona-hpack reads {} where the proxy reads {}",
                        show(&reference),
                        show(&ours)
                    )));
                }
                (Ok(()), Ok(())) | (Err(_), Err(_)) => {}
                _ => {
                    let Some(class) = loona_class(&result, &loona_result) else {
                        return Err(here(format!(
                            "the proxy says {result:?}, loona-hpack {loona_result:?}"
                        )));
                    };
                    if stats.known(class, ops) {
                        first_seen(class, ops);
                    }
                    loona = None;
                }
            }
        }

        match result {
            Ok(()) => {
                if let Verdict::ConnectionError(why) = &go_block.verdict {
                    return Err(here(format!(
                        "the proxy reads {} from a block containerd refuses ({why})",
                        show(&ours)
                    )));
                }
                let theirs_fields = match &go_block.fields {
                    Ok(fields) => fields,
                    Err(why) => {
                        return Err(here(format!(
                            "the proxy reads {} where Go's decoder fails ({why})",
                            show(&ours)
                        )));
                    }
                };
                if &ours != theirs_fields {
                    return Err(here(format!(
                        "containerd reads {} where the proxy reads {}",
                        show(theirs_fields),
                        show(&ours)
                    )));
                }
                match &go_block.verdict {
                    Verdict::Accepted { path } => {
                        let paths: Vec<&Vec<u8>> = ours
                            .iter()
                            .filter(|(n, _)| n == b":path")
                            .map(|(_, v)| v)
                            .collect();
                        let routed: Vec<&Vec<u8>> = path.iter().collect();
                        if paths != routed {
                            return Err(here(format!(
                                "grpc-go routes by {:?}, the proxy reads :path {:?}",
                                path.as_deref().map(String::from_utf8_lossy),
                                paths
                                    .iter()
                                    .map(|p| String::from_utf8_lossy(p))
                                    .collect::<Vec<_>>()
                            )));
                        }
                        stats.routed += 1;
                    }
                    Verdict::Truncated => stats.truncated += 1,
                    Verdict::StreamError(_) => stats.stream_errors += 1,
                    Verdict::ConnectionError(_) => {}
                }
                let mut own = bytes::BytesMut::new();
                for (n, v) in &ours {
                    hpack::encode_field(&mut own, n, v);
                }
                match hpack::fields_of_own(&own) {
                    Ok(back) if back == ours => {}
                    other => {
                        return Err(here(format!(
                            "the proxy's encoding of {} reads back as {other:?}",
                            show(&ours)
                        )));
                    }
                }
            }
            Err(ours_err) => {
                let class = match (&go_block.verdict, &go_block.fields) {
                    (Verdict::ConnectionError(_), _) => None,
                    _ if ours_err.contains("oversized integer") => Some("long-integer"),
                    (Verdict::StreamError(_) | Verdict::Truncated, Err(e))
                        if e.contains("Huffman") && ours_err.contains("Huffman") =>
                    {
                        Some("unread-string")
                    }
                    (verdict, fields) => {
                        return Err(here(format!(
                            "the proxy refuses ({ours_err}) a block containerd takes \
                             ({verdict:?}, {fields:?})"
                        )));
                    }
                };
                match class {
                    None => stats.refused_by_both += 1,
                    Some(class) => {
                        if stats.known(class, ops) {
                            first_seen(class, ops);
                        }
                    }
                }
                // The proxy has ended the connection.
                return Ok(());
            }
        }
    }
    if theirs.next().is_some() {
        return Err("go-hpack gave more results than there were blocks".into());
    }
    Ok(())
}
