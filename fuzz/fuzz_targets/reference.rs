//! Image references and allowlist patterns: parse, normalise, match.
#![no_main]

use attestgate_policy::{ImageRef, NamePattern};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (left, right) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(image) = ImageRef::parse(left) {
        // Normalisation is idempotent: the normalised form parses to itself.
        let again = ImageRef::parse(&image.to_string()).expect("normalised reference parses");
        assert_eq!(again, image);
        if let Ok(pattern) = NamePattern::parse(right) {
            let _ = pattern.matches(&image);
        }
    }
});
