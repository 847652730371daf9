//! A backup file (`kvsetctl snapshot save` writes it, `kvset-server restore` reads it): magic,
//! version, protobuf header, data length and SHA-256, then a summary of the snapshot data.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kvset_server::fuzzing::backup_file(data);
});
