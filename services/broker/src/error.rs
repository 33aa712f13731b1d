//! Why a broker could not start or stopped on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use dmq_client::discovery::DiscoveryError;

/// A broker failure. Unreachable controllers are not one: the broker keeps retrying.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A setting is wrong: fix the flag or environment variable it names.
    #[error("invalid broker configuration: {0}")]
    InvalidConfig(String),
    /// The controller list is wrong: fix `--controllers`.
    #[error("invalid controller list: {0}")]
    Controllers(#[from] DiscoveryError),
    /// The data directory could not be created: check the path and its permissions.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The listen address could not be bound: pick a free port or address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The partition logs could not be opened: see the cause (another broker using the same
    /// data dir, permissions, corruption).
    #[error("cannot open the partition logs: {0}")]
    Log(#[from] crate::log::LogError),
    /// The gRPC server failed while running: see the cause; restart the broker.
    #[error("broker gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// An internal task panicked: a bug, please report it with the log.
    #[error("broker task failed: {0}")]
    Task(String),
    /// The OS refused a thread the broker needs (the log syncer): raise the process or
    /// container limits on threads and memory.
    #[error("cannot start the log syncer thread: {0}")]
    Thread(std::io::Error),
    /// The log store failed (a write or fdatasync error): what is on disk is unknown, so the
    /// broker gave up its leaderships and stopped. Check the disk, then restart it: it
    /// recovers from what is durable.
    #[error(
        "the partition log store failed ({0}); the broker stopped: check the disk and restart it"
    )]
    Storage(String),
}
