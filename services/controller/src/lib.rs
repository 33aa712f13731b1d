//! Controller

mod checksum;
pub mod metadata;
pub mod raft_storage;
