//! One run, start to end: check the machine, take the prefix's lock, remove an earlier run's
//! leftovers, build the namespaces and disks, then (in the client thread, see the module doc of
//! [`faults`](super)) start the cluster, run the workload and the faults, heal, read, check and
//! report. Everything made is removed on the way out, whatever the outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dmq_proto::v1 as pb;
use tokio::sync::{Mutex, watch};

use super::availability;
use super::checks::check;
use super::cleanup::{Unsupported, check_environment, lock, remove_all};
use super::cli::{EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS, EXIT_UNSUPPORTED, Options};
use super::cluster::{Cluster, Settings};
use super::final_read::{read_twice, wait_settled};
use super::history::{Clock, History};
use super::layout::{Layout, Node};
use super::meta::Meta;
use super::nemesis::{Nemesis, SharedCluster, watch_crashes};
use super::report::Report;
use super::schedule::{Fault, FaultKind, PlanSpec, plan};
use super::workload::{Stats, WorkloadOpts, consume, produce};
use super::{INTERRUPTED, interrupted, net, say};

/// The topic every run writes.
pub const TOPIC: &str = "faults";
const START_TIMEOUT: Duration = Duration::from_secs(60);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Removes everything of the run when dropped (also while unwinding from a panic).
struct Teardown {
    layout: Layout,
    keep_logs: bool,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let removed = remove_all(&self.layout, self.keep_logs);
        println!(
            "dmq-faults: removed {} processes, {} mounts, {} loop devices, {} namespaces{}",
            removed.processes,
            removed.mounts,
            removed.loop_devices,
            removed.namespaces,
            if self.keep_logs {
                format!("; node logs kept in {}", self.layout.log_dir().display())
            } else {
                String::new()
            }
        );
        for e in removed.errors {
            eprintln!("dmq-faults: cleanup: {e}");
        }
    }
}

fn default_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DMQ_TEST_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .unwrap_or(Path::new("."))
        .join("dmq-under-test")
}

/// Everything the client thread needs.
struct RunConfig {
    seed: u64,
    opts: Options,
    plan: Vec<Fault>,
    layout: Layout,
    settings: Settings,
}

/// The program: returns the exit status.
pub fn main_with(opts: Options) -> u8 {
    if opts.list_kinds {
        for k in FaultKind::ALL {
            println!("{k}");
        }
        return EXIT_PASS;
    }
    let seed = opts.seed.unwrap_or_else(rand::random);
    let mut kinds = Vec::new();
    for name in &opts.faults {
        match FaultKind::parse(name.trim()) {
            Some(k) => kinds.push(k),
            None => {
                eprintln!("dmq-faults: unknown fault kind {name:?}; --list-kinds lists them");
                return EXIT_UNSUPPORTED;
            }
        }
    }
    if kinds.is_empty() {
        kinds = FaultKind::ALL.to_vec();
    }
    if opts.partitions == 0 || opts.producers == 0 {
        eprintln!("dmq-faults: --partitions and --producers must be at least 1");
        return EXIT_UNSUPPORTED;
    }
    let layout = match Layout::new(&opts.prefix, opts.work_dir.clone()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dmq-faults: {e}");
            return EXIT_UNSUPPORTED;
        }
    };
    let mut settings = Settings::new(opts.bin.clone().unwrap_or_else(default_bin));
    settings.disk_mib = opts.disk_mib;
    let plan = plan(&PlanSpec {
        seed,
        duration_ms: opts.duration_s() * 1000,
        kinds,
        partitions: opts.partitions,
        brokers: layout.brokers,
        controllers: layout.controllers,
        session_timeout_ms: settings.broker_session_timeout_ms,
    });
    println!(
        "dmq-faults: seed {seed}: {} faults planned over {} s; replay: {}",
        plan.len(),
        opts.duration_s(),
        opts.replay(seed)
    );
    for f in &plan {
        println!("  {f}");
    }
    if opts.plan_only {
        return EXIT_PASS;
    }
    install_signal_handlers();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("dmq-faults: panic (seed {seed}):");
        default_hook(info);
    }));

    if let Err(Unsupported(why)) = check_environment(&layout, &settings.bin) {
        eprintln!("dmq-faults: cannot run here: {why}");
        return EXIT_UNSUPPORTED;
    }
    let _lock = match lock(&layout) {
        Ok(l) => l,
        Err(Unsupported(why)) => {
            eprintln!("dmq-faults: {why}");
            return EXIT_UNSUPPORTED;
        }
    };
    let leftovers = remove_all(&layout, true);
    keep_previous_logs(&layout);
    if leftovers.anything() {
        println!(
            "dmq-faults: removed leftovers of an earlier run with prefix {:?}: {} processes, {} \
             mounts, {} loop devices, {} namespaces",
            layout.prefix,
            leftovers.processes,
            leftovers.mounts,
            leftovers.loop_devices,
            leftovers.namespaces
        );
    }
    let mut teardown = Teardown {
        layout: layout.clone(),
        keep_logs: true,
    };
    if let Err(e) = net::create(&layout) {
        eprintln!("dmq-faults: cannot build the network: {e}");
        return EXIT_UNSUPPORTED;
    }
    let cluster = match Cluster::create(&layout, &settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dmq-faults: cannot make the disks: {e}");
            return EXIT_UNSUPPORTED;
        }
    };
    println!(
        "dmq-faults: namespaces {}-*, addresses {}.x, work dir {}",
        layout.prefix,
        {
            let (a, b, c) = super::layout::SUBNET;
            format!("{a}.{b}.{c}")
        },
        layout.work_dir.display()
    );
    if interrupted() {
        return EXIT_INTERRUPTED;
    }
    let config = RunConfig {
        seed,
        opts: opts.clone(),
        plan,
        layout: layout.clone(),
        settings,
    };
    let client_ns = layout.ns_path(&layout.ns(Node::Client));
    let thread = std::thread::Builder::new()
        .name("dmq-faults-client".into())
        .spawn(move || -> Result<(u8, Option<Report>), String> {
            enter_netns(&client_ns)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            Ok(rt.block_on(run_in_client(cluster, config)))
        })
        .expect("spawn the client thread");
    let (code, report) = match thread.join() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("dmq-faults: {e}");
            (EXIT_UNSUPPORTED, None)
        }
        Err(_) => {
            eprintln!("dmq-faults: the run panicked (seed {seed}); cleaning up");
            (EXIT_FAIL, None)
        }
    };
    if let (Some(report), Some(path)) = (&report, &opts.json) {
        match serde_json::to_vec_pretty(report) {
            Ok(json) => {
                if let Err(e) = std::fs::write(path, json) {
                    eprintln!("dmq-faults: writing {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("dmq-faults: JSON: {e}"),
        }
    }
    teardown.keep_logs = code != EXIT_PASS || opts.keep_logs;
    drop(teardown);
    code
}

/// A failed run's logs are kept in the work dir; the next run with the prefix moves them to
/// `logs.previous` (replacing older ones) before it starts its own.
fn keep_previous_logs(layout: &Layout) {
    let logs = layout.log_dir();
    if logs.exists() {
        let previous = layout.work_dir.join("logs.previous");
        let _ = std::fs::remove_dir_all(&previous);
        match std::fs::rename(&logs, &previous) {
            Ok(()) => println!(
                "dmq-faults: the previous run's node logs are now in {}",
                previous.display()
            ),
            Err(e) => eprintln!("dmq-faults: moving {}: {e}", logs.display()),
        }
    }
}

/// Moves this thread into the network namespace at `path`, and checks that it did.
fn enter_netns(path: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    // SAFETY: setns on an open namespace file; it affects this thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let want = std::fs::metadata(path).map(|m| m.ino()).ok();
    let now = std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .ok();
    if want.is_none() || want != now {
        return Err(format!(
            "this thread is not in {} after setns ({want:?} != {now:?})",
            path.display()
        ));
    }
    Ok(())
}

/// The run, in the client namespace: returns the exit status and the report.
async fn run_in_client(cluster: Cluster, config: RunConfig) -> (u8, Option<Report>) {
    let clock = Clock::new();
    let opts = &config.opts;
    let partitions = opts.partitions;
    let brokers = config.layout.brokers;
    let cluster: SharedCluster = Arc::new(Mutex::new(cluster));
    let meta = Arc::new(Meta::new(&config.layout, TOPIC));
    say(&clock, &format!("cluster: {}", config.settings.describe()));

    if let Err(e) = start_cluster(&cluster, &meta, partitions, brokers, &clock).await {
        let tails = cluster.lock().await.log_tails(40);
        eprintln!(
            "dmq-faults: the cluster did not start (seed {}): {e}\n{tails}",
            config.seed
        );
        cluster.lock().await.kill_all();
        return (EXIT_FAIL, None);
    }

    let workload = WorkloadOpts {
        producers: opts.producers,
        partitions,
        ..WorkloadOpts::default()
    };
    let stats = Arc::new(Stats::default());
    let (stop_producers, producers_stop) = watch::channel(false);
    let (stop_others, others_stop) = watch::channel(false);
    let producers: Vec<_> = (0..workload.producers)
        .map(|id| {
            tokio::spawn(produce(
                id,
                workload.clone(),
                meta.clone(),
                clock,
                stats.clone(),
                producers_stop.clone(),
            ))
        })
        .collect();
    let consumers: Vec<_> = (0..partitions)
        .map(|p| {
            tokio::spawn(consume(
                p,
                workload.clone(),
                meta.clone(),
                clock,
                stats.clone(),
                others_stop.clone(),
            ))
        })
        .collect();
    let crashes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let watcher = tokio::spawn(watch_crashes(
        cluster.clone(),
        clock,
        crashes.clone(),
        others_stop.clone(),
    ));
    let progress = {
        let stats = stats.clone();
        let mut stop = others_stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => say(&clock, &stats.line()),
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    };

    let mut failures = Vec::new();
    let first_ack =
        crate::wait::wait_until(crate::wait::deadline(Duration::from_secs(30)), || async {
            if stats.acked.load(Ordering::Relaxed) > 0 {
                Ok(())
            } else {
                Err(stats.line())
            }
        })
        .await;
    if let Err(e) = first_ack {
        failures.push(format!("no write was acknowledged before the faults: {e}"));
    }

    let nemesis = Nemesis {
        cluster: cluster.clone(),
        meta: meta.clone(),
        clock,
    };
    let records = if failures.is_empty() {
        say(
            &clock,
            &format!("faults start ({} planned)", config.plan.len()),
        );
        nemesis.run(&config.plan).await
    } else {
        Vec::new()
    };
    let faults_end = clock.now();
    say(&clock, &format!("faults over; {}", stats.line()));

    // Heal, let writes resume (bounded), stop the producers, read everything twice.
    if let Err(e) = cluster.lock().await.heal_all().await {
        failures.push(format!("healing after the faults: {e}"));
    }
    let acked_before = stats.acked.load(Ordering::Relaxed);
    let _ = crate::wait::wait_until(crate::wait::deadline(Duration::from_secs(10)), || async {
        if stats.acked.load(Ordering::Relaxed) > acked_before || interrupted() {
            Ok(())
        } else {
            Err("no ack yet")
        }
    })
    .await;
    let _ = stop_producers.send(true);
    let mut history = History::default();
    for p in producers {
        match tokio::time::timeout(Duration::from_secs(30), p).await {
            Ok(Ok(attempts)) => history.attempts.extend(attempts),
            Ok(Err(e)) => failures.push(format!("a producer failed: {e}")),
            Err(_) => failures.push("a producer did not stop within 30 s".into()),
        }
    }
    let heal_timeout = Duration::from_secs(opts.heal_timeout_s);
    if interrupted() {
        failures.push("interrupted".into());
    } else {
        say(
            &clock,
            "healing: waiting for every broker ONLINE and every ISR full",
        );
        match read_twice(&cluster, &meta, partitions, brokers, heal_timeout, &clock).await {
            Ok(reads) => history.full_reads = reads,
            Err(e) => {
                let tails = cluster.lock().await.log_tails(30);
                failures.push(format!("{e}\nnode log tails:\n{tails}"));
            }
        }
    }
    let _ = stop_others.send(true);
    let mut notes = Vec::new();
    for c in consumers {
        match tokio::time::timeout(Duration::from_secs(10), c).await {
            Ok(Ok((reads, n))) => {
                history.reads.extend(reads);
                notes.push(n);
            }
            Ok(Err(e)) => failures.push(format!("a consumer failed: {e}")),
            Err(_) => failures.push("a consumer did not stop within 10 s".into()),
        }
    }
    let _ = watcher.await;
    let _ = progress.await;
    cluster.lock().await.kill_all();

    if let Some(path) = &opts.ledger {
        let written = std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .and_then(|mut f| history.write_ledger(&mut f));
        match written {
            Ok(()) => say(&clock, &format!("ledger written to {}", path.display())),
            Err(e) => eprintln!("dmq-faults: writing the ledger to {}: {e}", path.display()),
        }
    }
    let checks = check(&history);
    let table = availability::table(&records, &availability::acks(&history.attempts), faults_end);
    let crashes = crashes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let report = Report::new(
        config.seed,
        opts.replay(config.seed),
        config.settings.describe(),
        opts.duration_s(),
        config.plan.clone(),
        records,
        crashes,
        &history,
        notes,
        checks,
        table,
        failures,
    );
    println!("{}", report.render(opts.examples));
    let code = if interrupted() {
        EXIT_INTERRUPTED
    } else if report.passed() {
        EXIT_PASS
    } else {
        EXIT_FAIL
    };
    (code, Some(report))
}

/// Starts the controllers, waits for a leader, starts the brokers, waits until they are ONLINE,
/// creates the topic and waits until every partition is fully replicated.
async fn start_cluster(
    cluster: &SharedCluster,
    meta: &Meta,
    partitions: u32,
    brokers: u64,
    clock: &Clock,
) -> Result<(), String> {
    let until = crate::wait::deadline(START_TIMEOUT);
    {
        let mut c = cluster.lock().await;
        for n in c.controllers() {
            c.start(n)?;
        }
    }
    let leader = crate::wait::wait_until(until, || meta.controller_leader())
        .await
        .map_err(|e| format!("no controller leader: {e}"))?;
    say(clock, &format!("controllers up, leader {leader}"));
    {
        let mut c = cluster.lock().await;
        for n in c.brokers() {
            c.start(n)?;
        }
    }
    crate::wait::wait_until(until, || async {
        let d = meta
            .admin()
            .describe_cluster()
            .await
            .map_err(|e| e.to_string())?;
        let online = d
            .brokers
            .iter()
            .filter(|b| b.status == pb::BrokerStatus::Online as i32)
            .count() as u64;
        if online == brokers {
            Ok(())
        } else {
            Err(format!("{online} of {brokers} brokers ONLINE"))
        }
    })
    .await
    .map_err(|e| format!("brokers: {e}"))?;
    let config = pb::TopicConfig {
        min_insync_replicas: 2,
        ..pb::TopicConfig::default()
    };
    meta.admin()
        .create_topic(TOPIC, partitions, 3, config)
        .await
        .map_err(|e| format!("creating topic {TOPIC}: {e}"))?;
    let leaders = wait_settled(meta, partitions, brokers, None, START_TIMEOUT).await?;
    say(
        clock,
        &format!(
            "topic {TOPIC}: {partitions} partitions, replication factor 3, min_insync_replicas \
             2, leaders {:?}",
            leaders.values().collect::<Vec<_>>()
        ),
    );
    Ok(())
}
