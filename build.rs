//! Compiles the `dmq.v1` contracts with tonic-prost-build. A vendored protoc is used unless
//! `PROTOC` is set, so a machine with only the Rust toolchain builds the project.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let protos = [
        "proto/dmq/v1/raft.proto",
        "proto/dmq/v1/controller.proto",
        "proto/dmq/v1/broker.proto",
        "proto/dmq/v1/metadata.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("dmq_v1_descriptor.bin"))
        // Snapshot chunks are slices of one shared buffer, not copies.
        .bytes(".dmq.v1.InstallSnapshotRequest.data")
        // Record batches are slices of the buffer read from a segment, not copies.
        .bytes(".dmq.v1.FetchResponse.batches")
        .bytes(".dmq.v1.ReplicaFetchResponse.batches")
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
