//! Writes the fuzz targets' seed corpus: `cargo run -p kvset-server --features fuzzing
//! --example fuzz_seeds -- fuzz/seeds` (see `fuzz/README.md`). The seeds are made by the
//! server's own encoders (`kvset_server::fuzzing::seeds`), so when a format changes, running
//! this again brings the corpus along. Files of targets it does not make (`ctl_txn_json`, and
//! inputs a fuzzer found) are left alone.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: fuzz_seeds <seed directory, e.g. fuzz/seeds>")?,
    );
    let scratch = tempfile::tempdir()?;
    for seed in kvset_server::fuzzing::seeds(scratch.path())? {
        let dir = out.join(seed.target);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(&seed.name);
        std::fs::write(&path, &seed.bytes)?;
        println!("{} ({} bytes)", path.display(), seed.bytes.len());
    }
    Ok(())
}
