//! A whole controller process: the metadata node, RaftService on the peer port, and
//! ControllerService, health and reflection on the client port. `run(cfg, shutdown)` returns
//! after a graceful shutdown (leadership handed over first) or a fatal node error.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use dmq_raft::Role;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::node::{self, NodeConfig, NodeHandle, StartError};
use crate::service::{Admission, AdmissionLimits, ControllerServiceImpl, ServiceConfig};
use crate::transport::RaftServer;

/// The health service name that reports SERVING while the process runs (for liveness
/// probes); "" and `dmq.v1.ControllerService` report SERVING only while a leader is known.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Everything a controller process needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node: NodeConfig,
    /// ControllerService, health and reflection.
    pub listen: SocketAddr,
    /// RaftService (controllers only).
    pub peer_listen: SocketAddr,
    pub broker_session_timeout: Duration,
    pub broker_heartbeat_interval: Duration,
    /// See `ServiceConfig::disconnect_grace`.
    pub broker_disconnect_grace: Duration,
    /// See `ServiceConfig::leader_rebalance_interval` (zero: off).
    pub leader_rebalance_interval: Duration,
    /// How long a leader that is asked to stop waits for a successor before it stops anyway.
    pub shutdown_transfer_timeout: Duration,
}

/// Why a controller stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the metadata node stopped on a fatal error (see the log above); restart the process")]
    NodeFailed,
    #[error("could not start the Raft transport's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs a controller until `shutdown` resolves (then hands leadership over, stops the node
/// and the servers) or the node fails.
pub async fn run(
    mut cfg: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    // Test-only fault points, from DMQ_FAULT_FILE (inert in a default build).
    cfg.node.faults = std::sync::Arc::new(crate::faults::Faults::from_env());
    // The Raft transport (RaftService and the senders to the peers) gets a runtime of its
    // own: when a client flood saturates the main runtime, heartbeats and append answers must
    // still go out and come in on time, or the leader loses its quorum.
    let raft_net = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RAFT_NET_THREADS)
        .thread_name(format!("raft-net-{}", cfg.node.id))
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    let result = run_with(cfg, shutdown, raft_net.handle().clone()).await;
    // Dropping a runtime inside another one would block it; let its threads wind down alone.
    raft_net.shutdown_background();
    result
}

/// Threads of the Raft transport's runtime. One: every peer RPC hops between a few tasks (the
/// sender, the channel's buffer worker, the HTTP/2 connection, the handler), and with two
/// threads those hops kept waking the other thread. With one, `dmq bench meta`'s sequential
/// writes took 37 context switches and 1.35-1.42 ms of CPU each over the three controllers,
/// against 47 and 1.57-1.61 ms with two (p50 1.19-1.21 ms against 1.30-1.31 ms, alternating
/// runs); 64 in flight was the same. Blocking work stays off it (snapshot files go through
/// `tokio::fs`, i.e. the blocking pool).
const RAFT_NET_THREADS: usize = 1;

async fn run_with(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()>,
    raft_net: tokio::runtime::Handle,
) -> Result<(), ServerError> {
    let client_listener = bind(cfg.listen).await?;
    // Bound on the transport's runtime, so that its reactor serves the peer connections.
    let peer_addr = cfg.peer_listen;
    let peer_listener = raft_net
        .spawn(async move { bind(peer_addr).await })
        .await
        .expect("binding the peer port does not panic")?;
    let (node, store) = node::start_on(cfg.node.clone(), raft_net.clone())?;
    let node_id = cfg.node.id;
    tracing::info!(node_id, listen = %cfg.listen, peer_listen = %cfg.peer_listen, "controller starting");

    let service_cfg = ServiceConfig {
        session_timeout: cfg.broker_session_timeout,
        heartbeat_interval: cfg.broker_heartbeat_interval,
        disconnect_grace: cfg.broker_disconnect_grace,
        leader_rebalance_interval: cfg.leader_rebalance_interval,
        ..ServiceConfig::default()
    };
    let service = ControllerServiceImpl::new(node.clone(), store.clone(), service_cfg);
    let background = service.spawn_background();
    let (health, health_service) = tonic_health::server::health_reporter();
    let (stop_tx, stop_rx) = watch::channel(false);

    let client_server = tonic::transport::Server::builder()
        .add_service(Admission::new(
            service.into_server(),
            AdmissionLimits::default(),
        ))
        .add_service(health_service.clone())
        .add_service(dmq_proto::reflection::v1())
        .add_service(dmq_proto::reflection::v1alpha())
        .serve_with_incoming_shutdown(incoming(client_listener), wait_true(stop_rx.clone()));
    let peer_server = tonic::transport::Server::builder()
        .add_service(RaftServer::new(&node, cfg.node.snapshot_max_bytes).into_service())
        .add_service(health_service)
        .add_service(dmq_proto::reflection::v1())
        .add_service(dmq_proto::reflection::v1alpha())
        .serve_with_incoming_shutdown(incoming(peer_listener), wait_true(stop_rx));
    let client_task = tokio::spawn(client_server);
    let peer_task = raft_net.spawn(peer_server);
    // "liveness" is SERVING while the process runs, whatever the cluster's state, so a
    // liveness probe never restarts a controller merely because there is no leader.
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    let health_task = tokio::spawn(report_health(node.clone(), health.clone()));

    let mut status = node.watch_status();
    let failed = tokio::select! {
        _ = shutdown => false,
        _ = async { while status.changed().await.is_ok() && status.borrow().running {} } => true,
    };
    health_task.abort();
    set_health(&health, ServingStatus::NotServing).await;
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::NotServing)
        .await;
    if failed {
        tracing::error!(node_id, "metadata node failed; stopping the servers");
    } else {
        tracing::info!(node_id, "shutting down");
        hand_over_leadership(&node, cfg.shutdown_transfer_timeout).await;
    }
    node.shutdown();
    wait_stopped(&node, Duration::from_secs(5)).await;
    background.abort();
    let _ = stop_tx.send(true);
    let (client, peer) = tokio::join!(client_task, peer_task);
    for r in [client, peer] {
        if let Ok(Err(e)) = r {
            tracing::warn!(node_id, error = %e, "server stopped with an error");
        }
    }
    tracing::info!(node_id, "controller stopped");
    if failed {
        Err(ServerError::NodeFailed)
    } else {
        Ok(())
    }
}

/// Accepted connections with Nagle off: small RPCs must not wait for delayed ACKs (40 ms).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// SERVING while the node runs and knows a leader; NOT_SERVING otherwise.
async fn report_health(node: NodeHandle, health: tonic_health::server::HealthReporter) {
    let mut status = node.watch_status();
    let mut last = None;
    loop {
        let serving = {
            let s = status.borrow();
            s.running && s.leader_id.is_some()
        };
        if last != Some(serving) {
            let st = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&health, st).await;
            last = Some(serving);
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status("dmq.v1.ControllerService", status)
        .await;
}

/// A leader asked to stop first hands leadership to the most up-to-date follower, so the
/// cluster does not wait an election timeout (thesis §3.10).
async fn hand_over_leadership(node: &NodeHandle, timeout: Duration) {
    if node.status().role != Role::Leader {
        return;
    }
    match node.transfer_leadership(None).await {
        Ok(target) => {
            tracing::info!(
                node_id = node.status().id,
                target,
                "handing leadership over before stopping"
            );
            let mut status = node.watch_status();
            let _ = tokio::time::timeout(timeout, async {
                while status.borrow().role == Role::Leader {
                    if status.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
        }
        Err(e) => tracing::warn!(error = %e, "leadership transfer not started; stopping anyway"),
    }
}

async fn wait_stopped(node: &NodeHandle, timeout: Duration) {
    let mut status = node.watch_status();
    let _ = tokio::time::timeout(timeout, async {
        while status.borrow().running {
            if status.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
}
