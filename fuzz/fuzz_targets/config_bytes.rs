//! The config loader on raw bytes: any bytes as a main file and, after a line `#--dropin--`,
//! a drop-in. Valid configs are exercised (next fires, queue messages); errors must carry a
//! position inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SPLIT: &[u8] = b"\n#--dropin--\n";

fuzz_target!(|data: &[u8]| {
    match data.windows(SPLIT.len()).position(|w| w == SPLIT) {
        Some(at) => beatd_fuzz::load(data[..at].to_vec(), Some(data[at + SPLIT.len()..].to_vec())),
        None => beatd_fuzz::load(data.to_vec(), None),
    }
});
