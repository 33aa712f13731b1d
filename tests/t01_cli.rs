//! The `dmq` command line as a process: help, flags from the environment, exit statuses and
//! one-line errors. Needs no running server.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_dmq-under-test");

const FLAGS: [(&str, &str); 14] = [
    ("--node-id", "DMQ_NODE_ID"),
    ("--listen", "DMQ_LISTEN"),
    ("--peer-listen", "DMQ_PEER_LISTEN"),
    ("--peers", "DMQ_PEERS"),
    ("--data-dir", "DMQ_DATA_DIR"),
    ("--tick-ms", "DMQ_TICK_MS"),
    ("--heartbeat-interval-ticks", "DMQ_HEARTBEAT_INTERVAL_TICKS"),
    (
        "--election-timeout-min-ticks",
        "DMQ_ELECTION_TIMEOUT_MIN_TICKS",
    ),
    (
        "--election-timeout-max-ticks",
        "DMQ_ELECTION_TIMEOUT_MAX_TICKS",
    ),
    ("--replication-timeout-ms", "DMQ_REPLICATION_TIMEOUT_MS"),
    ("--snapshot-every-entries", "DMQ_SNAPSHOT_EVERY_ENTRIES"),
    (
        "--broker-session-timeout-ms",
        "DMQ_BROKER_SESSION_TIMEOUT_MS",
    ),
    (
        "--broker-heartbeat-interval-ms",
        "DMQ_BROKER_HEARTBEAT_INTERVAL_MS",
    ),
    (
        "--shutdown-transfer-timeout-ms",
        "DMQ_SHUTDOWN_TRANSFER_TIMEOUT_MS",
    ),
];

/// Runs the program with a clean environment: no `DMQ_*` of the caller, plus `env`.
fn dmq(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("DMQ_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run dmq-under-test")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_harness_finds_the_binary() {
    assert_eq!(dmq_tests::dmq_bin(), std::path::PathBuf::from(BIN));
}

#[test]
fn help_lists_every_flag_with_its_env_var() {
    let o = dmq(&["controller", "--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    for (flag, env) in FLAGS {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{env} missing from:\n{help}"
        );
    }
    let top = dmq(&["--help"], &[]);
    assert_eq!(top.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&top.stdout).contains("controller"));
}

#[test]
fn missing_or_malformed_flags_exit_2() {
    let o = dmq(&["controller"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--node-id"));

    let o = dmq(
        &[
            "controller",
            "--node-id",
            "1",
            "--peers",
            "1=h:1",
            "--data-dir",
            "d",
            "--tick-ms",
            "x",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--tick-ms"));
}

#[test]
fn a_bad_peers_entry_is_one_named_line() {
    let o = dmq(
        &[
            "controller",
            "--node-id",
            "1",
            "--data-dir",
            "d",
            "--peers",
            "1=127.0.0.1:9101,2=127.0.0.1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error: --peers entry \"2=127.0.0.1\""),
        "{err}"
    );
    assert!(err.contains("ID=PEER_HOST:PORT"), "{err}");
}

#[test]
fn flags_come_from_the_environment() {
    let o = dmq(
        &["controller"],
        &[
            ("DMQ_NODE_ID", "9"),
            ("DMQ_PEERS", "1=127.0.0.1:9101,2=127.0.0.1:9102"),
            ("DMQ_DATA_DIR", "/nonexistent"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--node-id 9 is not in --peers (ids: 1, 2)"),
        "{err}"
    );

    // A flag wins over its variable.
    let o = dmq(
        &["controller", "--node-id", "2"],
        &[
            ("DMQ_NODE_ID", "9"),
            ("DMQ_PEERS", "1=127.0.0.1:9101,2=127.0.0.1:9102"),
            ("DMQ_DATA_DIR", "/nonexistent"),
            ("DMQ_BROKER_HEARTBEAT_INTERVAL_MS", "40000"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--broker-heartbeat-interval-ms (40000)"),
        "{}",
        stderr(&o)
    );
}

/// Settings come from the TOML file, then DMQ_* variables, then flags, each overriding the
/// one before. The resolved --listen/--peer-listen show in the "both X" refusal.
#[test]
fn config_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dmq.toml");
    std::fs::write(
        &file,
        "[controller]\nnode-id = 1\npeers = \"1=127.0.0.1:7001\"\ndata-dir = \"/tmp/x\"\n\
         listen = \"127.0.0.1:7001\"\npeer_listen = \"127.0.0.1:7001\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = dmq(&["controller", "--config", f], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("both 127.0.0.1:7001"), "{}", stderr(&o));

    let env = [
        ("DMQ_LISTEN", "127.0.0.1:7002"),
        ("DMQ_PEER_LISTEN", "127.0.0.1:7002"),
    ];
    let o = dmq(&["controller", "--config", f], &env);
    assert!(stderr(&o).contains("both 127.0.0.1:7002"), "{}", stderr(&o));

    let flags = [
        "controller",
        "--config",
        f,
        "--listen",
        "127.0.0.1:7003",
        "--peer-listen",
        "127.0.0.1:7003",
    ];
    let o = dmq(&flags, &env);
    assert!(stderr(&o).contains("both 127.0.0.1:7003"), "{}", stderr(&o));

    // DMQ_CONFIG names the file too; an unknown key is refused with the file named.
    std::fs::write(&file, "[controller]\nnode-idd = 1\n").unwrap();
    let o = dmq(&["controller"], &[("DMQ_CONFIG", f)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown setting `node-idd`"),
        "{}",
        stderr(&o)
    );
}
