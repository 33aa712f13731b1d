//! The DistributedMQ wire contract: every `dmq.v1` message, client and server, generated from
//! `proto/dmq/v1/*.proto`. This is the one place generated code is exposed.

#![allow(clippy::all, missing_docs)]

/// Package `dmq.v1`.
pub mod v1 {
    tonic::include_proto!("dmq.v1");
}

/// The encoded `FileDescriptorSet` of `dmq.v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dmq_v1_descriptor");

/// gRPC server reflection (v1 and v1alpha) for every `dmq.v1` service, the health service and
/// the `google.rpc` error details, so `grpcurl -plaintext ADDR list`/`describe` work and error
/// details decode.
pub mod reflection {
    use tonic_reflection::server::Builder;

    fn builder() -> Builder<'static> {
        Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    }

    /// `grpc.reflection.v1.ServerReflection`.
    pub fn v1() -> tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    > {
        builder()
            .build_v1()
            .expect("the embedded descriptor sets are valid")
    }

    /// `grpc.reflection.v1alpha.ServerReflection`, for older grpcurl and clients.
    pub fn v1alpha() -> tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    > {
        builder()
            .build_v1alpha()
            .expect("the embedded descriptor sets are valid")
    }
}
