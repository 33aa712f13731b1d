//! The client commands (`dmq topic`, `dmq cluster status`, `dmq produce`, `dmq consume`) as
//! processes against 3 real controllers and 3 real brokers on loopback: their output (tables
//! and `-o json`, parsed), exit statuses and one-line errors (unknown topic, no controller
//! leader, nothing reachable, bad flags).
//!
//! Each command runs with `RUST_LOG=error`, so a failing command's stderr is exactly its one
//! error line. Every wait polls with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Output, Stdio};
use std::time::Duration;

use dmq_proto::v1::BrokerStatus;
use dmq_tests::brokers::{BrokerOpts, BrokerProcs, process_test_slot, wait_brokers};
use dmq_tests::ports::free_ports;
use dmq_tests::{ClusterOpts, ControllerCluster, deadline, wait_until};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_dmq-under-test");

/// Generous bound for anything that normally takes a second, for slow CI machines.
const SLOW: Duration = Duration::from_secs(30);

/// Three controllers and three ONLINE brokers. Fields drop in order: brokers, controllers,
/// then the slot.
struct Setup {
    brokers: BrokerProcs,
    controllers: ControllerCluster,
    _slot: SemaphorePermit<'static>,
}

impl Setup {
    async fn start() -> Setup {
        let slot = process_test_slot().await;
        let mut controllers = ControllerCluster::start(3, ClusterOpts::default()).await;
        controllers.wait_for_leader(SLOW).await;
        let brokers = BrokerProcs::start(3, controllers.addrs(), BrokerOpts::default()).await;
        wait_brokers(&controllers.router(), SLOW, |b| {
            let online = b
                .values()
                .filter(|b| b.status() == BrokerStatus::Online)
                .count();
            if online == 3 {
                Ok(())
            } else {
                Err(format!("{online} of 3 brokers ONLINE"))
            }
        })
        .await;
        Setup {
            brokers,
            controllers,
            _slot: slot,
        }
    }

    /// `--bootstrap` for this cluster.
    fn bootstrap(&self) -> String {
        join(&self.controllers.addrs())
    }

    /// Runs `dmq ARGS --bootstrap ...`.
    async fn dmq(&self, args: &[&str]) -> Output {
        self.dmq_stdin(args, b"").await
    }

    /// Runs `dmq ARGS --bootstrap ...` with `stdin`.
    async fn dmq_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let bootstrap = self.bootstrap();
        let mut all = args.to_vec();
        all.extend(["--bootstrap", &bootstrap]);
        dmq(&all, &[], stdin).await
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// The program with a clean environment (no `DMQ_*` of the caller, `RUST_LOG=error`) plus
/// `env`, fed `stdin`; killed if it runs longer than [`SLOW`].
async fn dmq(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = command(args, env);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run dmq-under-test");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
    });
    let output = tokio::time::timeout(SLOW, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("dmq {args:?} did not finish within {SLOW:?}"))
        .expect("wait for dmq-under-test");
    writer.await.expect("stdin writer");
    output
}

fn command(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("DMQ_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "error");
    cmd.envs(env.iter().copied());
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit status 0 and returns stdout.
fn ok(o: &Output, what: &str) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

fn json(o: &Output, what: &str) -> Value {
    let text = ok(o, what);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// Asserts exit status 1, nothing on stdout, and stderr being exactly `error: LINE`; returns
/// LINE.
fn one_line_error(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: exit {:?}\nstderr: {err}",
        o.status
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: want one line on stderr, got:\n{err}"
    );
    lines[0]
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("{what}: {err}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_cluster_status_against_a_real_cluster() {
    let mut s = Setup::start().await;

    // create
    let created = json(
        &s.dmq(&[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
            "--retention-ms",
            "-1",
            "-o",
            "json",
        ])
        .await,
        "create",
    );
    assert_eq!(created["name"], "orders");
    assert_eq!(created["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(created["replication_factor"], 3);
    assert_eq!(created["config"]["min_insync_replicas"], 2);
    assert_eq!(created["config"]["retention_ms"], -1);
    let table = ok(
        &s.dmq(&["topic", "create", "small", "-p", "1", "-r", "1"])
            .await,
        "create table",
    );
    assert_eq!(
        table,
        "created topic \"small\" (1 partition, replication factor 1)\n"
    );
    let again = s
        .dmq(&["topic", "create", "orders", "-p", "3", "-r", "3"])
        .await;
    assert_eq!(
        one_line_error(&again, "create again"),
        "topic \"orders\" already exists; see it with: dmq topic describe orders"
    );
    ok(
        &s.dmq(&[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "-r",
            "3",
            "--if-not-exists",
        ])
        .await,
        "create --if-not-exists",
    );
    let too_many = s
        .dmq(&["topic", "create", "big", "-p", "1", "-r", "4"])
        .await;
    let line = one_line_error(&too_many, "replication factor above the brokers");
    assert!(line.contains("replication"), "{line}");

    // list
    let list = json(&s.dmq(&["topic", "list", "-o", "json"]).await, "list");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders", "small"]);
    assert_eq!(list[0]["partitions"], 3);
    assert_eq!(list[0]["replication_factor"], 3);
    let table = ok(&s.dmq(&["topic", "list"]).await, "list table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "NAME    PARTITIONS  REPLICATION_FACTOR",
        "{table}"
    );
    assert_eq!(lines[1], "orders  3           3", "{table}");
    assert_eq!(lines[2], "small   1           1", "{table}");

    // describe
    let d = json(
        &s.dmq(&["topic", "describe", "orders", "-o", "json"]).await,
        "describe",
    );
    let partitions = d["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i);
        let replicas: BTreeSet<u64> = p["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap())
            .collect();
        assert_eq!(replicas, BTreeSet::from([1, 2, 3]), "{p}");
        let leader = p["leader"].as_u64().expect("a leader");
        assert!(replicas.contains(&leader), "{p}");
        for r in p["isr"].as_array().unwrap() {
            assert!(replicas.contains(&r.as_u64().unwrap()), "{p}");
        }
        assert!(p["leader_epoch"].is_u64(), "{p}");
    }
    let table = ok(
        &s.dmq(&["topic", "describe", "orders"]).await,
        "describe table",
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("topic orders (id ") && lines[0].contains("3 partitions"),
        "{table}"
    );
    assert_eq!(lines[1], "");
    let header: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        header,
        ["PARTITION", "LEADER", "LEADER_EPOCH", "REPLICAS", "ISR"]
    );
    for (i, line) in lines[3..].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let p = &partitions[i];
        assert_eq!(cells[0], i.to_string(), "{table}");
        assert_eq!(cells[1], p["leader"].to_string(), "{table}");
        assert_eq!(cells[3].split(',').count(), 3, "{table}");
    }
    assert_eq!(lines.len(), 6, "{table}");
    let unknown = s.dmq(&["topic", "describe", "nope"]).await;
    assert_eq!(
        one_line_error(&unknown, "describe unknown"),
        "topic \"nope\" does not exist; list topics with: dmq topic list"
    );

    // cluster status
    let leader = s.controllers.wait_for_leader(SLOW).await;
    let st = json(
        &s.dmq(&["cluster", "status", "-o", "json"]).await,
        "cluster status",
    );
    assert_eq!(st["leader_id"], leader, "{st}");
    let controllers = st["controllers"].as_array().unwrap();
    assert_eq!(controllers.len(), 3, "{st}");
    for (i, c) in controllers.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(c["id"], id, "{st}");
        assert_eq!(c["address"], s.controllers.addr(id).to_string(), "{st}");
        assert_eq!(c["is_leader"], id == leader, "{st}");
        let role = if id == leader { "leader" } else { "follower" };
        assert_eq!(c["role"], role, "{st}");
        assert!(c["term"].as_u64().unwrap() >= 1, "{st}");
        assert!(c["commit_index"].as_u64().unwrap() >= 1, "{st}");
        assert!(c["applied_index"].is_u64(), "{st}");
        assert_eq!(c["error"], Value::Null, "{st}");
    }
    let brokers = st["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 3, "{st}");
    for (i, b) in brokers.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(b["id"], id, "{st}");
        assert_eq!(b["address"], s.brokers.addr(id).to_string(), "{st}");
        assert_eq!(b["status"], "ONLINE", "{st}");
        assert!(b["epoch"].as_u64().unwrap() >= 1, "{st}");
    }
    let table = ok(&s.dmq(&["cluster", "status"]).await, "cluster status table");
    assert!(
        table.starts_with(&format!("controller leader: {leader} (")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{leader}*")) && l.contains(" leader ")),
        "{table}"
    );
    assert!(table.contains("\nBROKER "), "{table}");
    assert_eq!(table.matches("ONLINE").count(), 3, "{table}");

    // delete
    ok(&s.dmq(&["topic", "delete", "small"]).await, "delete");
    let gone = s.dmq(&["topic", "describe", "small"]).await;
    assert_eq!(
        one_line_error(&gone, "describe deleted"),
        "topic \"small\" does not exist; list topics with: dmq topic list"
    );
    let twice = s.dmq(&["topic", "delete", "small"]).await;
    assert_eq!(
        one_line_error(&twice, "delete twice"),
        "topic \"small\" does not exist; list topics with: dmq topic list"
    );
    let d = json(
        &s.dmq(&["topic", "delete", "small", "--if-exists", "-o", "json"])
            .await,
        "delete --if-exists",
    );
    assert_eq!(d["deleted"], false);

    // No controller leader: only one of three controllers left.
    let leader = s.controllers.wait_for_leader(SLOW).await;
    let other = if leader == 1 { 2 } else { 1 };
    s.controllers.kill(leader);
    s.controllers.kill(other);
    let started = Instant::now();
    let last = wait_until(deadline(SLOW), || async {
        let o = s.dmq(&["topic", "list", "--timeout-ms", "1500"]).await;
        let err = stderr(&o);
        let line = err.lines().last().unwrap_or_default().to_string();
        if o.status.code() == Some(1)
            && line.starts_with("error: the cluster has no controller leader")
        {
            Ok(one_line_error(&o, "topic list without a leader"))
        } else {
            Err(err)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        last.ends_with("check it with: dmq cluster status"),
        "{last}"
    );
    eprintln!("no-leader message after {:?}: {last}", started.elapsed());
    let st = s.dmq(&["cluster", "status", "--timeout-ms", "1000"]).await;
    let line = one_line_error(&st, "cluster status without a leader");
    assert!(
        line.starts_with("the cluster has no controller leader"),
        "{line}"
    );
    let table = stdout(&st);
    assert!(table.starts_with("controller leader: none"), "{table}");
    assert_eq!(table.matches("unreachable").count(), 2, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_without_a_cluster() {
    // Bad flags: exit 2, clap's message.
    for bad in [
        &["topic", "create", "t", "--partitions", "zero", "-r", "1"][..],
        &["topic", "create", "t", "-r", "1"],
        &["topic", "list", "--bogus"],
        &["topic", "list", "-o", "yaml"],
        &["topic", "list", "--bootstrap", "no-port"],
        &["consume", "-t", "t", "--from-beginning", "--from-end"],
        &["consume", "-t", "t", "-f", "%x"],
        &["produce", "-t", "t", "--acks", "2"],
        &["produce"],
    ] {
        let o = dmq(bad, &[], b"").await;
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("error: "), "{bad:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{bad:?}");
    }

    // Nothing listening: one line naming every address tried, quickly.
    let ports = free_ports(2);
    let addrs = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let want = format!(
        "cannot reach any controller at 127.0.0.1:{}, 127.0.0.1:{}",
        ports[0], ports[1]
    );
    for (args, env) in [
        (vec!["topic", "list", "--bootstrap", addrs.as_str()], vec![]),
        (
            vec!["cluster", "status"],
            vec![("DMQ_BOOTSTRAP", addrs.as_str())],
        ),
        (
            vec!["consume", "-t", "t", "-e"],
            vec![("DMQ_BOOTSTRAP", addrs.as_str())],
        ),
    ] {
        let started = Instant::now();
        let o = dmq(&args, &env, b"").await;
        let line = one_line_error(&o, &format!("{args:?} unreachable"));
        assert!(line.starts_with(&want), "{line}");
        assert!(
            line.contains("`dmq dev`") && line.contains("--bootstrap"),
            "{line}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

/// Records as consumed with `-o json`, by partition: (offset, key, value).
type ByPartition = BTreeMap<u64, Vec<(u64, Option<String>, String)>>;

fn parse_records(text: &str) -> ByPartition {
    let mut out = ByPartition::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        out.entry(v["partition"].as_u64().unwrap())
            .or_default()
            .push((
                v["offset"].as_u64().unwrap(),
                v["key"].as_str().map(str::to_string),
                v["value"].as_str().unwrap().to_string(),
            ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_round_trip() {
    let s = Setup::start().await;
    ok(
        &s.dmq(&["topic", "create", "events", "-p", "3", "-r", "3"])
            .await,
        "create",
    );

    // 200 keyed records; offsets printed in input order.
    let input: String = (0..200).map(|i| format!("k{}:v{i}\n", i % 10)).collect();
    let o = s
        .dmq_stdin(
            &[
                "produce",
                "-t",
                "events",
                "-k",
                ":",
                "--print-offsets",
                "-o",
                "json",
            ],
            input.as_bytes(),
        )
        .await;
    let printed = ok(&o, "produce");
    assert!(
        stderr(&o).contains("produced 200 records to events"),
        "{}",
        stderr(&o)
    );
    let landed: Vec<(u64, u64)> = printed
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["partition"].as_u64().unwrap(),
                v["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(landed.len(), 200);

    // Everything back, per partition in offset order, same key -> same partition.
    let o = s
        .dmq(&[
            "consume",
            "-t",
            "events",
            "--from-beginning",
            "--exit-at-end",
            "-o",
            "json",
        ])
        .await;
    let by_partition = parse_records(&ok(&o, "consume -e"));
    let mut values = BTreeSet::new();
    let mut key_partition = BTreeMap::new();
    for (&p, records) in &by_partition {
        for (i, (offset, key, value)) in records.iter().enumerate() {
            assert_eq!(*offset, i as u64, "partition {p} offsets are 0, 1, ...");
            let key = key.clone().expect("keyed");
            let n: u64 = value[1..].parse().unwrap();
            assert_eq!(key, format!("k{}", n % 10));
            assert_eq!(landed[n as usize], (p, *offset), "printed offset of v{n}");
            assert_eq!(
                *key_partition.entry(key).or_insert(p),
                p,
                "one partition per key"
            );
            values.insert(n);
        }
    }
    assert_eq!(values.len(), 200);
    assert!(
        stderr(&o).contains("consumed 200 records from events"),
        "{}",
        stderr(&o)
    );

    // One partition from an offset, with a format string; --max-records.
    let p0 = &by_partition[&0];
    let o = s
        .dmq(&[
            "consume",
            "-t",
            "events",
            "-p",
            "0",
            "--offset",
            "1",
            "-e",
            "-f",
            "%p:%o:%k=%v",
        ])
        .await;
    let want: String = p0[1..]
        .iter()
        .map(|(o, k, v)| format!("0:{o}:{}={v}\n", k.as_deref().unwrap()))
        .collect();
    assert_eq!(ok(&o, "consume -p 0 --offset 1"), want);
    let o = s
        .dmq(&["consume", "-t", "events", "--max-records", "5"])
        .await;
    assert_eq!(ok(&o, "consume --max-records").lines().count(), 5);
    let o = s
        .dmq(&["consume", "-t", "events", "--from-end", "-e"])
        .await;
    assert_eq!(ok(&o, "consume --from-end -e"), "");

    // Keyless, one partition, acks=1, plain offsets.
    let o = s
        .dmq_stdin(
            &[
                "produce",
                "-t",
                "events",
                "-p",
                "2",
                "--acks",
                "1",
                "--print-offsets",
            ],
            b"a\nb\n",
        )
        .await;
    let n2 = by_partition.get(&2).map_or(0, Vec::len);
    assert_eq!(ok(&o, "produce -p 2"), format!("2\t{n2}\n2\t{}\n", n2 + 1));

    // Unknown topic and partition.
    let o = s.dmq_stdin(&["produce", "-t", "nope"], b"x\n").await;
    assert_eq!(
        one_line_error(&o, "produce unknown topic"),
        "topic \"nope\" does not exist; list topics with: dmq topic list"
    );
    let o = s.dmq(&["consume", "-t", "nope", "-e"]).await;
    assert_eq!(
        one_line_error(&o, "consume unknown topic"),
        "topic \"nope\" does not exist; list topics with: dmq topic list"
    );
    let o = s.dmq(&["consume", "-t", "events", "-p", "9", "-e"]).await;
    assert!(one_line_error(&o, "consume -p 9").starts_with("no such partition"));

    // Following: a consumer from the end sees new records, and Ctrl-C stops it with status 0.
    let bootstrap = s.bootstrap();
    let mut follower = command(
        &[
            "consume",
            "-t",
            "events",
            "--from-end",
            "-f",
            "%v",
            "--bootstrap",
            &bootstrap,
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the follower");
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        assert!(started.elapsed() < SLOW, "the follower saw only {seen:?}");
        ok(
            &s.dmq_stdin(&["produce", "-t", "events", "-p", "1"], b"live\n")
                .await,
            "produce live",
        );
        if let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            seen.push(line);
        }
    }
    assert!(seen.iter().all(|l| l == "live"), "{seen:?}");
    let pid = follower.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), follower.wait())
        .await
        .expect("the follower stops on SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
