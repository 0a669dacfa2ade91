//! `sockload merge` input: a --hist file (and the bytes as its histogram)
//! never panics or over-allocates; what reads writes out and reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::fuzzing::histfile(data);
});
