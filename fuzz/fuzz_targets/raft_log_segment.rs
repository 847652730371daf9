//! A Raft log segment file (`<data_dir>/raft-log/<first index>.wal`): the input is the whole
//! file, opened as the only segment of a log (records checked, a torn tail cut off), and every
//! entry in it read back and decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("scratch directory");
    let _ = kvset_server::fuzzing::raft_log_segment(dir.path(), data);
});
