//! [`ControllerServiceImpl`]: the `dmq.v1.ControllerService` handlers, and the leader's
//! background work (broker liveness checks, CONTROLLER_CHANGED pushes).
//!
//! # Rules every handler follows
//! - Validate first: a malformed request is refused with INVALID_ARGUMENT (or NOT_FOUND /
//!   ALREADY_EXISTS / FAILED_PRECONDITION) before anything is proposed; the leader also refuses
//!   a command the applied state already rejects ([`MetadataStore::check`]), confirming with a
//!   read barrier first so a lagging state never refuses a valid command.
//! - Mutations go to the leader: a follower answers FAILED_PRECONDITION with the leader hint,
//!   and UNAVAILABLE when no leader is known (see `status.rs`).
//! - Reads are linearizable (a ReadIndex barrier before reading the applied state) unless the
//!   request sets `allow_stale`, in which case any node answers from its applied state at once.
//! - Heartbeats are answered by the leader from memory and its applied state: only a change of
//!   status (OFFLINE -> ONLINE, or a leaving broker -> OFFLINE) goes through the log.
//!
//! # Heartbeats with a stale or unknown epoch
//! They are answered OK with status FENCED (not with an error): the broker must register again
//! and take the new epoch. The leader confirms with a read barrier before answering FENCED for
//! an epoch it has not applied yet (it may lag right after an election), so a freshly
//! registered broker is never told FENCED by mistake.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dmq_proto::v1::controller_service_server::{ControllerService, ControllerServiceServer};
use dmq_proto::v1::metadata_command::Command;
use dmq_proto::v1::{
    AddControllerRequest, AddControllerResponse, AlterPartitionCommand, AlterPartitionRequest,
    AlterPartitionResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerStatus,
    ControllerChangedRequest, ControllerRole, CreateTopicCommand, CreateTopicRequest,
    CreateTopicResponse, DeleteTopicCommand, DeleteTopicRequest, DeleteTopicResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeTopicRequest, DescribeTopicResponse,
    ElectPreferredLeadersCommand, FenceBrokerCommand, GetControllerInfoRequest,
    GetControllerInfoResponse, GetMetadataRequest, GetMetadataResponse, GetSnapshotRequest,
    ListTopicsRequest, ListTopicsResponse, MetadataCommand, RegisterBrokerCommand,
    RegisterBrokerRequest, RegisterBrokerResponse, RemoveControllerRequest,
    RemoveControllerResponse, ReplicaAssignment, SnapshotChunk, SnapshotHeader,
    UnfenceBrokerCommand, UnregisterBrokerCommand, UnregisterBrokerRequest,
    UnregisterBrokerResponse, WatchMetadataRequest,
};
use dmq_raft::Role;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tonic::{Request, Response, Status};

use super::ServiceConfig;
use super::consensus::Consensus;
use super::liveness::{BrokerView, LivenessTracker};
use super::push::{PushLimits, push_controller_changed, push_targets};
use super::status::{metadata_error_status, node_error_status, unexpected_outcome};
use crate::metadata::validate::{
    validate_alter_partition, validate_create_topic, validate_register_broker, validate_topic_name,
};
use crate::metadata::{ApplyOutcome, CommandReply, MetadataError, MetadataStore, assign_replicas};
use crate::node::{NodeError, NodeHandle, NodeStatus};

/// The ControllerService of one metadata node. Cheap to clone (all clones share one state).
pub struct ControllerServiceImpl<N: Consensus = NodeHandle> {
    inner: Arc<Inner<N>>,
}

impl<N: Consensus> Clone for ControllerServiceImpl<N> {
    fn clone(&self) -> Self {
        ControllerServiceImpl {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<N> {
    node: N,
    store: Arc<MetadataStore>,
    cfg: ServiceConfig,
    liveness: Mutex<LivenessTracker>,
    /// An ElectPreferredLeaders proposal is in flight (at most one).
    rebalancing: std::sync::atomic::AtomicBool,
}

/// The most partitions one automatic rebalance command moves; a bigger imbalance takes a few
/// rounds.
const REBALANCE_PARTITIONS_MAX: u32 = 1000;

impl<N: Consensus> ControllerServiceImpl<N> {
    /// A service over `node` and its applied metadata `store`. Call
    /// [`spawn_background`](Self::spawn_background) to run liveness checks and pushes.
    pub fn new(node: N, store: Arc<MetadataStore>, cfg: ServiceConfig) -> Self {
        let tracker = LivenessTracker::for_check_interval(cfg.check_interval());
        ControllerServiceImpl {
            inner: Arc::new(Inner {
                node,
                store,
                cfg,
                liveness: Mutex::new(tracker),
                rebalancing: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Starts the leader's background work on the current runtime: on becoming leader (a new
    /// term), grace for every broker and a CONTROLLER_CHANGED push round; while leader, a
    /// liveness check every [`ServiceConfig::check_interval`] and a leader rebalance every
    /// [`ServiceConfig::leader_rebalance_interval`]. Ends when the node stops; abort
    /// the handle to stop it earlier.
    pub fn spawn_background(&self) -> JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(inner.run_background())
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> ControllerServiceServer<Self> {
        ControllerServiceServer::new(self)
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.cfg
    }
}

pub(super) fn controller_role(role: Role) -> ControllerRole {
    match role {
        Role::Follower => ControllerRole::Follower,
        Role::PreCandidate => ControllerRole::PreCandidate,
        Role::Candidate => ControllerRole::Candidate,
        Role::Leader => ControllerRole::Leader,
    }
}

fn command(command: Command) -> MetadataCommand {
    MetadataCommand {
        command: Some(command),
    }
}

/// Where the first leader of a new topic's partitions lands: a hash of its name (FNV-1a), so
/// topics created at once do not all start on the same broker.
fn start_offset(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn broker_views(store: &MetadataStore) -> Vec<BrokerView> {
    store
        .brokers()
        .iter()
        .map(|b| BrokerView {
            broker_id: b.broker_id,
            broker_epoch: b.broker_epoch,
            online: b.status == BrokerStatus::Online as i32,
        })
        .collect()
}

/// Clears the unfence claim of a broker when the heartbeat that made it ends (even if the
/// client gave up and the handler was dropped).
struct UnfenceClaim<'a, N> {
    inner: &'a Inner<N>,
    broker_id: u64,
}

impl<N> Drop for UnfenceClaim<'_, N> {
    fn drop(&mut self) {
        self.inner.tracker().unfence_finished(self.broker_id);
    }
}

impl<N> Inner<N> {
    fn tracker(&self) -> MutexGuard<'_, LivenessTracker> {
        self.liveness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<N: Consensus> Inner<N> {
    /// This node's status if it leads; the leader hint (or UNAVAILABLE) otherwise.
    fn ensure_leader(&self) -> Result<NodeStatus, Status> {
        let status = self.node.status();
        if status.role == Role::Leader {
            Ok(status)
        } else {
            Err(node_error_status(&self.node.not_leader()))
        }
    }

    /// Like [`Inner::ensure_leader`], and the leader holds its lease: no other controller
    /// can lead now. Needed by answers that vouch for a broker's liveness.
    fn ensure_lease(&self) -> Result<NodeStatus, Status> {
        let status = self.ensure_leader()?;
        if self.node.leader_lease().is_some() {
            Ok(status)
        } else {
            Err(node_error_status(&NodeError::Unconfirmed(
                "this controller leads but its leader lease lapsed (it was paused or cut off \
                 from the others), so it cannot vouch for broker liveness now"
                    .into(),
            )))
        }
    }

    async fn barrier(&self) -> Result<(), Status> {
        self.node
            .read_barrier()
            .await
            .map_err(|e| node_error_status(&e))
    }

    /// Makes the next read of the store linearizable, unless the caller accepts a stale one.
    async fn read_point(&self, allow_stale: bool) -> Result<(), Status> {
        if allow_stale {
            Ok(())
        } else {
            self.barrier().await
        }
    }

    /// Refuses `command` early if the applied state rejects it, after confirming the state is
    /// current (a read barrier), so a lagging leader refuses nothing valid.
    async fn precheck(&self, command: &MetadataCommand) -> Result<(), Status> {
        if self.store.check(command).is_ok() {
            return Ok(());
        }
        self.barrier().await?;
        self.store.check(command).map_err(metadata_error_status)
    }

    /// Proposes `command` and returns the metadata version after it and its reply. A command
    /// above the agreed feature level is refused before the log (`features.rs`).
    async fn propose(&self, command: &MetadataCommand) -> Result<(u64, CommandReply), Status> {
        let (required, agreed) = (
            crate::metadata::features::required_level(command),
            self.store.feature_level(),
        );
        if required > agreed {
            return Err(metadata_error_status(MetadataError::FeatureLevelTooLow {
                required,
                agreed,
            }));
        }
        match self.node.propose(command).await {
            Ok(ApplyOutcome::Applied { version, reply }) => Ok((version, reply)),
            Ok(ApplyOutcome::Rejected(error)) => Err(metadata_error_status(error)),
            Ok(outcome @ ApplyOutcome::AlreadyApplied) => {
                Err(unexpected_outcome("proposal", &outcome))
            }
            Err(error) => Err(node_error_status(&error)),
        }
    }

    fn term(&self) -> u64 {
        self.node.status().term
    }

    /// The ControllerService address of controller `id` (empty if unknown).
    fn client_address(&self, id: u64) -> String {
        self.node
            .peers()
            .get(&id)
            .map(|p| p.client.clone())
            .unwrap_or_default()
    }

    fn get_controller_info(&self) -> GetControllerInfoResponse {
        let mut s = self.node.status();
        if s.role == Role::Leader && self.node.leader_lease().is_none() {
            // A leader that cannot be sure it still leads (just elected, or back from a
            // pause) claims nothing: it reports itself a candidate and names no leader.
            s.role = Role::Candidate;
            s.leader_id = None;
            s.leader_addr = None;
        }
        GetControllerInfoResponse {
            node_id: s.id,
            role: controller_role(s.role) as i32,
            term: s.term,
            leader_id: s.leader_id.unwrap_or(0),
            leader_address: s
                .leader_addr
                .clone()
                .or_else(|| s.leader_id.map(|id| self.client_address(id)))
                .unwrap_or_default(),
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            address: self.client_address(s.id),
            version: env!("CARGO_PKG_VERSION").to_string(),
            feature_level: self.store.feature_level(),
            cluster_id: self.store.cluster_id(),
            feature_level_max: self.node.feature_level_max(),
            catching_up: s.catching_up,
        }
    }

    async fn register_broker(
        &self,
        request: RegisterBrokerRequest,
    ) -> Result<RegisterBrokerResponse, Status> {
        validate_register_broker(&request).map_err(metadata_error_status)?;
        self.ensure_leader()?;
        let broker_id = request.broker_id;
        let (version, reply) = self
            .propose(&command(Command::RegisterBroker(RegisterBrokerCommand {
                broker_id,
                host: request.host,
                port: request.port,
                rack: request.rack,
                incarnation_id: request.incarnation_id,
                storage_id: request.storage_id,
            })))
            .await?;
        let CommandReply::BrokerRegistered { broker_epoch } = reply else {
            return Err(unexpected_outcome(
                "RegisterBroker",
                &ApplyOutcome::Applied { version, reply },
            ));
        };
        self.tracker()
            .heard(broker_id, broker_epoch, Instant::now());
        tracing::info!(broker_id, broker_epoch, "broker registered");
        Ok(RegisterBrokerResponse {
            broker_epoch,
            metadata_version: version,
            term: self.term(),
            session_timeout_ms: self.cfg.session_timeout.as_millis() as u64,
        })
    }

    async fn broker_heartbeat(
        &self,
        request: BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatResponse, Status> {
        if request.broker_id == 0 {
            return Err(metadata_error_status(MetadataError::InvalidBrokerId));
        }
        let status = self.ensure_lease()?;
        let (id, epoch) = (request.broker_id, request.broker_epoch);
        let peers = self.node.peers();
        let members: Vec<String> = status
            .membership
            .members()
            .filter_map(|id| peers.get(&id).map(|a| a.client.clone()))
            .collect();
        let answer = |broker_status: BrokerStatus| BrokerHeartbeatResponse {
            status: broker_status as i32,
            metadata_version: self.store.version(),
            term: status.term,
            session_timeout_ms: self.cfg.session_timeout.as_millis() as u64,
            controller_addresses: members.clone(),
        };
        let mut broker = self.store.broker(id);
        // Epochs only grow, and this state can only be behind: an epoch below the applied one
        // is stale for sure; an unknown broker or a newer epoch needs a current state first.
        if broker.as_ref().is_none_or(|b| b.broker_epoch < epoch) {
            self.barrier().await?;
            broker = self.store.broker(id);
        }
        let Some(broker) = broker.filter(|b| b.broker_epoch == epoch) else {
            tracing::debug!(
                broker_id = id,
                broker_epoch = epoch,
                "heartbeat of a stale or unknown epoch: FENCED"
            );
            return Ok(answer(BrokerStatus::Fenced));
        };
        let now = Instant::now();
        let offline = broker.status == BrokerStatus::Offline as i32;
        if request.leaving {
            if !offline {
                tracing::info!(broker_id = id, "broker is leaving: fencing it now");
                let fence = command(Command::FenceBroker(FenceBrokerCommand {
                    broker_id: id,
                    broker_epoch: epoch,
                }));
                if let Some(answer) = self.change_status(&fence, &answer).await? {
                    return Ok(answer);
                }
            }
        } else if offline {
            if self.tracker().try_begin_unfence(id, epoch, now) {
                let _claim = UnfenceClaim {
                    inner: self,
                    broker_id: id,
                };
                tracing::info!(
                    broker_id = id,
                    "heartbeat from an OFFLINE broker: unfencing it"
                );
                let unfence = command(Command::UnfenceBroker(UnfenceBrokerCommand {
                    broker_id: id,
                    broker_epoch: epoch,
                }));
                if let Some(answer) = self.change_status(&unfence, &answer).await? {
                    return Ok(answer);
                }
            }
        } else {
            self.tracker().heard(id, epoch, now);
        }
        crate::metrics::broker_heartbeat(id);
        let current = match self.store.broker(id) {
            Some(b) if b.broker_epoch == epoch => b.status(),
            _ => BrokerStatus::Fenced,
        };
        Ok(answer(current))
    }

    /// Proposes a fence or unfence for a heartbeat; `Some(FENCED)` when the broker's epoch went
    /// stale meanwhile.
    async fn change_status(
        &self,
        change: &MetadataCommand,
        answer: &impl Fn(BrokerStatus) -> BrokerHeartbeatResponse,
    ) -> Result<Option<BrokerHeartbeatResponse>, Status> {
        match self.node.propose(change).await {
            Ok(ApplyOutcome::Applied { .. }) => Ok(None),
            Ok(ApplyOutcome::Rejected(
                MetadataError::StaleBrokerEpoch { .. } | MetadataError::BrokerNotRegistered { .. },
            )) => Ok(Some(answer(BrokerStatus::Fenced))),
            Ok(ApplyOutcome::Rejected(error)) => Err(metadata_error_status(error)),
            Ok(outcome @ ApplyOutcome::AlreadyApplied) => {
                Err(unexpected_outcome("broker status change", &outcome))
            }
            Err(error) => Err(node_error_status(&error)),
        }
    }

    async fn unregister_broker(
        &self,
        request: UnregisterBrokerRequest,
    ) -> Result<UnregisterBrokerResponse, Status> {
        if request.broker_id == 0 {
            return Err(metadata_error_status(MetadataError::InvalidBrokerId));
        }
        self.ensure_leader()?;
        let unregister = command(Command::UnregisterBroker(UnregisterBrokerCommand {
            broker_id: request.broker_id,
            broker_epoch: request.broker_epoch,
        }));
        self.precheck(&unregister).await?;
        let (version, _) = self.propose(&unregister).await?;
        self.tracker().forget(request.broker_id);
        tracing::info!(broker_id = request.broker_id, "broker unregistered");
        Ok(UnregisterBrokerResponse {
            metadata_version: version,
        })
    }

    async fn create_topic(
        &self,
        request: CreateTopicRequest,
    ) -> Result<CreateTopicResponse, Status> {
        let max = self.cfg.max_partitions;
        // Everything but the broker count first: no barrier for a malformed request.
        validate_create_topic(&request, usize::MAX, max).map_err(metadata_error_status)?;
        self.ensure_leader()?;
        self.barrier().await?;
        let online = self.store.online_brokers();
        validate_create_topic(&request, online.len(), max).map_err(metadata_error_status)?;
        let assignment = assign_replicas(
            request.partitions,
            request.replication_factor,
            &online,
            start_offset(&request.name),
        );
        let create = command(Command::CreateTopic(CreateTopicCommand {
            name: request.name.clone(),
            assignment: assignment
                .into_iter()
                .map(|replicas| ReplicaAssignment { replicas })
                .collect(),
            config: request.config,
        }));
        self.store.check(&create).map_err(metadata_error_status)?;
        let (version, reply) = self.propose(&create).await?;
        let CommandReply::TopicCreated(topic) = reply else {
            return Err(unexpected_outcome(
                "CreateTopic",
                &ApplyOutcome::Applied { version, reply },
            ));
        };
        tracing::info!(topic = %topic.name, topic_id = topic.topic_id, "topic created");
        Ok(CreateTopicResponse {
            topic: Some(topic),
            metadata_version: version,
        })
    }

    async fn delete_topic(
        &self,
        request: DeleteTopicRequest,
    ) -> Result<DeleteTopicResponse, Status> {
        validate_topic_name(&request.name).map_err(metadata_error_status)?;
        self.ensure_leader()?;
        let delete = command(Command::DeleteTopic(DeleteTopicCommand {
            name: request.name.clone(),
        }));
        self.precheck(&delete).await?;
        let (version, _) = self.propose(&delete).await?;
        tracing::info!(topic = %request.name, "topic deleted");
        Ok(DeleteTopicResponse {
            metadata_version: version,
        })
    }

    async fn list_topics(&self, request: ListTopicsRequest) -> Result<ListTopicsResponse, Status> {
        self.read_point(request.allow_stale).await?;
        let page = self
            .store
            .list_topics(request.page_size, &request.page_token)
            .map_err(metadata_error_status)?;
        Ok(ListTopicsResponse {
            topics: page.topics,
            next_page_token: page.next_page_token,
            metadata_version: page.metadata_version,
        })
    }

    async fn describe_topic(
        &self,
        request: DescribeTopicRequest,
    ) -> Result<DescribeTopicResponse, Status> {
        validate_topic_name(&request.name).map_err(metadata_error_status)?;
        self.read_point(request.allow_stale).await?;
        let (version, topic) = self
            .store
            .describe_topic(&request.name)
            .map_err(metadata_error_status)?;
        Ok(DescribeTopicResponse {
            topic: Some(topic),
            metadata_version: version,
        })
    }

    async fn alter_partition(
        &self,
        request: AlterPartitionRequest,
    ) -> Result<AlterPartitionResponse, Status> {
        validate_alter_partition(&request).map_err(metadata_error_status)?;
        self.ensure_leader()?;
        let alter = command(Command::AlterPartition(AlterPartitionCommand {
            broker_id: request.broker_id,
            broker_epoch: request.broker_epoch,
            topic: request.topic,
            partition: request.partition,
            leader_epoch: request.leader_epoch,
            new_isr: request.new_isr,
            partition_epoch: request.partition_epoch,
        }));
        self.precheck(&alter).await?;
        let (version, reply) = self.propose(&alter).await?;
        let CommandReply::PartitionAltered(partition) = reply else {
            return Err(unexpected_outcome(
                "AlterPartition",
                &ApplyOutcome::Applied { version, reply },
            ));
        };
        Ok(AlterPartitionResponse {
            partition: Some(partition),
            metadata_version: version,
        })
    }

    async fn describe_cluster(
        &self,
        request: DescribeClusterRequest,
    ) -> Result<DescribeClusterResponse, Status> {
        self.read_point(request.allow_stale).await?;
        let s = self.node.status();
        let controllers = super::membership::controller_nodes(&s, &self.node.peers());
        Ok(DescribeClusterResponse {
            controllers,
            brokers: self.store.brokers(),
            leader_id: s.leader_id.unwrap_or(0),
            term: s.term,
            metadata_version: self.store.version(),
            commit_index: s.commit_index,
        })
    }

    /// A consistent snapshot for a backup: on the leader, after a read barrier, the state at
    /// its applied index, encoded once.
    async fn get_snapshot(&self) -> Result<(SnapshotHeader, Vec<u8>), Status> {
        let status = self.ensure_leader()?;
        self.barrier().await?;
        let (applied_index, data) = self.store.snapshot_bytes();
        let header = SnapshotHeader {
            applied_index,
            term: status.term,
            cluster_id: self.store.cluster_id(),
            feature_level: self.store.feature_level(),
            metadata_version: self.store.version(),
            data_bytes: data.len() as u64,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        tracing::info!(
            applied_index,
            bytes = data.len(),
            "metadata snapshot taken for a backup"
        );
        Ok((header, data))
    }

    async fn get_metadata(
        &self,
        request: GetMetadataRequest,
    ) -> Result<GetMetadataResponse, Status> {
        self.read_point(request.allow_stale).await?;
        let (version, brokers, topics) = self.store.get_metadata();
        let s = self.node.status();
        Ok(GetMetadataResponse {
            metadata_version: version,
            brokers,
            topics,
            term: s.term,
            leader_id: s.leader_id.unwrap_or(0),
        })
    }
}

/// The leader's background work.
impl<N: Consensus> Inner<N> {
    async fn run_background(self: Arc<Self>) {
        let mut status = self.node.watch_status();
        let mut ticker = tokio::time::interval(self.cfg.check_interval());
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let rebalance_every = self.cfg.leader_rebalance_interval;
        let mut rebalance_ticker =
            tokio::time::interval(rebalance_every.max(Duration::from_millis(10)));
        rebalance_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut led: Option<u64> = None;
        let mut push: Option<JoinHandle<()>> = None;
        loop {
            let (tick, rebalance) = tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    (false, false)
                }
                _ = ticker.tick() => (true, false),
                _ = rebalance_ticker.tick(), if !rebalance_every.is_zero() => (false, true),
            };
            let (running, leading, id) = {
                let s = status.borrow_and_update();
                (s.running, (s.role == Role::Leader).then_some(s.term), s.id)
            };
            if !running {
                break;
            }
            if leading != led {
                if let Some(old) = push.take() {
                    old.abort();
                }
                self.tracker().stop_listening();
                led = leading;
                if let Some(term) = leading {
                    let brokers = broker_views(&self.store);
                    tracing::info!(
                        node_id = id,
                        term,
                        brokers = brokers.len(),
                        "became the controller leader: every broker gets a full session, \
                         pushing CONTROLLER_CHANGED"
                    );
                    self.tracker().reset(brokers, Instant::now());
                    push = Some(tokio::spawn(self.clone().announce_leadership(term)));
                }
            }
            // Fencing a broker for silence needs the lease: a leader back from a pause has
            // heard nobody, and may not lead any more; without one it is not listening.
            if tick && led.is_some() {
                if self.node.leader_lease().is_some() {
                    self.check_liveness(Instant::now());
                } else {
                    self.tracker().stop_listening();
                }
            }
            if rebalance && led.is_some() && self.node.leader_lease().is_some() {
                self.rebalance_leaders();
            }
        }
        if let Some(push) = push {
            push.abort();
        }
        tracing::debug!("controller background work stopped: the node stopped");
    }

    /// Fences (marks OFFLINE through the log) every ONLINE broker not heard from within the
    /// session timeout, and every one whose metadata stream closed and that did not come back
    /// within the disconnect grace; one proposal in flight per broker at most.
    fn check_liveness(self: &Arc<Self>, now: Instant) {
        let views = broker_views(&self.store);
        let online = views.iter().filter(|v| v.online).count();
        crate::metrics::broker_status_counts(online, views.len() - online);
        let overdue = self
            .tracker()
            .overdue(&views, now, self.cfg.session_timeout);
        for (broker_id, broker_epoch) in overdue {
            tracing::warn!(
                broker_id,
                broker_epoch,
                session_timeout = ?self.cfg.session_timeout,
                "broker missed its heartbeats for the session timeout: marking it OFFLINE"
            );
            self.fence(broker_id, broker_epoch);
        }
        self.fence_disconnected(&views, now);
    }

    /// The disconnect part of [`check_liveness`](Self::check_liveness), run when a stream's
    /// grace ends.
    fn check_disconnects(self: &Arc<Self>, now: Instant) {
        let views = broker_views(&self.store);
        self.fence_disconnected(&views, now);
    }

    fn fence_disconnected(self: &Arc<Self>, views: &[BrokerView], now: Instant) {
        let gone = self
            .tracker()
            .disconnected(views, now, self.cfg.disconnect_grace);
        for (broker_id, broker_epoch) in gone {
            tracing::warn!(
                broker_id,
                broker_epoch,
                grace = ?self.cfg.disconnect_grace,
                "broker's connection closed and it did not come back: marking it OFFLINE"
            );
            self.fence(broker_id, broker_epoch);
        }
    }

    /// Automatic leader rebalance: when some partition is led by another replica than its
    /// preferred one although that one could lead (ONLINE, in the ISR), proposes an
    /// ElectPreferredLeaders command; one in flight at most, and only once the cluster's
    /// feature level has the command.
    fn rebalance_leaders(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        let command = command(Command::ElectPreferredLeaders(
            ElectPreferredLeadersCommand {
                max_partitions: REBALANCE_PARTITIONS_MAX,
            },
        ));
        if crate::metadata::features::required_level(&command) > self.store.feature_level() {
            return;
        }
        let imbalanced = self.store.imbalanced_partitions();
        if imbalanced == 0 || self.rebalancing.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            match inner.node.propose(&command).await {
                Ok(ApplyOutcome::Applied {
                    version,
                    reply: CommandReply::PreferredLeadersElected { partitions },
                }) => tracing::info!(
                    partitions,
                    version,
                    "leader rebalance: partitions led by their preferred replica again"
                ),
                Ok(outcome) => tracing::debug!(?outcome, "leader rebalance not applied"),
                Err(error) => {
                    tracing::debug!(%error, imbalanced, "leader rebalance failed; the next round retries")
                }
            }
            inner.rebalancing.store(false, Ordering::SeqCst);
        });
    }

    fn fence(self: &Arc<Self>, broker_id: u64, broker_epoch: u64) {
        let inner = self.clone();
        tokio::spawn(async move {
            let fence = command(Command::FenceBroker(FenceBrokerCommand {
                broker_id,
                broker_epoch,
            }));
            match inner.node.propose(&fence).await {
                Ok(ApplyOutcome::Applied { version, .. }) => {
                    tracing::info!(broker_id, version, "broker marked OFFLINE")
                }
                Ok(outcome) => {
                    tracing::debug!(broker_id, ?outcome, "fence not applied")
                }
                Err(error) => {
                    tracing::debug!(broker_id, %error, "fence failed; the next check retries")
                }
            }
            inner.tracker().fence_finished(broker_id);
        });
    }

    /// Pushes CONTROLLER_CHANGED for `term` to every registered broker, once this leader's
    /// applied state is current (so the broker list is complete).
    async fn announce_leadership(self: Arc<Self>, term: u64) {
        if let Err(error) = self.node.read_barrier().await {
            // Still the leader of `term` (checked below): push with the applied brokers.
            tracing::debug!(term, %error, "no read barrier before CONTROLLER_CHANGED");
        }
        let s = self.node.status();
        if s.role != Role::Leader || s.term != term {
            return;
        }
        let change = ControllerChangedRequest {
            term,
            leader_id: s.id,
            leader_address: self.client_address(s.id),
        };
        let limits = PushLimits {
            connect_timeout: self.cfg.push_connect_timeout,
            call_timeout: self.cfg.push_call_timeout,
            concurrency: self.cfg.push_concurrency,
        };
        push_controller_changed(push_targets(&self.store.brokers()), change, limits).await;
    }
}

/// The bytes of data in one `SnapshotChunk`.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// The chunks of a backup stream (see `SnapshotChunk` in controller.proto), made one at a time
/// as the stream is read.
fn snapshot_chunks(
    header: SnapshotHeader,
    data: Vec<u8>,
) -> impl Iterator<Item = SnapshotChunk> + Send + 'static {
    let crc = crc32fast::hash(&data);
    let count = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES).max(1);
    let mut header = Some(header);
    (0..count).map(move |i| {
        let start = i * SNAPSHOT_CHUNK_BYTES;
        let end = (start + SNAPSHOT_CHUNK_BYTES).min(data.len());
        let last = i + 1 == count;
        SnapshotChunk {
            header: header.take(),
            data: data[start..end].to_vec(),
            done: last,
            data_crc32: if last { crc } else { 0 },
        }
    })
}

/// The stream GetSnapshot answers with.
pub type SnapshotStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl<N: Consensus> ControllerService for ControllerServiceImpl<N> {
    type GetSnapshotStream = SnapshotStream;

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn get_snapshot(
        &self,
        _request: Request<GetSnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let (header, data) = self.inner.get_snapshot().await?;
        let chunks = snapshot_chunks(header, data).map(Ok);
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    #[tracing::instrument(skip_all, fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn get_controller_info(
        &self,
        _request: Request<GetControllerInfoRequest>,
    ) -> Result<Response<GetControllerInfoResponse>, Status> {
        Ok(Response::new(self.inner.get_controller_info()))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
        broker_id = request.get_ref().broker_id,
    ))]
    async fn register_broker(
        &self,
        request: Request<RegisterBrokerRequest>,
    ) -> Result<Response<RegisterBrokerResponse>, Status> {
        self.inner
            .register_broker(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
        broker_id = request.get_ref().broker_id,
    ))]
    async fn broker_heartbeat(
        &self,
        request: Request<BrokerHeartbeatRequest>,
    ) -> Result<Response<BrokerHeartbeatResponse>, Status> {
        self.inner
            .broker_heartbeat(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
        broker_id = request.get_ref().broker_id,
    ))]
    async fn unregister_broker(
        &self,
        request: Request<UnregisterBrokerRequest>,
    ) -> Result<Response<UnregisterBrokerResponse>, Status> {
        self.inner
            .unregister_broker(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        self.inner
            .create_topic(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.inner
            .delete_topic(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        self.inner
            .list_topics(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        self.inner
            .describe_topic(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
        broker_id = request.get_ref().broker_id,
    ))]
    async fn alter_partition(
        &self,
        request: Request<AlterPartitionRequest>,
    ) -> Result<Response<AlterPartitionResponse>, Status> {
        self.inner
            .alter_partition(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn add_controller(
        &self,
        request: Request<AddControllerRequest>,
    ) -> Result<Response<AddControllerResponse>, Status> {
        super::membership::add_controller(&self.inner.node, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn remove_controller(
        &self,
        request: Request<RemoveControllerRequest>,
    ) -> Result<Response<RemoveControllerResponse>, Status> {
        super::membership::remove_controller(&self.inner.node, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn describe_cluster(
        &self,
        request: Request<DescribeClusterRequest>,
    ) -> Result<Response<DescribeClusterResponse>, Status> {
        self.inner
            .describe_cluster(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(
        node_id = self.inner.node.status().id,
        term = self.inner.term(),
    ))]
    async fn get_metadata(
        &self,
        request: Request<GetMetadataRequest>,
    ) -> Result<Response<GetMetadataResponse>, Status> {
        self.inner
            .get_metadata(request.into_inner())
            .await
            .map(Response::new)
    }

    type WatchMetadataStream = super::watch::WatchStream;

    async fn watch_metadata(
        &self,
        request: Request<WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        let status = self.inner.ensure_leader()?;
        let request = request.into_inner();
        // A broker watching for its current incarnation: the stream is part of its session.
        let session = (request.broker_id, request.broker_epoch);
        let current = request.broker_id != 0
            && self
                .inner
                .store
                .broker(request.broker_id)
                .is_some_and(|b| b.broker_epoch == request.broker_epoch);
        let (stream, task) = super::watch::open(
            self.inner.node.clone(),
            self.inner.store.clone(),
            status.term,
            request,
        );
        if current {
            let (id, epoch) = session;
            self.inner
                .tracker()
                .stream_opened(id, epoch, Instant::now());
            let inner = self.inner.clone();
            tokio::spawn(async move {
                if let Ok(super::watch::WatchEnd::WatcherGone) = task.await {
                    inner.tracker().stream_closed(id, epoch, Instant::now());
                    // Look again once the grace is over, rather than at the next tick.
                    tokio::time::sleep(inner.cfg.disconnect_grace).await;
                    if inner.node.status().role == Role::Leader
                        && inner.node.leader_lease().is_some()
                    {
                        inner.check_disconnects(Instant::now());
                    }
                }
            });
        }
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
