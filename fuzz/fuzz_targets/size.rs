//! Sizes (64K, 50M) and counts: accepted values are in range and read back
//! from their decimal and K/M/G forms; refusals are one line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::fuzzing::size(data);
});
