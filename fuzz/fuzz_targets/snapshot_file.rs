//! The snapshot file (`<data_dir>/snapshot/current`): header, metadata, data and checksum, then
//! the data itself. Each input is tried twice: as it is (the checksum guards it) and with its
//! trailing CRC-32 recomputed, so that mutations also reach the parsing behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("scratch directory");
    let _ = kvset_server::fuzzing::snapshot_file(dir.path(), data);
    if let Some((body, _)) = data.split_last_chunk::<4>() {
        let mut fixed = body.to_vec();
        fixed.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        let _ = kvset_server::fuzzing::snapshot_file(dir.path(), &fixed);
    }
});
