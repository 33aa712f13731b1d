//! `dmq consume -t TOPIC`: records of one or every partition on stdout, following leader
//! changes (the [`Consumer`] does), until Ctrl-C, `--max-records`, or with `--exit-at-end`
//! once every partition is read up to its high watermark (as kcat -e).

use std::io::Write;
use std::time::Duration;

use clap::{ArgGroup, Args};
use dmq_client::{Consumer, ConsumerConfig, MetadataOptions, MetadataView, Start};

use crate::client_error::ErrorContext;
use crate::client_opts::ClientOpts;
use crate::error::CliError;
use crate::output::OutputFormat;
use crate::record_format::{DEFAULT_FORMAT, RecordFormat, record_json};
use crate::signal::ShutdownSignals;

/// How long a fetch waits at the broker for new records with `--exit-at-end`, so that reaching
/// the end is noticed quickly.
const EXIT_AT_END_MAX_WAIT: Duration = Duration::from_millis(100);

/// `dmq consume`.
#[derive(Debug, Clone, Args)]
#[command(
    group(ArgGroup::new("start").args(["from_beginning", "offset", "from_end"])),
    after_help = "Examples:\n  dmq consume -t events --exit-at-end\n  dmq consume -t events -p 0 \
                  --offset 100 -f '%p:%o %k=%v'\n  dmq consume -t events --from-end -o json"
)]
pub struct ConsumeArgs {
    /// The topic to read.
    #[arg(short, long)]
    pub topic: String,
    /// Read only this partition (default: every partition).
    #[arg(short, long)]
    pub partition: Option<u32>,
    /// Start at the oldest record still kept (the default).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset in each partition read.
    #[arg(long, value_name = "N")]
    pub offset: Option<u64>,
    /// Start after the last record: only records produced from now on.
    #[arg(long)]
    pub from_end: bool,
    /// Stop once every partition is read up to its high watermark (as kcat -e).
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
    /// Stop after this many records.
    #[arg(short = 'n', long, value_name = "N")]
    pub max_records: Option<u64>,
    /// How to print each record (kcat-like): %v value, %k key, %t topic, %p partition,
    /// %o offset, %T timestamp (ms), %h headers, %S/%K value/key length, %% and \n \t escapes.
    /// A newline ends each record unless the format ends with \n.
    #[arg(short, long, default_value = DEFAULT_FORMAT)]
    pub format: RecordFormat,
    #[command(flatten)]
    pub client: ClientOpts,
}

impl ConsumeArgs {
    /// Where each partition starts.
    pub fn start(&self) -> Start {
        match (self.offset, self.from_end) {
            (Some(o), _) => Start::Offset(o),
            (None, true) => Start::End,
            (None, false) => Start::Beginning,
        }
    }
}

pub async fn run(args: ConsumeArgs) -> Result<(), CliError> {
    let mut signals = ShutdownSignals::install()
        .map_err(|e| CliError::Runtime(format!("cannot install signal handlers: {e}")))?;
    let mut ctx = args.client.context().with_topic(&args.topic);
    let (admin, probes) = args.client.connect().await?;
    ctx.learn_controllers(probes.iter().filter_map(|p| p.leader().map(|(_, a)| a)));
    let metadata = MetadataView::new(
        admin,
        MetadataOptions {
            refresh_timeout: args.client.timeout(),
            ..MetadataOptions::default()
        },
    );
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => {
            let n = metadata
                .partition_count(&args.topic)
                .await
                .map_err(|e| ctx.error(&e))?;
            (0..n).collect()
        }
    };
    let mut config = ConsumerConfig {
        request_timeout: args.client.timeout(),
        ..ConsumerConfig::default()
    };
    if args.exit_at_end {
        config.max_wait = EXIT_AT_END_MAX_WAIT;
    }
    let mut consumer = Consumer::new(metadata, config).map_err(|e| ctx.error(&e))?;
    let start = args.start();
    for &p in &partitions {
        let at = tokio::select! {
            r = consumer.assign(&args.topic, p, start) => r.map_err(|e| ctx.error(&e))?,
            s = signals.recv() => {
                tracing::info!("{s}: stopping");
                return Ok(());
            }
        };
        tracing::debug!(topic = %args.topic, partition = p, offset = at, "assigned");
    }
    let consumed = consume(&args, &mut consumer, &mut signals, &ctx).await?;
    eprintln!(
        "consumed {consumed} {} from {}",
        if consumed == 1 { "record" } else { "records" },
        args.topic
    );
    Ok(())
}

/// The poll loop; returns how many records it printed.
async fn consume(
    args: &ConsumeArgs,
    consumer: &mut Consumer,
    signals: &mut ShutdownSignals,
    ctx: &ErrorContext,
) -> Result<u64, CliError> {
    let mut stdout = std::io::stdout();
    let mut printed = 0u64;
    let mut buf = Vec::new();
    loop {
        if args.max_records.is_some_and(|max| printed >= max) {
            return Ok(printed);
        }
        if args.exit_at_end {
            for tp in consumer.assignment() {
                let position = consumer.position(&tp.topic, tp.partition);
                let hw = consumer.high_watermark(&tp.topic, tp.partition);
                if let (Some(position), Some(hw)) = (position, hw)
                    && position >= hw
                {
                    tracing::debug!(partition = tp.partition, position, "reached the end");
                    consumer.unassign(&tp.topic, tp.partition);
                }
            }
            if consumer.assignment().is_empty() {
                return Ok(printed);
            }
        }
        let polled = tokio::select! {
            r = consumer.poll() => r,
            s = signals.recv() => {
                tracing::info!("{s}: stopping");
                return Ok(printed);
            }
        };
        let records = match polled {
            Ok(records) => records,
            Err(e) if e.is_retryable() => {
                tracing::warn!("{}; retrying", ctx.error(&e));
                continue;
            }
            Err(e) => return Err(ctx.error(&e)),
        };
        buf.clear();
        for r in &records {
            if args.max_records.is_some_and(|max| printed >= max) {
                break;
            }
            match args.client.output {
                OutputFormat::Json => {
                    buf.extend_from_slice(record_json(r).to_string().as_bytes());
                    buf.push(b'\n');
                }
                OutputFormat::Table => args.format.render(r, &mut buf),
            }
            printed += 1;
        }
        if let Err(e) = stdout.write_all(&buf).and_then(|()| stdout.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(printed);
            }
            return Err(CliError::Runtime(format!("cannot write to stdout: {e}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        args: ConsumeArgs,
    }

    fn parse(args: &[&str]) -> Result<ConsumeArgs, clap::Error> {
        let mut v = vec!["consume"];
        v.extend(args);
        T::try_parse_from(v).map(|t| t.args)
    }

    #[test]
    fn defaults_read_every_partition_from_the_beginning() {
        let a = parse(&["-t", "events"]).unwrap();
        assert_eq!(a.partition, None);
        assert_eq!(a.start(), Start::Beginning);
        assert!(!a.exit_at_end);
        assert_eq!(a.max_records, None);
        assert_eq!(a.format, RecordFormat::default());
        assert_eq!(a.client.output, OutputFormat::Table);
    }

    #[test]
    fn start_positions() {
        assert_eq!(
            parse(&["-t", "t", "--from-beginning"]).unwrap().start(),
            Start::Beginning
        );
        assert_eq!(
            parse(&["-t", "t", "--offset", "42"]).unwrap().start(),
            Start::Offset(42)
        );
        assert_eq!(
            parse(&["-t", "t", "--from-end"]).unwrap().start(),
            Start::End
        );
    }

    #[test]
    fn every_flag() {
        let a = parse(&[
            "-t", "t", "-p", "3", "-e", "-n", "10", "-f", "%k=%v", "-o", "json",
        ])
        .unwrap();
        assert_eq!(a.partition, Some(3));
        assert!(a.exit_at_end);
        assert_eq!(a.max_records, Some(10));
        assert_eq!(a.format, "%k=%v".parse().unwrap());
        assert_eq!(a.client.output, OutputFormat::Json);
        let a = parse(&["--topic", "t", "--exit-at-end", "--max-records", "1"]).unwrap();
        assert!(a.exit_at_end);
    }

    #[test]
    fn bad_flags() {
        for bad in [
            &[][..],
            &["-t", "t", "--from-beginning", "--from-end"],
            &["-t", "t", "--offset", "1", "--from-end"],
            &["-t", "t", "--offset", "-1"],
            &["-t", "t", "-f", "%x"],
            &["-t", "t", "-o", "csv"],
        ] {
            assert!(parse(bad).unwrap_err().use_stderr(), "{bad:?}");
        }
    }
}
