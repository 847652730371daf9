//! Every record codec of the store's sled trees (key-value, metadata, lease, history, dedup
//! and alarm records, history keys, the generation pointer, the vote and log ids) and the range
//! cursor a client sends back, all run on each input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kvset_server::fuzzing::store_records(data);
});
