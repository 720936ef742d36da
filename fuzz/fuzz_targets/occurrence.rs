//! Any bytes as an attestation file, through both readers: the streaming
//! loader the node uses and the whole-document parser `policy check` uses.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (good, _bad) = attestgate_policy::bundle::parse_occurrence_stream(data);
    for o in &good {
        assert!(!o.signatures.is_empty());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = attestgate_policy::parse::parse_occurrences(text);
    }
});
