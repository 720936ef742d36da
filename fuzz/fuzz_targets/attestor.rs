//! Any text given as attestors (including PEM and PGP key material inside).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = attestgate_policy::parse::parse_attestors(text);
    }
});
