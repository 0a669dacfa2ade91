//! Frames split anywhere decode the same; oversized headers are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::services::files::frame::check_decoder(data);
});
