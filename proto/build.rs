//! Compiles the .proto files without a system `protoc`: protox parses them into a
//! `FileDescriptorSet` and tonic-prost-build turns that into Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "kvset/v1/kvset.proto",
        "kvset/raft/v1/raft.proto",
        "etcd/mvccpb/kv.proto",
        "etcd/etcdserverpb/rpc.proto",
    ];
    // compile_fds emits no rerun-if-changed lines of its own.
    println!("cargo:rerun-if-changed=kvset");
    println!("cargo:rerun-if-changed=etcd");
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
