//! The harness's view of the cluster, from the client namespace: partition leaders (cached
//! from the controllers' `GetMetadata`, corrected by NOT_LEADER_FOR_PARTITION hints), the
//! controller leader, and each broker's `GetBrokerInfo`. Every call has a deadline.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dmq_client::discovery::{ChannelPool, DiscoveryOptions};
use dmq_client::{Admin, AdminOptions, RetryPolicy};
use dmq_proto::v1 as pb;
use dmq_proto::v1::broker_service_client::BrokerServiceClient;
use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::layout::{Layout, Node};

/// Bound on one call to a broker or controller made for the harness's own bookkeeping.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time between two metadata refreshes.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_millis(50);

/// Where a partition's requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub broker: u64,
    pub address: String,
    pub epoch: u64,
}

#[derive(Default)]
struct Cache {
    leaders: HashMap<u32, Leader>,
    brokers: HashMap<u64, String>,
    refreshed_at: Option<Instant>,
}

pub struct Meta {
    pub topic: String,
    admin: Admin,
    channels: ChannelPool,
    cache: Mutex<Cache>,
    refresh: tokio::sync::Mutex<()>,
    controllers: Vec<(u64, String)>,
}

fn broker_address(b: &pb::BrokerMetadata) -> String {
    dmq_client::broker_address(&b.host, b.port)
}

impl Meta {
    pub fn new(layout: &Layout, topic: &str) -> Meta {
        let opts = AdminOptions {
            discovery: DiscoveryOptions {
                call_timeout: Duration::from_millis(700),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_millis(500),
                ..DiscoveryOptions::default()
            },
            request_timeout: Duration::from_millis(1500),
            deadline: Duration::from_secs(4),
            retry: RetryPolicy {
                retries: 4,
                backoff_initial: Duration::from_millis(50),
                backoff_max: Duration::from_millis(500),
            },
        };
        let admin = Admin::new(layout.controller_addrs(), opts).expect("valid controller list");
        Meta {
            topic: topic.to_string(),
            admin,
            channels: ChannelPool::new(Duration::from_secs(1)),
            cache: Mutex::new(Cache::default()),
            refresh: tokio::sync::Mutex::new(()),
            controllers: (1..=layout.controllers)
                .map(|id| {
                    (
                        id,
                        Node::Controller(id).service_addr().expect("a controller"),
                    )
                })
                .collect(),
        }
    }

    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A channel to `address` (shared, reconnecting).
    pub fn channel(&self, address: &str) -> Channel {
        self.channels
            .get(address)
            .expect("addresses of this run are valid")
    }

    pub fn broker_client(&self, address: &str) -> BrokerServiceClient<Channel> {
        BrokerServiceClient::new(self.channel(address))
    }

    /// The topic's partitions and the brokers, read now from the controller leader.
    pub async fn metadata(&self) -> Result<pb::GetMetadataResponse, String> {
        self.admin.get_metadata().await.map_err(|e| e.to_string())
    }

    /// The topic in a fresh metadata read.
    pub async fn topic(&self) -> Result<(pb::GetMetadataResponse, pb::TopicMetadata), String> {
        let m = self.metadata().await?;
        let t = m
            .topics
            .iter()
            .find(|t| t.name == self.topic)
            .cloned()
            .ok_or_else(|| format!("topic {} is not in the metadata", self.topic))?;
        Ok((m, t))
    }

    /// Refreshes the cached leaders (single flight: callers that queue behind a refresh take
    /// its result).
    pub async fn refresh(&self) -> Result<(), String> {
        let _one = self.refresh.lock().await;
        if self
            .cache()
            .refreshed_at
            .is_some_and(|t| t.elapsed() < REFRESH_MIN_INTERVAL)
        {
            return Ok(());
        }
        let result = self.topic().await;
        let mut cache = self.cache();
        cache.refreshed_at = Some(Instant::now());
        let (m, t) = result?;
        cache.brokers = m
            .brokers
            .iter()
            .map(|b| (b.broker_id, broker_address(b)))
            .collect();
        for p in &t.partitions {
            let fresh = match cache.brokers.get(&p.leader) {
                Some(address) if p.leader != 0 => Leader {
                    broker: p.leader,
                    address: address.clone(),
                    epoch: p.leader_epoch,
                },
                _ => {
                    cache.leaders.remove(&p.partition);
                    continue;
                }
            };
            // A hint may already have told us of a newer leader than this read shows.
            let keep = cache
                .leaders
                .get(&p.partition)
                .is_some_and(|l| l.epoch > fresh.epoch);
            if !keep {
                cache.leaders.insert(p.partition, fresh);
            }
        }
        Ok(())
    }

    /// The leader of `partition`: cached, else after a refresh. `None` when there is none.
    pub async fn leader(&self, partition: u32) -> Option<Leader> {
        if let Some(l) = self.cache().leaders.get(&partition) {
            return Some(l.clone());
        }
        let _ = self.refresh().await;
        self.cache().leaders.get(&partition).cloned()
    }

    /// Forgets `partition`'s leader (it failed us).
    pub fn invalidate(&self, partition: u32, broker: u64) {
        let mut cache = self.cache();
        if cache
            .leaders
            .get(&partition)
            .is_some_and(|l| l.broker == broker)
        {
            cache.leaders.remove(&partition);
        }
    }

    /// A NOT_LEADER_FOR_PARTITION hint: `(leader id, address, epoch)`.
    pub fn on_hint(&self, partition: u32, from: u64, hint: (u64, Option<String>, u64)) {
        let (id, address, epoch) = hint;
        let mut cache = self.cache();
        let address = address.or_else(|| cache.brokers.get(&id).cloned());
        match address {
            Some(address) if id != 0 && id != from => {
                let older = cache
                    .leaders
                    .get(&partition)
                    .is_some_and(|l| l.epoch > epoch);
                if !older {
                    cache.leaders.insert(
                        partition,
                        Leader {
                            broker: id,
                            address,
                            epoch,
                        },
                    );
                }
            }
            _ => {
                if cache
                    .leaders
                    .get(&partition)
                    .is_some_and(|l| l.broker == from)
                {
                    cache.leaders.remove(&partition);
                }
            }
        }
    }

    /// The leader of `partition` in a fresh metadata read (0: none).
    pub async fn partition_leader_now(&self, partition: u32) -> Result<u64, String> {
        let (_, t) = self.topic().await?;
        let p = t
            .partitions
            .get(partition as usize)
            .ok_or_else(|| format!("no partition {partition}"))?;
        if p.leader == 0 {
            return Err(format!("partition {partition} has no leader"));
        }
        Ok(p.leader)
    }

    /// GetControllerInfo of every controller, concurrently; failures are left out.
    pub async fn controller_infos(&self) -> Vec<(u64, pb::GetControllerInfoResponse)> {
        let calls = self.controllers.iter().map(|(id, address)| {
            let mut client = ControllerServiceClient::new(self.channel(address));
            async move {
                let r = tokio::time::timeout(
                    CALL_TIMEOUT,
                    client.get_controller_info(pb::GetControllerInfoRequest {}),
                )
                .await;
                match r {
                    Ok(Ok(resp)) => Some((*id, resp.into_inner())),
                    _ => None,
                }
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The controller that says it leads at the highest term.
    pub async fn controller_leader(&self) -> Result<u64, String> {
        let infos = self.controller_infos().await;
        infos
            .iter()
            .filter(|(_, i)| i.role() == pb::ControllerRole::Leader)
            .max_by_key(|(_, i)| i.term)
            .map(|(id, _)| *id)
            .ok_or_else(|| {
                format!(
                    "no controller says it leads (answers: {:?})",
                    infos
                        .iter()
                        .map(|(id, i)| (id, i.role(), i.term, i.leader_id))
                        .collect::<Vec<_>>()
                )
            })
    }

    /// GetBrokerInfo of broker `id`.
    pub async fn broker_info(&self, id: u64) -> Result<pb::GetBrokerInfoResponse, String> {
        let address = Node::Broker(id).service_addr().expect("a broker");
        let mut client = self.broker_client(&address);
        match tokio::time::timeout(
            CALL_TIMEOUT,
            client.get_broker_info(pb::GetBrokerInfoRequest {}),
        )
        .await
        {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(format!("broker {id}: {:?}: {}", s.code(), s.message())),
            Err(_) => Err(format!("broker {id}: no answer within {CALL_TIMEOUT:?}")),
        }
    }
}
