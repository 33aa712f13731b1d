//! A cluster of `dmq` processes on loopback, started from this very binary: what `dmq dev` and
//! the benchmarks that kill nodes (`dmq bench failover`) run on. It owns its children: `kill`
//! sends SIGKILL to exactly that PID, and dropping the cluster kills every process it started.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use dmq_proto::v1::{BrokerStatus, DescribeClusterRequest, GetControllerInfoRequest};

/// One process of a [`LocalCluster`] (a controller or a broker).
pub struct LocalProcess {
    pub id: u64,
    /// The client address (ControllerService or BrokerService).
    pub client_addr: String,
    /// The peer (RaftService) address of a controller; empty for a broker.
    pub peer_addr: String,
    /// Where /metrics is served, when the cluster has fixed ports.
    pub admin_addr: Option<String>,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl LocalProcess {
    /// `dmq KIND FLAGS --data-dir DIR/KIND-ID/data [--admin-listen ...] EXTRA`, logging to
    /// `DIR/KIND-ID/KIND.log` (not started yet).
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: &str,
        id: u64,
        data_dir: &Path,
        flags: &[&str],
        admin_port: Option<u16>,
        extra: &[String],
        client_addr: String,
        peer_addr: String,
    ) -> Result<LocalProcess, LocalClusterError> {
        let dir = make_dir(&data_dir.join(format!("{kind}-{id}")))?;
        let mut args: Vec<String> = std::iter::once(kind)
            .chain(flags.iter().copied())
            .map(str::to_string)
            .collect();
        args.extend([
            "--data-dir".to_string(),
            dir.join("data").display().to_string(),
        ]);
        let admin_addr = admin_port.map(|p| format!("127.0.0.1:{p}"));
        if let Some(a) = &admin_addr {
            args.extend(["--admin-listen".to_string(), a.clone()]);
        }
        args.extend(extra.iter().cloned());
        Ok(LocalProcess {
            id,
            client_addr,
            peer_addr,
            admin_addr,
            args,
            log: dir.join(format!("{kind}.log")),
            child: None,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
    /// The exit status if the process has exited on its own (it is then no longer running).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// The last `n` lines of the process's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// How to lay the cluster out.
#[derive(Clone, Debug)]
pub struct LocalClusterSpec {
    pub controllers: usize,
    /// Brokers: client ports `base_port + 200 + i`.
    pub brokers: usize,
    /// Client ports are `base_port + i`, peer ports `base_port + 100 + i`, broker ports
    /// `base_port + 200 + i`, metrics `base_port + 300 + i` (controllers) and `+ 400 + i`
    /// (brokers); `None` picks free ports and serves no metrics.
    pub base_port: Option<u16>,
    pub data_dir: PathBuf,
    /// Extra flags for every `dmq controller` (e.g. shorter timeouts).
    pub controller_args: Vec<String>,
    /// Extra flags for every `dmq broker`.
    pub broker_args: Vec<String>,
    /// The `dmq` binary to run; defaults to this executable.
    pub binary: Option<PathBuf>,
}

pub struct LocalCluster {
    binary: PathBuf,
    pub controllers: Vec<LocalProcess>,
    pub brokers: Vec<LocalProcess>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    #[error("cannot find this executable: {0}")]
    Exe(std::io::Error),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("no single controller leader within {0:?}; see the logs under the data dir")]
    NoLeader(Duration),
    #[error("cannot find a free loopback port: {0}")]
    Port(std::io::Error),
}

/// `n` distinct free loopback ports. Every listener stays bound until all are picked: one
/// dropped at once lets the kernel hand the same port out again (seen: a controller started
/// with `--listen` and `--peer-listen` on one port).
fn free_ports(n: usize) -> Result<Vec<u16>, LocalClusterError> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LocalClusterError::Port)?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().map_err(LocalClusterError::Port)?.port()))
        .collect()
}

impl LocalCluster {
    /// Starts the controllers and brokers (not waiting for a leader; see
    /// [`LocalCluster::wait_for_leader`]).
    pub fn start(spec: &LocalClusterSpec) -> Result<LocalCluster, LocalClusterError> {
        let binary = match &spec.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(LocalClusterError::Exe)?,
        };
        let mut addrs = Vec::new();
        let mut picked = match spec.base_port {
            Some(_) => Vec::new(),
            None => free_ports(2 * spec.controllers + spec.brokers)?,
        }
        .into_iter();
        let mut free_port = || {
            picked.next().ok_or_else(|| {
                LocalClusterError::Port(std::io::Error::other("picked too few ports"))
            })
        };
        for i in 0..spec.controllers {
            let (client, peer) = match spec.base_port {
                Some(base) => (base + i as u16, base + 100 + i as u16),
                None => (free_port()?, free_port()?),
            };
            addrs.push((format!("127.0.0.1:{client}"), format!("127.0.0.1:{peer}")));
        }
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| format!("{}={peer}/{client}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut controllers = Vec::new();
        for (i, (client, peer)) in addrs.into_iter().enumerate() {
            let id = i as u64 + 1;
            let admin = spec.base_port.map(|base| base + 300 + i as u16);
            let flags = [
                "--node-id",
                &id.to_string(),
                "--listen",
                &client,
                "--peer-listen",
                &peer,
                "--peers",
                &peers,
            ];
            controllers.push(LocalProcess::new(
                "controller",
                id,
                &spec.data_dir,
                &flags,
                admin,
                &spec.controller_args,
                client.clone(),
                peer.clone(),
            )?);
        }
        let controller_addrs = controllers
            .iter()
            .map(|c| c.client_addr.clone())
            .collect::<Vec<_>>()
            .join(",");
        let mut brokers = Vec::new();
        for i in 0..spec.brokers {
            let id = i as u64 + 1;
            let port = match spec.base_port {
                Some(base) => base + 200 + i as u16,
                None => free_port()?,
            };
            let addr = format!("127.0.0.1:{port}");
            let admin = spec.base_port.map(|base| base + 400 + i as u16);
            let flags = [
                "--broker-id",
                &id.to_string(),
                "--listen",
                &addr,
                "--controllers",
                &controller_addrs,
            ];
            brokers.push(LocalProcess::new(
                "broker",
                id,
                &spec.data_dir,
                &flags,
                admin,
                &spec.broker_args,
                addr.clone(),
                String::new(),
            )?);
        }
        // The nodes share this host's cores: give each runtime its share rather than one
        // thread per core each. DMQ_WORKER_THREADS, inherited by the children, overrides it.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = (cores / (controllers.len() + brokers.len()).max(1))
            .max(1)
            .to_string();
        if std::env::var_os("DMQ_WORKER_THREADS").is_none() {
            for p in controllers.iter_mut().chain(brokers.iter_mut()) {
                p.args
                    .extend(["--worker-threads".to_string(), share.clone()]);
            }
        }
        let mut cluster = LocalCluster {
            binary,
            controllers,
            brokers,
        };
        for id in 1..=spec.controllers as u64 {
            cluster.start_controller(id)?;
        }
        for id in 1..=spec.brokers as u64 {
            cluster.start_broker(id)?;
        }
        Ok(cluster)
    }

    fn controller_mut(&mut self, id: u64) -> &mut LocalProcess {
        self.controllers
            .iter_mut()
            .find(|c| c.id == id)
            .expect("known controller id")
    }

    /// (Re)starts controller `id` with its original flags and data dir.
    pub fn start_controller(&mut self, id: u64) -> Result<(), LocalClusterError> {
        let binary = self.binary.clone();
        spawn(&binary, self.controller_mut(id))
    }

    /// (Re)starts broker `id` with its original flags and data dir.
    pub fn start_broker(&mut self, id: u64) -> Result<(), LocalClusterError> {
        let binary = self.binary.clone();
        spawn(&binary, self.broker_mut(id))
    }

    /// SIGKILL to exactly this controller's process, then reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.controller_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn broker_mut(&mut self, id: u64) -> &mut LocalProcess {
        self.brokers
            .iter_mut()
            .find(|b| b.id == id)
            .expect("known broker id")
    }

    /// SIGKILL to exactly this broker's process, then reaps it.
    pub fn kill_broker(&mut self, id: u64) {
        if let Some(mut child) = self.broker_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM to this broker (it hands its leaderships over first), waiting up to `timeout`
    /// before SIGKILL.
    pub fn stop_broker(&mut self, id: u64, timeout: Duration) {
        if let Some(mut child) = self.broker_mut(id).child.take() {
            terminate(&mut child, timeout);
        }
    }

    /// SIGTERM (graceful: a leader hands over first), waiting up to `timeout` before SIGKILL.
    pub fn stop(&mut self, id: u64, timeout: Duration) {
        if let Some(mut child) = self.controller_mut(id).child.take() {
            terminate(&mut child, timeout);
        }
    }

    /// Stops everything gracefully: brokers first (they tell the controllers they are
    /// leaving), then the controllers; whatever has not exited within `timeout` is killed.
    pub fn stop_all(&mut self, timeout: Duration) {
        for group in [&mut self.brokers, &mut self.controllers] {
            for p in group.iter() {
                if let Some(child) = p.child.as_ref() {
                    signal_term(child);
                }
            }
            for p in group.iter_mut() {
                if let Some(mut child) = p.child.take() {
                    terminate(&mut child, timeout);
                }
            }
        }
    }

    /// The first process that exited on its own, described with the end of its log.
    pub fn first_exited(&mut self) -> Option<String> {
        for (kind, group) in [
            ("controller", &mut self.controllers),
            ("broker", &mut self.brokers),
        ] {
            for p in group.iter_mut() {
                if let Some(status) = p.exited() {
                    return Some(format!(
                        "{kind} {} exited ({status}); end of {}:\n{}",
                        p.id,
                        p.log.display(),
                        p.log_tail(5)
                    ));
                }
            }
        }
        None
    }

    /// A leader is elected and every broker shows ONLINE in DescribeCluster; fails at once, with
    /// the end of its log, if a process exits (a port in use, a bad data dir...).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let want = self.brokers.len();
        let mut leader = None;
        loop {
            if let Some(why) = self.first_exited() {
                return Err(why);
            }
            if leader.is_none() {
                leader = self
                    .wait_for_leader(Duration::from_millis(200))
                    .await
                    .ok()
                    .map(|(_, a)| a);
            }
            if let Some(addr) = &leader {
                let online = online_brokers(addr).await.unwrap_or(0);
                if online >= want {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(match leader {
                    None => format!("no controller leader after {timeout:?}"),
                    Some(_) => format!("not every broker ONLINE after {timeout:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn client_addrs(&self) -> Vec<String> {
        self.controllers
            .iter()
            .map(|c| c.client_addr.clone())
            .collect()
    }

    /// Polls every running controller until they all name the same leader; returns its id
    /// and client address.
    pub async fn wait_for_leader(
        &self,
        timeout: Duration,
    ) -> Result<(u64, String), LocalClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.agreed_leader().await {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(LocalClusterError::NoLeader(timeout));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<(u64, String)> {
        let mut seen = None;
        for c in self.controllers.iter().filter(|c| c.is_running()) {
            let info = controller_info(&c.client_addr).await?;
            if info.leader_id == 0 {
                return None;
            }
            match seen {
                None => seen = Some((info.leader_id, info.leader_address)),
                Some((id, _)) if id != info.leader_id => return None,
                _ => {}
            }
        }
        seen
    }
}

/// How many brokers the controller at `controller` lists as ONLINE.
async fn online_brokers(controller: &str) -> Option<usize> {
    let mut client = ControllerServiceClient::connect(format!("http://{controller}"))
        .await
        .ok()?;
    let resp = client
        .describe_cluster(DescribeClusterRequest { allow_stale: true })
        .await
        .ok()?
        .into_inner();
    Some(
        resp.brokers
            .iter()
            .filter(|b| b.status == BrokerStatus::Online as i32)
            .count(),
    )
}

fn make_dir(dir: &Path) -> Result<PathBuf, LocalClusterError> {
    std::fs::create_dir_all(dir).map_err(|source| LocalClusterError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(dir.to_path_buf())
}

/// Starts `p` (unless running), appending its output to its log file.
fn spawn(binary: &Path, p: &mut LocalProcess) -> Result<(), LocalClusterError> {
    if p.child.is_some() {
        return Ok(());
    }
    let io = |source| LocalClusterError::Io {
        path: p.log.clone(),
        source,
    };
    let log = File::options()
        .create(true)
        .append(true)
        .open(&p.log)
        .map_err(io)?;
    let err = log.try_clone().map_err(|source| LocalClusterError::Io {
        path: p.log.clone(),
        source,
    })?;
    let child = Command::new(binary)
        .args(&p.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|source| LocalClusterError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    p.child = Some(child);
    Ok(())
}

fn signal_term(child: &Child) {
    // SAFETY: kill(2) on a PID we own and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

/// GetControllerInfo with a short deadline; `None` when the controller does not answer.
pub async fn controller_info(addr: &str) -> Option<dmq_proto::v1::GetControllerInfoResponse> {
    let call = async {
        let mut client = ControllerServiceClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
        client
            .get_controller_info(GetControllerInfoRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    tokio::time::timeout(Duration::from_millis(500), call)
        .await
        .ok()
        .flatten()
}

fn terminate(child: &mut Child, timeout: Duration) {
    signal_term(child);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.brokers.iter_mut().chain(self.controllers.iter_mut()) {
            if let Some(mut child) = c.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    /// A local cluster's ports are picked together, all distinct (picking one at a time gave
    /// a controller the same port for its two listeners now and then).
    #[test]
    fn free_ports_are_distinct() {
        for _ in 0..20 {
            let ports = super::free_ports(64).unwrap();
            assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 64, "{ports:?}");
        }
    }
}
