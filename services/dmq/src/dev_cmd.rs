//! `dmq dev`: a whole cluster on loopback in one command (3 controllers and 3 brokers by
//! default), ready when a controller leader is elected and every broker is ONLINE. Data lives
//! in a temporary folder removed on exit, or in `--data-dir` (kept, so a restart with the same
//! flags brings the same cluster back). Ctrl-C stops everything cleanly.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::CliError;
use crate::local_cluster::{LocalCluster, LocalClusterSpec};
use crate::signal::ShutdownSignals;

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Controllers (Raft members): 1, 3 or 5.
    #[arg(long, default_value_t = 3, env = "DMQ_DEV_CONTROLLERS")]
    pub controllers: usize,
    /// Brokers.
    #[arg(long, default_value_t = 3, env = "DMQ_DEV_BROKERS")]
    pub brokers: usize,
    /// Controllers listen on BASE.., their Raft peers on BASE+100.., brokers on BASE+200..;
    /// metrics on BASE+300.. (controllers) and BASE+400.. (brokers).
    #[arg(long, default_value_t = 9000, env = "DMQ_DEV_BASE_PORT")]
    pub base_port: u16,
    /// Keep data here (and reuse it on the next start); default: a temporary folder removed
    /// on exit.
    #[arg(long, env = "DMQ_DEV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// How long to wait for the cluster to be ready.
    #[arg(long, default_value_t = 60, env = "DMQ_DEV_READY_TIMEOUT_S")]
    pub ready_timeout_s: u64,
}

pub async fn run(args: DevArgs) -> Result<(), CliError> {
    if args.controllers == 0 || args.controllers > 7 {
        return Err(CliError::Usage(format!(
            "--controllers {} is not a sensible Raft group; use 1, 3 or 5",
            args.controllers
        )));
    }
    if args.base_port < 1024 || args.base_port as u32 + 400 + args.brokers as u32 > 65_535 {
        return Err(CliError::Usage(format!(
            "--base-port {} leaves no room for the ports BASE..BASE+{}; pick one between 1024 and 65000",
            args.base_port,
            400 + args.brokers
        )));
    }
    let mut signals = ShutdownSignals::install()
        .map_err(|e| CliError::Runtime(format!("cannot install signal handlers: {e}")))?;
    let (tmp, data_dir) = match &args.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("dmq-dev-")
                .tempdir()
                .map_err(|e| CliError::Runtime(format!("cannot create a temporary folder: {e}")))?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let spec = LocalClusterSpec {
        controllers: args.controllers,
        brokers: args.brokers,
        base_port: Some(args.base_port),
        data_dir: data_dir.clone(),
        controller_args: Vec::new(),
        broker_args: Vec::new(),
        binary: None,
    };
    let mut cluster = LocalCluster::start(&spec).map_err(|e| CliError::Runtime(e.to_string()))?;
    let ready = tokio::select! {
        r = cluster.wait_ready(Duration::from_secs(args.ready_timeout_s)) => r,
        s = signals.recv() => Err(format!("{s} before the cluster was ready")),
    };
    if let Err(e) = ready {
        cluster.stop_all(Duration::from_secs(5));
        // Keep the logs for whoever has to find out why.
        let _ = tmp.map(tempfile::TempDir::keep);
        return Err(CliError::Runtime(format!(
            "{e}; logs are in {}",
            data_dir.display()
        )));
    }
    print_table(&cluster, &data_dir, tmp.is_some()).await;
    let signal = signals.recv().await;
    eprintln!("{signal}: stopping the cluster (brokers first, then controllers)");
    cluster.stop_all(Duration::from_secs(10));
    match tmp {
        Some(t) => {
            let _ = t.close();
            eprintln!("stopped; temporary data removed");
        }
        None => eprintln!("stopped; data kept in {}", data_dir.display()),
    }
    Ok(())
}

async fn print_table(cluster: &LocalCluster, data_dir: &std::path::Path, temporary: bool) {
    let leader = cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .ok()
        .map(|(id, _)| id);
    let metrics = |a: &Option<String>| {
        a.as_ref()
            .map_or("-".to_string(), |a| format!("http://{a}/metrics"))
    };
    println!(
        "{:<11} {:>3}  {:<16} {:<16} {:<9} METRICS",
        "NODE", "ID", "ADDRESS", "RAFT PEER", "ROLE"
    );
    for c in &cluster.controllers {
        let role = if Some(c.id) == leader {
            "leader"
        } else {
            "follower"
        };
        let m = metrics(&c.admin_addr);
        println!(
            "{:<11} {:>3}  {:<16} {:<16} {role:<9} {m}",
            "controller", c.id, c.client_addr, c.peer_addr
        );
    }
    for b in &cluster.brokers {
        let m = metrics(&b.admin_addr);
        println!(
            "{:<11} {:>3}  {:<16} {:<16} {:<9} {m}",
            "broker", b.id, b.client_addr, "-", "ONLINE"
        );
    }
    println!();
    println!("export DMQ_BOOTSTRAP={}", cluster.client_addrs().join(","));
    println!();
    let kept = if temporary {
        "temporary, removed on exit"
    } else {
        "kept"
    };
    eprintln!(
        "data and logs: {} ({kept}); Ctrl-C stops the cluster",
        data_dir.display()
    );
}
