//! `dmq bench log-open`: how long a broker's partition logs take to open at start-up, as a
//! function of how much they hold (issue 11: a broker with 10 GB of logs starts in under 2 s).
//!
//! It fills a log store (the broker's own code, no network) with `--log-gib` of 1 KiB records in
//! the default 16 KiB batches over `--partitions` partitions, commits all but the last
//! `--tail-mib` of each (the data a crash finds past the last high-watermark checkpoint, which
//! open must CRC-check), closes it, drops the page cache if it can (root), and times what a
//! broker does at start: open the store and every partition in it.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use dmq_broker::log::batch_v2::{self, NewRecord, ProducerFields};
use dmq_broker::log::{LogStore, LogStoreConfig};
use serde::Serialize;

#[derive(clap::Args, Clone, Debug)]
pub struct LogOpenArgs {
    /// Record data to write in all, in GiB.
    #[arg(long, default_value_t = 10.0)]
    pub log_gib: f64,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub partitions: u32,
    /// MiB per partition written after its last high-watermark checkpoint.
    #[arg(long, default_value_t = 16)]
    pub tail_mib: u64,
    /// Where to build the store (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct LogOpenReport {
    pub partitions: u32,
    pub bytes: u64,
    pub segments: usize,
    pub fill_seconds: f64,
    pub page_cache_dropped: bool,
    /// Opening the store and every partition in it, as a broker does at start.
    pub open_ms: f64,
    pub rss_after_open_mib: u64,
}

/// 16 records of 1 KiB: one batch of the default target size.
fn template_batch() -> Vec<u8> {
    let value = Bytes::from(vec![b'x'; 1000]);
    let records: Vec<NewRecord> = (0..16)
        .map(|i| NewRecord {
            timestamp_ms: 1_700_000_000_000 + i,
            key: None,
            value: Some(value.clone()),
            headers: vec![],
        })
        .collect();
    batch_v2::encode(0, 1, ProducerFields::NONE, &records).expect("encodes")
}

pub async fn run(args: LogOpenArgs) -> Result<(), String> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .map_err(|e| format!("the benchmark task failed: {e}"))?
}

fn run_blocking(args: LogOpenArgs) -> Result<(), String> {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
            temp.path().to_path_buf()
        }
    };
    let err = |e: dmq_broker::log::LogError| e.to_string();
    let template = template_batch();
    let per_partition = (args.log_gib * (1u64 << 30) as f64) as u64 / u64::from(args.partitions);
    let batches_per_partition = per_partition / template.len() as u64;
    let tail_batches = (args.tail_mib << 20) / template.len() as u64;
    let started = Instant::now();
    let mut bytes = 0;
    let mut segments = 0;
    {
        let store = LogStore::open_with(&dir, LogStoreConfig::default()).map_err(err)?;
        for p in 0..args.partitions {
            let log = store.partition("bench", 1, p).map_err(err)?;
            let mut batch = template.clone();
            let committed = batches_per_partition.saturating_sub(tail_batches);
            for i in 0..batches_per_partition {
                batch_v2::set_base_offset(&mut batch, (i * 16) as i64);
                log.append_replica_encoded(&batch).map_err(err)?;
                if i + 1 == committed {
                    store.sync().map_err(err)?;
                    log.set_high_watermark(log.log_end_offset()).map_err(err)?;
                }
            }
            store.sync().map_err(err)?;
            bytes += log.size_bytes();
            segments += log.segments().len();
        }
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let page_cache_dropped = std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok();
    let started = Instant::now();
    let store = LogStore::open_with(&dir, LogStoreConfig::default()).map_err(err)?;
    for id in store.stored_partitions().map_err(err)? {
        store
            .partition(&id.topic, id.topic_id, id.partition)
            .map_err(err)?;
    }
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    let report = LogOpenReport {
        partitions: args.partitions,
        bytes,
        segments,
        fill_seconds,
        page_cache_dropped,
        open_ms,
        rss_after_open_mib: super::data::rss_kib(std::process::id()).unwrap_or(0) / 1024,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "log-open: {} partitions, {:.2} GiB in {} segments ({} MiB each past its checkpoint), \
             filled in {:.1} s; opened in {:.0} ms, {:.2}% of the fill time (page cache \
             dropped: {}), RSS after open {} MiB",
            report.partitions,
            report.bytes as f64 / (1u64 << 30) as f64,
            report.segments,
            args.tail_mib,
            report.fill_seconds,
            report.open_ms,
            report.open_ms / 10.0 / report.fill_seconds,
            if report.page_cache_dropped {
                "yes"
            } else {
                "no, not root"
            },
            report.rss_after_open_mib
        );
    }
    Ok(())
}
