//! A metadata node: one thread owns the Raft core and runs its Ready loop against sled
//! (persist with one sync per Ready, send, apply, advance); everything else talks to it through
//! a [`NodeHandle`] over a bounded queue.

mod cluster_id;
mod config;
mod driver;
pub(crate) mod follower_view;
pub(crate) mod handle;
pub mod lease;

pub use cluster_id::{ClusterId, same_cluster};
pub use config::{NodeConfig, PeerAddrs};
pub use handle::{NodeError, NodeHandle, NodeStatus, Unknown};
pub use lease::LeaderLease;

use std::sync::Arc;

use crate::metadata::MetadataStore;
use crate::raft_storage::{RaftStorageError, SledStorage};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid Raft configuration: {0}")]
    Config(#[from] dmq_raft::ConfigError),
    #[error(transparent)]
    Storage(#[from] RaftStorageError),
    #[error("metadata store: {0}")]
    Metadata(#[from] crate::metadata::StoreError),
    #[error(
        "the stored snapshot cannot be decoded ({0}); the data dir is corrupt: move it aside and let the node catch up from the leader"
    )]
    Snapshot(prost::DecodeError),
    #[error("could not start the Raft thread: {0}")]
    Thread(std::io::Error),
}

/// Opens the node's storage in `cfg.data_dir`, recovers, and starts the driver thread and the
/// peer senders (on the current tokio runtime). Returns the handle and the metadata store,
/// which readers may use directly (it is always a consistent applied state).
pub fn start(cfg: NodeConfig) -> Result<(NodeHandle, Arc<MetadataStore>), StartError> {
    start_on(cfg, tokio::runtime::Handle::current())
}

/// [`start`], with the peer senders on `peer_runtime`: a controller process gives its Raft
/// transport a runtime of its own, so that a flood of client requests on the main runtime
/// cannot delay heartbeats, appends and their answers.
pub fn start_on(
    cfg: NodeConfig,
    peer_runtime: tokio::runtime::Handle,
) -> Result<(NodeHandle, Arc<MetadataStore>), StartError> {
    let mut storage = SledStorage::open(&cfg.data_dir)?;
    crate::transport::snapshot::remove_leftovers(&cfg.data_dir);
    storage.set_faults(cfg.faults.clone());
    let metadata = Arc::new(MetadataStore::open(storage.db())?);
    let handle = driver::spawn(cfg, storage, metadata.clone(), peer_runtime)?;
    Ok((handle, metadata))
}
