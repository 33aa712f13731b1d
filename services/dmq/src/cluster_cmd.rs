//! `dmq cluster status`: every controller as it sees itself (role, term, commit and applied
//! index), whether it votes or only learns and how far it lags, and every broker as the
//! controller leader sees it (status, epoch, rack). `dmq cluster add-controller` and
//! `remove-controller` change the controller group, one voter at a time.
//!
//! Without a controller leader it still prints what the controllers it reached say, then
//! fails: that is when the command is most needed.

use clap::{Args, Subcommand};
use dmq_client::{Admin, broker_address, pb};
use serde_json::{Value, json};

use crate::client_opts::{ClientOpts, Probe, probe_all};
use crate::error::CliError;
use crate::output::{self, OutputFormat, Table, broker_status_name, role_name};

/// `dmq cluster ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Controllers (role, term, commit and applied index) and brokers (status, epoch, rack).
    Status(StatusArgs),
    /// Backups of all controller metadata (restore one with `dmq controller restore`).
    #[command(subcommand)]
    Snapshot(crate::snapshot_cmd::SnapshotCommand),
    /// Add a controller: as a learner, then, once it has caught up, as a voter. Start it
    /// first (`dmq controller --join ...` does this call itself).
    AddController(AddControllerArgs),
    /// Remove a controller (voter or learner). Removing the leader: it hands leadership to
    /// the most up-to-date voter once the change commits.
    RemoveController(RemoveControllerArgs),
}

/// `dmq cluster add-controller`.
#[derive(Debug, Clone, Args)]
pub struct AddControllerArgs {
    #[arg(long)]
    pub node_id: u64,
    /// Where its RaftService listens, as the other controllers reach it (HOST:PORT).
    #[arg(long)]
    pub peer_address: String,
    /// Where its ControllerService listens, as clients reach it (HOST:PORT).
    #[arg(long)]
    pub client_address: String,
    /// Leave it a learner (no vote); add-controller again promotes it.
    #[arg(long)]
    pub learner_only: bool,
    /// How long it may take to catch up before it is promoted, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub catch_up_timeout_ms: u64,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `dmq cluster remove-controller`.
#[derive(Debug, Clone, Args)]
pub struct RemoveControllerArgs {
    /// The controller's id.
    pub node_id: u64,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `dmq cluster status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Snapshot(command) => crate::snapshot_cmd::run(command).await,
        ClusterCommand::AddController(args) => add_controller(args).await,
        ClusterCommand::RemoveController(args) => remove_controller(args).await,
    }
}

async fn add_controller(args: AddControllerArgs) -> Result<(), CliError> {
    let mut opts = args.client.clone();
    // The call waits for the learner to catch up: the bound on it must cover that.
    opts.timeout_ms = opts.timeout_ms.max(args.catch_up_timeout_ms + 15_000);
    let (admin, _) = opts.connect().await?;
    let request = pb::AddControllerRequest {
        node_id: args.node_id,
        peer_address: args.peer_address.clone(),
        client_address: args.client_address.clone(),
        learner_only: args.learner_only,
        catch_up_timeout_ms: args.catch_up_timeout_ms,
    };
    let members = admin
        .add_controller(request)
        .await
        .map_err(|e| opts.context().error(&e))?;
    print_members(&opts, &members)
}

async fn remove_controller(args: RemoveControllerArgs) -> Result<(), CliError> {
    let opts = &args.client;
    let (admin, _) = opts.connect().await?;
    let members = admin
        .remove_controller(args.node_id)
        .await
        .map_err(|e| opts.context().error(&e))?;
    print_members(opts, &members)
}

/// The controller group after a change.
fn print_members(opts: &ClientOpts, members: &[pb::ControllerNode]) -> Result<(), CliError> {
    match opts.output {
        OutputFormat::Json => output::print_json(&json!(
            members
                .iter()
                .map(|c| json!({
                    "id": c.node_id,
                    "address": c.address,
                    "peer_address": c.peer_address,
                    "member": member_name(c),
                    "match_index": c.match_index,
                    "lag": c.lag,
                }))
                .collect::<Vec<_>>()
        ))?,
        OutputFormat::Table => {
            let mut table = Table::new(["CONTROLLER", "ADDRESS", "PEER_ADDRESS", "MEMBER", "LAG"]);
            for c in members {
                table.row([
                    c.node_id.to_string(),
                    c.address.clone(),
                    c.peer_address.clone(),
                    member_name(c).to_string(),
                    c.lag.to_string(),
                ]);
            }
            output::print(&table.render())?;
        }
    }
    Ok(())
}

fn member_name(c: &pb::ControllerNode) -> &'static str {
    if c.learner { "learner" } else { "voter" }
}

/// One controller row.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerRow {
    pub id: Option<u64>,
    pub address: String,
    /// From DescribeCluster: the leader's replication progress for this node.
    pub match_index: Option<u64>,
    /// From DescribeCluster: "voter" or "learner", and entries behind the leader's commit.
    pub member: Option<&'static str>,
    pub lag: Option<u64>,
    pub info: Result<pb::GetControllerInfoResponse, String>,
}

/// What `cluster status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// DescribeCluster from the leader; `None` when there is no leader.
    pub cluster: Option<pb::DescribeClusterResponse>,
    pub controllers: Vec<ControllerRow>,
}

async fn status(args: StatusArgs) -> Result<(), CliError> {
    let opts = &args.client;
    let (admin, probes) = opts.probe_until_leader().await?;
    if probes.iter().all(Probe::unreachable) {
        return Err(opts.no_leader_or_unreachable(&probes));
    }
    let mut ctx = opts.context();
    ctx.learn_controllers(probes.iter().filter_map(|p| p.leader().map(|(_, a)| a)));
    let cluster = if probes.iter().any(|p| p.leader().is_some()) {
        Some(admin.describe_cluster().await.map_err(|e| ctx.error(&e))?)
    } else {
        None
    };
    let no_leader = cluster
        .is_none()
        .then(|| opts.no_leader_or_unreachable(&probes));
    let status = gather(&admin, opts, probes, cluster).await;
    for row in &status.controllers {
        if let Err(e) = &row.info {
            tracing::warn!(address = %row.address, "controller did not answer: {e}");
        }
    }
    match opts.output {
        OutputFormat::Json => output::print_json(&status_json(&status))?,
        OutputFormat::Table => output::print(&status_text(&status))?,
    }
    match no_leader {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Rows for the controllers DescribeCluster lists (asking those the bootstrap probes did not
/// reach), or for the probes when there is no leader.
async fn gather(
    admin: &Admin,
    opts: &ClientOpts,
    probes: Vec<Probe>,
    cluster: Option<pb::DescribeClusterResponse>,
) -> Status {
    let Some(cluster) = cluster else {
        let controllers = probes
            .into_iter()
            .map(|p| ControllerRow {
                id: p.answer.as_ref().ok().map(|i| i.node_id),
                address: p.address,
                match_index: None,
                member: None,
                lag: None,
                info: p.answer.map_err(|e| e.to_string()),
            })
            .collect();
        return Status {
            cluster: None,
            controllers,
        };
    };
    let missing: Vec<String> = cluster
        .controllers
        .iter()
        .map(|c| c.address.clone())
        .filter(|a| !probes.iter().any(|p| &p.address == a))
        .collect();
    let timeout = opts.timeout().min(std::time::Duration::from_secs(2));
    let mut all = probes;
    all.extend(probe_all(admin, &missing, timeout).await);
    let mut controllers: Vec<ControllerRow> = cluster
        .controllers
        .iter()
        .map(|c| {
            let probe = all.iter().find(|p| p.address == c.address);
            ControllerRow {
                id: Some(c.node_id),
                address: c.address.clone(),
                match_index: Some(c.match_index),
                member: Some(member_name(c)),
                lag: Some(c.lag),
                info: match probe {
                    Some(p) => p.answer.clone().map_err(|e| e.to_string()),
                    None => Err("not asked".to_string()),
                },
            }
        })
        .collect();
    controllers.sort_by_key(|c| c.id);
    Status {
        cluster: Some(cluster),
        controllers,
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The summary line, the controller table and the broker table.
pub fn status_text(s: &Status) -> String {
    let mut text = String::new();
    match &s.cluster {
        Some(c) => {
            let leader = s
                .controllers
                .iter()
                .find(|r| r.id == Some(c.leader_id))
                .map_or(String::new(), |r| format!(" ({})", r.address));
            text.push_str(&format!(
                "controller leader: {}{leader}, term {}, commit index {}, metadata version {}\n\n",
                c.leader_id, c.term, c.commit_index, c.metadata_version
            ));
        }
        None => text.push_str("controller leader: none\n\n"),
    }
    let mut table = Table::new([
        "CONTROLLER",
        "ADDRESS",
        "ROLE",
        "TERM",
        "COMMIT_INDEX",
        "APPLIED_INDEX",
        "MATCH_INDEX",
        "MEMBER",
        "LAG",
    ]);
    let leader_id = s.cluster.as_ref().map(|c| c.leader_id);
    for r in &s.controllers {
        let id = match (r.id, leader_id) {
            (Some(id), Some(l)) if id == l => format!("{id}*"),
            (id, _) => opt(id),
        };
        match &r.info {
            Ok(i) => table.row([
                id,
                r.address.clone(),
                role_name(i.role).to_string(),
                i.term.to_string(),
                i.commit_index.to_string(),
                i.applied_index.to_string(),
                opt(r.match_index),
                r.member.unwrap_or("-").to_string(),
                opt(r.lag),
            ]),
            Err(_) => table.row([
                id,
                r.address.clone(),
                "unreachable".to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                opt(r.match_index),
                r.member.unwrap_or("-").to_string(),
                opt(r.lag),
            ]),
        }
    }
    text.push_str(&table.render());
    if let Some(c) = &s.cluster {
        let mut brokers = Table::new(["BROKER", "ADDRESS", "STATUS", "EPOCH", "RACK"]);
        let mut list: Vec<&pb::BrokerMetadata> = c.brokers.iter().collect();
        list.sort_by_key(|b| b.broker_id);
        for b in list {
            brokers.row([
                b.broker_id.to_string(),
                broker_address(&b.host, b.port),
                broker_status_name(b.status).to_string(),
                b.broker_epoch.to_string(),
                if b.rack.is_empty() {
                    "-".to_string()
                } else {
                    b.rack.clone()
                },
            ]);
        }
        text.push('\n');
        if brokers.is_empty() {
            text.push_str("no brokers registered\n");
        } else {
            text.push_str(&brokers.render());
        }
    }
    text
}

/// The same as one JSON document.
pub fn status_json(s: &Status) -> Value {
    let leader_id = s.cluster.as_ref().map(|c| c.leader_id);
    let controllers: Vec<Value> = s
        .controllers
        .iter()
        .map(|r| {
            let info = r.info.as_ref().ok();
            json!({
                "id": r.id,
                "address": r.address,
                "is_leader": r.id.is_some() && r.id == leader_id,
                "role": info.map_or("unreachable", |i| role_name(i.role)),
                "term": info.map(|i| i.term),
                "leader_id": info.map(|i| i.leader_id).filter(|&l| l != 0),
                "commit_index": info.map(|i| i.commit_index),
                "applied_index": info.map(|i| i.applied_index),
                "match_index": r.match_index,
                "member": r.member,
                "lag": r.lag,
                "error": r.info.as_ref().err(),
            })
        })
        .collect();
    let Some(c) = &s.cluster else {
        return json!({
            "leader_id": null,
            "controllers": controllers,
            "brokers": [],
        });
    };
    let mut brokers: Vec<&pb::BrokerMetadata> = c.brokers.iter().collect();
    brokers.sort_by_key(|b| b.broker_id);
    json!({
        "leader_id": c.leader_id,
        "term": c.term,
        "commit_index": c.commit_index,
        "metadata_version": c.metadata_version,
        "controllers": controllers,
        "brokers": brokers.iter().map(|b| json!({
            "id": b.broker_id,
            "address": broker_address(&b.host, b.port),
            "status": broker_status_name(b.status),
            "epoch": b.broker_epoch,
            "rack": (!b.rack.is_empty()).then_some(&b.rack),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, role: pb::ControllerRole) -> pb::GetControllerInfoResponse {
        pb::GetControllerInfoResponse {
            node_id: id,
            role: role as i32,
            term: 5,
            leader_id: 2,
            leader_address: "h:2".into(),
            commit_index: 40,
            applied_index: 39,
            address: format!("h:{id}"),
            ..Default::default()
        }
    }

    fn status() -> Status {
        Status {
            cluster: Some(pb::DescribeClusterResponse {
                controllers: vec![],
                brokers: vec![
                    pb::BrokerMetadata {
                        broker_id: 2,
                        host: "b".into(),
                        port: 9202,
                        rack: "r1".into(),
                        broker_epoch: 7,
                        status: pb::BrokerStatus::Offline as i32,
                        ..Default::default()
                    },
                    pb::BrokerMetadata {
                        broker_id: 1,
                        host: "b".into(),
                        port: 9201,
                        rack: String::new(),
                        broker_epoch: 3,
                        status: pb::BrokerStatus::Online as i32,
                        ..Default::default()
                    },
                ],
                leader_id: 2,
                term: 5,
                metadata_version: 12,
                commit_index: 40,
            }),
            controllers: vec![
                ControllerRow {
                    id: Some(1),
                    address: "h:1".into(),
                    match_index: Some(40),
                    member: Some("voter"),
                    lag: Some(0),
                    info: Ok(info(1, pb::ControllerRole::Follower)),
                },
                ControllerRow {
                    id: Some(2),
                    address: "h:2".into(),
                    match_index: Some(40),
                    member: Some("voter"),
                    lag: Some(0),
                    info: Ok(info(2, pb::ControllerRole::Leader)),
                },
                ControllerRow {
                    id: Some(3),
                    address: "h:3".into(),
                    match_index: Some(12),
                    member: Some("learner"),
                    lag: Some(28),
                    info: Err("cannot reach h:3".into()),
                },
            ],
        }
    }

    #[test]
    fn table_marks_the_leader_and_lists_brokers() {
        assert_eq!(
            status_text(&status()),
            "controller leader: 2 (h:2), term 5, commit index 40, metadata version 12\n\
             \n\
             CONTROLLER  ADDRESS  ROLE         TERM  COMMIT_INDEX  APPLIED_INDEX  MATCH_INDEX  MEMBER   LAG\n\
             1           h:1      follower     5     40            39             40           voter    0\n\
             2*          h:2      leader       5     40            39             40           voter    0\n\
             3           h:3      unreachable  -     -             -              12           learner  28\n\
             \n\
             BROKER  ADDRESS  STATUS   EPOCH  RACK\n\
             1       b:9201   ONLINE   3      -\n\
             2       b:9202   OFFLINE  7      r1\n"
        );
    }

    #[test]
    fn json_has_controllers_and_brokers() {
        let v = status_json(&status());
        assert_eq!(v["leader_id"], 2);
        assert_eq!(v["controllers"][1]["is_leader"], true);
        assert_eq!(v["controllers"][0]["is_leader"], false);
        assert_eq!(v["controllers"][2]["role"], "unreachable");
        assert_eq!(v["controllers"][2]["error"], "cannot reach h:3");
        assert_eq!(v["brokers"][0]["id"], 1);
        assert_eq!(v["brokers"][0]["rack"], Value::Null);
        assert_eq!(v["brokers"][1]["status"], "OFFLINE");
    }

    #[test]
    fn without_a_leader_only_controllers_show() {
        let mut s = status();
        s.cluster = None;
        let text = status_text(&s);
        assert!(text.starts_with("controller leader: none\n"), "{text}");
        assert!(!text.contains("BROKER"), "{text}");
        assert!(!text.contains('*'), "{text}");
        assert_eq!(status_json(&s)["leader_id"], Value::Null);
    }
}
