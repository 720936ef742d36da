//! Any text given as a policy: an error or a policy, never a panic or hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(policy) = attestgate_policy::parse::parse_policy(text) {
            // Every rule of a parsed policy is consistent.
            for (_, rule) in policy.rules() {
                let _ = rule.evaluation_mode.name();
            }
        }
    }
});
