//! `dmq bench failover`: sequential metadata writes on a local 3-controller cluster; each round
//! kill -9s the leader and measures the time from the kill to the next acknowledged write,
//! then restarts the killed node and waits for it to catch up.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{MetaWriter, register_request};
use crate::local_cluster::{LocalCluster, LocalClusterSpec, controller_info};

#[derive(clap::Args, Clone, Debug)]
pub struct FailoverArgs {
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Acknowledged writes before each kill.
    #[arg(long, default_value_t = 200)]
    pub writes_before_kill: u64,
    /// Extra flags for every controller (e.g. "--tick-ms=50").
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    pub controller_args: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    /// Kill to next acknowledged write, per round, in milliseconds.
    pub rounds_ms: Vec<f64>,
    pub mean_ms: f64,
    pub max_ms: f64,
}

pub async fn run(args: FailoverArgs) -> Result<(), String> {
    let tmp =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let spec = LocalClusterSpec {
        controllers: 3,
        brokers: 0,
        base_port: None,
        data_dir: tmp.path().to_path_buf(),
        controller_args: args
            .controller_args
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect(),
        broker_args: Vec::new(),
        binary: None,
    };
    let mut cluster = LocalCluster::start(&spec).map_err(|e| e.to_string())?;
    cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .map_err(|e| e.to_string())?;
    let mut writer = MetaWriter::new(cluster.client_addrs());
    let mut next_id = 2_000_000_000u64;
    let mut rounds_ms = Vec::new();
    for round in 1..=args.rounds {
        for _ in 0..args.writes_before_kill {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            writer
                .register(register_request(next_id, 256), deadline)
                .await
                .map_err(|e| e.to_string())?;
            next_id += 1;
        }
        let (leader, _) = cluster
            .wait_for_leader(Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        writer
            .register(register_request(next_id, 256), deadline)
            .await
            .map_err(|e| e.to_string())?;
        next_id += 1;
        let ms = killed_at.elapsed().as_secs_f64() * 1000.0;
        if !args.json {
            println!(
                "round {round}: killed leader {leader}; next acknowledged write after {ms:.0} ms"
            );
        }
        rounds_ms.push(ms);
        cluster
            .start_controller(leader)
            .map_err(|e| e.to_string())?;
        wait_caught_up(&cluster, leader).await?;
    }
    let mean_ms = rounds_ms.iter().sum::<f64>() / rounds_ms.len().max(1) as f64;
    let max_ms = rounds_ms.iter().copied().fold(0.0, f64::max);
    let report = FailoverReport {
        rounds_ms,
        mean_ms,
        max_ms,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("serializable"));
    } else {
        println!(
            "failover: mean {:.0} ms, max {:.0} ms over {} rounds",
            report.mean_ms, report.max_ms, args.rounds
        );
    }
    Ok(())
}

/// Waits until the restarted node applied what the leader has committed.
async fn wait_caught_up(cluster: &LocalCluster, node: u64) -> Result<(), String> {
    let addr = cluster
        .controllers
        .iter()
        .find(|c| c.id == node)
        .expect("known")
        .client_addr
        .clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, leader_addr) = cluster
            .wait_for_leader(Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?;
        if let (Some(me), Some(leader)) = (
            controller_info(&addr).await,
            controller_info(&leader_addr).await,
        ) && me.applied_index >= leader.commit_index
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "restarted controller {node} did not catch up within 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
