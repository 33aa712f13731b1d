//! What the broker's tasks share: its identity, session with the controllers, locator,
//! metadata cache, partitions and health.

use std::sync::Arc;

use dmq_client::discovery::{ChannelPool, GrpcProbe, LeaderLocator};
use dmq_proto::v1::BrokerStatus;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::controller_calls::ControllerCalls;
use crate::log::LogStore;
use crate::partitions::Partitions;
use crate::{BrokerConfig, BrokerError, MetadataCache};

/// The gRPC name health checks use for BrokerService.
pub(crate) const BROKER_SERVICE_NAME: &str = dmq_proto::v1::broker_service_server::SERVICE_NAME;

/// This broker's standing with the controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The epoch of the last successful registration; 0 before the first.
    pub epoch: u64,
    /// The status the controllers last reported (UNSPECIFIED before registering).
    pub status: BrokerStatus,
}

pub(crate) struct Broker {
    pub cfg: BrokerConfig,
    /// Host and port registered with the controllers.
    pub advertised: (String, u16),
    pub locator: LeaderLocator,
    pub calls: ControllerCalls,
    pub metadata: MetadataCache,
    pub session: watch::Sender<Session>,
    /// Poked by an accepted CONTROLLER_CHANGED push so the heartbeat loop greets the new
    /// leader at once instead of at the next interval. Holds at most one permit.
    pub wakeup: Notify,
    /// Until when this broker may lead partitions: the send time of its last answered
    /// heartbeat (or registration) plus the controllers' session timeout. Past it the
    /// controllers may have fenced it and elected other leaders, so it must not act as leader
    /// (`None`: no session yet, or the controllers gave no timeout — then no lease applies).
    pub lease_until: watch::Sender<Option<Instant>>,
    /// Whether this broker may lead now (it holds a registration and its lease has not run
    /// out). The partition manager gives up every leadership when it turns false.
    pub may_lead: watch::Sender<bool>,
    /// Set when a graceful shutdown begins: leaders take no new appends and finish the ones in
    /// flight before the broker tells the controllers it leaves (controlled shutdown).
    pub draining: std::sync::atomic::AtomicBool,
    /// The partition replicas and their logs.
    pub data: Partitions,
    /// Random, chosen at start: a retried registration of this process (same id) gets the
    /// epoch it already has instead of a new incarnation.
    pub incarnation_id: u64,
    health: HealthReporter,
}

impl Broker {
    /// Starts the log syncer thread.
    pub(crate) fn new(
        cfg: BrokerConfig,
        health: HealthReporter,
        store: Arc<LogStore>,
    ) -> Result<Arc<Broker>, BrokerError> {
        let advertised = cfg.advertised()?;
        let channels = ChannelPool::new(cfg.discovery.call_timeout);
        let probe = GrpcProbe::new(channels.clone(), cfg.discovery.call_timeout);
        let locator =
            LeaderLocator::with_probe(cfg.controllers.clone(), cfg.discovery.clone(), probe)?;
        let calls = ControllerCalls::new(channels, cfg.rpc_timeout);
        let peers = ChannelPool::new(cfg.rpc_timeout);
        Ok(Arc::new(Broker {
            data: Partitions::new(store, peers, &cfg).map_err(BrokerError::Thread)?,
            incarnation_id: rand::random::<u64>().max(1),
            advertised,
            locator,
            calls,
            metadata: MetadataCache::new(),
            session: watch::Sender::new(Session {
                epoch: 0,
                status: BrokerStatus::Unspecified,
            }),
            wakeup: Notify::new(),
            lease_until: watch::Sender::new(None),
            may_lead: watch::Sender::new(false),
            draining: std::sync::atomic::AtomicBool::new(false),
            health,
            cfg,
        }))
    }

    pub(crate) fn id(&self) -> u64 {
        self.cfg.broker_id
    }

    /// A heartbeat (or registration) sent at `sent_at` was answered: the controllers count this
    /// broker's session from no earlier than that, so it may lead until `sent_at +
    /// session_timeout` (0: the controllers gave no timeout; no lease applies).
    pub(crate) fn renew_lease(&self, sent_at: Instant, session_timeout_ms: u64) {
        let until = (session_timeout_ms > 0)
            .then(|| sent_at + std::time::Duration::from_millis(session_timeout_ms));
        self.lease_until.send_replace(until);
        self.may_lead
            .send_if_modified(|m| !std::mem::replace(m, true));
    }

    /// The registration is gone (fenced, or stopping): no leading until registered again.
    pub(crate) fn end_lease(&self) {
        self.lease_until.send_replace(None);
        self.may_lead
            .send_if_modified(|m| std::mem::replace(m, false));
    }

    pub(crate) fn may_lead(&self) -> bool {
        *self.may_lead.borrow()
    }

    /// Whether leaders may take new appends (not after a lease ran out or while draining).
    pub(crate) fn takes_appends(&self) -> bool {
        self.may_lead() && !self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn session(&self) -> Session {
        *self.session.borrow()
    }

    /// Records a successful registration: new epoch, ONLINE.
    pub(crate) fn registered(&self, epoch: u64) {
        self.session.send_modify(|s| s.epoch = epoch);
        self.set_status(BrokerStatus::Online);
    }

    /// Records the status the controllers report, logging every transition.
    pub(crate) fn set_status(&self, status: BrokerStatus) {
        let mut old = status;
        self.session.send_modify(|s| {
            old = s.status;
            s.status = status;
        });
        let epoch = self.session().epoch;
        match (old, status) {
            (a, b) if a == b => {}
            (BrokerStatus::Offline, BrokerStatus::Online) => {
                tracing::info!(epoch, "broker is ONLINE again (was OFFLINE)")
            }
            (_, BrokerStatus::Online) => tracing::info!(epoch, "broker is ONLINE"),
            (_, BrokerStatus::Offline) => tracing::warn!(
                epoch,
                "controllers marked this broker OFFLINE (heartbeats were missed); still heartbeating"
            ),
            (_, BrokerStatus::Fenced) => {
                tracing::warn!(
                    epoch,
                    "broker epoch fenced by the controllers; registering again"
                )
            }
            (_, BrokerStatus::Unspecified) => {}
        }
    }

    /// Health of the whole server ("") and of BrokerService: SERVING only while registered and
    /// not draining.
    pub(crate) async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in ["", BROKER_SERVICE_NAME] {
            self.health.set_service_status(name, status).await;
        }
    }
}
