//! Any line parses to a command or an error; names are checked and nothing
//! relayed or reported can carry a terminal escape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::services::chat::parse::check_parser(data);
});
