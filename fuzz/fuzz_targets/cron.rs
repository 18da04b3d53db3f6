//! The cron parser and iterator: parse any text; for an expression, 50 fires in a zone from an
//! instant, strictly increasing, each one a time the expression names.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use beatd::schedule::cron::{Parsed, parse};
use beatd_fuzz::{ZONES, check_cron, instant};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    zone: u8,
    from: i64,
    text: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    match parse(input.text) {
        Ok(Parsed::Fields(expr)) => {
            let tz = ZONES[usize::from(input.zone) % ZONES.len()];
            check_cron(input.text, &expr, tz, instant(input.from), 50);
        }
        Ok(Parsed::Reboot) => {}
        Err(e) => {
            assert!(e.offset <= input.text.len(), "{:?}: offset {} past the end", input.text, e.offset);
            assert!(!e.message.is_empty());
        }
    }
});
