//! Client header blocks of one connection, decoded by the proxy, by
//! containerd's Go decoder (the go-hpack helper named by
//! ATTESTGATE_GO_HPACK, started once per fuzzing process) and by
//! loona-hpack; see ../hpack_diff.rs for the input and what must hold.
#![no_main]

#[path = "../hpack_diff.rs"]
mod hpack_diff;

use std::path::PathBuf;
use std::sync::Mutex;

use hpack_diff::{GoHpack, Stats};

struct State {
    go: GoHpack,
    stats: Stats,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// loona-hpack is the slow part of a run (see `hpack_diff::check`).
const LOONA_EVERY: u64 = 8;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let state = state.get_or_insert_with(|| {
        let path = std::env::var_os("ATTESTGATE_GO_HPACK")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "ATTESTGATE_GO_HPACK must name the go-hpack helper (scripts/build-go-hpack.sh)"
                )
            });
        let go = GoHpack::spawn(&path).unwrap_or_else(|e| panic!("{e}"));
        State {
            go,
            stats: Stats::default(),
        }
    });
    let ops = hpack_diff::parse(data);
    // One input in LOONA_EVERY, picked by its bytes so that a replay
    // checks it the same way.
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let with_loona = hash % LOONA_EVERY == 0;
    let result = hpack_diff::check(
        &ops,
        &mut state.go,
        &mut state.stats,
        with_loona,
        |class, ops| {
            // libFuzzer keeps no record of these: say each kind once.
            eprintln!(
                "known disagreement {class}: {}",
                hpack_diff::hex(&hpack_diff::serialize(ops))
            );
        },
    );
    if let Err(why) = result {
        panic!("HPACK decoders disagree: {why}");
    }
});
