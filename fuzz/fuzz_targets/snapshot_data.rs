//! Snapshot data, as a follower receives it in `install_snapshot` and as a store reads it from
//! its snapshot file or a backup: decoded (every format) and loaded into an empty tree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kvset_server::fuzzing::snapshot_data(data);
});
