//! `dmq broker`: turns the flags into a broker configuration and runs the broker until SIGTERM
//! or SIGINT, when it tells the controllers it is leaving and drains.

use std::time::Duration;

use dmq_broker::{BrokerConfig, BrokerError};
use dmq_client::discovery::endpoint;

use crate::cli::BrokerArgs;
use crate::error::CliError;
use crate::signal::{ShutdownSignals, shutdown_on_signal};

/// Validates the flags (exit status 2 when they cannot work) and builds the broker
/// configuration; every other setting keeps its [`BrokerConfig::new`] default.
pub fn broker_config(args: &BrokerArgs) -> Result<BrokerConfig, CliError> {
    let usage = CliError::Usage;
    let controllers = parse_controllers(&args.controllers).map_err(usage)?;
    let advertise = match &args.advertise {
        Some(a) => a.trim().to_string(),
        None if args.listen.ip().is_unspecified() => {
            return Err(usage(format!(
                "--listen {} is a wildcard address that others cannot dial: set --advertise to \
                 the HOST:PORT they should use, e.g. broker-1.example:{}",
                args.listen,
                args.listen.port()
            )));
        }
        None if args.listen.port() == 0 => {
            return Err(usage(format!(
                "--listen {} has port 0 (any free port), which cannot be advertised: give a \
                 fixed port, or set --advertise",
                args.listen
            )));
        }
        None => args.listen.to_string(),
    };
    let mut cfg = BrokerConfig::new(
        args.broker_id,
        args.listen,
        advertise,
        controllers,
        args.data_dir.clone(),
    );
    cfg.advertised().map_err(|e| {
        usage(format!(
            "bad --advertise: {}, e.g. broker-1.example:9092 or [::1]:9092",
            detail(e)
        ))
    })?;
    if let Some(rack) = &args.rack {
        let rack = rack.trim();
        if rack.contains(char::is_whitespace) {
            return Err(usage(format!(
                "--rack {rack:?} contains whitespace: use a single word such as us-east-1a"
            )));
        }
        cfg.rack = rack.to_string();
    }
    cfg.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms);
    cfg.rpc_timeout = Duration::from_millis(args.rpc_timeout_ms);
    cfg.min_insync_replicas = args.min_insync_replicas;
    cfg.replica_lag_time_max = Duration::from_millis(args.replica_lag_time_max_ms);
    cfg.retention_ms = args.retention_ms;
    cfg.retention_bytes = args.retention_bytes;
    cfg.log_segment_bytes = args.log_segment_bytes;
    cfg.log_segment_ms = args.log_segment_ms;
    cfg.memory_budget_bytes = usize::try_from(args.memory_budget_bytes).unwrap_or(usize::MAX);
    // The default retry pause (1 s) is clamped to the interval by the broker itself.
    cfg.validate().map_err(|e| usage(detail(e)))?;
    Ok(cfg)
}

/// `--controllers`: comma-separated `HOST:PORT` (or `http://HOST:PORT`) entries; spaces and empty
/// entries are ignored, duplicates dropped.
fn parse_controllers(spec: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Err(e) = endpoint(entry, Duration::from_secs(1)) {
            return Err(format!(
                "--controllers entry {entry:?}: {}; list the controllers' client addresses as \
                 HOST:PORT,..., e.g. 10.0.0.1:9093,10.0.0.2:9093,10.0.0.3:9093",
                detail_of(&e)
            ));
        }
        if !out.iter().any(|o| o == entry) {
            out.push(entry.to_string());
        }
    }
    if out.is_empty() {
        return Err(
            "--controllers is empty: list the controllers' client addresses as \
                    HOST:PORT,..., e.g. 10.0.0.1:9093,10.0.0.2:9093,10.0.0.3:9093"
                .into(),
        );
    }
    Ok(out)
}

/// The message of a configuration error, without its generic prefix.
fn detail(e: BrokerError) -> String {
    match e {
        BrokerError::InvalidConfig(m) => m,
        other => crate::error::one_line(&other),
    }
}

fn detail_of(e: &dmq_client::discovery::DiscoveryError) -> String {
    match e {
        dmq_client::discovery::DiscoveryError::InvalidAddress { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Runs one broker until the first SIGTERM/SIGINT has been handled (exit status 0) or it fails
/// (exit status 1; 2 for a configuration it rejects).
pub async fn run(args: BrokerArgs) -> Result<(), CliError> {
    let cfg = broker_config(&args)?;
    crate::admin::serve_metrics(&args.admin_listen)?;
    let signals = ShutdownSignals::install().map_err(|e| {
        CliError::Runtime(format!(
            "could not install the SIGTERM/SIGINT handlers: {e}"
        ))
    })?;
    dmq_broker::run(cfg, shutdown_on_signal(signals))
        .await
        .map_err(|e| match e {
            BrokerError::InvalidConfig(m) => CliError::Usage(m),
            e => CliError::runtime(&e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    const BASE: [&str; 8] = [
        "dmq",
        "broker",
        "--broker-id",
        "3",
        "--controllers",
        "127.0.0.1:9001, 127.0.0.1:9002,,127.0.0.1:9001",
        "--data-dir",
        "/tmp/dmq-b3",
    ];

    fn parse(extra: &[&str]) -> Result<BrokerArgs, clap::Error> {
        let mut v = BASE.to_vec();
        v.extend_from_slice(extra);
        let Command::Broker(a) = Cli::try_parse_from(v)?.command else {
            panic!("not a broker command")
        };
        Ok(a)
    }

    fn args(extra: &[&str]) -> BrokerArgs {
        parse(extra).unwrap()
    }

    fn usage(extra: &[&str]) -> String {
        match broker_config(&args(extra)) {
            Err(CliError::Usage(m)) => {
                assert!(!m.contains('\n'), "one line: {m}");
                m
            }
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_broker_defaults() {
        let a = args(&[]);
        assert_eq!(a.listen, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(a.advertise, None);
        assert_eq!(a.rack, None);
        assert_eq!(a.heartbeat_interval_ms, 1000);
        assert_eq!(a.rpc_timeout_ms, 2000);
        let cfg = broker_config(&a).unwrap();
        let d = BrokerConfig::new(
            3,
            a.listen,
            "127.0.0.1:9092",
            vec!["127.0.0.1:9001".into(), "127.0.0.1:9002".into()],
            "/tmp/dmq-b3",
        );
        assert_eq!(cfg, d);
    }

    #[test]
    fn builds_the_config() {
        let cfg = broker_config(&args(&[
            "--listen",
            "0.0.0.0:19092",
            "--advertise",
            "broker-3.dmq:19092",
            "--rack",
            "rack-b",
            "--heartbeat-interval-ms",
            "300",
            "--rpc-timeout-ms",
            "700",
        ]))
        .unwrap();
        assert_eq!(cfg.broker_id, 3);
        assert_eq!(cfg.listen, "0.0.0.0:19092".parse().unwrap());
        assert_eq!(cfg.advertise, "broker-3.dmq:19092");
        assert_eq!(cfg.controllers, ["127.0.0.1:9001", "127.0.0.1:9002"]);
        assert_eq!(cfg.data_dir, std::path::PathBuf::from("/tmp/dmq-b3"));
        assert_eq!(cfg.rack, "rack-b");
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(300));
        assert_eq!(cfg.rpc_timeout, Duration::from_millis(700));
    }

    #[test]
    fn required_and_malformed_flags_are_clap_errors() {
        let without = |flag: &str| {
            let mut v = BASE.to_vec();
            let at = v.iter().position(|a| *a == flag).unwrap();
            v.drain(at..at + 2);
            Cli::try_parse_from(v).unwrap_err().to_string()
        };
        assert!(without("--broker-id").contains("--broker-id"));
        assert!(without("--controllers").contains("--controllers"));
        assert!(without("--data-dir").contains("--data-dir"));
        for bad in [
            &["--broker-id", "0"][..],
            &["--listen", "localhost"],
            &["--heartbeat-interval-ms", "0"],
            &["--rpc-timeout-ms", "x"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.use_stderr(), "{bad:?}");
            assert!(e.to_string().contains(bad[0]), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rejects_unworkable_flags() {
        assert!(
            usage(&["--listen", "0.0.0.0:9092"]).contains("set --advertise"),
            "wildcard listen without --advertise"
        );
        assert!(usage(&["--listen", "127.0.0.1:0"]).contains("port 0"));
        for bad in ["broker-1", "broker-1:0", "::1:9092", ""] {
            assert!(
                usage(&["--advertise", bad]).starts_with("bad --advertise"),
                "{bad:?}"
            );
        }
        assert!(usage(&["--rack", "a b"]).contains("--rack"));

        let mut a = args(&[]);
        a.controllers = " , ".into();
        let m = match broker_config(&a) {
            Err(CliError::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(m.starts_with("--controllers is empty"), "{m}");
        a.controllers = "127.0.0.1:9001,127.0.0.1".into();
        let m = match broker_config(&a) {
            Err(CliError::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            m.starts_with("--controllers entry \"127.0.0.1\": missing port"),
            "{m}"
        );
    }

    #[test]
    fn advertise_may_differ_from_listen() {
        let cfg = broker_config(&args(&["--advertise", "[::1]:9999"])).unwrap();
        assert_eq!(cfg.advertised().unwrap(), ("[::1]".into(), 9999));
        assert_eq!(cfg.listen, "127.0.0.1:9092".parse().unwrap());
    }
}
