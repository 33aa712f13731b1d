//! Real `dmq broker` processes on loopback, against the client addresses of a
//! [`ControllerCluster`](crate::ControllerCluster) (or any controller list).
//!
//! [`BrokerProcs`] starts brokers by id, each with its own free port, data dir and log file in
//! one temp dir; kills (-9), stops (SIGTERM) and restarts them with the same flags; and asks them
//! `GetBrokerInfo` and the gRPC health service. Dropping it kills every broker it started (by
//! PID), printing the tail of every log first when the test panics.
//!
//! Process suites start several clusters of processes each; on a small CI machine they hold a
//! [`process_test_slot`] so that only a few run at once (plain `cargo test` runs a suite's tests
//! in parallel).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::Duration;

use dmq_proto::v1::broker_service_client::BrokerServiceClient;
use dmq_proto::v1::{
    BrokerMetadata, BrokerStatus, DescribeClusterRequest, DescribeClusterResponse,
    GetBrokerInfoRequest, GetBrokerInfoResponse,
};
use tokio::sync::{Semaphore, SemaphorePermit};
use tonic::Status;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cluster::dmq_bin;
use crate::ports::free_port;
use crate::process::ChildProcess;
use crate::router::{LeaderRouter, channel};
use crate::wait::{deadline, wait_until};

/// The gRPC health name of BrokerService.
pub const BROKER_SERVICE_NAME: &str = "dmq.v1.BrokerService";

/// Waits for one of the process-test slots: at most `DMQ_TEST_PROCESS_SLOTS` (default 2) tests
/// holding one run at once in this test process. Hold the permit for the whole test (declare it
/// first, so it is dropped last).
pub async fn process_test_slot() -> SemaphorePermit<'static> {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let n = std::env::var("DMQ_TEST_PROCESS_SLOTS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or(2);
            Semaphore::new(n)
        })
        .acquire()
        .await
        .expect("the slot semaphore is never closed")
}

/// How the brokers are started. [`Default`] gives short timings for tests.
#[derive(Debug, Clone)]
pub struct BrokerOpts {
    /// The program (default: [`dmq_bin`]).
    pub bin: PathBuf,
    /// `--heartbeat-interval-ms`.
    pub heartbeat_interval_ms: u64,
    /// `--rpc-timeout-ms`.
    pub rpc_timeout_ms: u64,
    /// `--rack`, when set.
    pub rack: Option<String>,
    /// More `dmq broker` flags, appended last.
    pub extra_args: Vec<String>,
    /// `RUST_LOG` of the children (default: the test's own `RUST_LOG`, else `info`).
    pub rust_log: String,
    /// How long a broker may take to answer GetBrokerInfo after (re)start.
    pub start_timeout: Duration,
    /// How long a broker may take to exit after SIGTERM.
    pub stop_timeout: Duration,
    /// Timeout of one RPC made by the harness's clients.
    pub rpc_timeout: Duration,
    /// Start attempts of one broker (a new port each) when it dies at startup.
    pub start_attempts: u32,
}

impl Default for BrokerOpts {
    fn default() -> BrokerOpts {
        BrokerOpts {
            bin: dmq_bin(),
            heartbeat_interval_ms: 400,
            rpc_timeout_ms: 1000,
            rack: None,
            extra_args: Vec::new(),
            rust_log: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            start_timeout: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(2),
            start_attempts: 3,
        }
    }
}

impl BrokerOpts {
    /// The heartbeat interval as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
}

struct Broker {
    addr: SocketAddr,
    data_dir: PathBuf,
    process: ChildProcess,
    channel: Channel,
}

/// `dmq broker` processes by id. See the module documentation.
pub struct BrokerProcs {
    opts: BrokerOpts,
    controllers: String,
    brokers: BTreeMap<u64, Broker>,
    dir: Option<tempfile::TempDir>,
}

impl BrokerProcs {
    /// No broker yet; [`add`](Self::add) starts them. `controllers` are the controllers' client
    /// addresses (`--controllers`).
    pub fn new<I, S>(controllers: I, opts: BrokerOpts) -> BrokerProcs
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        let controllers: Vec<String> = controllers.into_iter().map(|a| a.to_string()).collect();
        assert!(!controllers.is_empty(), "brokers need a controller address");
        assert!(
            opts.bin.is_file(),
            "{} does not exist: build it with `cargo build -p dmq-tests` (or set DMQ_TEST_BIN)",
            opts.bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("dmq-brokers-")
            .tempdir()
            .expect("temp dir");
        BrokerProcs {
            opts,
            controllers: controllers.join(","),
            brokers: BTreeMap::new(),
            dir: Some(dir),
        }
    }

    /// Brokers `1..=n`, each answering GetBrokerInfo (registered or not: see
    /// [`wait_online`](Self::wait_online)).
    pub async fn start<I, S>(n: u64, controllers: I, opts: BrokerOpts) -> BrokerProcs
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        let mut procs = BrokerProcs::new(controllers, opts);
        for id in 1..=n {
            procs.add(id).await;
        }
        procs
    }

    /// Starts broker `id` on a free port and waits until it answers GetBrokerInfo. A broker that
    /// exits at startup (most likely its port was taken meanwhile) is tried again on a new port,
    /// up to `opts.start_attempts` times. Panics if `id` was already added.
    pub async fn add(&mut self, id: u64) {
        self.add_with(id, &[]).await
    }

    /// [`add`](Self::add) with more flags for this broker only (after `opts.extra_args`; kept
    /// for its restarts), e.g. `["--advertise", "127.0.0.1:1"]`.
    pub async fn add_with(&mut self, id: u64, extra_args: &[&str]) {
        assert!(
            !self.brokers.contains_key(&id),
            "broker {id} was already added"
        );
        let dir = self.dir.as_ref().expect("temp dir").path().to_path_buf();
        let data_dir = dir.join(format!("broker-{id}"));
        let log = dir.join(format!("broker-{id}.log"));
        for attempt in 1..=self.opts.start_attempts {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let mut args = self.args(id, addr, &data_dir);
            args.extend(extra_args.iter().map(OsString::from));
            let env = vec![(
                OsString::from("RUST_LOG"),
                OsString::from(&self.opts.rust_log),
            )];
            let mut process =
                ChildProcess::new(format!("broker {id}"), &self.opts.bin, args, env, &log);
            process
                .spawn()
                .unwrap_or_else(|e| panic!("could not start broker {id}: {e}"));
            let channel = channel(&addr.to_string(), self.opts.rpc_timeout);
            self.brokers.insert(
                id,
                Broker {
                    addr,
                    data_dir: data_dir.clone(),
                    process,
                    channel,
                },
            );
            match self.wait_answering(id).await {
                Ok(()) => return,
                Err(e) if attempt < self.opts.start_attempts && !self.is_running(id) => {
                    eprintln!(
                        "harness: broker {id} exited at startup ({e}); retrying on a new port \
                         (attempt {attempt} of {})",
                        self.opts.start_attempts
                    );
                }
                Err(e) => panic!("broker {id} did not start (attempt {attempt}): {e}"),
            }
        }
    }

    fn args(&self, id: u64, addr: SocketAddr, data_dir: &Path) -> Vec<OsString> {
        let o = &self.opts;
        let mut args: Vec<OsString> = vec!["broker".into()];
        let mut flag = |name: &str, value: OsString| {
            args.push(format!("--{name}").into());
            args.push(value);
        };
        flag("broker-id", id.to_string().into());
        flag("listen", addr.to_string().into());
        flag("controllers", self.controllers.clone().into());
        flag("data-dir", data_dir.as_os_str().to_owned());
        flag(
            "heartbeat-interval-ms",
            o.heartbeat_interval_ms.to_string().into(),
        );
        flag("rpc-timeout-ms", o.rpc_timeout_ms.to_string().into());
        if let Some(rack) = &o.rack {
            flag("rack", rack.into());
        }
        args.extend(o.extra_args.iter().map(OsString::from));
        args
    }

    /// Waits until broker `id` runs and answers GetBrokerInfo with its own id.
    async fn wait_answering(&mut self, id: u64) -> Result<(), String> {
        let until = deadline(self.opts.start_timeout);
        loop {
            if let Some(status) = self.node_mut(id).process.exit_status() {
                return Err(format!("exited ({status})"));
            }
            let last = match self.info(id).await {
                Ok(info) if info.broker_id == id => return Ok(()),
                Ok(info) => format!("its port is served by broker {}", info.broker_id),
                Err(e) => format!("{}: {}", e.code(), e.message()),
            };
            if tokio::time::Instant::now() >= until {
                return Err(format!(
                    "no answer within {:?}; last: {last}",
                    self.opts.start_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The options it was started with.
    pub fn opts(&self) -> &BrokerOpts {
        &self.opts
    }

    /// The `--controllers` value every broker gets.
    pub fn controllers(&self) -> &str {
        &self.controllers
    }

    /// Every broker id added, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.brokers.keys().copied().collect()
    }

    /// Ids of the brokers whose process runs.
    pub fn running_ids(&mut self) -> Vec<u64> {
        self.brokers
            .iter_mut()
            .filter_map(|(&id, b)| b.process.is_running().then_some(id))
            .collect()
    }

    fn node(&self, id: u64) -> &Broker {
        self.brokers
            .get(&id)
            .unwrap_or_else(|| panic!("no broker {id} (ids: {:?})", self.ids()))
    }

    fn node_mut(&mut self, id: u64) -> &mut Broker {
        let ids = self.ids();
        self.brokers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no broker {id} (ids: {ids:?})"))
    }

    /// Broker `id`'s listen (and advertised) address.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.node(id).addr
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        &self.node(id).data_dir
    }

    pub fn log_path(&self, id: u64) -> &Path {
        self.node(id).process.log_path()
    }

    /// The whole log of broker `id` (every run).
    pub fn log(&self, id: u64) -> String {
        self.node(id).process.log_tail(0)
    }

    /// The PID of broker `id` while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).process.pid()
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        self.node_mut(id).process.is_running()
    }

    /// The exit status of broker `id` once it has exited (reaping it).
    pub fn exit_status(&mut self, id: u64) -> Option<ExitStatus> {
        self.node_mut(id).process.exit_status()
    }

    /// A BrokerService client of broker `id` (its connection is shared and reconnects).
    pub fn client(&self, id: u64) -> BrokerServiceClient<Channel> {
        BrokerServiceClient::new(self.node(id).channel.clone())
    }

    /// GetBrokerInfo of broker `id`, bounded by `opts.rpc_timeout`.
    pub async fn info(&self, id: u64) -> Result<GetBrokerInfoResponse, Status> {
        let mut c = self.client(id);
        match tokio::time::timeout(
            self.opts.rpc_timeout,
            c.get_broker_info(GetBrokerInfoRequest {}),
        )
        .await
        {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "broker {id} did not answer GetBrokerInfo"
            ))),
        }
    }

    /// GetBrokerInfo of every broker in `ids`; the first failure is the error.
    pub async fn infos(&self, ids: &[u64]) -> Result<BTreeMap<u64, GetBrokerInfoResponse>, String> {
        let mut out = BTreeMap::new();
        for &id in ids {
            let info = self
                .info(id)
                .await
                .map_err(|e| format!("broker {id}: {}: {}", e.code(), e.message()))?;
            out.insert(id, info);
        }
        Ok(out)
    }

    /// What broker `id`'s gRPC health service says of `service` (`""`: the whole server; or
    /// [`BROKER_SERVICE_NAME`]).
    pub async fn health(&self, id: u64, service: &str) -> Result<ServingStatus, Status> {
        let mut c = HealthClient::new(self.node(id).channel.clone());
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        match tokio::time::timeout(self.opts.rpc_timeout, c.check(request)).await {
            Ok(r) => r.map(|r| r.into_inner().status()),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "broker {id} did not answer the health check"
            ))),
        }
    }

    /// Polls GetBrokerInfo of broker `id` until `check` accepts it (`Err(why)`: not yet), within
    /// `timeout`; panics with the last answer otherwise.
    pub async fn wait_info<F>(&self, id: u64, timeout: Duration, check: F) -> GetBrokerInfoResponse
    where
        F: Fn(&GetBrokerInfoResponse) -> Result<(), String>,
    {
        let check = &check;
        wait_until(deadline(timeout), || async move {
            let info = self
                .info(id)
                .await
                .map_err(|e| format!("{}: {}", e.code(), e.message()))?;
            check(&info).map_err(|why| format!("{why} (info: {info:?})"))?;
            Ok::<_, String>(info)
        })
        .await
        .unwrap_or_else(|e| panic!("broker {id}: {e}"))
    }

    /// Waits until broker `id` is registered (epoch above `min_epoch`) and ONLINE by its own
    /// account; returns its GetBrokerInfo.
    pub async fn wait_online(
        &self,
        id: u64,
        min_epoch: u64,
        timeout: Duration,
    ) -> GetBrokerInfoResponse {
        self.wait_info(id, timeout, |i| {
            if i.broker_epoch > min_epoch && i.status() == BrokerStatus::Online {
                Ok(())
            } else {
                Err(format!(
                    "epoch {} (want > {min_epoch}), status {:?}",
                    i.broker_epoch,
                    i.status()
                ))
            }
        })
        .await
    }

    /// [`wait_online`](Self::wait_online) for every broker in `ids`.
    pub async fn wait_all_online(
        &self,
        ids: &[u64],
        timeout: Duration,
    ) -> BTreeMap<u64, GetBrokerInfoResponse> {
        let until = deadline(timeout);
        let mut out = BTreeMap::new();
        for &id in ids {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            out.insert(id, self.wait_online(id, 0, left).await);
        }
        out
    }

    /// SIGKILL broker `id` (exactly its PID) and reap it.
    pub fn kill(&mut self, id: u64) -> Option<ExitStatus> {
        self.node_mut(id).process.kill()
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to exactly broker `id`'s process.
    pub fn pause(&mut self, id: u64, stop: bool) {
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        self.node_mut(id)
            .process
            .signal(sig)
            .unwrap_or_else(|e| panic!("signal broker {id}: {e}"));
    }

    /// SIGTERM broker `id` and wait (up to `opts.stop_timeout`) for it to exit; returns its exit
    /// status (0 after a clean shutdown). Panics, having killed it, if it does not exit in time.
    pub async fn stop(&mut self, id: u64) -> ExitStatus {
        let timeout = self.opts.stop_timeout;
        self.node_mut(id)
            .process
            .terminate(timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts broker `id` again with the same flags, port and data dir, and waits until it
    /// answers GetBrokerInfo. Panics if it is running.
    pub async fn restart(&mut self, id: u64) {
        let rpc_timeout = self.opts.rpc_timeout;
        let node = self.node_mut(id);
        node.process
            .spawn()
            .unwrap_or_else(|e| panic!("could not restart broker {id}: {e}"));
        node.channel = channel(&node.addr.to_string(), rpc_timeout);
        if let Err(e) = self.wait_answering(id).await {
            panic!("broker {id} did not come back: {e}");
        }
    }

    /// Prints the tail of every broker's log to stderr.
    pub fn dump_logs(&self) {
        for &id in self.brokers.keys() {
            self.dump_log(id);
        }
    }

    /// Prints the tail of broker `id`'s log to stderr.
    pub fn dump_log(&self, id: u64) {
        let node = self.node(id);
        eprintln!(
            "----- broker {id} (listen {}, log {}) -----\n{}",
            node.addr,
            node.process.log_path().display(),
            node.process.log_tail_for_dump()
        );
    }
}

impl Drop for BrokerProcs {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for node in self.brokers.values_mut() {
            node.process.kill();
        }
        if failed {
            self.dump_logs();
            if std::env::var_os("DMQ_TEST_KEEP_DIRS").is_some()
                && let Some(dir) = self.dir.take()
            {
                eprintln!("harness: kept {}", dir.keep().display());
            }
        }
    }
}

/// DescribeCluster from the controller leader (linearizable), through `router`.
pub async fn describe_cluster(router: &LeaderRouter) -> Result<DescribeClusterResponse, Status> {
    router
        .call(|mut c| async move {
            c.describe_cluster(DescribeClusterRequest { allow_stale: false })
                .await
        })
        .await
}

/// The brokers of a DescribeCluster answer, by id.
pub fn brokers_by_id(cluster: &DescribeClusterResponse) -> BTreeMap<u64, BrokerMetadata> {
    cluster
        .brokers
        .iter()
        .map(|b| (b.broker_id, b.clone()))
        .collect()
}

/// Polls the leader's DescribeCluster until `check` accepts its brokers (`Err(why)`: not yet),
/// within `timeout`; panics with the last answer otherwise.
pub async fn wait_brokers<F>(
    router: &LeaderRouter,
    timeout: Duration,
    check: F,
) -> BTreeMap<u64, BrokerMetadata>
where
    F: Fn(&BTreeMap<u64, BrokerMetadata>) -> Result<(), String>,
{
    let check = &check;
    let r = wait_until(deadline(timeout), || async move {
        let cluster = describe_cluster(router)
            .await
            .map_err(|e| format!("DescribeCluster: {}: {}", e.code(), e.message()))?;
        let brokers = brokers_by_id(&cluster);
        check(&brokers).map_err(|why| format!("{why}; brokers: {}", summary(&brokers)))?;
        Ok::<_, String>(brokers)
    })
    .await;
    r.unwrap_or_else(|e| panic!("DescribeCluster: {e}"))
}

/// `id: STATUS@epoch` for each broker, for messages.
pub fn summary(brokers: &BTreeMap<u64, BrokerMetadata>) -> String {
    brokers
        .values()
        .map(|b| format!("{}: {:?}@{}", b.broker_id, b.status(), b.broker_epoch))
        .collect::<Vec<_>>()
        .join(", ")
}
