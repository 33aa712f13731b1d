//! The DistributedMQ wire contract: every `dmq.v1` message, client and server, generated from
//! `proto/dmq/v1/*.proto`. This is the one place generated code is exposed.

#![allow(clippy::all, missing_docs)]

/// Package `dmq.v1`.
pub mod v1 {
    tonic::include_proto!("dmq.v1");
}

/// The encoded `FileDescriptorSet` of `dmq.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dmq_v1_descriptor");
