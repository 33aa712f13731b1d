//! The process-test harness: real `dmq` processes on 127.0.0.1, with temporary data dirs, kill
//! -9, SIGTERM and restarts, and the helpers the suites (`t10_controllers.rs`, ...) share.
//!
//! - [`ControllerCluster`]: `n` `dmq controller` processes; leader discovery, clients, kill /
//!   stop / restart / pause by node id; logs dumped when a test panics.
//! - [`FakeBroker`]: a BrokerService that records CONTROLLER_CHANGED pushes, registers and
//!   heartbeats (pausable) through a [`LeaderRouter`].
//! - [`wait_until`]: poll a condition until a deadline; the suites never sleep for a fixed time.
//! - [`etcd_bench`]: `dmq bench meta`'s workload against etcd, for
//!   `tests/bench/metadata_vs_etcd.sh`.
//! - [`nats_bench`]: `dmq bench produce` / `consume`'s workloads against NATS JetStream, for
//!   `tests/bench/produce_vs_nats.sh`.
//!
//! The program under test is the `dmq-under-test` binary of this package (the same code as
//! `dmq`, see [`dmq_bin`]).

pub mod brokers;
mod cluster;
pub mod controller_ops;
pub mod data;
pub mod etcd_bench;
mod fake_broker;
#[cfg(test)]
mod fake_controller;
pub mod faults;
mod grpc;
pub mod nats_bench;
pub mod ports;
mod process;
mod router;
mod wait;

pub use cluster::{ClusterOpts, ControllerCluster, dmq_bin};
pub use fake_broker::{FakeBroker, HeartbeatOutcome};
pub use grpc::ServerHandle;
pub use process::ChildProcess;
pub use router::{LEADER_HINT_KEY, LeaderRouter, leader_hint};

/// A lazily connected channel to a controller's client address (2 s call timeout).
pub fn router_channel(addr: &str) -> tonic::transport::Channel {
    router::channel(addr, std::time::Duration::from_secs(2))
}
pub use wait::{WaitTimeout, deadline, wait_until};
