//! Seconds and sockload durations: accepted values are in range, read
//! back from their decimal form and scale by their unit; refusals are one
//! line naming the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::fuzzing::duration(data);
});
