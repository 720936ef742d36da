//! The relay's state machine through whole connections, held to what it
//! promises: the seed corpus of the `relay` fuzz target, then
//! structured-random connections from a fixed seed, through the fuzz
//! target's harness (fuzz/relay_model.rs); and the harness itself, fed
//! hand-made output that breaks each rule, so that it cannot pass what it
//! should catch.
//!
//! ATTESTGATE_RELAY_SEED and ATTESTGATE_RELAY_CASES pick another seed and
//! another number of connections; a connection that breaks a rule is
//! saved under target/tmp/ in the fuzz target's input format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/relay_model.rs"]
mod relay_model;

use std::path::{Path, PathBuf};
use std::time::Instant;

use attestgate_proxy::relay::{frame, hpack};
use bytes::{BufMut, BytesMut};
use relay_model::{Checker, FIXED, KNOWN, Op, Stats};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn seeds_dir() -> PathBuf {
    repo().join("fuzz/seeds/relay")
}

/// Fails with the input saved where the fuzz target can replay it.
fn broke(name: &str, ops: &[Op], failure: &relay_model::Failure) -> ! {
    let input = relay_model::serialize(ops);
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("relay-violation-{name}"));
    let saved = match std::fs::write(&file, &input) {
        Ok(()) => format!("saved as {}", file.display()),
        Err(e) => format!("not saved: {e}"),
    };
    panic!(
        "{name}: {failure}\ninput ({saved}, {} bytes)\n\
         replay: cd fuzz && ATTESTGATE_RELAY_STRICT=1 cargo +nightly fuzz run relay <file>",
        input.len()
    );
}

#[test]
fn seed_corpus_holds() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(
        names.len() >= 6,
        "seeds missing in {}",
        seeds_dir().display()
    );
    let mut total = Stats::default();
    for file in names {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let ops = relay_model::parse(&std::fs::read(&file).unwrap());
        // Strict: the seeds are connections as real peers make them.
        match relay_model::run(&ops, false) {
            Ok(run) => total.add(&run.stats),
            Err(failure) => broke(&name, &ops, &failure),
        }
    }
    eprintln!("seeds: {total:?}");
    assert!(total.calls > 0 && total.answered > 0, "{total:?}");
    assert!(total.window_exhausted > 0, "{total:?}");
}

#[test]
fn random_connections_hold() {
    let seed = std::env::var("ATTESTGATE_RELAY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2e1a_7f22_u64);
    let cases = std::env::var("ATTESTGATE_RELAY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_500);
    eprintln!("ATTESTGATE_RELAY_SEED={seed} ATTESTGATE_RELAY_CASES={cases}");
    let started = Instant::now();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut total = Stats::default();
    let mut known = Vec::new();
    for i in 0..cases {
        // One connection in ten is bytes as the fuzzer starts from.
        let ops = if i % 10 == 9 {
            let bytes: Vec<u8> = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
            relay_model::parse(&bytes)
        } else {
            connection(&mut rng)
        };
        match relay_model::run(&ops, true) {
            Ok(run) => {
                total.add(&run.stats);
                for (class, message) in run.known {
                    if !known.iter().any(|(c, _)| *c == class) {
                        known.push((class, format!("{seed}-{i}: {message}")));
                    }
                }
            }
            Err(failure) => broke(&format!("{seed}-{i}"), &ops, &failure),
        }
    }
    eprintln!("{total:?} in {:?}", started.elapsed());
    for (class, message) in &known {
        eprintln!("known relay bug [{class}] seen: {message}");
    }
    // The generator must reach every outcome, or it tests less than it seems.
    for (what, n) in [
        ("relayed", total.relayed),
        ("taken out", total.taken_out),
        ("refused", total.refused),
        ("refused while draining", total.draining),
        ("handed out", total.calls),
        ("answered by the relay", total.answered),
        ("connection window exhausted", total.window_exhausted),
        ("stream window exhausted", total.stream_window_exhausted),
        ("server header blocks held open", total.blocks_held),
        ("relay errors", total.relay_errors),
    ] {
        assert!(n > 0, "nothing {what}: {total:?}");
    }
    assert!(total.injected_bytes > 10 << 20, "{total:?}");
}

/// Every known bug's input still shows it: once one is fixed, its entry in
/// `KNOWN` goes.
#[test]
fn known_bugs_still_show() {
    for (class, what, input) in KNOWN {
        let ops = relay_model::parse(input);
        match relay_model::run(&ops, false) {
            Err(failure) => assert_eq!(failure.violation.class, *class, "{what}: {failure}"),
            Ok(_) => panic!("[{class}] {what}: no longer shows; remove it from KNOWN"),
        }
        let run = relay_model::run(&ops, true).unwrap_or_else(|f| panic!("{f}"));
        assert!(run.known.iter().any(|(c, _)| c == class), "{what}");
    }
}

/// The bugs found and fixed stay fixed: their inputs hold every rule.
#[test]
fn fixed_bugs_stay_fixed() {
    assert!(!FIXED.is_empty());
    for (class, what, input) in FIXED {
        let ops = relay_model::parse(input);
        if let Err(failure) = relay_model::run(&ops, false) {
            panic!("[{class}] {what}: shows again: {failure}");
        }
    }
}

/// The shortest input breaking the same rule as ATTESTGATE_RELAY_INPUT (a
/// file in the fuzz target's format): `cargo test -p attestgate-proxy
/// --test relay_fuzz -- --ignored minimize --nocapture`.
#[test]
#[ignore]
fn minimize() {
    let file = std::env::var_os("ATTESTGATE_RELAY_INPUT").expect("ATTESTGATE_RELAY_INPUT");
    let ops = relay_model::parse(&std::fs::read(file).unwrap());
    let class = match std::panic::catch_unwind(|| relay_model::run(&ops, true)) {
        Ok(Err(failure)) => {
            eprintln!("{failure}");
            failure.violation.class
        }
        Ok(Ok(_)) => panic!("the input breaks no rule"),
        Err(_) => "panic",
    };
    let small = relay_model::minimize(&ops, class);
    eprintln!("{} ops: {small:#?}", small.len());
    eprintln!(
        "input: {}",
        relay_model::hex(&relay_model::serialize(&small))
    );
    if let Err(failure) = relay_model::run(&small, true) {
        eprintln!("{failure}");
    }
}

#[test]
fn inputs_read_back_as_written() {
    let mut rng = Rng(7);
    for _ in 0..200 {
        let ops = connection(&mut rng);
        let again = relay_model::parse(&relay_model::serialize(&ops));
        assert_eq!(again, ops);
    }
}

// ---- the checker catches what it should ----

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::put_header(&mut out, payload.len(), kind, flags, stream);
    out.put_slice(payload);
    out.to_vec()
}

fn request(stream: u32, path: &str, end: bool) -> Vec<u8> {
    let mut block = BytesMut::new();
    hpack::encode_field(&mut block, b":method", b"POST");
    hpack::encode_field(&mut block, b":path", path.as_bytes());
    let flags = frame::END_HEADERS | if end { frame::END_STREAM } else { 0 };
    frame_bytes(frame::HEADERS, flags, stream, &block)
}

fn settings() -> Vec<u8> {
    frame_bytes(frame::SETTINGS, 0, 0, &[])
}

fn reset(stream: u32) -> Vec<u8> {
    frame_bytes(frame::RST_STREAM, 0, stream, &frame::CANCEL.to_be_bytes())
}

/// A checker that has seen a client open stream 1 with `path`, and what
/// the relay wrote to the server for it (`up`); the class of the first
/// violation, if any.
fn upstream(path: &str, up: &[&[u8]]) -> Option<&'static str> {
    let mut c = Checker::new(false);
    let mut client = frame::PREFACE.to_vec();
    client.extend(settings());
    client.extend(request(1, path, false));
    c.client_read(&client).unwrap();
    let mut bytes = frame::PREFACE.to_vec();
    bytes.extend(settings());
    for f in up {
        bytes.extend_from_slice(f);
    }
    c.wrote_to_server(&bytes)
        .and_then(|()| c.end_step(65_535))
        .err()
        .map(|v| v.class)
}

#[test]
fn the_checker_catches_data_on_a_muted_stream() {
    let pull = "/runtime.v1.ImageService/PullImage";
    let muted = request(1, pull, false);
    // Muted as the relay mutes: nothing to say.
    assert_eq!(upstream(pull, &[&muted, &reset(1), &settings()]), None);
    let data = frame_bytes(frame::DATA, 0, 1, b"abc");
    assert_eq!(
        upstream(pull, &[&muted, &reset(1), &settings(), &data]),
        Some("muted-stream-forwarded")
    );
    // Long after, with other streams between.
    let version = request(3, "/runtime.v1.RuntimeService/Version", true);
    let end = frame_bytes(frame::DATA, frame::END_STREAM, 1, b"");
    assert_eq!(
        upstream(pull, &[&muted, &reset(1), &settings(), &version, &end]),
        Some("muted-stream-forwarded")
    );
    // END_STREAM on the block itself.
    assert_eq!(
        upstream(pull, &[&request(1, pull, true), &reset(1), &settings()]),
        Some("muted-stream-forwarded")
    );
    // A refused call, the same.
    let refused = "/not.served.X/Y";
    assert_eq!(
        upstream(refused, &[&request(1, refused, false), &reset(1), &data]),
        Some("muted-stream-forwarded")
    );
    // No reset behind a muted block.
    assert_eq!(
        upstream(pull, &[&muted, &settings()]),
        Some("mute-without-reset")
    );
    assert_eq!(upstream(pull, &[&muted]), Some("mute-without-reset"));
    // A stream the relay reset is muted, whatever its path.
    let path = "/runtime.v1.RuntimeService/Version";
    assert_eq!(
        upstream(path, &[&request(1, path, false), &reset(1), &data]),
        Some("muted-stream-forwarded")
    );
    // Half a frame.
    assert_eq!(
        upstream(pull, &[&muted, &reset(1), &data[..5]]),
        Some("partial-frame")
    );
}

#[test]
fn the_checker_catches_a_call_decided_and_forwarded() {
    let pull = "/runtime.v1.ImageService/PullImage";
    let mut c = Checker::new(false);
    let mut client = frame::PREFACE.to_vec();
    client.extend(settings());
    client.extend(request(1, pull, true));
    c.client_read(&client).unwrap();
    let mut up = frame::PREFACE.to_vec();
    up.extend(settings());
    up.extend(request(1, pull, false));
    up.extend(reset(1));
    c.wrote_to_server(&up).unwrap();
    c.handed_out(1, pull, b"").unwrap();
    assert_eq!(c.handed_out(1, pull, b"").unwrap_err().class, "call-twice");
    // A call whose END_STREAM went to the server.
    let mut c = Checker::new(false);
    let path = "/runtime.v1.RuntimeService/Version";
    c.client_read(&client).unwrap();
    let mut up = frame::PREFACE.to_vec();
    up.extend(settings());
    up.extend(request(1, path, true));
    c.wrote_to_server(&up).unwrap();
    assert_eq!(
        c.handed_out(1, path, b"").unwrap_err().class,
        "call-not-taken-out"
    );
}

/// A checker past both prefaces: the server's SETTINGS went to the client.
fn started() -> Checker {
    let mut c = Checker::new(false);
    let mut client = frame::PREFACE.to_vec();
    client.extend(settings());
    c.client_read(&client).unwrap();
    let mut up = frame::PREFACE.to_vec();
    up.extend(settings());
    c.wrote_to_server(&up).unwrap();
    c.server_read(&settings()).unwrap();
    c.wrote_to_client(&settings()).unwrap();
    c.end_step(65_535).unwrap();
    c
}

#[test]
fn the_checker_catches_an_overrun_window() {
    let mut c = started();
    let mut down = Vec::new();
    for _ in 0..4 {
        down.extend(frame_bytes(frame::DATA, 0, 1, &[0; 16_384]));
    }
    c.wrote_to_client(&down).unwrap();
    assert_eq!(c.end_step(0).unwrap_err().class, "connection-window");
    // A frame past the client's frame size.
    let mut c = started();
    let big = frame_bytes(frame::DATA, 0, 1, &[0; 16_385]);
    assert_eq!(c.wrote_to_client(&big).unwrap_err().class, "frame-size");
    // The relay counting the window otherwise than the client.
    let mut c = started();
    c.wrote_to_client(&frame_bytes(frame::DATA, 0, 1, &[0; 10]))
        .unwrap();
    assert_eq!(c.end_step(65_535).unwrap_err().class, "window-count");
}

#[test]
fn the_checker_catches_an_overrun_stream_window() {
    let pull = "/runtime.v1.ImageService/PullImage";
    let initial = |n: u32| {
        let mut p = vec![0, 4];
        p.extend(n.to_be_bytes());
        frame_bytes(frame::SETTINGS, 0, 0, &p)
    };
    // The client allows 100 bytes per stream; the relay's reply on a
    // muted stream takes 10.
    let mut c = Checker::new(false);
    let mut client = frame::PREFACE.to_vec();
    client.extend(initial(100));
    client.extend(request(1, pull, true));
    c.client_read(&client).unwrap();
    let mut up = frame::PREFACE.to_vec();
    up.extend(initial(100));
    up.extend(request(1, pull, false));
    up.extend(reset(1));
    up.extend(settings());
    c.wrote_to_server(&up).unwrap();
    let ack = frame_bytes(frame::SETTINGS, frame::ACK, 0, &[]);
    let mut server = settings();
    server.extend(&ack);
    server.extend(&ack);
    c.server_read(&server).unwrap();
    let mut down = settings();
    down.extend(&ack);
    down.extend(frame_bytes(frame::HEADERS, frame::END_HEADERS, 1, b"\x88"));
    down.extend(frame_bytes(frame::DATA, 0, 1, &[0; 10]));
    c.wrote_to_client(&down).unwrap();
    c.end_step(65_525).unwrap();
    // Lowered to 20 (§6.9.2: 10 left): 15 more is 5 too many, though
    // within the 100 allowed before.
    c.client_read(&initial(20)).unwrap();
    c.end_step(65_525).unwrap();
    c.wrote_to_client(&frame_bytes(frame::DATA, 0, 1, &[0; 15]))
        .unwrap();
    assert_eq!(c.end_step(65_510).unwrap_err().class, "stream-window");
}

#[test]
fn the_checker_catches_window_the_server_did_not_give() {
    let mut c = started();
    // The server gives 100: the client may be told of 100, not 101.
    let update = |n: u32| frame_bytes(frame::WINDOW_UPDATE, 0, 0, &n.to_be_bytes());
    c.server_read(&update(100)).unwrap();
    c.wrote_to_client(&update(100)).unwrap();
    c.end_step(65_535).unwrap();
    c.wrote_to_client(&update(1)).unwrap();
    assert_eq!(c.end_step(65_535).unwrap_err().class, "client-given-window");
}

#[test]
fn the_checker_catches_a_frame_inside_the_servers_header_block() {
    let mut c = started();
    let head = frame_bytes(frame::HEADERS, 0, 1, b"\x88");
    let update = frame_bytes(frame::WINDOW_UPDATE, 0, 0, &5u32.to_be_bytes());
    let mut down = head.clone();
    down.extend(&update);
    assert_eq!(
        c.wrote_to_client(&down).unwrap_err().class,
        "split-header-block"
    );
    // Across writes, too.
    let mut c = started();
    c.wrote_to_client(&head).unwrap();
    c.end_step(65_535).unwrap();
    assert_eq!(
        c.wrote_to_client(&update).unwrap_err().class,
        "split-header-block"
    );
}

#[test]
fn the_checker_catches_frames_before_the_servers_settings() {
    let mut c = Checker::new(false);
    let update = frame_bytes(frame::WINDOW_UPDATE, 0, 0, &5u32.to_be_bytes());
    assert_eq!(
        c.wrote_to_client(&update).unwrap_err().class,
        "before-server-settings"
    );
}

#[test]
fn the_checker_catches_a_reply_before_the_fence_and_after_the_end() {
    let pull = "/runtime.v1.ImageService/PullImage";
    let muted = |c: &mut Checker| {
        let mut client = frame::PREFACE.to_vec();
        client.extend(settings());
        client.extend(request(1, pull, true));
        c.client_read(&client).unwrap();
        let mut up = frame::PREFACE.to_vec();
        up.extend(settings());
        up.extend(request(1, pull, false));
        up.extend(reset(1));
        up.extend(settings());
        c.wrote_to_server(&up).unwrap();
        c.server_read(&settings()).unwrap();
        c.wrote_to_client(&settings()).unwrap();
    };
    let reply = frame_bytes(frame::HEADERS, frame::END_HEADERS, 1, b"\x88");
    let mut c = Checker::new(false);
    muted(&mut c);
    assert_eq!(
        c.wrote_to_client(&reply).unwrap_err().class,
        "reply-before-fence"
    );
    // The client's SETTINGS acknowledged is not the fence; the marker's is.
    let mut c = Checker::new(false);
    muted(&mut c);
    let ack = frame_bytes(frame::SETTINGS, frame::ACK, 0, &[]);
    c.server_read(&ack).unwrap();
    assert_eq!(
        c.wrote_to_client(&reply).unwrap_err().class,
        "reply-before-fence"
    );
    c.server_read(&ack).unwrap();
    let done = frame_bytes(frame::DATA, frame::END_STREAM, 1, b"ok");
    let mut reply_and_end = reply.clone();
    reply_and_end.extend(&done);
    c.wrote_to_client(&reply_and_end).unwrap();
    assert_eq!(c.wrote_to_client(&done).unwrap_err().class, "after-end");
}

#[test]
fn the_checker_catches_a_rising_goaway() {
    let mut c = started();
    let goaway = |last: u32| {
        let mut p = last.to_be_bytes().to_vec();
        p.extend(0u32.to_be_bytes());
        frame_bytes(frame::GOAWAY, 0, 0, &p)
    };
    c.wrote_to_client(&goaway(5)).unwrap();
    c.wrote_to_client(&goaway(3)).unwrap();
    assert_eq!(
        c.wrote_to_client(&goaway(7)).unwrap_err().class,
        "goaway-rises"
    );
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
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// A stream byte: mostly one of the last few streams, at times stream 0
/// or one never opened (see `relay_model::pick_stream`).
fn stream(rng: &mut Rng) -> u8 {
    match rng.below(10) {
        0 => 0,
        1 => 1,
        _ => 2 + rng.below(4) as u8,
    }
}

const WINDOWS: &[u32] = &[0, 1, 10, 100, 5_000, 16_384, 65_535, 1 << 20, 0x7fff_ffff];
const INCREMENTS: &[u32] = &[0, 1, 10, 100, 1_000, 16_384, 65_535, 200_000, 0x7fff_ffff];
const MAX_FRAMES: &[u32] = &[16_384, 16_385, 20_000, 32_768, 1 << 20, 0xff_ffff, 100];

/// A raw write: a frame of any type, flags and length, or plain bytes.
fn raw(rng: &mut Rng) -> Vec<u8> {
    if rng.percent(30) {
        return (0..rng.below(40)).map(|_| rng.byte()).collect();
    }
    let len = rng.pick(&[0usize, 1, 4, 5, 8, 9, 30]);
    let mut out = Vec::new();
    let declared = if rng.percent(80) { len } else { rng.below(64) };
    out.extend(&(declared as u32).to_be_bytes()[1..]);
    out.push(rng.below(11) as u8);
    out.push(rng.byte());
    out.extend((rng.below(8) as u32).to_be_bytes());
    out.extend((0..len).map(|_| rng.byte()));
    out
}

/// One connection: mostly as kubelet and containerd talk, with replies
/// of every size, windows that run out, settings that change, writes cut
/// anywhere; one in six misbehaves now and then.
fn connection(rng: &mut Rng) -> Vec<Op> {
    let noisy = rng.percent(16);
    let long = rng.percent(10);
    let len = 5 + rng.below(if long { 1_500 } else { 200 });
    let mut ops = Vec::with_capacity(len + 2);
    if rng.percent(85) {
        ops.push(Op::ClientSettings {
            flags: rng.below(8) as u8 & if rng.percent(50) { 7 } else { 0 },
            initial_window: rng.pick(WINDOWS),
            max_frame: rng.pick(MAX_FRAMES),
        });
    }
    if rng.percent(75) {
        ops.push(Op::ServerSettings {
            table_size: rng.percent(20).then(|| rng.pick(&[0, 100, 4_096, 65_536])),
        });
    }
    let mut indexed = false;
    for _ in 0..len {
        let op = match rng.below(1_000) {
            0..=139 => {
                let mut flags = u8::from(rng.percent(50));
                if rng.percent(10) {
                    flags |= 2;
                }
                if rng.percent(10) {
                    flags |= 4;
                }
                let mut variant = rng.byte() & 0xf0;
                let fields = if rng.percent(70) {
                    0
                } else {
                    rng.pick(&[4u8, 5, 6, 7, 8, 9])
                };
                let fields = if fields == 9 && !indexed && !noisy {
                    8
                } else {
                    fields
                };
                indexed |= fields == 8;
                variant |= fields;
                if rng.percent(10) && fields != 7 {
                    flags |= 8;
                }
                if rng.percent(7) {
                    flags |= 0x20;
                }
                if noisy && rng.percent(3) {
                    flags |= 0x30;
                }
                Op::ClientHeaders {
                    path: rng.byte(),
                    flags,
                    variant,
                }
            }
            140..=259 => Op::ClientData {
                stream: stream(rng),
                len: {
                    let any = rng.below(20_000) as u16;
                    rng.pick(&[0, 1, 5, 100, 1_000, 16_384, any])
                },
                flags: u8::from(rng.percent(40)) | if rng.percent(10) { 2 } else { 0 },
            },
            260..=339 => Op::ClientWindowUpdate {
                stream: if rng.percent(60) { 0 } else { stream(rng) },
                increment: rng.pick(INCREMENTS),
            },
            340..=364 => Op::ClientSettings {
                flags: 1 + rng.below(7) as u8,
                initial_window: rng.pick(WINDOWS),
                max_frame: rng.pick(MAX_FRAMES),
            },
            365..=374 => Op::ClientSettingsAck,
            375..=404 => Op::ClientPing {
                ack: rng.percent(10),
            },
            405..=434 => Op::ClientRst {
                stream: stream(rng),
                code: rng.pick(&[8, 8, 0, 1, 7]),
            },
            435..=444 => Op::ClientPriority {
                stream: stream(rng),
            },
            445..=459 if noisy => Op::ClientRaw {
                first: rng.percent(5),
                bytes: raw(rng),
            },
            445..=459 => Op::ServerSettings { table_size: None },
            460..=579 => Op::ServerSettingsAck,
            580..=649 => Op::ServerHeaders {
                stream: stream(rng),
                flags: rng.byte() & if rng.percent(20) { 0xf } else { 0xb },
            },
            650..=669 => Op::ServerContinuation,
            670..=749 => Op::ServerData {
                stream: stream(rng),
                len: {
                    let any = rng.below(17_000) as u16;
                    rng.pick(&[0, 1, 100, 5_000, 16_384, any])
                },
                flags: u8::from(rng.percent(30)) | if rng.percent(10) { 2 } else { 0 },
            },
            750..=799 => Op::ServerWindowUpdate {
                stream: if rng.percent(70) { 0 } else { stream(rng) },
                increment: rng.pick(INCREMENTS),
            },
            800..=819 => Op::ServerRst {
                stream: stream(rng),
                code: rng.pick(&[8, 0, 2]),
            },
            820..=849 => Op::ServerPing {
                ack: rng.percent(20),
            },
            850..=854 => Op::ServerGoaway {
                stream: stream(rng),
                code: 0,
            },
            855..=869 if noisy => Op::ServerRaw { bytes: raw(rng) },
            855..=869 => Op::ReleaseAcks,
            870..=959 => Op::Reply {
                call: {
                    let any = rng.byte();
                    rng.pick(&[0, 0, 0, 1, 2, any])
                },
                size: rng.byte(),
                flags: rng.byte() & if rng.percent(15) { 3 } else { 1 },
            },
            960 if rng.percent(50) => Op::Drain,
            960..=974 => Op::ReleaseAcks,
            975..=989 => Op::Split {
                server: rng.percent(50),
                at: rng.below(40) as u16,
            },
            _ => Op::Flush {
                server: rng.percent(50),
            },
        };
        ops.push(op);
    }
    ops
}

// ---- the seed corpus ----

/// Hand-made connections, one per thing the relay does.
fn seeds() -> Vec<(&'static str, Vec<Op>)> {
    let pull = 1; // PATHS[1]
    let version = 0;
    let refused = 3;
    let head = |path, flags| Op::ClientHeaders {
        path,
        flags,
        variant: 0,
    };
    let data = |len, flags| Op::ClientData {
        stream: 2,
        len,
        flags,
    };
    let reply = |size, flags| Op::Reply {
        call: 0,
        size,
        flags,
    };
    let server = Op::ServerSettings { table_size: None };
    vec![
        (
            "taken-out-call",
            vec![
                server.clone(),
                head(pull, 0),
                data(5, 0),
                data(100, 1),
                Op::ServerSettingsAck,
                Op::ServerSettingsAck,
                reply(4, 1),
            ],
        ),
        (
            "forwarded-calls",
            vec![
                server.clone(),
                head(version, 0),
                data(5, 1),
                head(version, 1),
                Op::ServerHeaders {
                    stream: 2,
                    flags: 0,
                },
                Op::ServerData {
                    stream: 2,
                    len: 7,
                    flags: 0,
                },
                Op::ServerHeaders {
                    stream: 2,
                    flags: 9,
                },
                Op::ServerPing { ack: false },
                Op::ClientPing { ack: false },
                Op::ReleaseAcks,
            ],
        ),
        (
            "window-exhausted",
            vec![
                server.clone(),
                head(pull, 1),
                head(version, 1),
                Op::ServerSettingsAck,
                Op::ServerSettingsAck,
                reply(12, 1),
                Op::ServerData {
                    stream: 2,
                    len: 16_384,
                    flags: 0,
                },
                Op::ClientWindowUpdate {
                    stream: 0,
                    increment: 70_000,
                },
                Op::ClientWindowUpdate {
                    stream: 3,
                    increment: 70_000,
                },
                Op::ClientWindowUpdate {
                    stream: 0,
                    increment: 70_000,
                },
                Op::ServerWindowUpdate {
                    stream: 0,
                    increment: 100_000,
                },
            ],
        ),
        (
            "settings-change-mid-reply",
            vec![
                Op::ClientSettings {
                    flags: 3,
                    initial_window: 100,
                    max_frame: 32_768,
                },
                server.clone(),
                head(pull, 1),
                Op::ServerSettingsAck,
                Op::ServerSettingsAck,
                reply(9, 3),
                Op::ClientSettings {
                    flags: 1,
                    initial_window: 20_000,
                    max_frame: 0,
                },
                Op::ClientWindowUpdate {
                    stream: 2,
                    increment: 30_000,
                },
            ],
        ),
        (
            "refused-and-drained",
            vec![
                server.clone(),
                head(refused, 0),
                data(3, 1),
                head(version, 0),
                Op::Drain,
                head(pull, 1),
                Op::ServerSettingsAck,
                Op::ServerSettingsAck,
                Op::ServerGoaway { stream: 3, code: 0 },
            ],
        ),
        (
            "server-header-block-held",
            vec![
                server.clone(),
                head(pull, 1),
                head(version, 1),
                Op::ServerSettingsAck,
                Op::ServerHeaders {
                    stream: 2,
                    flags: 2,
                },
                reply(3, 1),
                data(10, 0),
                Op::ClientPing { ack: false },
                Op::ServerContinuation,
            ],
        ),
        (
            "cut-writes",
            vec![
                Op::Split {
                    server: true,
                    at: 5,
                },
                server.clone(),
                Op::Split {
                    server: false,
                    at: 30,
                },
                head(pull, 8),
                Op::Flush { server: true },
                Op::Split {
                    server: false,
                    at: 3,
                },
                data(40, 1),
                Op::Flush { server: false },
                Op::ServerSettingsAck,
                Op::Split {
                    server: true,
                    at: 4,
                },
                Op::ServerSettingsAck,
                Op::Flush { server: true },
                reply(2, 0),
            ],
        ),
        (
            "early-answer-and-resets",
            vec![
                server.clone(),
                head(pull, 0),
                Op::ServerHeaders {
                    stream: 2,
                    flags: 0,
                },
                head(pull, 1),
                Op::ClientRst { stream: 2, code: 8 },
                Op::ServerSettingsAck,
                reply(3, 1),
                data(5, 1),
            ],
        ),
        (
            "raw-bytes",
            vec![
                server,
                Op::ClientRaw {
                    first: false,
                    bytes: vec![0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0],
                },
                Op::ServerRaw {
                    bytes: vec![0, 0, 1, 1, 0, 0, 0, 0, 1, 0x88],
                },
                Op::ClientRaw {
                    first: false,
                    bytes: vec![0, 0, 0, 9, 4, 0, 0, 0, 1],
                },
            ],
        ),
    ]
}

/// Writes the seed corpus: `cargo test -p attestgate-proxy --test
/// relay_fuzz -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    std::fs::create_dir_all(seeds_dir()).unwrap();
    for (name, ops) in seeds() {
        std::fs::write(seeds_dir().join(name), relay_model::serialize(&ops)).unwrap();
    }
}

#[test]
fn the_seeds_on_disk_are_the_seeds_here() {
    for (name, ops) in seeds() {
        let on_disk = std::fs::read(seeds_dir().join(name)).unwrap();
        assert_eq!(
            on_disk,
            relay_model::serialize(&ops),
            "{name}: run write_seeds"
        );
    }
}
