//! `dmq-etcd-bench`: `dmq bench meta`'s workload against etcd (issue 13, "the metadata path must
//! beat etcd's on the same machine"), with a gRPC client of our own (proto/etcd/rpc.proto).
//!
//! The workload is `dmq bench meta`'s, step for step ([`dmq::bench::meta::measure`]): one
//! warm-up write; `--sequential-ops` writes one after another; then `--concurrent-ops` writes
//! with `--in-flight` outstanding, all over one HTTP/2 connection (as `dmq bench meta`'s one
//! channel to the controller leader), each with a 2 s gRPC timeout and retried until a 10 s
//! deadline. A write is one `KV.Put` of a `--value-bytes` value under `/dmq-bench/<id>`, the ids
//! cycling through `--keys` as `dmq bench meta`'s broker ids do. The report is
//! [`MetaReport`], printed by the same function, so text and JSON compare field by field.
//!
//! Writes go to the leader (found with `Maintenance.Status`: the member whose own id is the
//! leader it reports), as `dmq bench meta` writes to the controller leader; `--first-endpoint`
//! sends them to the first endpoint instead (a follower forwards to the leader). Elections are
//! the Raft terms that began during the timed part: the highest `raftTerm` any member reports,
//! after minus before.

use std::time::{Duration, Instant};

use dmq::bench::meta::{MetaReport, Workload, WorkloadWriter, print_report, run_workload};
use tonic::transport::{Channel, Endpoint};

/// The generated etcd messages and clients (and servers, for the fake in the tests).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;

#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "dmq-etcd-bench",
    about = "dmq bench meta's workload (256-byte writes, sequential then 64 in flight) against etcd's KV.Put"
)]
pub struct EtcdBenchArgs {
    /// Client addresses (host:port) of every etcd member.
    #[arg(long, env = "ETCD_ENDPOINTS", value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Writes issued one after another.
    #[arg(long, default_value_t = 2_000)]
    pub sequential_ops: u64,
    /// Writes issued with `--in-flight` outstanding.
    #[arg(long, default_value_t = 20_000)]
    pub concurrent_ops: u64,
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Bytes per value (the key, `/dmq-bench/` and 16 digits, comes on top).
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Distinct keys the writes cycle through.
    #[arg(long, default_value_t = 20_000)]
    pub keys: u64,
    /// Keep the concurrent phase going for this many seconds instead of `--concurrent-ops`
    /// writes.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Send the writes to the first endpoint instead of the leader.
    #[arg(long)]
    pub first_endpoint: bool,
    /// Seconds to wait for the cluster to have a leader.
    #[arg(long, default_value_t = 30)]
    pub wait_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints the report (which member took the writes goes to stderr).
pub async fn run(args: EtcdBenchArgs) -> Result<(), String> {
    let leader = find_leader(&args.endpoints, Duration::from_secs(args.wait_s)).await?;
    let target = if args.first_endpoint {
        args.endpoints[0].clone()
    } else {
        leader.addr.clone()
    };
    eprintln!(
        "etcd {}: leader member {:x} at {} (term {}); writes go to {target}{}",
        leader.version,
        leader.member_id,
        leader.addr,
        leader.term,
        if target == leader.addr {
            " (the leader)"
        } else {
            " (a follower: it forwards to the leader)"
        }
    );
    let report = measure(&args, &target).await?;
    print_report(&report, args.json);
    Ok(())
}

/// The member that leads, as it reports itself.
#[derive(Clone, Debug)]
pub struct Leader {
    pub addr: String,
    pub member_id: u64,
    pub term: u64,
    pub version: String,
}

async fn connect(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad endpoint {addr}: {e}"))?
        .connect_timeout(Duration::from_millis(300))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// One member's `Maintenance.Status`, or `None` if it does not answer within 2 s.
pub async fn status(addr: &str) -> Option<pb::StatusResponse> {
    let call = async {
        let mut client = MaintenanceClient::new(connect(addr).await.ok()?);
        client
            .status(pb::StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()
        .flatten()
}

/// The member whose own id is the leader it reports, polled until `timeout`.
pub async fn find_leader(endpoints: &[String], timeout: Duration) -> Result<Leader, String> {
    let deadline = Instant::now() + timeout;
    loop {
        for addr in endpoints {
            if let Some(s) = status(addr).await
                && s.leader != 0
                && s.header.as_ref().map(|h| h.member_id) == Some(s.leader)
            {
                return Ok(Leader {
                    addr: addr.clone(),
                    member_id: s.leader,
                    term: s.raft_term,
                    version: s.version,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no etcd member among {endpoints:?} reports itself leader after {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The highest Raft term any member reports (members that do not answer are skipped).
pub async fn max_term(endpoints: &[String]) -> u64 {
    let mut term = 0;
    for addr in endpoints {
        if let Some(s) = status(addr).await {
            term = term.max(s.raft_term);
        }
    }
    term
}

/// `KV.Put`s over one connection; clones share it.
#[derive(Clone)]
struct PutWriter {
    client: KvClient<Channel>,
    value: Vec<u8>,
}

impl WorkloadWriter for PutWriter {
    /// One Put of the value under key `id`, retried (bounded by `deadline`) on any error.
    async fn write(&mut self, id: u64, deadline: tokio::time::Instant) -> Result<(), String> {
        loop {
            let mut request = tonic::Request::new(pb::PutRequest {
                key: key(id),
                value: self.value.clone(),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(2));
            match self.client.put(request).await {
                Ok(_) => return Ok(()),
                Err(status) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(status.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// The key of write `id`: `/dmq-bench/` and 16 digits.
pub fn key(id: u64) -> Vec<u8> {
    format!("/dmq-bench/{id:016}").into_bytes()
}

/// `dmq bench meta`'s workload ([`run_workload`]) against `target`, elections counted over
/// `args.endpoints`.
pub async fn measure(args: &EtcdBenchArgs, target: &str) -> Result<MetaReport, String> {
    let writer = PutWriter {
        client: KvClient::new(connect(target).await?),
        value: vec![b'x'; args.value_bytes],
    };
    let workload = Workload {
        sequential_ops: args.sequential_ops,
        concurrent_ops: args.concurrent_ops,
        in_flight: args.in_flight,
        value_bytes: args.value_bytes,
        keys: args.keys,
        duration_s: args.duration_s,
    };
    let term_before = max_term(&args.endpoints).await;
    let mut report = run_workload(writer, &workload).await?;
    report.elections_during_run = max_term(&args.endpoints).await.saturating_sub(term_before);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use pb::kv_server::{Kv, KvServer};
    use pb::maintenance_server::{Maintenance, MaintenanceServer};
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// One fake etcd member: answers Status with its id, the leader it is told and a term the
    /// test moves; counts Puts and remembers their keys.
    #[derive(Clone)]
    struct FakeMember {
        id: u64,
        leader: u64,
        term: Arc<AtomicU64>,
        puts: Arc<AtomicU64>,
        keys: Arc<Mutex<HashSet<Vec<u8>>>>,
        /// After this many Puts the term moves on by one (an election), if non-zero.
        elect_after: u64,
    }

    #[tonic::async_trait]
    impl Kv for FakeMember {
        async fn put(
            &self,
            request: tonic::Request<pb::PutRequest>,
        ) -> Result<tonic::Response<pb::PutResponse>, tonic::Status> {
            let req = request.into_inner();
            assert_eq!(req.value.len(), 256);
            self.keys.lock().unwrap().insert(req.key);
            let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.elect_after {
                self.term.fetch_add(1, Ordering::SeqCst);
            }
            Ok(tonic::Response::new(pb::PutResponse {
                header: Some(pb::ResponseHeader {
                    member_id: self.id,
                    revision: n as i64,
                    raft_term: self.term.load(Ordering::SeqCst),
                    ..Default::default()
                }),
            }))
        }
    }

    #[tonic::async_trait]
    impl Maintenance for FakeMember {
        async fn status(
            &self,
            _: tonic::Request<pb::StatusRequest>,
        ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::StatusResponse {
                header: Some(pb::ResponseHeader {
                    member_id: self.id,
                    ..Default::default()
                }),
                version: "3.4.0-fake".into(),
                leader: self.leader,
                raft_term: self.term.load(Ordering::SeqCst),
                ..Default::default()
            }))
        }
    }

    async fn serve(member: FakeMember) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(member.clone()))
                .add_service(MaintenanceServer::new(member))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    fn member(id: u64, leader: u64, term: &Arc<AtomicU64>, elect_after: u64) -> FakeMember {
        FakeMember {
            id,
            leader,
            term: term.clone(),
            puts: Default::default(),
            keys: Default::default(),
            elect_after,
        }
    }

    #[tokio::test]
    async fn the_writes_go_to_the_leader_and_the_report_counts_them_and_the_elections() {
        let term = Arc::new(AtomicU64::new(2));
        // Member 2 leads; the first endpoint is a follower. An election after the 30th Put.
        let follower = member(1, 2, &term, 0);
        let leader = member(2, 2, &term, 30);
        let follower_addr = serve(follower.clone()).await;
        let leader_addr = serve(leader.clone()).await;
        let endpoints = format!("{follower_addr},{leader_addr}");
        let args = EtcdBenchArgs::parse_from([
            "dmq-etcd-bench",
            "--endpoints",
            endpoints.as_str(),
            "--sequential-ops",
            "20",
            "--concurrent-ops",
            "200",
            "--in-flight",
            "8",
            "--keys",
            "50",
        ]);

        let found = find_leader(&args.endpoints, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            (found.addr.as_str(), found.member_id),
            (leader_addr.as_str(), 2)
        );
        let report = measure(&args, &found.addr).await.unwrap();

        assert_eq!(report.sequential.count, 20);
        assert_eq!(report.concurrent.count, 200);
        assert_eq!(report.errors, 0);
        assert_eq!(report.elections_during_run, 1);
        assert_eq!(report.value_bytes, 256);
        // Warm-up, sequential and concurrent writes, all on the leader.
        assert_eq!(leader.puts.load(Ordering::SeqCst), 1 + 20 + 200);
        assert_eq!(follower.puts.load(Ordering::SeqCst), 0);
        // The warm-up key, the 20 sequential ones, then ids 21.. cycling through --keys (50).
        assert_eq!(leader.keys.lock().unwrap().len(), 1 + 20 + 50);
        assert!(leader.keys.lock().unwrap().contains(&key(0)));
        assert_eq!(key(7), b"/dmq-bench/0000000000000007".to_vec());
    }

    #[tokio::test]
    async fn no_leader_is_an_error_after_the_timeout() {
        let term = Arc::new(AtomicU64::new(1));
        let addr = serve(member(1, 0, &term, 0)).await;
        let err = find_leader(&[addr], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.contains("reports itself leader"), "{err}");
    }
}
