//! One data-plane call to a partition leader, retried across leader changes.
//!
//! The producer's Produce and the consumer's Fetch and ListOffsets all follow the same rules:
//!
//! | answer | reaction |
//! |---|---|
//! | OK | done |
//! | NOT_LEADER_FOR_PARTITION naming a newer leader elsewhere | cache the hint, retry there at once |
//! | NOT_LEADER without a usable hint, no leader, UNAVAILABLE, timeout, connection failure | pause, refresh the metadata, retry |
//! | NOT_ENOUGH_REPLICAS | pause, retry (the leader has not changed) |
//! | NOT_FOUND from the broker | pause, refresh: gone from the metadata -> NOT_FOUND, else the broker lags; retry |
//! | an unknown outcome of a Produce (an after-append reason, a timeout, a transport error) | with `retry_unknown`: pause, refresh (following a leader hint), retry; else return [`ClientError::OutcomeUnknown`] |
//! | anything else (OFFSET_OUT_OF_RANGE, INVALID_ARGUMENT, too large, INTERNAL, …) | return it |
//!
//! Every retry, redirects included, counts against [`RetryPolicy::retries`]; pauses follow its
//! backoff. When the retries run out the last error is returned — for a Produce of which some
//! attempt had an unknown outcome, as [`ClientError::OutcomeUnknown`] whatever the last
//! attempt said: an earlier attempt may have appended the records.

use std::future::Future;
use std::time::Duration;

use dmq_proto::v1::broker_service_client::BrokerServiceClient;
use tonic::Status;
use tonic::transport::Channel;

use crate::error::produce_outcome_unknown;
use crate::partition_hint::partition_leader_hint;
use crate::{ClientError, MetadataView, RetryPolicy};

/// What a call is about, for routing and for its errors.
pub(crate) struct Target<'a> {
    pub topic: &'a str,
    pub partition: u32,
    /// The offset a fetch asks for (0 otherwise), for `OffsetOutOfRange`.
    pub offset: u64,
    /// `Some(retry_unknown)` for a Produce: whether an attempt with an unknown outcome is
    /// retried (possibly duplicating it). `None` for reads.
    pub produce: Option<bool>,
}

/// What to do before the next attempt.
enum Next {
    Now,
    Pause { refresh: bool },
}

/// Runs `attempt` (given a client of the current leader and the time the attempt may take)
/// until it succeeds or the rules above stop it.
pub(crate) async fn call_partition_leader<T, F, Fut>(
    metadata: &MetadataView,
    target: Target<'_>,
    retry: &RetryPolicy,
    timeout: Duration,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut(BrokerServiceClient<Channel>, Duration) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let Target {
        topic,
        partition,
        offset,
        produce,
    } = target;
    let mut backoff = retry.backoff();
    let mut retries = 0u32;
    // The first attempt whose outcome was unknown, if any.
    let mut maybe_applied: Option<ClientError> = None;
    let unknown = |first: &ClientError, last: &ClientError| ClientError::OutcomeUnknown {
        message: format!("an attempt ended with an unknown outcome ({first}); then: {last}"),
    };
    loop {
        let (error, next) = match metadata.leader(topic, partition).await {
            Err(error) if error.is_retryable() => (error, Next::Pause { refresh: true }),
            Err(error) => return Err(error),
            Ok(leader) => {
                let address = leader.address.as_str();
                let client = BrokerServiceClient::new(metadata.channel(address)?);
                match tokio::time::timeout(timeout, attempt(client, timeout)).await {
                    Ok(Ok(response)) => return Ok(response.into_inner()),
                    Ok(Err(status)) => {
                        let hint = partition_leader_hint(&status);
                        let unknown_outcome = produce.is_some() && produce_outcome_unknown(&status);
                        let error = ClientError::from_broker_status(
                            status, address, topic, partition, offset,
                        );
                        if unknown_outcome {
                            maybe_applied.get_or_insert_with(|| error.clone());
                            if produce == Some(false) {
                                return Err(match error {
                                    e @ ClientError::OutcomeUnknown { .. } => e,
                                    e => ClientError::OutcomeUnknown {
                                        message: e.to_string(),
                                    },
                                });
                            }
                        }
                        let next = match &error {
                            ClientError::OutcomeUnknown { .. } => {
                                // A leader change after the append names the new leader.
                                metadata.on_not_leader(topic, partition, address, hint.as_ref());
                                Next::Pause { refresh: true }
                            }
                            ClientError::NotLeader { .. } => {
                                if metadata.on_not_leader(topic, partition, address, hint.as_ref())
                                {
                                    Next::Now
                                } else {
                                    Next::Pause { refresh: true }
                                }
                            }
                            ClientError::NotEnoughReplicas { .. } => Next::Pause { refresh: false },
                            ClientError::NotFound { .. } => Next::Pause { refresh: true },
                            e if e.is_retryable() => Next::Pause { refresh: true },
                            _ => {
                                return Err(match &maybe_applied {
                                    Some(first) => unknown(first, &error),
                                    None => error,
                                });
                            }
                        };
                        (error, next)
                    }
                    Err(_) => {
                        let error = ClientError::Timeout {
                            what: format!(
                                "broker {address} did not answer for {topic}-{partition} within \
                                 {timeout:?}"
                            ),
                        };
                        if produce.is_some() {
                            maybe_applied.get_or_insert_with(|| error.clone());
                            if produce == Some(false) {
                                return Err(ClientError::OutcomeUnknown {
                                    message: error.to_string(),
                                });
                            }
                        }
                        (error, Next::Pause { refresh: true })
                    }
                }
            }
        };
        if retries >= retry.retries {
            return Err(match &maybe_applied {
                Some(first) if !matches!(error, ClientError::OutcomeUnknown { .. }) => {
                    unknown(first, &error)
                }
                _ => error,
            });
        }
        retries += 1;
        tracing::debug!(%topic, partition, %error, retries, "partition call failed; retrying");
        if let Next::Pause { refresh } = next {
            tokio::time::sleep(backoff.next_delay()).await;
            if refresh && let Err(e) = metadata.refresh().await {
                tracing::debug!(error = %e, "metadata refresh failed; retrying with the cache");
            }
        }
    }
}
