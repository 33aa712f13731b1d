//! Compiles the slice of etcd's gRPC API that `dmq-etcd-bench` speaks (proto/etcd/rpc.proto)
//! with tonic-prost-build, as the root build.rs does for `dmq.v1`. A vendored protoc is used
//! unless `PROTOC` is set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let proto = "proto/etcd/rpc.proto";
    println!("cargo:rerun-if-changed={proto}");
    // The server side is compiled too: the unit tests run the client against a fake etcd.
    tonic_prost_build::configure().compile_protos(&[proto], &["proto"])?;
    Ok(())
}
