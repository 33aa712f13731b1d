//! The broker's session with the controllers: register, heartbeat, follow metadata, leave.
//!
//! ```text
//!   ┌────────────► register ──(epoch)──► heartbeat every interval ──(stop)──► leave
//!   │   (retry: hint at once,                │  ONLINE/OFFLINE: log transitions
//!   │    else backoff 1–8 s)                 │  newer metadata version: GetMetadata, swap
//!   └──────────────── FENCED ◄───────────────┘  failure: retry after 1 s (3 → rediscover)
//! ```
//!
//! Every call goes to the leader the [`LeaderLocator`](dmq_client::discovery::LeaderLocator)
//! names and feeds its rules: a NOT_LEADER answer hands over its hint, an unreachable leader
//! counts a failure, a success resets the count. Every wait also watches the stop signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dmq_client::discovery::{Backoff, ControllerFailure, LeaderInfo, classify};
use dmq_proto::v1::{self as pb, BrokerStatus};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};
use tonic::Status;

use crate::metadata_cache::MetadataSnapshot;
use crate::state::Broker;

/// Calls retried at once before pausing (NOT_LEADER redirects, or rediscovery right after the
/// leader was forgotten): hints can chase a leader that keeps moving, and this bounds the calls
/// between two pauses.
const REDIRECTS_MAX: u32 = 3;

/// Runs the session until `stop` turns true (or its sender goes away), then says goodbye.
pub(crate) async fn run(broker: Arc<Broker>, stop: watch::Receiver<bool>) {
    let mut session = SessionLoop {
        retry: Backoff::from_options(&broker.cfg.discovery),
        failures: Throttle::new(broker.cfg.discovery.log_interval),
        broker,
        stop,
    };
    let watchdog = tokio::spawn(watch_lease(session.broker.clone()));
    let watcher = tokio::spawn(watch_metadata(session.broker.clone(), session.stop.clone()));
    while let Some(epoch) = session.register().await {
        if session.heartbeat(epoch).await.is_none() {
            break;
        }
        session.broker.end_lease();
    }
    watchdog.abort();
    watcher.abort();
    leave(&session.broker).await;
    session.broker.end_lease();
}

/// Why a metadata stream ended.
enum WatchEnd {
    /// The controllers do not offer WatchMetadata: follow the metadata by heartbeats only.
    Unsupported,
    /// Stopped, or a reason to reconnect at once (new epoch, a new leader).
    Reconnect,
    /// Failed or ended: reconnect after a pause.
    Failed(String),
}

/// Follows the controller leader's WatchMetadata stream, so this broker learns every change
/// (a new leader of a partition, a new topic) within milliseconds rather than at its next
/// heartbeat, whose version check stays as the fallback. Reconnects to whichever controller the
/// locator names, resuming from the version held.
async fn watch_metadata(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1), 0.2, None);
    let mut session = broker.session.subscribe();
    loop {
        let epoch = broker.session().epoch;
        let leader = tokio::select! {
            leader = broker.locator.leader() => leader,
            _ = stop.wait_for(|s| *s) => return,
        };
        let end = tokio::select! {
            end = follow_metadata(&broker, &leader, epoch, &mut backoff) => end,
            _ = stop.wait_for(|s| *s) => return,
            _ = session.wait_for(|s| s.epoch != epoch) => WatchEnd::Reconnect,
            _ = leader_moved(&broker, &leader.address) => WatchEnd::Reconnect,
        };
        match end {
            WatchEnd::Unsupported => {
                tracing::info!(controller = %leader.address,
                    "the controllers do not stream metadata; following it by heartbeats");
                return;
            }
            WatchEnd::Reconnect => {}
            WatchEnd::Failed(why) => {
                tracing::debug!(controller = %leader.address, "metadata stream ended: {why}");
                let pause = backoff.next_delay();
                tokio::select! {
                    _ = sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// Reads one metadata stream from `leader` into the cache until it ends.
async fn follow_metadata(
    broker: &Broker,
    leader: &LeaderInfo,
    epoch: u64,
    backoff: &mut Backoff,
) -> WatchEnd {
    let request = pb::WatchMetadataRequest {
        from_version: broker.metadata.version(),
        broker_id: broker.id(),
        broker_epoch: epoch,
    };
    let mut stream = match broker.calls.watch_metadata(&leader.address, request).await {
        Ok(stream) => stream,
        Err(status) if status.code() == tonic::Code::Unimplemented => return WatchEnd::Unsupported,
        Err(status) => {
            if let ControllerFailure::NotLeader { hint } = classify(&status) {
                broker.locator.on_not_leader(hint);
                return WatchEnd::Reconnect;
            }
            return WatchEnd::Failed(status.to_string());
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                backoff.reset();
                match message.event {
                    Some(pb::watch_metadata_response::Event::Image(image)) => {
                        broker
                            .metadata
                            .install(MetadataSnapshot::from_response(image));
                    }
                    Some(pb::watch_metadata_response::Event::Delta(delta)) => {
                        let applied = broker.metadata.apply_delta(&delta);
                        let gap = !applied && delta.version > broker.metadata.version();
                        if gap {
                            // The cache moved by another path meanwhile: start over from the
                            // version held.
                            return WatchEnd::Reconnect;
                        }
                    }
                    None => {}
                }
            }
            Ok(None) => return WatchEnd::Failed("the controller ended the stream".into()),
            Err(status) => {
                if let ControllerFailure::NotLeader { hint } = classify(&status) {
                    broker.locator.on_not_leader(hint);
                    return WatchEnd::Reconnect;
                }
                return WatchEnd::Failed(status.to_string());
            }
        }
    }
}

/// Resolves once the locator names another controller leader than `address`. Forgetting the
/// leader is not enough: the stream stays open until a better one is known, because its
/// closing tells the leader this broker died (it would fence it after a short grace).
async fn leader_moved(broker: &Broker, address: &str) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if broker
            .locator
            .cached()
            .is_some_and(|leader| leader.address != address)
        {
            return;
        }
    }
}

/// Turns `may_lead` off when the lease runs out without a renewal: the controllers may have
/// fenced this broker meanwhile (it is cut off from them, or was paused), and acting as leader
/// then would only time out clients or hand them to a deposed leader.
async fn watch_lease(broker: Arc<Broker>) {
    let mut until = broker.lease_until.subscribe();
    loop {
        let deadline = *until.borrow_and_update();
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = sleep_until(at) => {
                        if *broker.lease_until.borrow() == Some(at) && broker.may_lead() {
                            tracing::warn!(
                                "no heartbeat answered within the controllers' session timeout: \
                                 this broker may be fenced; it stops leading until a heartbeat \
                                 gets through"
                            );
                            broker.may_lead.send_replace(false);
                        }
                        if until.changed().await.is_err() {
                            return;
                        }
                    }
                    changed = until.changed() => if changed.is_err() { return },
                }
            }
            None => {
                if until.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

struct SessionLoop {
    broker: Arc<Broker>,
    stop: watch::Receiver<bool>,
    /// Paces registration retries.
    retry: Backoff,
    failures: Throttle,
}

impl SessionLoop {
    /// `future`, unless the broker is stopping first (then `None`).
    async fn or_stop<F: Future>(&mut self, future: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|stop| *stop) => None,
            out = future => Some(out),
        }
    }

    /// Registers with the leader, retrying until it works; returns the new epoch, or `None`
    /// when stopped first.
    async fn register(&mut self) -> Option<u64> {
        let broker = self.broker.clone();
        let (host, port) = broker.advertised.clone();
        let mut redirects = 0;
        loop {
            let leader = self.or_stop(broker.locator.leader()).await?;
            let request = pb::RegisterBrokerRequest {
                broker_id: broker.id(),
                host: host.clone(),
                port: u32::from(port),
                rack: broker.cfg.rack.clone(),
                incarnation_id: broker.incarnation_id,
                storage_id: broker.data.store.storage_id(),
            };
            let sent_at = Instant::now();
            let answer = self
                .or_stop(broker.calls.register(&leader.address, request))
                .await?;
            match answer {
                Ok(registered) => {
                    broker.renew_lease(sent_at, registered.session_timeout_ms);
                    broker.locator.on_heartbeat_success();
                    self.retry.reset();
                    self.failures.recovered("registration");
                    tracing::info!(
                        broker_id = broker.id(),
                        epoch = registered.broker_epoch,
                        controller = leader.id,
                        term = registered.term,
                        "registered with the controller leader"
                    );
                    broker.registered(registered.broker_epoch);
                    broker.set_serving(true).await;
                    if registered.metadata_version > broker.metadata.version() {
                        self.or_stop(refresh_metadata(&broker, &leader)).await?;
                    }
                    return Some(registered.broker_epoch);
                }
                Err(status) => {
                    if self.failed(&leader, &status, "RegisterBroker") && redirects < REDIRECTS_MAX
                    {
                        redirects += 1;
                        continue;
                    }
                    redirects = 0;
                    let pause = self.retry.next_delay();
                    self.or_stop(sleep(pause)).await?;
                }
            }
        }
    }

    /// Heartbeats with `epoch` until the controllers fence it (`Some`: register again) or
    /// the broker stops (`None`).
    async fn heartbeat(&mut self, epoch: u64) -> Option<()> {
        let broker = self.broker.clone();
        let interval = broker.cfg.heartbeat_interval;
        let mut next = Instant::now() + interval;
        let mut redirects = 0;
        loop {
            let woken = self
                .or_stop(async {
                    tokio::select! {
                        _ = sleep_until(next) => {}
                        _ = broker.wakeup.notified() => {}
                    }
                })
                .await;
            woken?;
            let leader = self.or_stop(broker.locator.leader()).await?;
            let request = pb::BrokerHeartbeatRequest {
                broker_id: broker.id(),
                broker_epoch: epoch,
                metadata_version: broker.metadata.version(),
                leaving: false,
            };
            let sent_at = Instant::now();
            let answer = self
                .or_stop(broker.calls.heartbeat(&leader.address, request))
                .await?;
            match answer {
                Ok(answer) => {
                    broker.locator.on_heartbeat_success();
                    broker
                        .locator
                        .learn_controllers(answer.controller_addresses.iter().cloned());
                    self.failures.recovered("heartbeat");
                    redirects = 0;
                    if answer.status != BrokerStatus::Fenced as i32 {
                        broker.renew_lease(sent_at, answer.session_timeout_ms);
                    }
                    match BrokerStatus::try_from(answer.status) {
                        Ok(BrokerStatus::Fenced) => {
                            broker.set_status(BrokerStatus::Fenced);
                            broker.set_serving(false).await;
                            return Some(());
                        }
                        Ok(status @ (BrokerStatus::Online | BrokerStatus::Offline)) => {
                            broker.set_status(status)
                        }
                        _ => tracing::warn!(
                            status = answer.status,
                            "heartbeat answer without a known status; ignoring it"
                        ),
                    }
                    if answer.metadata_version > broker.metadata.version() {
                        self.or_stop(refresh_metadata(&broker, &leader)).await?;
                    }
                    next = Instant::now() + interval;
                }
                Err(status) => {
                    let at_once = self.failed(&leader, &status, "BrokerHeartbeat");
                    next = if at_once && redirects < REDIRECTS_MAX {
                        redirects += 1;
                        Instant::now()
                    } else {
                        redirects = 0;
                        Instant::now() + broker.cfg.retry_pause()
                    };
                }
            }
        }
    }

    /// Applies the locator rules to a failed call; returns whether to try again at once: after
    /// a redirect, or when this failure made the locator forget the leader (discovery paces
    /// itself, so waiting another retry pause first would only delay finding the new leader).
    fn failed(&mut self, leader: &LeaderInfo, status: &Status, what: &str) -> bool {
        let failure = classify(status);
        self.failures.failed(what, leader, status);
        match failure {
            ControllerFailure::NotLeader { hint } => {
                self.broker.locator.on_not_leader(hint);
                true
            }
            ControllerFailure::Unavailable | ControllerFailure::Refused => {
                self.broker.locator.on_heartbeat_failure()
            }
        }
    }
}

/// Pulls the metadata from `leader` and swaps it in if newer. A failure is logged and left
/// for the next heartbeat, which will still see a newer version and try again.
async fn refresh_metadata(broker: &Broker, leader: &LeaderInfo) {
    match broker.calls.get_metadata(&leader.address).await {
        Ok(answer) => {
            let snapshot = MetadataSnapshot::from_response(answer);
            let version = snapshot.version();
            if broker.metadata.install(snapshot) {
                tracing::debug!(version, "metadata updated");
            } else {
                tracing::debug!(
                    version,
                    held = broker.metadata.version(),
                    "ignoring metadata no newer than the one held"
                );
            }
        }
        Err(status) => {
            if let ControllerFailure::NotLeader { hint } = classify(&status) {
                broker.locator.on_not_leader(hint);
            }
            tracing::warn!(
                controller = %leader.address,
                code = ?status.code(),
                error = %status.message(),
                "could not fetch metadata; retrying on the next heartbeat"
            );
        }
    }
}

/// Tells the controllers this broker is leaving (a heartbeat with `leaving = true`) so they
/// move leadership away at once rather than after the session timeout. Bounded by the
/// shutdown timeout; follows at most a few NOT_LEADER redirects; best effort.
async fn leave(broker: &Broker) {
    let session = broker.session();
    if session.epoch == 0 {
        return;
    }
    let request = pb::BrokerHeartbeatRequest {
        broker_id: broker.id(),
        broker_epoch: session.epoch,
        metadata_version: broker.metadata.version(),
        leaving: true,
    };
    let goodbye = async {
        let mut last = Status::unavailable("no attempt made");
        for _ in 0..=REDIRECTS_MAX {
            let leader = broker.locator.leader().await;
            match broker.calls.heartbeat(&leader.address, request).await {
                Ok(_) => return Ok(leader),
                Err(status) => match classify(&status) {
                    ControllerFailure::NotLeader { hint } => {
                        broker.locator.on_not_leader(hint);
                        last = status;
                    }
                    _ => return Err(status),
                },
            }
        }
        Err(last)
    };
    let bound = broker.cfg.shutdown_timeout;
    match tokio::time::timeout(bound, goodbye).await {
        Ok(Ok(leader)) => {
            tracing::info!(
                epoch = session.epoch,
                controller = leader.id,
                "told the controllers this broker is leaving"
            )
        }
        Ok(Err(status)) => tracing::warn!(
            code = ?status.code(),
            error = %status.message(),
            "could not tell the controllers this broker is leaving; they will notice after the session timeout"
        ),
        Err(_) => tracing::warn!(
            ?bound,
            "no controller leader answered the leaving heartbeat in time; the controllers will notice after the session timeout"
        ),
    }
}

/// Logs a streak of failed calls: the first one, then at most once per `every`, and the
/// recovery.
struct Throttle {
    every: Duration,
    streak: u64,
    last_warning: Option<Instant>,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            streak: 0,
            last_warning: None,
        }
    }

    fn failed(&mut self, what: &str, leader: &LeaderInfo, status: &Status) {
        self.streak += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= self.every)
        {
            self.last_warning = Some(now);
            tracing::warn!(
                call = what,
                controller = %leader.address,
                code = ?status.code(),
                error = %status.message(),
                failures = self.streak,
                "controller call failed; retrying"
            );
        } else {
            tracing::debug!(call = what, controller = %leader.address, code = ?status.code(), error = %status.message(), failures = self.streak, "controller call failed");
        }
    }

    fn recovered(&mut self, what: &str) {
        if self.streak > 0 {
            tracing::info!(
                call = what,
                failures = self.streak,
                "controller calls succeed again"
            );
        }
        self.streak = 0;
        self.last_warning = None;
    }
}
