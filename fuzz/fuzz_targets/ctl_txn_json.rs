//! The transaction JSON that `kvsetctl txn` reads from its standard input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kvsetctl::txn_json::parse_txn_json(text);
    }
});
