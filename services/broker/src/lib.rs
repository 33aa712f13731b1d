//! A DistributedMQ broker: finds the controller leader, registers, stays alive by heartbeats,
//! follows the cluster metadata, and serves BrokerService with the gRPC health service.
//!
//! Start one with [`run`] (binds [`BrokerConfig::listen`]) or [`serve`] (on a listener you
//! bound, e.g. port 0 in tests); both return when the `shutdown` future completes and the
//! broker has said goodbye, or on a fatal error. Unreachable controllers are never fatal:
//! the broker keeps looking for a leader (see `dmq_client::discovery`).
//!
//! Liveness (DESIGN.md, "Brokers and liveness"): registration returns a broker epoch;
//! heartbeats every [`BrokerConfig::heartbeat_interval`] carry it with the metadata version
//! held; a newer version in the answer makes the broker pull `GetMetadata` from the leader
//! into its [`MetadataCache`]; FENCED makes it register again (new epoch). Health is
//! NOT_SERVING until registered, SERVING while registered, NOT_SERVING while fenced or
//! draining. On shutdown it sends a last heartbeat with `leaving = true`, then stops the
//! server, each step bounded by [`BrokerConfig::shutdown_timeout`]; then it stops its partition
//! roles, checkpoints the high watermarks and syncs. A failed write or fdatasync of the log
//! store triggers the same shutdown (the controllers move its leaderships at once) and
//! [`serve`] returns [`BrokerError::Storage`]: a broker that cannot make writes durable must
//! not go on leading.
//!
//! Data plane (DESIGN.md, "Partitions"): partition logs in `<data_dir>/logs` (one sled
//! database, [`log`]); the partition manager follows the metadata and makes this broker leader
//! or follower of each partition it holds a replica of; followers copy the leaders' logs with
//! `ReplicaFetch`; leaders move the high watermark and the ISR. Produce, Fetch, ListOffsets
//! and Consume are served by partition leaders (`data_service`), with errors as broker.proto
//! says (`errors`).

mod budget;
mod config;
mod controller_calls;
mod data_service;
mod error;
mod errors;
#[cfg(any(test, feature = "fault-injection"))]
pub mod faults;
pub mod log;
mod metadata_cache;
mod metrics;
mod partitions;
mod service;
mod session;
mod state;
mod wire;

#[cfg(test)]
mod tests;

pub use config::{
    BrokerConfig, DEFAULT_FETCH_BYTES, DEFAULT_FETCH_MAX_BYTES, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MEMORY_BUDGET_BYTES,
};
pub use error::BrokerError;
#[cfg(any(test, feature = "fault-injection"))]
pub use faults::FaultPoints;

/// `fault_point!(faults, "name")` in async code: [`FaultPoints::hit`] in test builds and with
/// the `fault-injection` feature, nothing otherwise.
macro_rules! fault_point {
    ($faults:expr, $name:literal) => {
        #[cfg(any(test, feature = "fault-injection"))]
        $faults.hit($name).await;
    };
}
pub(crate) use fault_point;
pub use metadata_cache::{MetadataCache, MetadataSnapshot};

use std::future::Future;
use std::sync::Arc;

use dmq_proto::v1::broker_service_server::BrokerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::Server;

use crate::log::LogStore;
use crate::service::BrokerServiceImpl;
use crate::state::Broker;

/// Produce requests may be this much larger than [`BrokerConfig::max_request_bytes`] of
/// records (field tags, topic name, ...) before gRPC refuses them.
const REQUEST_OVERHEAD_BYTES: usize = 64 * 1024;

/// The longest a graceful shutdown waits for led partitions to commit their appends.
const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds `cfg.listen` and runs the broker until `shutdown` completes; see [`serve`].
pub async fn run(cfg: BrokerConfig, shutdown: impl Future<Output = ()>) -> Result<(), BrokerError> {
    cfg.validate()?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| BrokerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    serve(cfg, listener, shutdown).await
}

/// Runs the broker on `listener` (its address overrides `cfg.listen`) until `shutdown`
/// completes: serves BrokerService and health, keeps the session with the controllers, and
/// on shutdown reports NOT_SERVING, sends the leaving heartbeat and drains the server.
///
/// Errors: a bad configuration or data directory before anything starts; a server failure
/// while running (the broker then still tries to say goodbye).
pub async fn serve(
    cfg: BrokerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    cfg.validate()?;
    tokio::fs::create_dir_all(&cfg.data_dir)
        .await
        .map_err(|source| BrokerError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
    let log_dir = cfg.log_dir();
    let log_cfg = cfg.log_store_config();
    let store = tokio::task::spawn_blocking(move || LogStore::open_with(&log_dir, log_cfg))
        .await
        .map_err(|e| BrokerError::Task(format!("opening the log store: {e}")))??;
    let (health, health_service) = tonic_health::server::health_reporter();
    // "liveness" is SERVING while the process runs, registered or not, for liveness probes.
    health
        .set_service_status("liveness", tonic_health::ServingStatus::Serving)
        .await;
    let broker = Broker::new(cfg, health, Arc::new(store))?;
    broker.set_serving(false).await;
    let cfg = &broker.cfg;
    tracing::info!(
        broker_id = cfg.broker_id,
        listen = ?listener.local_addr().ok(),
        advertise = %cfg.advertise,
        controllers = ?cfg.controllers,
        data_dir = %cfg.data_dir.display(),
        "broker starting"
    );

    let (server_stop, server_stopped) = oneshot::channel::<()>();
    let broker_service = BrokerServiceServer::new(BrokerServiceImpl::new(broker.clone()))
        .max_decoding_message_size(cfg.max_request_bytes + REQUEST_OVERHEAD_BYTES);
    let router = Server::builder()
        .add_service(health_service)
        .add_service(dmq_proto::reflection::v1())
        .add_service(dmq_proto::reflection::v1alpha())
        .add_service(broker_service);
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(
        // Nagle off: small RPCs must not wait for delayed ACKs.
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        async {
            let _ = server_stopped.await;
        },
    ));
    let (stop, stopped) = watch::channel(false);
    let (stop_partitions, partitions_stopped) = watch::channel(false);
    let mut manager = tokio::spawn(partitions::manager::run(broker.clone(), partitions_stopped));
    let mut session = tokio::spawn(session::run(broker.clone(), stopped));

    let mut server_exit = None;
    let mut session_exit = None;
    let mut storage_failure = None;
    let mut failures = broker.data.store.failures();
    tokio::select! {
        _ = shutdown => tracing::info!("broker shutting down"),
        failed = failures.wait_for(Option::is_some) => {
            let why = failed.ok().and_then(|f| f.clone()).unwrap_or_default();
            tracing::error!(error = %why, "the partition log store failed: giving up every \
                leadership (leaving heartbeat) and stopping; check the disk and restart");
            storage_failure = Some(why);
        }
        exit = &mut server => {
            tracing::error!(?exit, "broker gRPC server stopped unexpectedly; shutting down");
            server_exit = Some(exit);
        }
        exit = &mut session => {
            tracing::error!(?exit, "broker session task stopped unexpectedly; shutting down");
            session_exit = Some(exit);
        }
    }

    // Drain: no new traffic, the appends in flight committed (controlled shutdown), goodbye to
    // the controllers (they move the leaderships at once), then stop serving.
    broker
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    broker.set_serving(false).await;
    if storage_failure.is_none() {
        partitions::manager::drain(&broker, cfg.shutdown_timeout.min(DRAIN_MAX)).await;
    }
    let _ = stop.send(true);
    if session_exit.is_none() {
        let bound = cfg.shutdown_timeout + cfg.rpc_timeout;
        match tokio::time::timeout(bound, &mut session).await {
            Ok(exit) => session_exit = Some(exit),
            Err(_) => {
                tracing::warn!(?bound, "session did not finish in time; abandoning it");
                session.abort();
            }
        }
    }
    let _ = server_stop.send(());
    if server_exit.is_none() {
        match tokio::time::timeout(cfg.shutdown_timeout, &mut server).await {
            Ok(exit) => server_exit = Some(exit),
            Err(_) => {
                tracing::warn!(bound = ?cfg.shutdown_timeout, "requests still in flight after the shutdown timeout; closing");
                server.abort();
            }
        }
    }
    let _ = stop_partitions.send(true);
    if tokio::time::timeout(cfg.shutdown_timeout, &mut manager)
        .await
        .is_err()
    {
        tracing::warn!(bound = ?cfg.shutdown_timeout, "partition roles did not stop in time");
        manager.abort();
    }
    tracing::info!(broker_id = cfg.broker_id, "broker stopped");
    if let Some(why) = storage_failure {
        return Err(BrokerError::Storage(why));
    }

    match server_exit {
        Some(Ok(Err(e))) => return Err(BrokerError::Serve(e)),
        Some(Err(join)) => return Err(BrokerError::Task(format!("gRPC server: {join}"))),
        _ => {}
    }
    if let Some(Err(join)) = session_exit {
        return Err(BrokerError::Task(format!("session: {join}")));
    }
    Ok(())
}
