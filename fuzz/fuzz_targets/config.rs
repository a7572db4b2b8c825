//! `vigil::config::Config::parse` on arbitrary UTF-8: YAML syntax, unknown keys,
//! every value check, line lookup for error messages. It must return `Ok` or
//! `Err`, never panic; an `Err` must be printable (that is what `vigil check`
//! shows the operator).
//!
//! Note: a `host:port` in `outbound.to` is resolved at load, so an input can make
//! a DNS query; where lookups of unknown names fail fast (as on the project's
//! machines) that costs microseconds.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vigil::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.yaml")) {
        Ok(config) => {
            let _ = config.admits("127.0.0.1".parse().expect("a valid address"));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
