//! `kvsetctl`: the kvset command-line client. See `kvsetctl --help` and client/README.md; the
//! implementation is `kvset_client::cli`.

fn main() -> std::process::ExitCode {
    kvset_client::cli::main()
}
