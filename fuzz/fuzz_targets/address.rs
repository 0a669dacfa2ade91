//! Unix paths, abstract names and HOST:PORT (resolved offline): accepted
//! addresses print back to themselves and fit sun_path; refusals are one
//! line naming the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::fuzzing::address(data);
});
