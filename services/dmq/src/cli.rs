//! The command line: every flag, its `DMQ_*` environment variable and its default.
//!
//! Flags win over environment variables, which win over the defaults. Durations carry their unit
//! at the end of the name (`--tick-ms`, `--broker-session-timeout-ms`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum, value_parser};

/// DistributedMQ: a Kafka-like message system. Logs go to stderr (filter with RUST_LOG, default
/// `info`); data goes to stdout.
#[derive(Debug, Parser)]
#[command(name = "dmq", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(
        long,
        global = true,
        env = "DMQ_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// A TOML file of settings for the subcommand: keys are its long flag names (top level, or
    /// in a [controller] / [broker] / ... table). Flags win over DMQ_* variables, which win
    /// over the file.
    #[arg(long, global = true, env = "DMQ_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Export traces over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317); off when
    /// unset.
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,

    /// Threads of the async runtime (default: one per core). Nodes sharing a host (`dmq dev`,
    /// the benchmarks) get a share of the cores each.
    #[arg(long, global = true, env = "DMQ_WORKER_THREADS", value_parser = value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one metadata controller: a member of the Raft cluster that holds all cluster metadata.
    Controller(ControllerArgs),
    /// Run one broker: finds the controller leader, registers, heartbeats and follows the
    /// cluster metadata.
    Broker(BrokerArgs),
    /// Start a whole local cluster on loopback (3 controllers + 3 brokers by default) and keep
    /// it running until Ctrl-C.
    Dev(crate::dev_cmd::DevArgs),
    /// Measure the system (each benchmark starts its own local cluster unless told otherwise).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(crate::topic_cmd::TopicCommand),
    /// The controllers and brokers as the cluster sees them.
    #[command(subcommand)]
    Cluster(crate::cluster_cmd::ClusterCommand),
    /// Send one record per stdin line to a topic.
    Produce(crate::produce_cmd::ProduceArgs),
    /// Print a topic's records on stdout.
    Consume(crate::consume_cmd::ConsumeArgs),
}

/// `dmq bench ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Metadata writes through Raft with fsync on: sequential latency and throughput in flight.
    Meta(crate::bench::meta::MetaArgs),
    /// Kill -9 the controller leader (or, --kind broker, a partition leader) during sequential
    /// writes: time to the next acknowledged write.
    Failover(crate::bench::failover::FailoverArgs),
    /// Create topics (RF 3) and time CreateTopic's answer to the first acks=all ack.
    NewTopic(crate::bench::new_topic::NewTopicArgs),
    /// Produce 1 KiB records to one partition (RF 3, acks=all): records/s, MB/s, latency.
    Produce(crate::bench::data::DataBenchArgs),
    /// Read records back from one partition: records/s, MB/s.
    Consume(crate::bench::data::DataBenchArgs),
    /// Fill partition logs (default 10 GiB) and time opening them as a broker does at start.
    LogOpen(crate::bench::log_open::LogOpenArgs),
}

/// `dmq controller`. Start one per member with the same `--peers` on every member.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example (3 controllers on one machine; run with --node-id 2 and 3 likewise, \
                  each with its own ports and data dir):\n  dmq controller --node-id 1 \
                  --listen 127.0.0.1:9001 --peer-listen 127.0.0.1:9101 \\\n    --peers \
                  1=127.0.0.1:9101/127.0.0.1:9001,2=127.0.0.1:9102/127.0.0.1:9002,3=127.0.0.1:9103/127.0.0.1:9003 \
                  \\\n    --data-dir /var/lib/dmq/c1\n\nSeed a new cluster's member from a backup \
                  (`dmq cluster snapshot save`): dmq controller restore --help"
)]
pub struct ControllerArgs {
    /// This controller's id: a positive integer that appears in --peers.
    #[arg(long, env = "DMQ_NODE_ID", value_parser = value_parser!(u64).range(1..))]
    pub node_id: u64,

    /// Address of the client API (ControllerService) for brokers, admins and the CLI.
    #[arg(long, env = "DMQ_LISTEN", default_value = "127.0.0.1:9093")]
    pub listen: SocketAddr,

    /// Address of the peer API (RaftService) that the other controllers connect to.
    #[arg(long, env = "DMQ_PEER_LISTEN", default_value = "127.0.0.1:9094")]
    pub peer_listen: SocketAddr,

    /// Every controller, this one included, comma-separated: ID=PEER_ADDR[/CLIENT_ADDR]. PEER_ADDR
    /// is where its RaftService listens; CLIENT_ADDR (what leader hints carry) defaults to
    /// PEER_ADDR's host with this node's --listen port.
    #[arg(long, env = "DMQ_PEERS", value_name = "ID=PEER_ADDR[/CLIENT_ADDR],...")]
    pub peers: String,

    /// Join a running cluster instead of bootstrapping one: the ControllerService addresses
    /// of some of its controllers, comma-separated. Only this node's own entry of --peers is
    /// used (its addresses as the others reach it); it asks the leader to add it (as a
    /// learner, promoted once caught up) and learns everything else from the log. --peers
    /// only ever bootstraps a new cluster: a member that restarts takes the membership from
    /// its log, whatever the flags say.
    #[arg(long, env = "DMQ_JOIN", value_name = "HOST:PORT,...")]
    pub join: Option<String>,

    /// Directory of this controller's Raft log, snapshots and metadata (created if missing).
    #[arg(long, env = "DMQ_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Length of one Raft tick, in milliseconds.
    #[arg(long, env = "DMQ_TICK_MS", default_value_t = 50, value_parser = value_parser!(u64).range(1..))]
    pub tick_ms: u64,

    /// The leader sends heartbeats every this many ticks.
    #[arg(
        long,
        env = "DMQ_HEARTBEAT_INTERVAL_TICKS",
        default_value_t = 2,
        value_parser = value_parser!(u32).range(1..)
    )]
    pub heartbeat_interval_ticks: u32,

    /// A follower that hears no leader for a random time in [min, max) ticks starts an election.
    #[arg(
        long,
        env = "DMQ_ELECTION_TIMEOUT_MIN_TICKS",
        default_value_t = 10,
        value_parser = value_parser!(u32).range(1..)
    )]
    pub election_timeout_min_ticks: u32,

    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    #[arg(
        long,
        env = "DMQ_ELECTION_TIMEOUT_MAX_TICKS",
        default_value_t = 20,
        value_parser = value_parser!(u32).range(1..)
    )]
    pub election_timeout_max_ticks: u32,

    /// A change not committed within this long fails with a retryable error, in milliseconds.
    #[arg(
        long,
        env = "DMQ_REPLICATION_TIMEOUT_MS",
        default_value_t = 5000,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub replication_timeout_ms: u64,

    /// Snapshot the metadata and compact the log every this many applied entries.
    #[arg(
        long,
        env = "DMQ_SNAPSHOT_EVERY_ENTRIES",
        default_value_t = 10_000,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub snapshot_every_entries: u64,

    /// The leader marks a broker OFFLINE after no heartbeat for this long, in milliseconds
    /// (a broker that is cut off or paused; a dead one is noticed sooner by its closed
    /// connection, see --broker-disconnect-grace-ms).
    #[arg(
        long,
        env = "DMQ_BROKER_SESSION_TIMEOUT_MS",
        default_value_t = 6000,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub broker_session_timeout_ms: u64,

    /// How often brokers are expected to heartbeat, in milliseconds; below the session
    /// timeout.
    #[arg(
        long,
        env = "DMQ_BROKER_HEARTBEAT_INTERVAL_MS",
        default_value_t = 1000,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub broker_heartbeat_interval_ms: u64,

    /// A broker whose metadata stream closed (its process died: the connection went) and
    /// that neither reconnected nor heartbeated within this is marked OFFLINE at once, in
    /// milliseconds.
    #[arg(
        long,
        env = "DMQ_BROKER_DISCONNECT_GRACE_MS",
        default_value_t = 500,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub broker_disconnect_grace_ms: u64,

    /// How often the controller leader gives partitions back to their preferred replica (the
    /// first in the replica list) once it is ONLINE and in the ISR again, in milliseconds
    /// (Kafka's auto.leader.rebalance.enable; 0: off).
    #[arg(
        long,
        env = "DMQ_LEADER_REBALANCE_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub leader_rebalance_interval_ms: u64,

    /// On SIGTERM/SIGINT a leader hands leadership to a peer for at most this long before
    /// stopping, in milliseconds (0: stop at once).
    #[arg(long, env = "DMQ_SHUTDOWN_TRANSFER_TIMEOUT_MS", default_value_t = 3000)]
    pub shutdown_transfer_timeout_ms: u64,

    /// Admin HTTP address serving Prometheus metrics at /metrics, e.g. 127.0.0.1:9095 (default off).
    #[arg(long, env = "DMQ_ADMIN_LISTEN", default_value = "off")]
    pub admin_listen: crate::admin::AdminListen,
}

/// `dmq broker`. Give every broker its own --broker-id, ports and data dir, and the same
/// --controllers.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Example (3 controllers with client APIs on ports 9001-9003; run more brokers \
                  likewise, each with its own id, port and data dir):\n  dmq broker --broker-id 1 \
                  --listen 127.0.0.1:9092 \\\n    --controllers \
                  127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003 --data-dir /var/lib/dmq/b1"
)]
pub struct BrokerArgs {
    /// This broker's id: a positive integer, unique in the cluster and kept across restarts.
    #[arg(long, env = "DMQ_BROKER_ID", value_parser = value_parser!(u64).range(1..))]
    pub broker_id: u64,

    /// Address of BrokerService and the gRPC health service.
    #[arg(long, env = "DMQ_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,

    /// The HOST:PORT that controllers, clients and other brokers use to reach this broker
    /// (default: --listen, which must then not be a wildcard address like 0.0.0.0). IPv6 hosts
    /// in brackets.
    #[arg(long, env = "DMQ_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// Client (ControllerService) addresses of the controllers, comma-separated; any subset
    /// holding one live controller is enough to find the leader.
    #[arg(long, env = "DMQ_CONTROLLERS", value_name = "HOST:PORT,...")]
    pub controllers: String,

    /// Directory of this broker's data (created if missing).
    #[arg(long, env = "DMQ_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Rack (failure domain) label for replica placement (default: none).
    #[arg(long, env = "DMQ_RACK")]
    pub rack: Option<String>,

    /// Pause between heartbeats to the controller leader, in milliseconds; keep it well below
    /// the controllers' --broker-session-timeout-ms (default 6000).
    #[arg(
        long,
        env = "DMQ_HEARTBEAT_INTERVAL_MS",
        default_value_t = 1000,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub heartbeat_interval_ms: u64,

    /// Deadline of every call to a controller, in milliseconds.
    #[arg(
        long,
        env = "DMQ_RPC_TIMEOUT_MS",
        default_value_t = 2000,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub rpc_timeout_ms: u64,

    /// Admin HTTP address serving Prometheus metrics at /metrics, e.g. 127.0.0.1:9095 (default off).
    #[arg(long, env = "DMQ_ADMIN_LISTEN", default_value = "off")]
    pub admin_listen: crate::admin::AdminListen,

    /// ISR size acks=all requires when a topic does not set its own min_insync_replicas.
    #[arg(long, env = "DMQ_MIN_INSYNC_REPLICAS", default_value_t = 1, value_parser = value_parser!(u32).range(1..))]
    pub min_insync_replicas: u32,

    /// A follower that has not caught up with the leader for this long leaves the ISR, in
    /// milliseconds.
    #[arg(long, env = "DMQ_REPLICA_LAG_TIME_MAX_MS", default_value_t = 10_000, value_parser = value_parser!(u64).range(1..))]
    pub replica_lag_time_max_ms: u64,

    /// Delete whole segments whose newest record is older than this when a topic sets no
    /// retention, in milliseconds (-1: keep forever; default 7 days).
    #[arg(
        long,
        env = "DMQ_RETENTION_MS",
        default_value_t = 604_800_000,
        allow_hyphen_values = true
    )]
    pub retention_ms: i64,

    /// Delete the oldest whole segments of a partition while the rest still holds this many
    /// bytes, when a topic sets no limit (-1: no limit).
    #[arg(long, env = "DMQ_RETENTION_BYTES", default_value_t = -1, allow_hyphen_values = true)]
    pub retention_bytes: i64,

    /// A partition's active segment file rolls before it would pass this many bytes (Kafka's
    /// segment.bytes; default 1 GiB). Retention deletes whole segments.
    #[arg(
        long,
        env = "DMQ_LOG_SEGMENT_BYTES",
        default_value_t = dmq_broker::log::DEFAULT_SEGMENT_BYTES,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub log_segment_bytes: u64,

    /// A segment rolls at the first append this many milliseconds after its first (Kafka's
    /// segment.ms; default 7 days; -1: only by size).
    #[arg(
        long,
        env = "DMQ_LOG_SEGMENT_MS",
        default_value_t = dmq_broker::log::DEFAULT_SEGMENT_MS,
        allow_hyphen_values = true
    )]
    pub log_segment_ms: i64,

    /// The most bytes that requests in flight may hold together (produce waiting for acks,
    /// acks=0 appends, fetch answers, queued consume responses); beyond it requests are
    /// refused RESOURCE_EXHAUSTED / BROKER_OVERLOADED with nothing done.
    #[arg(
        long,
        env = "DMQ_MEMORY_BUDGET_BYTES",
        default_value_t = dmq_broker::DEFAULT_MEMORY_BUDGET_BYTES as u64,
        value_parser = value_parser!(u64).range(1..)
    )]
    pub memory_budget_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_apply() {
        let cli = Cli::try_parse_from([
            "dmq",
            "controller",
            "--node-id",
            "1",
            "--peers",
            "1=127.0.0.1:9094",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        let Command::Controller(a) = cli.command else {
            panic!("not a controller command")
        };
        assert_eq!(a.listen, "127.0.0.1:9093".parse().unwrap());
        assert_eq!(a.peer_listen, "127.0.0.1:9094".parse().unwrap());
        assert_eq!(a.tick_ms, 50);
        assert_eq!(a.heartbeat_interval_ticks, 2);
        assert_eq!(
            (a.election_timeout_min_ticks, a.election_timeout_max_ticks),
            (10, 20)
        );
        assert_eq!(a.replication_timeout_ms, 5000);
        assert_eq!(a.snapshot_every_entries, 10_000);
        assert_eq!(a.broker_session_timeout_ms, 6000);
        assert_eq!(a.broker_heartbeat_interval_ms, 1000);
        assert_eq!(a.broker_disconnect_grace_ms, 500);
        assert_eq!(a.leader_rebalance_interval_ms, 30_000);
        assert_eq!(a.shutdown_transfer_timeout_ms, 3000);
    }

    #[test]
    fn log_format_is_global() {
        for args in [
            &["dmq", "--log-format", "json", "controller"][..],
            &["dmq", "controller", "--log-format", "json"][..],
        ] {
            let mut v = args.to_vec();
            v.extend(["--node-id", "1", "--peers", "1=h:1", "--data-dir", "d"]);
            assert_eq!(Cli::try_parse_from(v).unwrap().log_format, LogFormat::Json);
        }
    }

    #[test]
    fn rejects_zero_and_missing() {
        let base = ["dmq", "controller", "--peers", "1=h:1", "--data-dir", "d"];
        assert!(Cli::try_parse_from(base).is_err(), "--node-id is required");
        let mut zero = base.to_vec();
        zero.extend(["--node-id", "0"]);
        assert!(Cli::try_parse_from(zero).is_err());
        let mut tick = base.to_vec();
        tick.extend(["--node-id", "1", "--tick-ms", "0"]);
        assert!(Cli::try_parse_from(tick).is_err());
    }
}
