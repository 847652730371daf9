//! Compiles the etcd API subset in `proto/etcd/` without a system `protoc`, exactly as
//! `kvset-proto` compiles kvset's: protox parses the files, tonic-prost-build writes Rust.
//!
//! (The `etcd-client` crate would be the obvious client, and 0.21 does use tonic 0.14, but its
//! build script runs `protoc`, which this project does not require. Generating the few messages
//! we need from etcd's own .proto files keeps the build protoc-free and puts both systems behind
//! the same tonic/prost stack.)

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["etcd/mvccpb/kv.proto", "etcd/etcdserverpb/rpc.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
