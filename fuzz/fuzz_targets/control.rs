//! A control-socket request: one line of reply, the status JSON for
//! `status`, valid JSON quoting the request otherwise, whatever the pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::fuzzing::control(data);
});
