//! A cluster of real `dmq controller` processes on loopback.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use dmq_proto::v1::{ControllerRole, GetControllerInfoRequest, GetControllerInfoResponse};
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::ports::free_ports;
use crate::process::ChildProcess;
use crate::router::{LeaderRouter, channel};
use crate::wait::{WaitTimeout, deadline, wait_until};

/// How the controllers are started. [`Default`] gives short timeouts for tests.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// The program (default: [`dmq_bin`]).
    pub bin: PathBuf,
    pub tick_ms: u64,
    pub heartbeat_interval_ticks: u32,
    pub election_timeout_min_ticks: u32,
    pub election_timeout_max_ticks: u32,
    pub replication_timeout_ms: u64,
    pub snapshot_every_entries: u64,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub shutdown_transfer_timeout_ms: u64,
    /// More `dmq controller` flags, appended last.
    pub extra_args: Vec<String>,
    /// `RUST_LOG` of the children (default: the test's own `RUST_LOG`, else `info`).
    pub rust_log: String,
    /// How long a node may take to answer GetControllerInfo after (re)start.
    pub start_timeout: Duration,
    /// How long a node may take to exit after SIGTERM.
    pub stop_timeout: Duration,
    /// Timeout of one RPC made by the harness's clients.
    pub rpc_timeout: Duration,
    /// `leader_client` waits this long for a leader.
    pub leader_timeout: Duration,
    /// Whole-cluster start attempts (new ports each) when a node dies at startup.
    pub start_attempts: u32,
    /// Whether `start` and `restart` wait until the nodes answer GetControllerInfo.
    pub wait_ready: bool,
}

impl Default for ClusterOpts {
    fn default() -> ClusterOpts {
        ClusterOpts {
            bin: dmq_bin(),
            tick_ms: 50,
            heartbeat_interval_ticks: 1,
            election_timeout_min_ticks: 4,
            election_timeout_max_ticks: 8,
            replication_timeout_ms: 3000,
            snapshot_every_entries: 10_000,
            broker_session_timeout_ms: 2000,
            broker_heartbeat_interval_ms: 500,
            shutdown_transfer_timeout_ms: 1000,
            extra_args: Vec::new(),
            rust_log: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            start_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(2),
            leader_timeout: Duration::from_secs(15),
            start_attempts: 3,
            wait_ready: true,
        }
    }
}

/// The `dmq-under-test` binary: `$DMQ_TEST_BIN` if set, else next to the test executable's
/// `deps/` directory, where cargo puts it (`env!("CARGO_BIN_EXE_dmq-under-test")` in a test
/// names the same file; the library cannot use it, cargo sets it for test targets only).
pub fn dmq_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DMQ_TEST_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(format!("dmq-under-test{}", std::env::consts::EXE_SUFFIX))
}

struct Node {
    id: u64,
    client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    process: ChildProcess,
    paused: bool,
    channel: Channel,
}

/// Controller processes `1..=n`, each with its own ports, data dir and log file in one temp dir.
///
/// Dropping it kills every child it started (by PID), also when the test panics; on a panic it
/// first prints the tail of every node's log (`DMQ_TEST_LOG_LINES`, default 200, 0 = all).
/// `DMQ_TEST_KEEP_DIRS=1` keeps the temp dir (data and logs) after a failed test.
pub struct ControllerCluster {
    opts: ClusterOpts,
    nodes: BTreeMap<u64, Node>,
    dir: Option<tempfile::TempDir>,
    /// The logs were already printed for this failure.
    dumped: bool,
}

/// A node died or did not answer while starting.
#[derive(Debug)]
enum StartFailure {
    Exited { id: u64, status: ExitStatus },
    NotReady(WaitTimeout),
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFailure::Exited { id, status } => write!(f, "controller {id} exited ({status})"),
            StartFailure::NotReady(t) => write!(f, "not ready: {t}"),
        }
    }
}

impl ControllerCluster {
    /// Starts `n` controllers and (with `opts.wait_ready`) waits until each answers
    /// GetControllerInfo with its id. Panics with the logs if that fails `opts.start_attempts`
    /// times.
    pub async fn start(n: usize, opts: ClusterOpts) -> ControllerCluster {
        assert!(n >= 1, "a cluster needs at least one node");
        assert!(
            opts.bin.is_file(),
            "{} does not exist: build it with `cargo build -p dmq-tests` (or set DMQ_TEST_BIN)",
            opts.bin.display()
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cluster = Self::spawn_all(n, opts.clone());
            if !cluster.opts.wait_ready {
                return cluster;
            }
            let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
            match cluster.wait_ready(&ids).await {
                Ok(()) => return cluster,
                // Most likely a port taken between our check and the child's bind.
                Err(StartFailure::Exited { id, status }) if attempt < opts.start_attempts => {
                    eprintln!(
                        "harness: node {id} exited at startup ({status}); retrying with new ports \
                         (attempt {attempt} of {}). Its log:\n{}",
                        opts.start_attempts,
                        cluster.nodes[&id].process.log_tail(30)
                    );
                }
                Err(e) => {
                    cluster.kill_all();
                    cluster.dump_logs();
                    cluster.dumped = true;
                    panic!("controller cluster of {n} did not start (attempt {attempt}): {e}");
                }
            }
        }
    }

    fn spawn_all(n: usize, opts: ClusterOpts) -> ControllerCluster {
        let dir = tempfile::Builder::new()
            .prefix("dmq-cluster-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(2 * n);
        let addr = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        let specs: Vec<(u64, SocketAddr, SocketAddr)> = (0..n)
            .map(|i| (i as u64 + 1, addr(ports[2 * i]), addr(ports[2 * i + 1])))
            .collect();
        let peers = specs
            .iter()
            .map(|(id, client, peer)| format!("{id}={peer}/{client}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        for &(id, client, peer) in &specs {
            let data_dir = dir.path().join(format!("node-{id}"));
            let args = node_args(&opts, id, client, peer, &peers, &data_dir);
            let process = controller_process(&opts, dir.path(), id, args);
            nodes.insert(
                id,
                Node {
                    id,
                    client,
                    peer,
                    data_dir,
                    process,
                    paused: false,
                    channel: channel(&client.to_string(), opts.rpc_timeout),
                },
            );
        }
        let mut cluster = ControllerCluster {
            opts,
            nodes,
            dir: Some(dir),
            dumped: false,
        };
        for node in cluster.nodes.values_mut() {
            node.process
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", node.process.name()));
        }
        cluster
    }

    /// Waits until every node in `ids` runs and answers GetControllerInfo with its own id.
    async fn wait_ready(&mut self, ids: &[u64]) -> Result<(), StartFailure> {
        let until = deadline(self.opts.start_timeout);
        let mut pending: Vec<u64> = ids.to_vec();
        let mut last = String::new();
        loop {
            for &id in ids {
                let node = self.nodes.get_mut(&id).expect("node");
                if let Some(status) = node.process.exit_status() {
                    return Err(StartFailure::Exited { id, status });
                }
            }
            let mut still = Vec::new();
            for &id in &pending {
                match self.info(id).await {
                    Ok(info) if info.node_id == id => {}
                    Ok(info) => {
                        // Someone else answers on this node's port.
                        last = format!("node {id}'s port is served by node {}", info.node_id);
                        still.push(id);
                    }
                    Err(e) => {
                        last = format!("node {id}: {}: {}", e.code(), e.message());
                        still.push(id);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(StartFailure::NotReady(WaitTimeout {
                    waited: self.opts.start_timeout,
                    attempts: 0,
                    last: Some(format!("waiting for {pending:?}; {last}")),
                }));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The options it was started with.
    pub fn opts(&self) -> &ClusterOpts {
        &self.opts
    }

    /// Every node id, `1..=n`.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Ids of the nodes whose process runs and is not paused.
    pub fn live_ids(&mut self) -> Vec<u64> {
        self.nodes
            .values_mut()
            .filter_map(|n| (n.process.is_running() && !n.paused).then_some(n.id))
            .collect()
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no controller {id} (ids: {:?})", self.ids()))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        let ids = self.ids();
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no controller {id} (ids: {ids:?})"))
    }

    /// Node `id`'s client (ControllerService) address.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.node(id).client
    }

    /// Every node's client address, in id order (a bootstrap list).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.values().map(|n| n.client).collect()
    }

    /// Node `id`'s peer (RaftService) address.
    pub fn peer_addr(&self, id: u64) -> SocketAddr {
        self.node(id).peer
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).data_dir
    }

    pub fn log_path(&self, id: u64) -> &Path {
        self.node(id).process.log_path()
    }

    /// The PID of node `id` while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).process.pid()
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        self.node_mut(id).process.is_running()
    }

    /// A client of node `id` (its connection is shared and reconnects by itself).
    pub fn client(&self, id: u64) -> ControllerServiceClient<Channel> {
        ControllerServiceClient::new(self.node(id).channel.clone())
    }

    /// A leader-following client over every node.
    pub fn router(&self) -> LeaderRouter {
        LeaderRouter::new(self.addrs())
            .with_timeouts(self.opts.rpc_timeout, self.opts.leader_timeout)
    }

    /// GetControllerInfo of node `id`.
    pub async fn info(&self, id: u64) -> Result<GetControllerInfoResponse, Status> {
        let mut c = self.client(id);
        match tokio::time::timeout(
            self.opts.rpc_timeout,
            c.get_controller_info(GetControllerInfoRequest {}),
        )
        .await
        {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "controller {id} did not answer"
            ))),
        }
    }

    /// Waits until every live node names the same leader, which is live and says it leads;
    /// returns its id.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> u64 {
        let live = self.live_ids();
        assert!(!live.is_empty(), "no controller is running");
        let this = &*self;
        let r = wait_until(deadline(timeout), || {
            let live = live.clone();
            async move {
                let mut infos = BTreeMap::new();
                for &id in &live {
                    let info = this
                        .info(id)
                        .await
                        .map_err(|e| format!("node {id}: {}: {}", e.code(), e.message()))?;
                    infos.insert(id, info);
                }
                agreed_leader(&infos)
            }
        })
        .await;
        match r {
            Ok(id) => id,
            Err(e) => panic!("no agreed leader among live nodes {live:?}: {e}"),
        }
    }

    /// A client of the leader, once there is one (within `opts.leader_timeout`).
    pub async fn leader_client(&mut self) -> ControllerServiceClient<Channel> {
        let id = self.wait_for_leader(self.opts.leader_timeout).await;
        self.client(id)
    }

    /// SIGKILL node `id` (exactly its PID) and reap it.
    pub fn kill(&mut self, id: u64) -> Option<ExitStatus> {
        let node = self.node_mut(id);
        node.paused = false;
        node.process.kill()
    }

    /// SIGTERM node `id` and wait (up to `opts.stop_timeout`) for it to exit; returns its exit
    /// status (0 after a clean shutdown). Panics, having killed it, if it does not exit in time.
    pub async fn stop(&mut self, id: u64) -> ExitStatus {
        let timeout = self.opts.stop_timeout;
        let node = self.node_mut(id);
        if node.paused {
            let _ = node.process.signal(libc::SIGCONT);
            node.paused = false;
        }
        // On failure, Drop prints every node's log.
        node.process
            .terminate(timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts node `id` again with the same flags, ports and data dir; with `opts.wait_ready`,
    /// waits until it answers. Panics if it is running.
    pub async fn restart(&mut self, id: u64) {
        let rpc_timeout = self.opts.rpc_timeout;
        let node = self.node_mut(id);
        node.process
            .spawn()
            .unwrap_or_else(|e| panic!("could not restart controller {id}: {e}"));
        node.paused = false;
        node.channel = channel(&node.client.to_string(), rpc_timeout);
        if self.opts.wait_ready
            && let Err(e) = self.wait_ready(&[id]).await
        {
            panic!("controller {id} did not come back: {e}");
        }
    }

    /// Starts controller `id` with empty storage and `--join` (the client addresses of every
    /// other node of this harness), new ports unless it existed: it asks the cluster to add it
    /// (as a learner, promoted once caught up). A node `id` that existed must be stopped; its
    /// data dir is wiped first (a lost disk replaced by an empty one). Waits until it answers
    /// GetControllerInfo (with `opts.wait_ready`), not until it is a member.
    pub async fn join(&mut self, id: u64) {
        let dir = self
            .dir
            .as_ref()
            .expect("the cluster's temp dir")
            .path()
            .to_path_buf();
        let (client, peer) = match self.nodes.get(&id) {
            Some(n) => (n.client, n.peer),
            None => {
                let ports = free_ports(2);
                let addr = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
                (addr(ports[0]), addr(ports[1]))
            }
        };
        let data_dir = dir.join(format!("node-{id}"));
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).expect("wipe the data dir");
        }
        let join: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.id != id)
            .map(|n| n.client.to_string())
            .collect();
        let mut args = node_args(
            &self.opts,
            id,
            client,
            peer,
            &format!("{id}={peer}/{client}"),
            &data_dir,
        );
        args.push("--join".into());
        args.push(join.join(",").into());
        let mut process = controller_process(&self.opts, &dir, id, args);
        process
            .spawn()
            .unwrap_or_else(|e| panic!("could not start controller {id}: {e}"));
        let channel = channel(&client.to_string(), self.opts.rpc_timeout);
        self.nodes.insert(
            id,
            Node {
                id,
                client,
                peer,
                data_dir,
                process,
                paused: false,
                channel,
            },
        );
        if self.opts.wait_ready
            && let Err(e) = self.wait_ready(&[id]).await
        {
            panic!("controller {id} did not start: {e}");
        }
    }

    /// SIGSTOP node `id`: it keeps its ports and state but does nothing (a hung node).
    pub fn pause(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.process.signal(libc::SIGSTOP).expect("SIGSTOP");
        node.paused = true;
    }

    /// SIGCONT node `id` after [`pause`](Self::pause).
    pub fn resume(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.process.signal(libc::SIGCONT).expect("SIGCONT");
        node.paused = false;
    }

    /// Sets node `id`'s test-only fault points (see `dmq_controller::faults`), e.g.
    /// `"sync_stall_ms=2000"`; `""` clears them. Takes effect at the node's next check (its
    /// next storage write or sync), also while it runs.
    pub fn set_faults(&self, id: u64, faults: &str) {
        let dir = self.dir.as_ref().expect("the cluster's temp dir").path();
        let path = fault_file(dir, id);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, faults).expect("write the fault file");
        std::fs::rename(&tmp, &path).expect("install the fault file");
    }

    /// Prints the tail of every node's log to stderr (shown by the test runner on failure).
    pub fn dump_logs(&self) {
        for &id in self.nodes.keys() {
            self.dump_log(id);
        }
    }

    /// Prints the tail of node `id`'s log to stderr.
    pub fn dump_log(&self, id: u64) {
        let node = self.node(id);
        eprintln!(
            "----- controller {id} (client {}, peer {}, log {}) -----\n{}",
            node.client,
            node.peer,
            node.process.log_path().display(),
            node.process.log_tail_for_dump()
        );
    }

    fn kill_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.process.kill();
        }
    }
}

impl Drop for ControllerCluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        self.kill_all();
        if failed && !self.dumped {
            self.dump_logs();
        }
        if failed
            && std::env::var_os("DMQ_TEST_KEEP_DIRS").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("harness: kept {}", dir.keep().display());
        }
    }
}

/// The (not yet started) process of controller `id`, its log and fault file in `dir`.
fn controller_process(o: &ClusterOpts, dir: &Path, id: u64, args: Vec<OsString>) -> ChildProcess {
    let env = vec![
        (OsString::from("RUST_LOG"), OsString::from(&o.rust_log)),
        (
            OsString::from("DMQ_FAULT_FILE"),
            fault_file(dir, id).into_os_string(),
        ),
    ];
    let log = dir.join(format!("node-{id}.log"));
    ChildProcess::new(format!("controller {id}"), &o.bin, args, env, log)
}

/// Where node `id` reads its fault points (`DMQ_FAULT_FILE`).
fn fault_file(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}.faults"))
}

fn node_args(
    o: &ClusterOpts,
    id: u64,
    client: SocketAddr,
    peer: SocketAddr,
    peers: &str,
    data_dir: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["controller".into()];
    let mut flag = |name: &str, value: OsString| {
        args.push(format!("--{name}").into());
        args.push(value);
    };
    flag("node-id", id.to_string().into());
    flag("listen", client.to_string().into());
    flag("peer-listen", peer.to_string().into());
    flag("peers", peers.into());
    flag("data-dir", data_dir.as_os_str().to_owned());
    flag("tick-ms", o.tick_ms.to_string().into());
    flag(
        "heartbeat-interval-ticks",
        o.heartbeat_interval_ticks.to_string().into(),
    );
    flag(
        "election-timeout-min-ticks",
        o.election_timeout_min_ticks.to_string().into(),
    );
    flag(
        "election-timeout-max-ticks",
        o.election_timeout_max_ticks.to_string().into(),
    );
    flag(
        "replication-timeout-ms",
        o.replication_timeout_ms.to_string().into(),
    );
    flag(
        "snapshot-every-entries",
        o.snapshot_every_entries.to_string().into(),
    );
    flag(
        "broker-session-timeout-ms",
        o.broker_session_timeout_ms.to_string().into(),
    );
    flag(
        "broker-heartbeat-interval-ms",
        o.broker_heartbeat_interval_ms.to_string().into(),
    );
    flag(
        "shutdown-transfer-timeout-ms",
        o.shutdown_transfer_timeout_ms.to_string().into(),
    );
    args.extend(o.extra_args.iter().map(OsString::from));
    args
}

/// The leader all `infos` name, if they agree on a live one that says it leads.
fn agreed_leader(infos: &BTreeMap<u64, GetControllerInfoResponse>) -> Result<u64, String> {
    let named: BTreeMap<u64, u64> = infos.iter().map(|(&id, i)| (id, i.leader_id)).collect();
    let first = *named.values().next().ok_or("no node answered")?;
    if first == 0 || named.values().any(|&l| l != first) {
        return Err(format!(
            "leaders named (node -> leader, 0 = none): {named:?}"
        ));
    }
    match infos.get(&first) {
        None => Err(format!("all name {first}, which is not live")),
        Some(i) if i.role() != ControllerRole::Leader => {
            Err(format!("all name {first}, which says it is {:?}", i.role()))
        }
        Some(_) => Ok(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, leader: u64, role: ControllerRole) -> (u64, GetControllerInfoResponse) {
        (
            id,
            GetControllerInfoResponse {
                node_id: id,
                leader_id: leader,
                role: role as i32,
                ..Default::default()
            },
        )
    }

    #[test]
    fn leader_agreement() {
        use ControllerRole::*;
        let ok = BTreeMap::from([
            info(1, 2, Follower),
            info(2, 2, Leader),
            info(3, 2, Follower),
        ]);
        assert_eq!(agreed_leader(&ok), Ok(2));
        let split = BTreeMap::from([
            info(1, 2, Follower),
            info(2, 2, Leader),
            info(3, 0, Candidate),
        ]);
        assert!(agreed_leader(&split).is_err());
        let dead = BTreeMap::from([info(1, 3, Follower), info(2, 3, Follower)]);
        assert!(agreed_leader(&dead).unwrap_err().contains("not live"));
        let stale = BTreeMap::from([info(1, 2, Follower), info(2, 2, Follower)]);
        assert!(agreed_leader(&stale).unwrap_err().contains("Follower"));
    }

    #[test]
    fn flags_cover_every_option() {
        let args = node_args(
            &ClusterOpts::default(),
            2,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "2=127.0.0.1:2/127.0.0.1:1",
            Path::new("/d"),
        );
        let s: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(s[0], "controller");
        assert_eq!(s.len(), 1 + 2 * 14);
    }
}
