//! `kvsetctl`: the kvset command-line client. See `kvsetctl --help` and client/README.md; the
//! implementation is this crate's library (`src/lib.rs`), so tests can run it in process.

fn main() -> std::process::ExitCode {
    kvsetctl::main()
}
