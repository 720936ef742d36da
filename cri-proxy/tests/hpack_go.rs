//! The proxy's HPACK decoder against containerd's (Go's x/net/http2, run
//! by the go-hpack helper) and loona-hpack: the seed corpus of the `hpack`
//! fuzz target, then structured-random connections from a fixed seed. The
//! comparison is the fuzz target's (fuzz/hpack_diff.rs).
//!
//! The helper is ATTESTGATE_GO_HPACK, or built with
//! scripts/build-go-hpack.sh; without Go the tests are skipped, unless
//! ATTESTGATE_E2E_REQUIRED is set. ATTESTGATE_HPACK_SEED and
//! ATTESTGATE_HPACK_CONNECTIONS pick another seed and a longer run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/hpack_diff.rs"]
mod hpack_diff;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use hpack_diff::{GoHpack, Op, Stats};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn required() -> bool {
    std::env::var_os("ATTESTGATE_E2E_REQUIRED").is_some_and(|v| v != "0" && !v.is_empty())
}

/// The go-hpack helper, built once per test binary.
fn helper() -> Option<PathBuf> {
    static HELPER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = HELPER.get_or_init(|| {
        if let Some(path) = std::env::var_os("ATTESTGATE_GO_HPACK") {
            return Ok(path.into());
        }
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-hpack/go-hpack");
        let built = Command::new("bash")
            .arg(repo().join("scripts/build-go-hpack.sh"))
            .arg(&out)
            .output()
            .map_err(|e| format!("cannot run scripts/build-go-hpack.sh: {e}"))?;
        if !built.status.success() {
            return Err(String::from_utf8_lossy(&built.stderr).trim().to_string());
        }
        Ok(out)
    });
    match found {
        Ok(path) => Some(path.clone()),
        Err(why) if required() => {
            panic!("the go-hpack helper is missing (ATTESTGATE_E2E_REQUIRED is set): {why}")
        }
        Err(why) => {
            eprintln!("skipped: no go-hpack helper: {why}");
            None
        }
    }
}

/// Fails with the input saved where the fuzz target can replay it.
fn diverged(name: &str, ops: &[Op], why: &str) -> ! {
    let input = hpack_diff::serialize(ops);
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hpack-divergence-{name}"));
    let saved = match std::fs::write(&file, &input) {
        Ok(()) => format!("saved as {}", file.display()),
        Err(e) => format!("not saved: {e}"),
    };
    panic!(
        "HPACK decoders disagree on {name}: {why}\ninput ({saved}): {}\n\
         replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run hpack <file>",
        hpack_diff::short_hex(&input)
    );
}

#[test]
fn seed_corpus_decodes_alike() {
    let Some(path) = helper() else { return };
    let mut go = GoHpack::spawn(&path).unwrap();
    let dir = repo().join("fuzz/seeds/hpack");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 4, "seeds missing in {}", dir.display());
    for file in names {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let ops = hpack_diff::parse(&std::fs::read(&file).unwrap());
        let mut stats = Stats::default();
        if let Err(why) = hpack_diff::check(&ops, &mut go, &mut stats, true, |_, _| {}) {
            diverged(&name, &ops, &why);
        }
        // What real clients send is a call containerd routes, every block.
        let blocks = ops
            .iter()
            .filter(|op| matches!(op, Op::Block { .. }))
            .count() as u64;
        assert_eq!(
            (stats.routed, stats.loona_blocks),
            (blocks, blocks),
            "{name}: {}",
            stats.report()
        );
    }
}

#[test]
fn random_connections_decode_alike() {
    let Some(path) = helper() else { return };
    let mut go = GoHpack::spawn(&path).unwrap();
    let seed = std::env::var("ATTESTGATE_HPACK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_4b1d_2024_u64);
    let connections = std::env::var("ATTESTGATE_HPACK_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    eprintln!("ATTESTGATE_HPACK_SEED={seed} ATTESTGATE_HPACK_CONNECTIONS={connections}");
    let started = Instant::now();
    let mut rng = Rng(seed | 1);
    let mut stats = Stats::default();
    for i in 0..connections {
        let ops = connection(&mut rng);
        if let Err(why) = hpack_diff::check(&ops, &mut go, &mut stats, true, |_, _| {}) {
            diverged(&format!("{seed}-{i}"), &ops, &why);
        }
    }
    eprintln!("{} in {:?}", stats.report(), started.elapsed());
    // The generator must reach every outcome, or it tests less than it seems.
    assert!(stats.routed > stats.blocks / 3, "{}", stats.report());
    assert!(stats.stream_errors > 0, "{}", stats.report());
    assert!(stats.refused_by_both > 0, "{}", stats.report());
}

// ---- structured-random connections ----

/// xorshift64*: the same connections on every run of a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

const PATHS: &[&str] = &[
    "/runtime.v1.RuntimeService/Version",
    "/runtime.v1.ImageService/PullImage",
    "/runtime.v1.RuntimeService/CreateContainer",
    "/runtime.v1.RuntimeService/StartContainer",
    "/runtime.v1.ImageService/ImageStatus",
    "/runtime.v1alpha2.ImageService/PullImage",
    "/not.served.Service/Method",
    "/",
];

/// Fields a client may add to a request.
const REGULAR: &[&str] = &[
    "te",
    "grpc-timeout",
    "traceparent",
    "x-meta-bin",
    "user-agent",
];

const NAMES: &[&str] = &[
    ":path",
    ":method",
    ":authority",
    ":status",
    "content-type",
    "user-agent",
    "te",
    "grpc-timeout",
    "traceparent",
    "x-meta-bin",
    "X-Upper",
    "bad name",
    "",
];

/// The encoder's side of one connection: its dynamic table, kept as
/// RFC 7541 says a decoder keeps it (so that references hit unless meant
/// to miss), and how sloppy it is.
struct Encoder {
    statics: Vec<(Vec<u8>, Vec<u8>)>,
    table: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
    allowed: u32,
    /// Percent chance of each deliberate error.
    noise: u64,
}

impl Encoder {
    fn new(noise: u64) -> Encoder {
        // The static table, from the reference decoder.
        let mut loona = loona_hpack::Decoder::new();
        let statics = (1..=61u8)
            .map(|i| loona.decode(&[0x80 | i]).unwrap().remove(0))
            .collect();
        Encoder {
            statics,
            table: Default::default(),
            size: 0,
            max: 4096,
            allowed: hpack_diff::CONTAINERD_TABLE_SIZE,
            noise,
        }
    }

    fn entry(&self, index: u64) -> Option<&(Vec<u8>, Vec<u8>)> {
        match index as usize {
            0 => None,
            i @ 1..=61 => self.statics.get(i - 1),
            i => self.table.get(i - 62),
        }
    }

    fn evict(&mut self, limit: usize) {
        while self.size > limit {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        if size > self.max {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(self.max - size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// An index into the table, now and then one that misses.
    fn index(&mut self, rng: &mut Rng) -> u64 {
        if rng.percent(self.noise) {
            return 62 + self.table.len() as u64 + rng.below(3) as u64;
        }
        if self.table.is_empty() || rng.percent(50) {
            1 + rng.below(61) as u64
        } else {
            62 + rng.below(self.table.len()) as u64
        }
    }

    /// An integer with an `n`-bit prefix; now and then overlong, which Go
    /// reads and the proxy refuses past five bytes.
    fn int(&self, out: &mut Vec<u8>, first: u8, n: u32, mut value: u64, rng: &mut Rng) {
        let max = (1u64 << n) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        if rng.percent(self.noise) {
            out.push(value as u8 | 0x80);
            for _ in 0..rng.below(6) {
                out.push(0x80);
            }
            out.push(0);
        } else {
            out.push(value as u8);
        }
    }

    fn string(&self, out: &mut Vec<u8>, s: &[u8], rng: &mut Rng) {
        if rng.percent(40) {
            self.int(out, 0, 7, s.len() as u64, rng);
            out.extend_from_slice(s);
            return;
        }
        let mut h = Vec::new();
        let _ = httlib_huffman::encode(s, &mut h);
        if rng.percent(self.noise) {
            match rng.below(4) {
                // Padding of a whole byte or more, or of zeros, or cut
                // short: RFC 7541 §5.2 makes each a decoding error.
                0 => h.push(0xff),
                1 => {
                    if let Some(last) = h.last_mut() {
                        *last &= !(1 << rng.below(4));
                    }
                }
                2 => {
                    h.pop();
                }
                _ => h = (0..rng.below(6)).map(|_| rng.next() as u8).collect(),
            }
        }
        self.int(out, 0x80, 7, h.len() as u64, rng);
        out.extend_from_slice(&h);
    }

    fn size_update(&mut self, out: &mut Vec<u8>, rng: &mut Rng) {
        let allowed = self.allowed as usize;
        let size = match rng.below(6) {
            0 => 0,
            1 => 200,
            2 => 4096.min(allowed),
            3 => allowed,
            _ => rng.below(allowed + 1),
        };
        let size = if rng.percent(self.noise) {
            *rng.pick(&[allowed + 1, 1 << 30])
        } else {
            size
        };
        self.int(out, 0x20, 5, size as u64, rng);
        self.max = size;
        self.evict(size);
    }

    /// The indices of an entry that is this field, and of one with its name.
    fn find(&self, name: &[u8], value: &[u8]) -> (Option<u64>, Option<u64>) {
        let all = self.statics.iter().chain(self.table.iter());
        let (mut full, mut named) = (None, None);
        for (i, (n, v)) in all.enumerate() {
            if n == name {
                named = named.or(Some(i as u64 + 1));
                if v == value {
                    full = full.or(Some(i as u64 + 1));
                }
            }
        }
        (full, named)
    }

    /// One field, in any representation that reads back as this field
    /// (`exact`), or in any at all, the name or the whole field then
    /// perhaps another's.
    fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8], exact: bool, rng: &mut Rng) {
        let (full, named) = if exact {
            self.find(name, value)
        } else {
            let index = self.index(rng);
            (Some(index), Some(index))
        };
        let indexing = match rng.below(4) {
            0 if full.is_some() => {
                let index = full.unwrap_or_default();
                self.int(out, 0x80, 7, index, rng);
                return;
            }
            1 => false,
            2 if rng.percent(30) => {
                // Never indexed.
                let index = named.filter(|_| rng.percent(50)).unwrap_or(0);
                self.int(out, 0x10, 4, index, rng);
                if index == 0 {
                    self.string(out, name, rng);
                }
                self.string(out, value, rng);
                return;
            }
            _ => true,
        };
        let (first, n) = if indexing { (0x40, 6) } else { (0, 4) };
        let name = match named.filter(|_| rng.percent(60)) {
            Some(index) => {
                self.int(out, first, n, index, rng);
                match self.entry(index) {
                    Some((name, _)) => name.clone(),
                    None => Vec::new(),
                }
            }
            None => {
                self.int(out, first, n, 0, rng);
                self.string(out, name, rng);
                name.to_vec()
            }
        };
        self.string(out, value, rng);
        if indexing {
            self.insert(name, value.to_vec());
        }
    }

    fn block(&mut self, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        match rng.below(20) {
            0 => self.size_update(&mut out, rng),
            1 => {
                // Shrink to nothing and grow again, as after a change of
                // SETTINGS_HEADER_TABLE_SIZE (RFC 7541 §4.2).
                self.int(&mut out, 0x20, 5, 0, rng);
                self.evict(0);
                self.size_update(&mut out, rng);
            }
            2 if rng.percent(30) => {
                self.size_update(&mut out, rng);
                self.size_update(&mut out, rng);
            }
            _ => {}
        }
        let request = rng.percent(60);
        if request {
            // A request much like a real client's.
            let path = rng.pick(PATHS).as_bytes();
            let head: [(&[u8], &[u8]); 6] = [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path),
                (b":authority", b"/run/containerd/containerd.sock"),
                (b"content-type", b"application/grpc"),
                (b"user-agent", b"grpc-go/1.58.3"),
            ];
            for (name, v) in head {
                if !rng.percent(self.noise) {
                    let exact = !rng.percent(self.noise);
                    self.field(&mut out, name, v, exact, rng);
                }
            }
        }
        for _ in 0..rng.below(6) {
            if rng.percent(2) {
                self.size_update(&mut out, rng);
                continue;
            }
            if request && !rng.percent(self.noise) {
                let v: Vec<u8> = (0..rng.below(60))
                    .map(|_| b' ' + rng.below(95) as u8)
                    .collect();
                let name = rng.pick(REGULAR).as_bytes();
                self.field(&mut out, name, &v, true, rng);
            } else {
                let name = rng.pick(NAMES).as_bytes();
                let exact = rng.percent(50);
                self.field(&mut out, name, &value(rng), exact, rng);
            }
        }
        if rng.percent(self.noise) && !out.is_empty() {
            match rng.below(3) {
                0 => {
                    let at = rng.below(out.len());
                    out[at] ^= 1 << rng.below(8);
                }
                1 => out.truncate(rng.below(out.len())),
                _ => {
                    let at = rng.below(out.len() + 1);
                    out.insert(at, rng.next() as u8);
                }
            }
        }
        out
    }
}

fn value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=2 => rng.pick(PATHS).as_bytes().to_vec(),
        3 => format!("{}u", rng.below(200_000_000)).into_bytes(),
        4 => b"application/grpc".to_vec(),
        5 => (0..rng.below(12)).map(|_| rng.next() as u8).collect(),
        6 => vec![b'a' + rng.below(26) as u8; rng.below(5_000)],
        7 if rng.percent(30) => b"bad\nvalue".to_vec(),
        _ => (0..rng.below(40))
            .map(|_| b' ' + rng.below(95) as u8)
            .collect(),
    }
}

fn connection(rng: &mut Rng) -> Vec<Op> {
    let noise = *rng.pick(&[0, 0, 1, 1, 4]);
    let mut encoder = Encoder::new(noise);
    let mut ops = Vec::new();
    for _ in 0..1 + rng.below(10) {
        if rng.percent(4) {
            let size = *rng.pick(&[0, 512, 4096, 8192, 65_536, u32::MAX]);
            encoder.allowed = encoder.allowed.max(size);
            ops.push(Op::TableSize(size));
        }
        let fragment = if rng.percent(20) {
            1 + rng.below(127)
        } else {
            0
        };
        ops.push(Op::Block {
            block: encoder.block(rng),
            fragment,
        });
    }
    ops
}

// ---- seeds from a Rust client ----

/// Writes seeds of request header blocks as tonic's HTTP/2 stack (h2)
/// encodes them, into fuzz/seeds/hpack (grpc-go's come from
/// `go-hpack -seeds`).
#[test]
#[ignore = "writes fuzz/seeds/hpack/tonic-*; run by hand"]
fn write_tonic_seeds() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let calls = [
        "/runtime.v1.RuntimeService/Version",
        "/runtime.v1.ImageService/ImageStatus",
        "/runtime.v1.ImageService/PullImage",
        "/runtime.v1.RuntimeService/CreateContainer",
        "/runtime.v1.RuntimeService/StartContainer",
        "/runtime.v1.ImageService/PullImage",
    ];
    let plain = runtime.block_on(h2_blocks(&calls, 0));
    let large = runtime.block_on(h2_blocks(&calls[2..4], 1_500));
    for (name, blocks) in [("tonic-calls", plain), ("tonic-large-metadata", large)] {
        let ops: Vec<Op> = blocks
            .into_iter()
            .map(|block| Op::Block { block, fragment: 0 })
            .collect();
        std::fs::write(
            repo().join("fuzz/seeds/hpack").join(name),
            hpack_diff::serialize(&ops),
        )
        .unwrap();
    }
}

/// The header blocks an h2 client sends for these calls on one
/// connection, with metadata of `metadata` bytes that changes per call.
async fn h2_blocks(paths: &[&str], metadata: usize) -> Vec<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let (send, connection) = h2::client::handshake(client).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // Empty SETTINGS, and the acknowledgement of the client's.
    server
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut pending = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let mut send = send.clone().ready().await.unwrap();
        let mut request = http::Request::post(format!("http://localhost{path}"))
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .header("user-agent", "tonic/0.14.9")
            .header("grpc-timeout", format!("{}u", 119_999_000 + i * 17));
        if metadata > 0 {
            request = request.header("x-trace", "t".repeat(metadata + i));
        }
        let (response, _body) = send.send_request(request.body(()).unwrap(), false).unwrap();
        pending.push(response);
    }
    let mut wire = Vec::new();
    let mut buf = vec![0; 1 << 16];
    let want = paths.len();
    loop {
        let blocks = header_blocks(&wire);
        if blocks.len() == want {
            drop(pending);
            return blocks;
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), server.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the client closed");
        wire.extend_from_slice(&buf[..n]);
    }
}

/// The complete header blocks of the client's frames so far.
fn header_blocks(wire: &[u8]) -> Vec<Vec<u8>> {
    const PREFACE: usize = 24;
    let mut blocks = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    let mut at = PREFACE;
    while wire.len() >= at + 9 {
        let len = usize::from(wire[at]) << 16
            | usize::from(wire[at + 1]) << 8
            | usize::from(wire[at + 2]);
        let (kind, flags) = (wire[at + 3], wire[at + 4]);
        if wire.len() < at + 9 + len {
            break;
        }
        let payload = &wire[at + 9..at + 9 + len];
        at += 9 + len;
        match kind {
            1 => {
                assert_eq!(flags & 0x28, 0, "h2 pads or prioritises no HEADERS");
                open = Some(payload.to_vec());
            }
            9 => open.get_or_insert_with(Vec::new).extend_from_slice(payload),
            _ => continue,
        }
        if flags & 0x4 != 0 {
            blocks.extend(open.take());
        }
    }
    blocks
}
