//! The six server processes of a run, each in its namespace and on its own disk, and the
//! operations faults are made of: kill, power loss, pause, SIGTERM, restart, cuts.
//!
//! The liveness settings are short so faults play out within seconds (README, "Fault
//! injection"): controllers `--broker-session-timeout-ms 3000 --broker-heartbeat-interval-ms
//! 500`; brokers `--heartbeat-interval-ms 500 --replica-lag-time-max-ms 2000 --rpc-timeout-ms
//! 1000`.
//!
//! # To ensure correctness
//! - Every node the harness takes down is marked [`RunState::Down`] by the harness itself, so
//!   [`Cluster::unexpected_exits`] can tell a crash (a node that exited on its own) from a
//!   fault.
//! - A power loss shuts the file system down *before* it kills the process: nothing the
//!   process does after the cut reaches the disk.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::disk::Disk;
use super::layout::{BROKER_PORT, CONTROLLER_CLIENT_PORT, CONTROLLER_PEER_PORT, Layout, Node};
use super::net::Cuts;
use super::node::{NodeProcess, RunState};

/// How the servers are run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bin: PathBuf,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub rpc_timeout_ms: u64,
    /// `RUST_LOG` of the servers.
    pub rust_log: String,
    /// Size of each node's disk image.
    pub disk_mib: u64,
}

impl Settings {
    pub fn new(bin: PathBuf) -> Settings {
        Settings {
            bin,
            broker_session_timeout_ms: 3_000,
            broker_heartbeat_interval_ms: 500,
            heartbeat_interval_ms: 500,
            replica_lag_time_max_ms: 2_000,
            rpc_timeout_ms: 1_000,
            rust_log: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            disk_mib: 192,
        }
    }

    /// The flags that differ from the defaults, for the report.
    pub fn describe(&self) -> String {
        format!(
            "controllers --broker-session-timeout-ms {} --broker-heartbeat-interval-ms {}; \
             brokers --heartbeat-interval-ms {} --replica-lag-time-max-ms {} --rpc-timeout-ms {}",
            self.broker_session_timeout_ms,
            self.broker_heartbeat_interval_ms,
            self.heartbeat_interval_ms,
            self.replica_lag_time_max_ms,
            self.rpc_timeout_ms
        )
    }
}

/// One server: its process and its disk.
#[derive(Debug)]
pub struct Member {
    pub process: NodeProcess,
    pub disk: Disk,
}

/// An exit the harness did not cause.
#[derive(Clone, Debug)]
pub struct Crash {
    pub node: Node,
    pub status: String,
    pub log_tail: String,
}

#[derive(Debug)]
pub struct Cluster {
    pub layout: Layout,
    pub settings: Settings,
    members: BTreeMap<Node, Member>,
    pub cuts: Cuts,
}

fn flag(args: &mut Vec<OsString>, name: &str, value: impl Into<OsString>) {
    args.push(format!("--{name}").into());
    args.push(value.into());
}

impl Cluster {
    /// Makes every server's disk (mounted, with its data dir) and prepares its process; starts
    /// nothing. Blocking.
    pub fn create(layout: &Layout, settings: &Settings) -> Result<Cluster, String> {
        for dir in [layout.img_dir(), layout.mnt_dir(), layout.log_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let mut members = BTreeMap::new();
        for node in layout.servers() {
            let disk = Disk::create(
                &layout.image(node),
                &layout.mount_point(node),
                &layout.data_dir(node),
                settings.disk_mib,
            )?;
            let args = server_args(layout, settings, node);
            let env = vec![(
                OsString::from("RUST_LOG"),
                OsString::from(&settings.rust_log),
            )];
            let process = NodeProcess::new(
                node.to_string(),
                layout.ns_path(&layout.ns(node)),
                &settings.bin,
                args,
                env,
                layout.log_file(node),
            );
            members.insert(node, Member { process, disk });
        }
        Ok(Cluster {
            layout: layout.clone(),
            settings: settings.clone(),
            members,
            cuts: Cuts::default(),
        })
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.members.keys().copied().collect()
    }

    pub fn brokers(&self) -> Vec<Node> {
        self.nodes().into_iter().filter(|n| n.is_broker()).collect()
    }

    pub fn controllers(&self) -> Vec<Node> {
        self.nodes()
            .into_iter()
            .filter(|n| matches!(n, Node::Controller(_)))
            .collect()
    }

    fn member(&mut self, node: Node) -> Result<&mut Member, String> {
        self.members
            .get_mut(&node)
            .ok_or_else(|| format!("no {node} in this cluster"))
    }

    pub fn state(&self, node: Node) -> RunState {
        self.members
            .get(&node)
            .map_or(RunState::Down, |m| m.process.state())
    }

    /// Starts `node` (mounting its disk first if a power loss left it unmounted). No-op if it
    /// runs.
    pub fn start(&mut self, node: Node) -> Result<(), String> {
        let m = self.member(node)?;
        if m.process.state() != RunState::Down {
            return Ok(());
        }
        m.disk.mount()?;
        m.process
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("starting {node}: {e}"))
    }

    /// kill -9 (a paused process dies too), reaped.
    pub fn kill(&mut self, node: Node) -> Result<(), String> {
        let m = self.member(node)?;
        m.process.kill();
        Ok(())
    }

    /// Power loss of every node in `nodes` at the same moment: every file system is shut down
    /// first, then every process killed, then every disk unmounted and mounted again.
    pub fn power_loss(&mut self, nodes: &[Node]) -> Result<(), String> {
        for &n in nodes {
            self.member(n)?.disk.shutdown()?;
        }
        for &n in nodes {
            self.member(n)?.process.kill();
        }
        for &n in nodes {
            let m = self.member(n)?;
            m.disk.umount(false)?;
            m.disk.mount()?;
        }
        Ok(())
    }

    /// The sabotage's first half: kill `nodes`, copy their disk images aside (unmounted, so
    /// the copy is consistent), mount and start them again.
    pub fn snapshot_disks(&mut self, nodes: &[Node]) -> Result<(), String> {
        for &n in nodes {
            let m = self.member(n)?;
            m.process.kill();
            m.disk.umount(false)?;
            copy_sparse(&m.disk.image, &snapshot_path(&m.disk.image))?;
            m.disk.mount()?;
        }
        for &n in nodes {
            self.start(n)?;
        }
        Ok(())
    }

    /// The sabotage's second half: kill `nodes` and put the copies back (they are started by
    /// the heal that follows).
    pub fn rewind_disks(&mut self, nodes: &[Node]) -> Result<(), String> {
        for &n in nodes {
            let m = self.member(n)?;
            m.process.kill();
            m.disk.umount(false)?;
            copy_sparse(&snapshot_path(&m.disk.image), &m.disk.image)?;
            m.disk.mount()?;
        }
        Ok(())
    }

    pub fn pause(&mut self, node: Node) -> Result<(), String> {
        self.member(node)?
            .process
            .signal(libc::SIGSTOP)
            .map_err(|e| format!("SIGSTOP {node}: {e}"))
    }

    pub fn resume(&mut self, node: Node) -> Result<(), String> {
        let m = self.member(node)?;
        if m.process.state() != RunState::Paused {
            return Ok(());
        }
        m.process
            .signal(libc::SIGCONT)
            .map_err(|e| format!("SIGCONT {node}: {e}"))
    }

    /// SIGTERM and wait for the exit (a broker hands its leaderships over first); killed after
    /// `timeout`. Returns whether it exited by itself, and how.
    pub async fn terminate(&mut self, node: Node, timeout: Duration) -> Result<String, String> {
        let m = self.member(node)?;
        match m.process.terminate(timeout).await {
            Some((status, true)) => Ok(format!("exited: {status}")),
            Some((status, false)) => Ok(format!(
                "did not exit within {timeout:?} of SIGTERM; killed ({status})"
            )),
            None => Ok("was not running".into()),
        }
    }

    /// Cuts removed, every paused node resumed, every node that is down started.
    pub async fn heal_all(&mut self) -> Result<(), String> {
        let layout = self.layout.clone();
        let mut first_error = self.cuts.heal_all(&layout).await.err();
        for node in self.nodes() {
            let r = self.resume(node).and_then(|()| self.start(node));
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Nodes that exited although the harness did not stop them (each reaped and marked down).
    pub fn unexpected_exits(&mut self) -> Vec<Crash> {
        let mut out = Vec::new();
        for (&node, m) in self.members.iter_mut() {
            if m.process.state() == RunState::Down {
                continue;
            }
            if let Some(status) = m.process.exited() {
                out.push(Crash {
                    node,
                    status: describe_status(status),
                    log_tail: m.process.log_tail(20),
                });
            }
        }
        out
    }

    pub fn starts(&self, node: Node) -> u32 {
        self.members.get(&node).map_or(0, |m| m.process.starts())
    }

    /// The last `lines` lines of every node's log, headed by its name and path.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (node, m) in &self.members {
            out.push_str(&format!(
                "----- {node} ({}, {:?}) -----\n{}\n",
                m.process.log_path().display(),
                m.process.state(),
                m.process.log_tail(lines)
            ));
        }
        out
    }

    /// Kills every process (also done on drop).
    pub fn kill_all(&mut self) {
        for m in self.members.values_mut() {
            if m.process.state() == RunState::Paused {
                let _ = m.process.signal(libc::SIGCONT);
            }
            m.process.kill();
        }
    }
}

fn snapshot_path(image: &std::path::Path) -> PathBuf {
    image.with_extension("img.snapshot")
}

fn copy_sparse(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    let out = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| format!("cp: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cp {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

fn server_args(layout: &Layout, s: &Settings, node: Node) -> Vec<OsString> {
    let ip = node.ip();
    let data = layout.data_dir(node);
    let mut args: Vec<OsString> = Vec::new();
    match node {
        Node::Controller(id) => {
            args.push("controller".into());
            flag(&mut args, "node-id", id.to_string());
            flag(
                &mut args,
                "listen",
                format!("{ip}:{CONTROLLER_CLIENT_PORT}"),
            );
            flag(
                &mut args,
                "peer-listen",
                format!("{ip}:{CONTROLLER_PEER_PORT}"),
            );
            flag(&mut args, "peers", layout.peers());
            flag(&mut args, "data-dir", data);
            flag(
                &mut args,
                "broker-session-timeout-ms",
                s.broker_session_timeout_ms.to_string(),
            );
            flag(
                &mut args,
                "broker-heartbeat-interval-ms",
                s.broker_heartbeat_interval_ms.to_string(),
            );
        }
        Node::Broker(id) => {
            args.push("broker".into());
            flag(&mut args, "broker-id", id.to_string());
            flag(&mut args, "listen", format!("{ip}:{BROKER_PORT}"));
            flag(
                &mut args,
                "controllers",
                layout.controller_addrs().join(","),
            );
            flag(&mut args, "data-dir", data);
            flag(
                &mut args,
                "heartbeat-interval-ms",
                s.heartbeat_interval_ms.to_string(),
            );
            flag(
                &mut args,
                "replica-lag-time-max-ms",
                s.replica_lag_time_max_ms.to_string(),
            );
            flag(&mut args, "rpc-timeout-ms", s.rpc_timeout_ms.to_string());
        }
        Node::Client => unreachable!("the client is not a server"),
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_flags() {
        let l = Layout::new("t", Some("/w".into())).unwrap();
        let s = Settings::new("/bin/dmq".into());
        let c: Vec<String> = server_args(&l, &s, Node::Controller(2))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c[0], "controller");
        assert!(c.windows(2).any(|w| w == ["--listen", "10.77.0.12:9093"]));
        assert!(
            c.windows(2)
                .any(|w| w == ["--broker-session-timeout-ms", "3000"])
        );
        let b: Vec<String> = server_args(&l, &s, Node::Broker(3))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(b.windows(2).any(|w| w
            == [
                "--controllers",
                "10.77.0.11:9093,10.77.0.12:9093,10.77.0.13:9093"
            ]));
        assert!(b.windows(2).any(|w| w == ["--data-dir", "/w/mnt/b3/data"]));
        assert!(s.describe().contains("--replica-lag-time-max-ms 2000"));
    }
}
