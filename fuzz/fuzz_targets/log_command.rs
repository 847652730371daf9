//! A Raft log entry (a log record's payload: postcard of the openraft entry, its command in
//! protobuf), decoded and applied to a fresh state machine holding a few keys, a lease and a
//! dedup record. Followers apply whatever the leader replicated, so this is network input too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("scratch directory");
    let _ = kvset_server::fuzzing::log_command(dir.path(), data);
});
