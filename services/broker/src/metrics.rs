//! The broker's data-plane Prometheus metrics, named here once. The binary installs a recorder
//! (`dmq broker --admin-listen`); without one these calls cost next to nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `dmq_produce_requests_total` | counter | `acks` (none, leader, all), `outcome` (ok or the error label) |
//! | `dmq_produce_records_total`, `dmq_produce_bytes_total` | counter | — (bytes in: encoded records appended) |
//! | `dmq_produce_latency_seconds` | histogram | `acks` |
//! | `dmq_fetch_requests_total` | counter | `kind` (fetch, consume, replica, list_offsets), `outcome` |
//! | `dmq_fetch_records_total`, `dmq_fetch_bytes_total` | counter | `kind` (bytes out) |
//! | `dmq_fetch_latency_seconds` | histogram | `kind` (long polls included) |
//! | `dmq_log_syncs_total`, `dmq_log_sync_waiters_total`, `dmq_log_sync_seconds` | counter, counter, histogram | — (group commit) |
//! | `dmq_partition_log_end_offset`, `dmq_partition_high_watermark`, `dmq_partition_log_start_offset`, `dmq_partition_isr_size` | gauge | `topic`, `partition` (ISR size on leaders only) |
//! | `dmq_partitions_leader`, `dmq_partitions_follower` | gauge | — |
//! | `dmq_under_replicated_partitions` | gauge | — (led here with ISR smaller than replicas) |
//! | `dmq_isr_changes_total` | counter | `change` (shrink, expand), `outcome` |

use std::time::Duration;

use metrics::{counter, gauge, histogram};

pub(crate) fn produce(acks: &'static str, outcome: &'static str, took: Duration) {
    counter!("dmq_produce_requests_total", "acks" => acks, "outcome" => outcome).increment(1);
    histogram!("dmq_produce_latency_seconds", "acks" => acks).record(took.as_secs_f64());
}

pub(crate) fn produced(records: usize, bytes: usize) {
    counter!("dmq_produce_records_total").increment(records as u64);
    counter!("dmq_produce_bytes_total").increment(bytes as u64);
}

pub(crate) fn fetch(kind: &'static str, outcome: &'static str, took: Duration) {
    counter!("dmq_fetch_requests_total", "kind" => kind, "outcome" => outcome).increment(1);
    histogram!("dmq_fetch_latency_seconds", "kind" => kind).record(took.as_secs_f64());
}

pub(crate) fn fetched(kind: &'static str, records: usize, bytes: usize) {
    counter!("dmq_fetch_records_total", "kind" => kind).increment(records as u64);
    counter!("dmq_fetch_bytes_total", "kind" => kind).increment(bytes as u64);
}

pub(crate) fn log_synced(waiters: usize, took: Duration) {
    counter!("dmq_log_syncs_total").increment(1);
    counter!("dmq_log_sync_waiters_total").increment(waiters as u64);
    histogram!("dmq_log_sync_seconds").record(took.as_secs_f64());
}

pub(crate) fn isr_change(change: &'static str, outcome: &'static str) {
    counter!("dmq_isr_changes_total", "change" => change, "outcome" => outcome).increment(1);
}

/// One partition's offsets; `isr_size` only where this broker leads.
pub(crate) fn partition(
    topic: &str,
    partition: u32,
    log_start: u64,
    log_end: u64,
    high_watermark: u64,
    isr_size: Option<usize>,
) {
    let labels = [
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ];
    gauge!("dmq_partition_log_start_offset", &labels).set(log_start as f64);
    gauge!("dmq_partition_log_end_offset", &labels).set(log_end as f64);
    gauge!("dmq_partition_high_watermark", &labels).set(high_watermark as f64);
    if let Some(isr) = isr_size {
        gauge!("dmq_partition_isr_size", &labels).set(isr as f64);
    }
}

pub(crate) fn partition_counts(leaders: usize, followers: usize, under_replicated: usize) {
    gauge!("dmq_partitions_leader").set(leaders as f64);
    gauge!("dmq_partitions_follower").set(followers as f64);
    gauge!("dmq_under_replicated_partitions").set(under_replicated as f64);
}

/// Bytes of the memory budget not held by requests in flight.
pub(crate) fn memory_budget_available(bytes: usize) {
    gauge!("dmq_memory_budget_available_bytes").set(bytes as f64);
}
