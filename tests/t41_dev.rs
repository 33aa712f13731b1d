//! `dmq dev` as a user runs it: one command to a ready cluster, Ctrl-C stops it cleanly, and
//! with --data-dir a restart brings the same cluster back with its data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dmq_tests::brokers::process_test_slot;

const BIN: &str = env!("CARGO_BIN_EXE_dmq-under-test");

/// A base port whose whole dev range (BASE..BASE+402) is free right now.
fn free_base() -> u16 {
    let seed = std::process::id() as u16;
    for k in 0..200u16 {
        let base = 20_000 + (seed.wrapping_add(k * 500)) % 30_000;
        let all_free = [
            0u16, 1, 2, 100, 101, 102, 200, 201, 202, 300, 301, 302, 400, 401, 402,
        ]
        .iter()
        .all(|d| std::net::TcpListener::bind(("127.0.0.1", base + d)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range for dmq dev");
}

/// Kills the dev process (and so its children, which it stops itself) if the test fails.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `dmq dev` and returns once it printed its DMQ_BOOTSTRAP line.
fn start_dev(base: u16, data_dir: &std::path::Path) -> (Dev, String) {
    let mut child = Command::new(BIN)
        .args(["dev", "--base-port", &base.to_string(), "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dmq dev");
    let stdout = child.stdout.take().expect("piped");
    let dev = Dev(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(b) = line.strip_prefix("export DMQ_BOOTSTRAP=") {
                let _ = tx.send(b.to_string());
            }
        }
    });
    let bootstrap = rx
        .recv_timeout(Duration::from_secs(90))
        .expect("dmq dev became ready");
    (dev, bootstrap)
}

fn stop_dev(mut dev: Dev) {
    unsafe { libc::kill(dev.0.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = dev.0.try_wait().unwrap() {
            assert!(status.success(), "dmq dev exited with {status} on Ctrl-C");
            return;
        }
        assert!(Instant::now() < deadline, "dmq dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cli(bootstrap: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("DMQ_BOOTSTRAP", bootstrap)
        .env("RUST_LOG", "error")
        .output()
        .expect("run dmq");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_dev_starts_stops_and_keeps_its_data_across_restarts() {
    let _slot = process_test_slot().await;
    let dir = tempfile::tempdir().unwrap();
    let base = free_base();
    let (dev, bootstrap) = start_dev(base, dir.path());
    assert_eq!(
        bootstrap,
        format!(
            "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}",
            base + 1,
            base + 2
        )
    );
    cli(
        &bootstrap,
        &[
            "topic",
            "create",
            "kept",
            "--partitions",
            "2",
            "--replication-factor",
            "3",
        ],
    );
    let produced = {
        let mut p = Command::new(BIN)
            .args(["produce", "-t", "kept", "-p", "0"])
            .env("DMQ_BOOTSTRAP", &bootstrap)
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        p.stdin
            .take()
            .unwrap()
            .write_all(b"one\ntwo\nthree\n")
            .unwrap();
        p.wait().unwrap()
    };
    assert!(produced.success());
    stop_dev(dev);

    let (dev, bootstrap) = start_dev(base, dir.path());
    let topics = cli(&bootstrap, &["topic", "list"]);
    assert!(
        topics.contains("kept"),
        "topic lost across restart: {topics}"
    );
    let records = cli(
        &bootstrap,
        &["consume", "-t", "kept", "-p", "0", "--exit-at-end"],
    );
    assert_eq!(records.lines().collect::<Vec<_>>(), ["one", "two", "three"]);
    stop_dev(dev);
}
