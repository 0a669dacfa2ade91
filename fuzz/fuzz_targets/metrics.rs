//! An HTTP request to the metrics endpoint: reading stops once httparse
//! sees a whole head and not before; the reply is well-formed HTTP/1.1.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::fuzzing::metrics(data);
});
