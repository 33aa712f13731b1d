//! `dmq topic create|list|describe|delete`: topics on the controller leader, in the style of
//! kafka-topics.sh.

use clap::{Args, Subcommand, value_parser};
use dmq_client::{ClientError, pb};
use serde_json::json;

use crate::client_opts::ClientOpts;
use crate::error::CliError;
use crate::output::{self, OutputFormat, Table, id_list, leader_cell, topic_json};

/// `dmq topic ...`
#[derive(Debug, Clone, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "Example:\n  dmq topic create events --partitions 3 \
                            --replication-factor 3 --min-insync-replicas 2")]
    Create(CreateArgs),
    /// List the topics (name, partitions, replication factor).
    List(ListArgs),
    /// Show a topic's partitions (leader, leader epoch, replicas, ISR) and settings.
    Describe(NameArgs),
    /// Delete a topic and its data.
    Delete(DeleteArgs),
}

/// `dmq topic create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Topic name: 1 to 249 characters from [A-Za-z0-9._-].
    pub name: String,
    /// Number of partitions (1..=1000).
    #[arg(short, long, value_parser = value_parser!(u32).range(1..))]
    pub partitions: u32,
    /// Replicas of each partition, at most the number of ONLINE brokers.
    #[arg(short, long, value_parser = value_parser!(u32).range(1..))]
    pub replication_factor: u32,
    /// Replicas that must hold a record before an acks=all produce succeeds (default: the
    /// cluster's).
    #[arg(long, value_parser = value_parser!(u32).range(1..))]
    pub min_insync_replicas: Option<u32>,
    /// Keep records this long, in milliseconds; -1: forever (default: the cluster's).
    #[arg(long, allow_negative_numbers = true, value_parser = value_parser!(i64).range(-1..))]
    pub retention_ms: Option<i64>,
    /// Keep at most this many bytes per partition; -1: no limit (default: the cluster's).
    #[arg(long, allow_negative_numbers = true, value_parser = value_parser!(i64).range(-1..))]
    pub retention_bytes: Option<i64>,
    /// The largest record batch a producer may send, in bytes (default: the cluster's).
    #[arg(long, value_parser = value_parser!(u32).range(1..))]
    pub max_message_bytes: Option<u32>,
    /// Succeed without changes when the topic exists already.
    #[arg(long)]
    pub if_not_exists: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `dmq topic list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `dmq topic describe`.
#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    /// Topic name.
    pub name: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `dmq topic delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Topic name.
    pub name: String,
    /// Succeed when the topic does not exist.
    #[arg(long)]
    pub if_exists: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(command: TopicCommand) -> Result<(), CliError> {
    match command {
        TopicCommand::Create(args) => create(args).await,
        TopicCommand::List(args) => list(args).await,
        TopicCommand::Describe(args) => describe(args).await,
        TopicCommand::Delete(args) => delete(args).await,
    }
}

/// The settings a create sends (zero fields: the cluster default).
pub fn topic_config(args: &CreateArgs) -> pb::TopicConfig {
    pb::TopicConfig {
        min_insync_replicas: args.min_insync_replicas.unwrap_or(0),
        retention_ms: args.retention_ms.unwrap_or(0),
        retention_bytes: args.retention_bytes.unwrap_or(0),
        max_message_bytes: args.max_message_bytes.unwrap_or(0),
    }
}

async fn create(args: CreateArgs) -> Result<(), CliError> {
    let ctx = args.client.context().with_topic(&args.name);
    let (admin, _) = args.client.connect().await?;
    let topic = match admin
        .create_topic(
            &args.name,
            args.partitions,
            args.replication_factor,
            topic_config(&args),
        )
        .await
    {
        Ok(topic) => topic,
        Err(ClientError::AlreadyExists { .. }) if args.if_not_exists => {
            let topic = admin
                .describe_topic(&args.name)
                .await
                .map_err(|e| ctx.error(&e))?;
            return match args.client.output {
                OutputFormat::Json => output::print_json(&topic_json(&topic)),
                OutputFormat::Table => {
                    output::print(&format!("topic \"{}\" exists already\n", args.name))
                }
            };
        }
        Err(e) => return Err(ctx.error(&e)),
    };
    match args.client.output {
        OutputFormat::Json => output::print_json(&topic_json(&topic)),
        OutputFormat::Table => output::print(&format!(
            "created topic \"{}\" ({} partition{}, replication factor {})\n",
            topic.name,
            topic.partitions.len(),
            if topic.partitions.len() == 1 { "" } else { "s" },
            topic.replication_factor
        )),
    }
}

async fn list(args: ListArgs) -> Result<(), CliError> {
    let ctx = args.client.context();
    let (admin, _) = args.client.connect().await?;
    let mut topics = admin.list_topics().await.map_err(|e| ctx.error(&e))?;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    match args.client.output {
        OutputFormat::Json => output::print_json(&json!(
            topics
                .iter()
                .map(|t| json!({
                    "name": t.name,
                    "topic_id": t.topic_id,
                    "partitions": t.partitions.len(),
                    "replication_factor": t.replication_factor,
                }))
                .collect::<Vec<_>>()
        )),
        OutputFormat::Table => output::print(&list_table(&topics).render()),
    }
}

/// NAME PARTITIONS REPLICATION_FACTOR, one row per topic.
pub fn list_table(topics: &[pb::TopicMetadata]) -> Table {
    let mut table = Table::new(["NAME", "PARTITIONS", "REPLICATION_FACTOR"]);
    for t in topics {
        table.row([
            t.name.clone(),
            t.partitions.len().to_string(),
            t.replication_factor.to_string(),
        ]);
    }
    table
}

async fn describe(args: NameArgs) -> Result<(), CliError> {
    let ctx = args.client.context().with_topic(&args.name);
    let (admin, _) = args.client.connect().await?;
    let topic = admin
        .describe_topic(&args.name)
        .await
        .map_err(|e| ctx.error(&e))?;
    match args.client.output {
        OutputFormat::Json => output::print_json(&topic_json(&topic)),
        OutputFormat::Table => output::print(&describe_text(&topic)),
    }
}

/// A summary line, a blank line and the partition table (like `kafka-topics --describe`).
pub fn describe_text(t: &pb::TopicMetadata) -> String {
    let config = t.config.unwrap_or_default();
    let setting = |v: i64, unlimited: &str| match v {
        0 => "default".to_string(),
        -1 => unlimited.to_string(),
        v => v.to_string(),
    };
    let mut text = format!(
        "topic {} (id {}): {} partitions, replication factor {}, min.insync.replicas {}, \
         retention.ms {}, retention.bytes {}, max.message.bytes {}\n\n",
        t.name,
        t.topic_id,
        t.partitions.len(),
        t.replication_factor,
        setting(config.min_insync_replicas.into(), ""),
        setting(config.retention_ms, "unlimited"),
        setting(config.retention_bytes, "unlimited"),
        setting(config.max_message_bytes.into(), ""),
    );
    let mut table = Table::new(["PARTITION", "LEADER", "LEADER_EPOCH", "REPLICAS", "ISR"]);
    let mut partitions: Vec<&pb::PartitionMetadata> = t.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition);
    for p in partitions {
        table.row([
            p.partition.to_string(),
            leader_cell(p.leader),
            p.leader_epoch.to_string(),
            id_list(&p.replicas),
            id_list(&p.isr),
        ]);
    }
    text.push_str(&table.render());
    text
}

async fn delete(args: DeleteArgs) -> Result<(), CliError> {
    let ctx = args.client.context().with_topic(&args.name);
    let (admin, _) = args.client.connect().await?;
    let (deleted, version) = match admin.delete_topic(&args.name).await {
        Ok(version) => (true, version),
        Err(ClientError::NotFound { .. }) if args.if_exists => (false, 0),
        Err(e) => return Err(ctx.error(&e)),
    };
    match args.client.output {
        OutputFormat::Json => output::print_json(&json!({
            "name": args.name,
            "deleted": deleted,
            "metadata_version": version,
        })),
        OutputFormat::Table if deleted => {
            output::print(&format!("deleted topic \"{}\"\n", args.name))
        }
        OutputFormat::Table => output::print(&format!("topic \"{}\" does not exist\n", args.name)),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        command: TopicCommand,
    }

    fn parse(args: &[&str]) -> Result<TopicCommand, clap::Error> {
        let mut v = vec!["topic"];
        v.extend(args);
        T::try_parse_from(v).map(|t| t.command)
    }

    #[test]
    fn create_takes_partitions_replication_and_settings() {
        let TopicCommand::Create(a) = parse(&[
            "create",
            "events",
            "--partitions",
            "3",
            "-r",
            "2",
            "--min-insync-replicas",
            "2",
            "--retention-ms",
            "-1",
            "--retention-bytes",
            "1048576",
            "-o",
            "json",
        ])
        .unwrap() else {
            panic!("not create")
        };
        assert_eq!(
            (a.name.as_str(), a.partitions, a.replication_factor),
            ("events", 3, 2)
        );
        assert_eq!(
            topic_config(&a),
            pb::TopicConfig {
                min_insync_replicas: 2,
                retention_ms: -1,
                retention_bytes: 1_048_576,
                max_message_bytes: 0,
            }
        );
        assert_eq!(a.client.output, OutputFormat::Json);
        assert!(!a.if_not_exists);
    }

    #[test]
    fn create_refuses_missing_or_zero_counts() {
        for bad in [
            &["create", "t", "--partitions", "3"][..],
            &["create", "t", "-r", "3"],
            &["create", "t", "-p", "0", "-r", "1"],
            &["create", "t", "-p", "x", "-r", "1"],
            &["create", "t", "-p", "1", "-r", "1", "--retention-ms", "-2"],
            &["create", "-p", "1", "-r", "1"],
            &["describe"],
            &["frobnicate"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.use_stderr(), "{bad:?} should be a usage error");
        }
    }

    #[test]
    fn list_describe_delete_parse() {
        assert!(matches!(parse(&["list"]).unwrap(), TopicCommand::List(_)));
        let TopicCommand::Describe(d) = parse(&["describe", "t", "--timeout-ms", "500"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((d.name.as_str(), d.client.timeout_ms), ("t", 500));
        let TopicCommand::Delete(d) = parse(&["delete", "t", "--if-exists"]).unwrap() else {
            panic!()
        };
        assert!(d.if_exists);
    }

    fn topic() -> pb::TopicMetadata {
        pb::TopicMetadata {
            name: "events".into(),
            topic_id: 4,
            replication_factor: 3,
            config: Some(pb::TopicConfig {
                min_insync_replicas: 2,
                retention_ms: -1,
                ..Default::default()
            }),
            partitions: vec![
                pb::PartitionMetadata {
                    partition: 1,
                    leader: 0,
                    leader_epoch: 12,
                    replicas: vec![2, 3, 1],
                    isr: vec![],
                    ..Default::default()
                },
                pb::PartitionMetadata {
                    partition: 0,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2, 3],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn describe_prints_a_summary_and_the_partition_table() {
        assert_eq!(
            describe_text(&topic()),
            "topic events (id 4): 2 partitions, replication factor 3, min.insync.replicas 2, \
             retention.ms unlimited, retention.bytes default, max.message.bytes default\n\
             \n\
             PARTITION  LEADER  LEADER_EPOCH  REPLICAS  ISR\n\
             0          1       0             1,2,3     1,2,3\n\
             1          none    12            2,3,1\n"
        );
    }

    #[test]
    fn list_prints_one_row_per_topic() {
        assert_eq!(
            list_table(&[topic()]).render(),
            "NAME    PARTITIONS  REPLICATION_FACTOR\nevents  2           3\n"
        );
    }
}
