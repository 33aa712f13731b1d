//! The DistributedMQ metadata controller: the Raft driver over sled, the RaftService transport,
//! the metadata state machine and ControllerService.

pub mod backup;
mod checksum;
pub mod faults;
pub mod metadata;
mod metrics;
pub mod node;
pub mod raft_storage;
pub mod server;
pub mod service;
pub mod transport;
