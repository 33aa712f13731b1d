//! `dmq produce -t TOPIC`: one record per stdin line, batched by the [`Producer`].
//!
//! Records are pipelined: a line is queued as soon as it is read, and a collector task awaits
//! the deliveries in input order (printing offsets with `--print-offsets`, counting and
//! reporting failures). At the end of input (or on Ctrl-C) everything queued is delivered, a
//! summary goes to stderr, and the exit status is 1 if any record failed.

use std::io::Write;
use std::time::Duration;

use clap::{Args, ValueEnum};
use dmq_client::{
    Acks, ClientError, DeliveryFuture, MetadataOptions, MetadataView, Producer, ProducerConfig,
    Record, RecordMetadata,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::client_error::ErrorContext;
use crate::client_opts::ClientOpts;
use crate::error::CliError;
use crate::output::OutputFormat;
use crate::record_format::{split_key, trim_line_ending, unescape_str};
use crate::signal::ShutdownSignals;

/// Failed records reported one by one on stderr; beyond that only counted.
const REPORTED_FAILURES_MAX: u64 = 10;

/// `--acks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Every in-sync replica holds the record (at least min.insync.replicas of them).
    All,
    /// The partition leader holds the record.
    #[value(name = "1")]
    Leader,
    /// Do not wait for the broker to write anything (no offsets are known).
    #[value(name = "0")]
    None,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Acks {
        match a {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
            AcksArg::None => Acks::None,
        }
    }
}

/// `dmq produce`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Examples:\n  seq 1 100 | dmq produce -t events\n  printf 'user-1:hello\\n' \
                        | dmq produce -t events -k : --print-offsets"
)]
pub struct ProduceArgs {
    /// The topic to produce to.
    #[arg(short, long)]
    pub topic: String,
    /// Put every record on this partition (default: by key hash; keyless records round-robin).
    #[arg(short, long)]
    pub partition: Option<u32>,
    /// Each line is KEY SEP VALUE, split at the first SEP (escapes like \t allowed); a line
    /// without SEP is a value without key.
    #[arg(short = 'k', long, value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: Option<Separator>,
    /// Replicas that must hold a record before it counts as delivered.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// How long a batch waits for more records, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Print each record's partition and offset on stdout, in input order (tab-separated;
    /// one JSON object per line with -o json; offset "-" / null with --acks 0).
    #[arg(long)]
    pub print_offsets: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// A `--key-separator`: its bytes, escapes replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Separator(pub Vec<u8>);

fn parse_separator(s: &str) -> Result<Separator, String> {
    let sep = unescape_str(s);
    if sep.is_empty() {
        Err("the key separator cannot be empty".into())
    } else {
        Ok(Separator(sep))
    }
}

/// A queued record, or one that failed before it could be queued.
/// Deliveries waiting to be collected, at most.
const DELIVERIES_QUEUED_MAX: usize = 65_536;

enum Item {
    Queued(u64, DeliveryFuture),
    Failed(u64, ClientError),
}

/// What the collector counted.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    failed: u64,
    first_error: Option<ClientError>,
    /// Writing offsets to stdout failed (other than a closed pipe).
    stdout_error: Option<String>,
}

pub async fn run(args: ProduceArgs) -> Result<(), CliError> {
    let mut ctx = args.client.context().with_topic(&args.topic);
    let mut signals = ShutdownSignals::install()
        .map_err(|e| CliError::Runtime(format!("cannot install signal handlers: {e}")))?;
    let (admin, probes) = args.client.connect().await?;
    ctx.learn_controllers(probes.iter().filter_map(|p| p.leader().map(|(_, a)| a)));
    let metadata = MetadataView::new(
        admin,
        MetadataOptions {
            refresh_timeout: args.client.timeout(),
            ..MetadataOptions::default()
        },
    );
    // An unknown topic or partition fails here, once, instead of once per line.
    let partitions = metadata
        .partition_count(&args.topic)
        .await
        .map_err(|e| ctx.error(&e))?;
    if let Some(p) = args.partition
        && p >= partitions
    {
        return Err(ctx.error(&ClientError::NotFound {
            what: format!(
                "partition {p} of topic \"{}\" (it has {partitions} partitions)",
                args.topic
            ),
        }));
    }
    let config = ProducerConfig {
        acks: args.acks.into(),
        linger: Duration::from_millis(args.linger_ms),
        request_timeout: args.client.timeout(),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(metadata, config).map_err(|e| ctx.error(&e))?;

    // Bounded: when deliveries are collected slower than lines are read, reading waits.
    let (tx, rx) = mpsc::channel(DELIVERIES_QUEUED_MAX);
    let collector = tokio::spawn(collect(
        rx,
        args.print_offsets.then_some(args.client.output),
        ctx.clone(),
    ));
    let fatal = read_and_send(&args, &producer, &tx, &mut signals, &ctx).await;
    drop(tx);
    tokio::select! {
        () = producer.close() => {}
        s = signals.recv() => {
            return Err(CliError::Runtime(format!(
                "{s} while delivering the queued records: some may not have been delivered"
            )));
        }
    }
    let tally = collector
        .await
        .map_err(|e| CliError::Runtime(format!("the delivery collector failed: {e}")))?;
    eprintln!("{}", summary(&tally, &args.topic));
    if let Some(e) = fatal {
        return Err(e);
    }
    if let Some(e) = tally.stdout_error {
        return Err(CliError::Runtime(e));
    }
    if tally.failed > 0 {
        let first = tally
            .first_error
            .as_ref()
            .map(|e| ctx.error(e).to_string())
            .unwrap_or_default();
        return Err(CliError::Runtime(format!(
            "{} of {} records failed; the first: {first}",
            tally.failed,
            tally.failed + tally.delivered
        )));
    }
    Ok(())
}

/// "produced N records to T" (and how many failed).
fn summary(t: &Tally, topic: &str) -> String {
    let records = |n: u64| if n == 1 { "record" } else { "records" };
    let mut s = format!(
        "produced {} {} to {topic}",
        t.delivered,
        records(t.delivered)
    );
    if t.failed > 0 {
        s.push_str(&format!("; {} {} failed", t.failed, records(t.failed)));
    }
    s
}

/// Reads stdin line by line and queues each record, until the end of input, a signal, or an
/// error that would fail every further record (returned).
async fn read_and_send(
    args: &ProduceArgs,
    producer: &Producer,
    tx: &mpsc::Sender<Item>,
    signals: &mut ShutdownSignals,
    ctx: &ErrorContext,
) -> Option<CliError> {
    let mut lines = stdin_lines();
    let mut line_no = 0u64;
    loop {
        let read = tokio::select! {
            r = lines.recv() => r,
            s = signals.recv() => {
                tracing::info!("{s}: stopping; delivering the records read so far");
                return None;
            }
        };
        let buf = match read {
            None => return None,
            Some(Ok(line)) => line,
            Some(Err(e)) => return Some(CliError::Runtime(format!("cannot read stdin: {e}"))),
        };
        line_no += 1;
        let (key, value) = split_key(
            trim_line_ending(&buf),
            args.key_separator.as_ref().map(|s| s.0.as_slice()),
        );
        let mut record = Record::new(value);
        if let Some(k) = key {
            record = record.with_key(k);
        }
        let sent = tokio::select! {
            r = producer.send(&args.topic, args.partition, record) => r,
            s = signals.recv() => {
                tracing::info!("{s}: stopping; delivering the records read so far");
                return None;
            }
        };
        match sent {
            Ok(delivery) => {
                let _ = tx.send(Item::Queued(line_no, delivery)).await;
            }
            // Only this record is at fault.
            Err(e @ (ClientError::TooLarge { .. } | ClientError::InvalidArgument { .. })) => {
                let _ = tx.send(Item::Failed(line_no, e)).await;
            }
            Err(e) => {
                let _ = tx.send(Item::Failed(line_no, e.clone())).await;
                return Some(ctx.error(&e));
            }
        }
    }
}

/// Stdin's lines (line endings included), read by a thread of their own: reading a terminal
/// or pipe blocks, and a blocked read must not hold up Ctrl-C (the process exits under it).
fn stdin_lines() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::Builder::new()
        .name("dmq-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::BufReader::with_capacity(64 * 1024, std::io::stdin().lock());
            loop {
                let mut line = Vec::new();
                let item = match std::io::BufRead::read_until(&mut stdin, b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => Ok(line),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        })
        .expect("spawn the stdin reader thread");
    rx
}

/// Awaits each delivery in input order; prints offsets when `print` says how.
async fn collect(
    mut rx: mpsc::Receiver<Item>,
    print: Option<OutputFormat>,
    ctx: ErrorContext,
) -> Tally {
    let mut tally = Tally::default();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut stdout_open = true;
    while let Some(item) = rx.recv().await {
        let (line, result) = match item {
            Item::Queued(line, delivery) => (line, delivery.await),
            Item::Failed(line, e) => (line, Err(e)),
        };
        match result {
            Ok(landed) => {
                tally.delivered += 1;
                if let Some(format) = print
                    && stdout_open
                {
                    let _ = out.write_all(offset_line(&landed, format).as_bytes());
                }
            }
            Err(e) => {
                tally.failed += 1;
                if tally.failed <= REPORTED_FAILURES_MAX {
                    eprintln!("record on line {line} failed: {}", ctx.error(&e));
                } else if tally.failed == REPORTED_FAILURES_MAX + 1 {
                    eprintln!("(further failures are counted, not shown)");
                }
                tally.first_error.get_or_insert(e);
            }
        }
        if rx.is_empty()
            && stdout_open
            && let Err(e) = out.flush()
        {
            stdout_open = false;
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tally.stdout_error = Some(format!("cannot write to stdout: {e}"));
            }
        }
    }
    if stdout_open
        && let Err(e) = out.flush()
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        tally.stdout_error = Some(format!("cannot write to stdout: {e}"));
    }
    tally
}

/// `PARTITION<TAB>OFFSET` or `{"partition":P,"offset":O}`, with a newline.
pub fn offset_line(landed: &RecordMetadata, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => format!(
            "{}\t{}\n",
            landed.partition,
            landed.offset.map_or("-".to_string(), |o| o.to_string())
        ),
        OutputFormat::Json => format!(
            "{}\n",
            json!({"partition": landed.partition, "offset": landed.offset})
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        args: ProduceArgs,
    }

    fn parse(args: &[&str]) -> Result<ProduceArgs, clap::Error> {
        let mut v = vec!["produce"];
        v.extend(args);
        T::try_parse_from(v).map(|t| t.args)
    }

    #[test]
    fn defaults() {
        let a = parse(&["-t", "events"]).unwrap();
        assert_eq!(a.topic, "events");
        assert_eq!(a.partition, None);
        assert_eq!(a.key_separator, None);
        assert_eq!(Acks::from(a.acks), Acks::All);
        assert_eq!(a.linger_ms, 5);
        assert!(!a.print_offsets);
    }

    #[test]
    fn every_flag() {
        let a = parse(&[
            "--topic",
            "t",
            "-p",
            "2",
            "-k",
            "\\t",
            "--acks",
            "1",
            "--linger-ms",
            "50",
            "--print-offsets",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(a.partition, Some(2));
        assert_eq!(a.key_separator, Some(Separator(b"\t".to_vec())));
        assert_eq!(Acks::from(a.acks), Acks::Leader);
        assert_eq!(a.linger_ms, 50);
        assert!(a.print_offsets);
        assert_eq!(a.client.output, OutputFormat::Json);
        let a = parse(&["-t", "t", "--acks", "0", "--key-separator", "::"]).unwrap();
        assert_eq!(Acks::from(a.acks), Acks::None);
        assert_eq!(a.key_separator, Some(Separator(b"::".to_vec())));
    }

    #[test]
    fn bad_flags() {
        for bad in [
            &[][..],
            &["-t", "t", "--acks", "2"],
            &["-t", "t", "-k", ""],
            &["-t", "t", "-p", "-1"],
            &["-t", "t", "--linger-ms", "soon"],
        ] {
            assert!(parse(bad).unwrap_err().use_stderr(), "{bad:?}");
        }
    }

    #[test]
    fn offsets_and_summary() {
        let landed = RecordMetadata {
            partition: 1,
            offset: Some(42),
        };
        assert_eq!(offset_line(&landed, OutputFormat::Table), "1\t42\n");
        let line = offset_line(&landed, OutputFormat::Json);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v, json!({"partition": 1, "offset": 42}));
        let none = RecordMetadata {
            partition: 0,
            offset: None,
        };
        assert_eq!(offset_line(&none, OutputFormat::Table), "0\t-\n");
        assert_eq!(
            summary(
                &Tally {
                    delivered: 1,
                    ..Tally::default()
                },
                "t"
            ),
            "produced 1 record to t"
        );
        assert_eq!(
            summary(
                &Tally {
                    delivered: 5,
                    failed: 2,
                    ..Tally::default()
                },
                "t"
            ),
            "produced 5 records to t; 2 records failed"
        );
    }
}
