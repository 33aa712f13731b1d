//! The workload: producers writing unique values with acks=all, one record per raw
//! `BrokerService/Produce`, and consumers long-polling `Fetch` from each partition's leader.
//! Both follow leader hints and the controllers' metadata; every request has a deadline.
//!
//! A producer's value `n` is `p<producer>-<n>`; producer `k` writes to partition `k %
//! partitions` only, so a partition that cannot take writes stalls its own producers and no
//! other partition's (with the default 6 producers and 3 partitions, two per partition, so
//! ORDER compares values of two writers). After an Acked or a Refused answer it moves on to a new value (a refused value
//! is never sent again, so its appearance anywhere is a PHANTOM); after an Unknown it retries
//! the same value, at most [`WorkloadOpts::attempts_per_value`] attempts in all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dmq_proto::v1 as pb;
use tokio::sync::watch;
use tonic::{Code, Request};

use super::classify::{Class, classify, leader_hint};
use super::history::{Attempt, Clock, ConsumedRead, Outcome, value_text};
use super::meta::Meta;

#[derive(Clone, Debug)]
pub struct WorkloadOpts {
    pub producers: u32,
    pub partitions: u32,
    /// Client deadline of one Produce.
    pub produce_deadline: Duration,
    /// The `timeout_ms` a Produce asks the broker to wait for the ISR (below the deadline, so
    /// the broker usually answers before the client gives up).
    pub produce_server_timeout_ms: u32,
    pub attempts_per_value: u32,
    /// Long-poll wait of a consumer's Fetch.
    pub fetch_wait_ms: u32,
    /// A producer's pause between two values (0: none).
    pub pause_between_values: Duration,
}

impl Default for WorkloadOpts {
    fn default() -> WorkloadOpts {
        WorkloadOpts {
            producers: 6,
            partitions: 3,
            produce_deadline: Duration::from_secs(3),
            produce_server_timeout_ms: 2_000,
            attempts_per_value: 3,
            fetch_wait_ms: 500,
            pause_between_values: Duration::ZERO,
        }
    }
}

/// Live counters for progress lines.
#[derive(Debug, Default)]
pub struct Stats {
    pub acked: AtomicU64,
    pub refused: AtomicU64,
    pub unknown: AtomicU64,
    pub reads: AtomicU64,
}

impl Stats {
    pub fn line(&self) -> String {
        format!(
            "acked {}, refused {}, unknown {}, consumed {}",
            self.acked.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.unknown.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed)
        )
    }
}

/// Sleeps `d`, or less if `stop` turns true; returns whether it did.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// One producer until `stop`; returns its attempts.
pub async fn produce(
    id: u32,
    opts: WorkloadOpts,
    meta: Arc<Meta>,
    clock: Clock,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let partition = id % opts.partitions;
    let mut n: u64 = 0;
    'values: while !*stop.borrow() {
        n += 1;
        let value = format!("p{id}-{n}");
        let mut attempt = 0;
        while attempt < opts.attempts_per_value {
            if *stop.borrow() {
                break 'values;
            }
            let Some(leader) = meta.leader(partition).await else {
                // Nothing was sent: no attempt to record.
                if pause(&mut stop, Duration::from_millis(100)).await {
                    break 'values;
                }
                continue;
            };
            attempt += 1;
            let mut request = Request::new(pb::ProduceRequest {
                topic: meta.topic.clone(),
                partition,
                acks: pb::Acks::All as i32,
                records: vec![pb::Record {
                    value: value.clone().into_bytes(),
                    ..pb::Record::default()
                }],
                timeout_ms: opts.produce_server_timeout_ms,
            });
            request.set_timeout(opts.produce_deadline);
            let mut client = meta.broker_client(&leader.address);
            let sent_at = clock.now();
            let answer =
                match tokio::time::timeout(opts.produce_deadline, client.produce(request)).await {
                    Ok(Ok(r)) => Ok(r.into_inner()),
                    Ok(Err(status)) => Err(Some(status)),
                    Err(_) => Err(None),
                };
            let done_at = clock.now();
            let class = classify(&answer);
            let outcome = match &class {
                Class::Acked { offset } => Outcome::Acked {
                    offset: *offset,
                    acked_at: done_at,
                },
                Class::Refused { reason } => Outcome::Refused {
                    reason: reason.clone(),
                },
                Class::Unknown { what } => Outcome::Unknown { what: what.clone() },
            };
            attempts.push(Attempt {
                value: value.clone(),
                partition,
                producer: id,
                attempt,
                broker: leader.broker,
                sent_at,
                done_at,
                outcome,
            });
            let hint = match &answer {
                Err(Some(status)) => leader_hint(status),
                _ => None,
            };
            match class {
                Class::Acked { .. } => {
                    stats.acked.fetch_add(1, Ordering::Relaxed);
                    if !opts.pause_between_values.is_zero()
                        && pause(&mut stop, opts.pause_between_values).await
                    {
                        break 'values;
                    }
                    continue 'values;
                }
                Class::Refused { reason } => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    let wait = match hint {
                        Some(h) => {
                            let useful = h.0 != 0 && h.0 != leader.broker;
                            meta.on_hint(partition, leader.broker, h);
                            if useful { 0 } else { 100 }
                        }
                        None if reason == "NOT_ENOUGH_REPLICAS" || reason == "NOT_READY" => 100,
                        None => 200,
                    };
                    if wait > 0 && pause(&mut stop, Duration::from_millis(wait)).await {
                        break 'values;
                    }
                    continue 'values;
                }
                Class::Unknown { .. } => {
                    stats.unknown.fetch_add(1, Ordering::Relaxed);
                    match hint {
                        Some(h) => meta.on_hint(partition, leader.broker, h),
                        None => meta.invalidate(partition, leader.broker),
                    }
                    if pause(&mut stop, Duration::from_millis(100)).await {
                        break 'values;
                    }
                }
            }
        }
    }
    attempts
}

/// One consumer of `partition` from offset 0 until `stop`; returns every record it read.
pub async fn consume(
    partition: u32,
    opts: WorkloadOpts,
    meta: Arc<Meta>,
    clock: Clock,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> (Vec<ConsumedRead>, ConsumerNotes) {
    let mut reads = Vec::new();
    let mut notes = ConsumerNotes::default();
    let mut position = 0u64;
    let deadline = Duration::from_millis(u64::from(opts.fetch_wait_ms)) + Duration::from_secs(2);
    while !*stop.borrow() {
        let Some(leader) = meta.leader(partition).await else {
            if pause(&mut stop, Duration::from_millis(100)).await {
                break;
            }
            continue;
        };
        let mut request = Request::new(pb::FetchRequest {
            topic: meta.topic.clone(),
            partition,
            offset: position,
            max_bytes: 256 * 1024,
            max_wait_ms: opts.fetch_wait_ms,
            raw_batches: false,
        });
        request.set_timeout(deadline);
        let mut client = meta.broker_client(&leader.address);
        let answer = tokio::select! {
            r = tokio::time::timeout(deadline, client.fetch(request)) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        match answer {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                let read_at = clock.now();
                for rec in &r.records {
                    reads.push(ConsumedRead {
                        partition,
                        offset: rec.offset,
                        value: value_text(&rec.value),
                        high_watermark: r.high_watermark,
                        broker: leader.broker,
                        read_at,
                    });
                }
                stats
                    .reads
                    .fetch_add(r.records.len() as u64, Ordering::Relaxed);
                if let Some(last) = r.records.last() {
                    position = position.max(last.offset + 1);
                }
            }
            Ok(Err(status)) => {
                if let Some(h) = leader_hint(&status) {
                    meta.on_hint(partition, leader.broker, h);
                } else {
                    meta.invalidate(partition, leader.broker);
                }
                if status.code() == Code::OutOfRange {
                    notes.out_of_range += 1;
                    if notes.first_out_of_range.is_none() {
                        notes.first_out_of_range = Some(format!(
                            "{:.3}s broker {}: {}",
                            super::history::secs(clock.now()),
                            leader.broker,
                            status.message()
                        ));
                    }
                }
                notes.errors += 1;
                if pause(&mut stop, Duration::from_millis(100)).await {
                    break;
                }
            }
            Err(_) => {
                notes.errors += 1;
                meta.invalidate(partition, leader.broker);
            }
        }
    }
    (reads, notes)
}

/// What a consumer noticed besides records.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConsumerNotes {
    pub errors: u64,
    /// OUT_OF_RANGE answers at a position the consumer had reached by reading committed
    /// records: the leader's log is shorter than what was committed before.
    pub out_of_range: u64,
    pub first_out_of_range: Option<String>,
}
