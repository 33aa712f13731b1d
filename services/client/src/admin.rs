//! [`Admin`]: topics and cluster state, from the controller leader.
//!
//! Every call goes to the controller leader, found and cached by a [`LeaderLocator`]. A call is
//! tried until it succeeds, fails in a way retrying cannot fix, runs out of retries
//! ([`AdminOptions::retry`]) or reaches its deadline ([`AdminOptions::deadline`]), whichever
//! comes first:
//!
//! - NOT_LEADER (FAILED_PRECONDITION with `x-controller-leader`): the locator tries the named
//!   leader next, at once.
//! - UNAVAILABLE, a timeout or a connection failure: the cached leader is forgotten and
//!   rediscovered (every bootstrap controller is asked), after a backoff pause.
//! - RESOURCE_EXHAUSTED (CONTROLLER_OVERLOADED): retried at the same leader after a pause.
//! - Anything else (NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, …) is returned at once.
//!
//! Reads are linearizable (served by the leader after a ReadIndex barrier). Mutations are not
//! idempotent on the wire, so a retry after an unknown outcome (OUTCOME_UNKNOWN, a timeout, a
//! dropped connection, an UNAVAILABLE that does not say nothing was applied; see
//! [`ClientError::outcome_unknown`]) may find its own earlier attempt's effect:
//! [`Admin::create_topic`] then reports `AlreadyExists` saying so, and [`Admin::delete_topic`]
//! reports success (the topic is gone either way).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dmq_proto::v1 as pb;
use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_types::StatusExt;

use crate::discovery::{DiscoveryOptions, GrpcProbe, LeaderInfo, LeaderLocator};
use crate::{ClientError, RetryPolicy};

/// The most topics one `ListTopics` page asks for (the controller's maximum).
const LIST_PAGE_SIZE: u32 = 1000;

/// How patient an [`Admin`] is.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminOptions {
    /// How the controller leader is found. The default is quicker than the brokers' (call
    /// timeout 1 s, pauses 100 ms doubling to 1 s): a person is waiting.
    pub discovery: DiscoveryOptions,
    /// Bound on one attempt of a call (default 10 s).
    pub request_timeout: Duration,
    /// Bound on a whole call, discovery and retries included (default 30 s).
    pub deadline: Duration,
    /// Retries within the deadline (default: 10, pauses 50 ms doubling to 1 s).
    pub retry: RetryPolicy,
}

impl Default for AdminOptions {
    fn default() -> AdminOptions {
        AdminOptions {
            discovery: DiscoveryOptions {
                call_timeout: Duration::from_secs(1),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                ..DiscoveryOptions::default()
            },
            request_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// A client of the controllers' `ControllerService`. Cheap to clone; clones share the leader
/// cache and the connections.
#[derive(Clone, Debug)]
pub struct Admin {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    locator: LeaderLocator<GrpcProbe>,
    opts: AdminOptions,
}

/// A failed call and whether an earlier attempt of it may have taken effect.
struct Failed {
    error: ClientError,
    outcome_unknown: bool,
}

impl Admin {
    /// An admin for the controllers at `bootstrap` (`host:port` each; any subset of them is
    /// enough). No I/O: the leader is found on the first call. Fails only on a malformed or
    /// empty list.
    pub fn new(bootstrap: Vec<String>, opts: AdminOptions) -> Result<Admin, ClientError> {
        let locator = LeaderLocator::new(bootstrap, opts.discovery.clone())?;
        Ok(Admin {
            inner: Arc::new(Inner { locator, opts }),
        })
    }

    /// [`Admin::new`], then waits (up to [`AdminOptions::deadline`]) until a controller names
    /// a leader, so a wrong `--bootstrap` fails here with a clear message.
    pub async fn connect(bootstrap: Vec<String>, opts: AdminOptions) -> Result<Admin, ClientError> {
        let admin = Admin::new(bootstrap, opts)?;
        let deadline = admin.inner.opts.deadline;
        match tokio::time::timeout(deadline, admin.inner.locator.leader()).await {
            Ok(_) => Ok(admin),
            Err(_) => Err(admin.no_leader_error()),
        }
    }

    /// The configured controllers, deduplicated.
    pub fn controllers(&self) -> &[String] {
        self.inner.locator.controllers()
    }

    /// The controller leader as last learned, without asking anyone.
    pub fn cached_leader(&self) -> Option<LeaderInfo> {
        self.inner.locator.cached()
    }

    /// The options this admin was made with.
    pub fn options(&self) -> &AdminOptions {
        &self.inner.opts
    }

    /// Creates topic `name` with `partitions` partitions of `replication_factor` replicas each
    /// (zero fields of `config` mean the cluster defaults) and returns it with its assignment.
    ///
    /// `AlreadyExists` when the name is taken; if an earlier attempt of this very call had an
    /// unknown outcome the message says that it may have created the topic itself.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: pb::TopicConfig,
    ) -> Result<pb::TopicMetadata, ClientError> {
        let request = pb::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            config: Some(config),
        };
        match self
            .call(|mut client, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { client.create_topic(request).await }
            })
            .await
        {
            Ok(response) => response
                .topic
                .ok_or_else(|| missing("CreateTopic", "topic")),
            Err(Failed {
                error: ClientError::AlreadyExists { what },
                outcome_unknown: true,
            }) => Err(ClientError::AlreadyExists {
                what: format!(
                    "{what} (an earlier attempt of this call timed out or lost its connection \
                     and may have created it: describe the topic to check)"
                ),
            }),
            Err(failed) => Err(failed.error),
        }
    }

    /// Deletes topic `name` (its partitions' data goes from every broker); returns the
    /// metadata version of the deletion (0 when a retry found it already gone after an
    /// attempt with an unknown outcome).
    pub async fn delete_topic(&self, name: &str) -> Result<u64, ClientError> {
        let request = pb::DeleteTopicRequest {
            name: name.to_string(),
        };
        match self
            .call(|mut client, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { client.delete_topic(request).await }
            })
            .await
        {
            Ok(response) => Ok(response.metadata_version),
            Err(Failed {
                error: ClientError::NotFound { .. },
                outcome_unknown: true,
            }) => Ok(0),
            Err(failed) => Err(failed.error),
        }
    }

    /// Topic `name`: partitions with leader, leader epoch, replicas and ISR; its config.
    pub async fn describe_topic(&self, name: &str) -> Result<pb::TopicMetadata, ClientError> {
        let request = pb::DescribeTopicRequest {
            name: name.to_string(),
            allow_stale: false,
        };
        let response = self
            .call(|mut client, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { client.describe_topic(request).await }
            })
            .await
            .map_err(|f| f.error)?;
        response
            .topic
            .ok_or_else(|| missing("DescribeTopic", "topic"))
    }

    /// Every topic, in the controller's order, fetched page by page (each page is one call
    /// with its own retries; pages may come from different metadata versions).
    pub async fn list_topics(&self) -> Result<Vec<pb::TopicMetadata>, ClientError> {
        let mut topics = Vec::new();
        let mut token = String::new();
        loop {
            let request = pb::ListTopicsRequest {
                page_size: LIST_PAGE_SIZE,
                page_token: token.clone(),
                allow_stale: false,
            };
            let page = self
                .call(|mut client, timeout| {
                    let request = with_timeout(request.clone(), timeout);
                    async move { client.list_topics(request).await }
                })
                .await
                .map_err(|f| f.error)?;
            topics.extend(page.topics);
            if page.next_page_token.is_empty() {
                return Ok(topics);
            }
            if page.next_page_token == token {
                return Err(ClientError::Other(Status::internal(format!(
                    "ListTopics returned the page token {token:?} it was given; this is a \
                     controller bug"
                ))));
            }
            token = page.next_page_token;
        }
    }

    /// The controllers (roles, match indexes), the brokers (status, epoch) and the leader's
    /// term, commit index and metadata version.
    pub async fn describe_cluster(&self) -> Result<pb::DescribeClusterResponse, ClientError> {
        let d = self
            .call(|mut client, timeout| async move {
                client
                    .describe_cluster(with_timeout(
                        pb::DescribeClusterRequest { allow_stale: false },
                        timeout,
                    ))
                    .await
            })
            .await
            .map_err(|f| f.error)?;
        self.inner
            .locator
            .learn_controllers(d.controllers.iter().map(|c| c.address.clone()));
        Ok(d)
    }

    /// Adds a controller to the group (a learner first, promoted once caught up unless
    /// `learner_only`) and returns the members after it. Idempotent, so it is retried like a
    /// read. Give it a request timeout above `catch_up_timeout`.
    pub async fn add_controller(
        &self,
        request: pb::AddControllerRequest,
    ) -> Result<Vec<pb::ControllerNode>, ClientError> {
        self.call(|mut client, timeout| {
            let request = request.clone();
            async move { client.add_controller(with_timeout(request, timeout)).await }
        })
        .await
        .map(|r| r.controllers)
        .map_err(|f| f.error)
    }

    /// Removes a controller from the group (voter or learner; the leader hands leadership
    /// over first if it is the one removed) and returns the members after it. Idempotent.
    pub async fn remove_controller(
        &self,
        node_id: u64,
    ) -> Result<Vec<pb::ControllerNode>, ClientError> {
        self.call(|mut client, timeout| async move {
            client
                .remove_controller(with_timeout(
                    pb::RemoveControllerRequest { node_id },
                    timeout,
                ))
                .await
        })
        .await
        .map(|r| r.controllers)
        .map_err(|f| f.error)
    }

    /// Everything producers and consumers need: brokers and every topic's partitions, with
    /// the metadata version they were read at.
    pub async fn get_metadata(&self) -> Result<pb::GetMetadataResponse, ClientError> {
        self.call(|mut client, timeout| async move {
            client
                .get_metadata(with_timeout(
                    pb::GetMetadataRequest { allow_stale: false },
                    timeout,
                ))
                .await
        })
        .await
        .map_err(|f| f.error)
    }

    /// Opens the controller leader's metadata stream from `from_version` (see
    /// `WatchMetadata` in controller.proto). Only opening is bounded; the stream lasts until
    /// either side ends it.
    pub async fn watch_metadata(
        &self,
        from_version: u64,
    ) -> Result<tonic::Streaming<pb::WatchMetadataResponse>, ClientError> {
        self.call(|mut client, _timeout| async move {
            client
                .watch_metadata(pb::WatchMetadataRequest {
                    from_version,
                    broker_id: 0,
                    broker_epoch: 0,
                })
                .await
        })
        .await
        .map_err(|f| f.error)
    }

    /// What the controller at `address` (any controller, leader or not) says about itself:
    /// role, term, leader, commit and applied index. One attempt, bounded by
    /// [`AdminOptions::request_timeout`]; works without a leader.
    pub async fn controller_info(
        &self,
        address: &str,
    ) -> Result<pb::GetControllerInfoResponse, ClientError> {
        let timeout = self.inner.opts.request_timeout;
        let channel = self.inner.locator.probe().channels().get(address)?;
        let mut client = ControllerServiceClient::new(channel);
        let request = with_timeout(pb::GetControllerInfoRequest {}, timeout);
        match tokio::time::timeout(timeout, client.get_controller_info(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ClientError::from_controller_status(status, address)),
            Err(_) => Err(ClientError::Timeout {
                what: format!("controller {address} did not answer within {timeout:?}"),
            }),
        }
    }

    /// Runs `attempt` against the controller leader until it succeeds or the rules in the
    /// module documentation stop it. `attempt` gets a client and the time this attempt may
    /// take.
    async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, Failed>
    where
        F: FnMut(ControllerServiceClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let opts = &self.inner.opts;
        let locator = &self.inner.locator;
        let deadline = Instant::now() + opts.deadline;
        let mut backoff = opts.retry.backoff();
        let mut retries = 0u32;
        let mut outcome_unknown = false;
        let mut last: Option<ClientError> = None;
        loop {
            let fail = |error: Option<ClientError>, outcome_unknown| Failed {
                error: error.unwrap_or_else(|| self.no_leader_error()),
                outcome_unknown,
            };
            let Ok(leader) = tokio::time::timeout_at(deadline, locator.leader()).await else {
                return Err(fail(last, outcome_unknown));
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(fail(last, outcome_unknown));
            }
            let timeout = opts.request_timeout.min(remaining);
            let address = leader.address.as_str();
            let answer = match locator.probe().channels().get(address) {
                Ok(channel) => {
                    let client = ControllerServiceClient::new(channel);
                    tokio::time::timeout(timeout, attempt(client, timeout)).await
                }
                Err(e) => Ok(Err(Status::unavailable(e.to_string()))),
            };
            let error = match answer {
                Ok(Ok(response)) => {
                    locator.on_heartbeat_success();
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => {
                    let hint = controller_hint(&status);
                    let error = ClientError::from_controller_status(status, address);
                    if let ClientError::NotLeader { .. } = error {
                        let moved = hint.as_deref().is_some_and(|h| h != address);
                        tracing::debug!(%address, ?hint, "controller is not the leader");
                        locator.on_not_leader(hint);
                        if moved && retries < opts.retry.retries {
                            // A redirect to a named leader: go there at once.
                            retries += 1;
                            last = Some(error);
                            continue;
                        }
                    }
                    error
                }
                Err(_) => ClientError::Timeout {
                    what: format!("controller {address} did not answer within {timeout:?}"),
                },
            };
            if !error.is_retryable() {
                return Err(Failed {
                    error,
                    outcome_unknown,
                });
            }
            if error.outcome_unknown() {
                // Not a refusal: the leader may have applied the request.
                outcome_unknown = true;
            }
            if !matches!(
                error,
                ClientError::NotLeader { .. }
                    | ClientError::NoLeader { .. }
                    | ClientError::Overloaded { .. }
            ) {
                // The node asked may no longer lead: find the leader again.
                locator.invalidate();
            }
            tracing::debug!(%address, %error, retries, "controller call failed; retrying");
            if retries >= opts.retry.retries {
                return Err(Failed {
                    error,
                    outcome_unknown,
                });
            }
            retries += 1;
            let pause = backoff.next_delay();
            if Instant::now() + pause >= deadline {
                return Err(Failed {
                    error,
                    outcome_unknown,
                });
            }
            last = Some(error);
            tokio::time::sleep(pause).await;
        }
    }

    fn no_leader_error(&self) -> ClientError {
        ClientError::NoLeader {
            what: format!(
                "the controllers: none of {} named a leader within {:?} (check --bootstrap / \
                 DMQ_BOOTSTRAP and that the controllers run)",
                self.controllers().join(","),
                self.inner.opts.deadline
            ),
        }
    }
}

/// The leader a NOT_LEADER answer names: `x-controller-leader`, else the `ErrorInfo`'s
/// `leader_address` (set even when the address is not ASCII).
fn controller_hint(status: &Status) -> Option<String> {
    crate::discovery::leader_hint(status).or_else(|| {
        let info = status.get_details_error_info()?;
        let address = info.metadata.get("leader_address")?.trim();
        (!address.is_empty()).then(|| address.to_string())
    })
}

fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

fn missing(rpc: &str, field: &str) -> ClientError {
    ClientError::Other(Status::internal(format!(
        "{rpc} answered without its {field}; this is a controller bug"
    )))
}

#[cfg(test)]
mod tests;
