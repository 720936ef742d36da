//! One HTTP/2 connection through the relay: the client's and the server's
//! writes (frames or raw bytes, cut anywhere), replies to the calls it
//! hands out, drains; see ../relay_model.rs for the input and what must
//! hold. Relay bugs already known (`relay_model::KNOWN`) are said once per
//! process and tolerated, unless ATTESTGATE_RELAY_STRICT is set.
#![no_main]

#[path = "../relay_model.rs"]
mod relay_model;

use std::sync::Mutex;

static SAID: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let strict = std::env::var_os("ATTESTGATE_RELAY_STRICT").is_some_and(|v| v != "0");
    let ops = relay_model::parse(data);
    match relay_model::run(&ops, !strict) {
        Ok(run) => {
            let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
            for (class, message) in run.known {
                if !said.contains(&class) {
                    said.push(class);
                    eprintln!(
                        "known relay bug [{class}] {message}: {}",
                        relay_model::hex(data)
                    );
                }
            }
        }
        Err(failure) => panic!("{failure}"),
    }
});
