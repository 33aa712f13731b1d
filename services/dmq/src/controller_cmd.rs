//! `dmq controller`: turns the flags into a server configuration and runs the controller until
//! SIGTERM or SIGINT.

use std::time::Duration;

use dmq_controller::node::NodeConfig;

use crate::cli::ControllerArgs;
use crate::error::CliError;
use crate::peers::parse_peers;
use crate::signal::{ShutdownSignals, shutdown_on_signal};

use dmq_controller::server;

/// Validates the flags (exit status 2 when they cannot work) and builds the server
/// configuration.
pub fn server_config(args: &ControllerArgs) -> Result<server::ServerConfig, CliError> {
    let usage = |m: String| CliError::Usage(m);
    let peers = parse_peers(&args.peers, args.node_id, args.listen.port())
        .map_err(|e| usage(e.to_string()))?;
    if args.listen == args.peer_listen {
        return Err(usage(format!(
            "--listen and --peer-listen are both {}: give the client and peer APIs different ports",
            args.listen
        )));
    }
    if args.broker_heartbeat_interval_ms >= args.broker_session_timeout_ms {
        return Err(usage(format!(
            "--broker-heartbeat-interval-ms ({}) must be below --broker-session-timeout-ms ({}), \
             or every broker goes OFFLINE; a session of 3x the interval or more is usual",
            args.broker_heartbeat_interval_ms, args.broker_session_timeout_ms
        )));
    }

    let join = join_addresses(args);
    let peers = if join.is_empty() {
        peers
    } else {
        // A node that joins bootstraps nothing: only its own addresses matter.
        peers
            .into_iter()
            .filter(|(id, _)| *id == args.node_id)
            .collect()
    };
    let mut node = NodeConfig::new(args.node_id, peers, args.data_dir.clone());
    node.join = !join.is_empty();
    node.tick = Duration::from_millis(args.tick_ms);
    node.heartbeat_interval_ticks = args.heartbeat_interval_ticks;
    node.election_timeout_min_ticks = args.election_timeout_min_ticks;
    node.election_timeout_max_ticks = args.election_timeout_max_ticks;
    node.replication_timeout = Duration::from_millis(args.replication_timeout_ms);
    node.snapshot_every_entries = args.snapshot_every_entries;
    node.raft_config().validate().map_err(|e| {
        usage(format!(
            "invalid --heartbeat-interval-ticks / --election-timeout-*-ticks: {e}"
        ))
    })?;

    Ok(server::ServerConfig {
        node,
        listen: args.listen,
        peer_listen: args.peer_listen,
        broker_session_timeout: Duration::from_millis(args.broker_session_timeout_ms),
        broker_heartbeat_interval: Duration::from_millis(args.broker_heartbeat_interval_ms),
        broker_disconnect_grace: Duration::from_millis(args.broker_disconnect_grace_ms),
        leader_rebalance_interval: Duration::from_millis(args.leader_rebalance_interval_ms),
        shutdown_transfer_timeout: Duration::from_millis(args.shutdown_transfer_timeout_ms),
    })
}

/// Runs one controller until the first SIGTERM/SIGINT has been handled (exit status 0) or the
/// server fails (exit status 1).
pub async fn run(args: ControllerArgs) -> Result<(), CliError> {
    let cfg = server_config(&args)?;
    crate::admin::serve_metrics(&args.admin_listen)?;
    let signals = ShutdownSignals::install().map_err(|e| {
        CliError::Runtime(format!(
            "could not install the SIGTERM/SIGINT handlers: {e}"
        ))
    })?;
    tracing::info!(
        node_id = cfg.node.id,
        listen = %cfg.listen,
        peer_listen = %cfg.peer_listen,
        peers = ?cfg.node.peers,
        data_dir = %cfg.node.data_dir.display(),
        "starting controller"
    );
    let join = join_addresses(&args);
    let joiner = (!join.is_empty()).then(|| {
        let own = cfg.node.peers[&cfg.node.id].clone();
        tokio::spawn(ask_to_join(cfg.node.id, own, join))
    });
    let outcome = run_controller(cfg, shutdown_on_signal(signals)).await;
    if let Some(j) = joiner {
        j.abort();
    }
    outcome.map_err(|e| CliError::runtime(&e))?;
    tracing::info!("controller stopped");
    Ok(())
}

/// The `--join` addresses, if any.
fn join_addresses(args: &ControllerArgs) -> Vec<String> {
    args.join
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// How long `--join` keeps asking the cluster to add this node before it gives up (the node
/// keeps running; `dmq cluster add-controller` adds it by hand).
const JOIN_GIVE_UP: Duration = Duration::from_secs(600);

/// Asks the cluster at `join` to add this node (AddController: a learner, promoted once it
/// has caught up), retrying with backoff until it succeeds or [`JOIN_GIVE_UP`] passes. Safe
/// on every start: adding a member again changes nothing.
async fn ask_to_join(id: u64, own: dmq_controller::node::PeerAddrs, join: Vec<String>) {
    let opts = dmq_client::AdminOptions {
        request_timeout: Duration::from_secs(90),
        deadline: Duration::from_secs(120),
        ..dmq_client::AdminOptions::default()
    };
    let admin = match dmq_client::Admin::new(join.clone(), opts) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "--join addresses unusable; this node will not be added");
            return;
        }
    };
    let request = dmq_client::pb::AddControllerRequest {
        node_id: id,
        peer_address: own.raft.clone(),
        client_address: own.client.clone(),
        learner_only: false,
        catch_up_timeout_ms: 60_000,
    };
    let give_up = tokio::time::Instant::now() + JOIN_GIVE_UP;
    let mut pause = Duration::from_millis(200);
    loop {
        match admin.add_controller(request.clone()).await {
            Ok(members) => {
                tracing::info!(
                    node_id = id,
                    members = members.len(),
                    "joined the controller group as a voter"
                );
                return;
            }
            Err(e) if tokio::time::Instant::now() + pause < give_up => {
                tracing::warn!(node_id = id, error = %e, "asking to join the cluster; will retry");
            }
            Err(e) => {
                tracing::error!(
                    node_id = id,
                    error = %e,
                    "gave up asking to join; add this node with dmq cluster add-controller"
                );
                return;
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The one call into the server; see the `use` of `server` at the top.
async fn run_controller(
    cfg: server::ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), server::ServerError> {
    server::run(cfg, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> ControllerArgs {
        let mut v = vec![
            "dmq",
            "controller",
            "--node-id",
            "2",
            "--peers",
            "1=127.0.0.1:9101/127.0.0.1:9001,2=127.0.0.1:9102,3=127.0.0.1:9103/127.0.0.1:9003",
            "--data-dir",
            "/tmp/dmq-2",
            "--listen",
            "127.0.0.1:9002",
            "--peer-listen",
            "127.0.0.1:9102",
        ];
        v.extend_from_slice(extra);
        let Command::Controller(a) = Cli::try_parse_from(v).unwrap().command else {
            panic!("not a controller command")
        };
        a
    }

    #[test]
    fn builds_the_server_config() {
        let cfg = server_config(&args(&[
            "--tick-ms",
            "50",
            "--election-timeout-min-ticks",
            "4",
            "--election-timeout-max-ticks",
            "8",
            "--broker-session-timeout-ms",
            "2000",
            "--broker-heartbeat-interval-ms",
            "500",
            "--snapshot-every-entries",
            "7",
        ]))
        .unwrap();
        assert_eq!(cfg.node.id, 2);
        assert_eq!(cfg.node.peers.len(), 3);
        assert_eq!(cfg.node.client_addr(1), Some("127.0.0.1:9001"));
        assert_eq!(cfg.node.client_addr(2), Some("127.0.0.1:9002"));
        assert_eq!(cfg.node.peers[&3].raft, "127.0.0.1:9103");
        assert_eq!(cfg.node.tick, Duration::from_millis(50));
        assert_eq!(
            (
                cfg.node.election_timeout_min_ticks,
                cfg.node.election_timeout_max_ticks
            ),
            (4, 8)
        );
        assert_eq!(cfg.node.snapshot_every_entries, 7);
        assert_eq!(cfg.node.data_dir, std::path::PathBuf::from("/tmp/dmq-2"));
        assert_eq!(cfg.listen, "127.0.0.1:9002".parse().unwrap());
        assert_eq!(cfg.peer_listen, "127.0.0.1:9102".parse().unwrap());
        assert_eq!(cfg.broker_session_timeout, Duration::from_secs(2));
        assert_eq!(cfg.broker_heartbeat_interval, Duration::from_millis(500));
        assert_eq!(cfg.shutdown_transfer_timeout, Duration::from_secs(3));
    }

    #[test]
    fn cli_defaults_match_the_node_defaults() {
        let cfg = server_config(&args(&[])).unwrap();
        let d = NodeConfig::new(2, cfg.node.peers.clone(), "/tmp/dmq-2".into());
        assert_eq!(cfg.node.tick, d.tick);
        assert_eq!(
            cfg.node.heartbeat_interval_ticks,
            d.heartbeat_interval_ticks
        );
        assert_eq!(
            cfg.node.election_timeout_min_ticks,
            d.election_timeout_min_ticks
        );
        assert_eq!(
            cfg.node.election_timeout_max_ticks,
            d.election_timeout_max_ticks
        );
        assert_eq!(cfg.node.replication_timeout, d.replication_timeout);
        assert_eq!(cfg.node.snapshot_every_entries, d.snapshot_every_entries);
    }

    fn usage(extra: &[&str]) -> String {
        usage_of(&args(extra))
    }

    fn usage_of(a: &ControllerArgs) -> String {
        match server_config(a) {
            Err(CliError::Usage(m)) => {
                assert!(!m.contains('\n'), "one line: {m}");
                m
            }
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_unworkable_flags() {
        let mut a = args(&[]);
        a.peer_listen = a.listen;
        assert!(usage_of(&a).contains("different ports"));
        assert!(
            usage(&["--broker-heartbeat-interval-ms", "30000"])
                .contains("--broker-heartbeat-interval-ms")
        );
        assert!(usage(&["--election-timeout-max-ticks", "10"]).contains("must exceed min"));
        assert!(usage(&["--heartbeat-interval-ticks", "10"]).contains("must exceed the heartbeat"));
        let mut a = args(&[]);
        a.node_id = 4;
        assert!(usage_of(&a).contains("--node-id 4 is not in --peers"));
        a.node_id = 2;
        a.peers = "1=h:1,2=h:2,2=h:3".into();
        assert!(usage_of(&a).contains("\"2=h:3\": id 2 appears more than once"));
    }
}
