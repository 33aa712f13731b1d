//! How the client commands print: `-o table` (aligned columns, for people) or `-o json` (for
//! programs), always on stdout. Logs and summaries go to stderr.
//!
//! Also the JSON shapes shared by the commands ([`topic_json`]) and the names they print for
//! protobuf enums.

use std::io::{self, Write};

use dmq_client::pb;
use serde_json::{Value, json};

use crate::error::CliError;

/// `-o` / `--output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns with a header row.
    #[default]
    Table,
    /// JSON: one document per command (one object per line for `produce` and `consume`).
    Json,
}

/// A table of text cells printed with aligned columns, two spaces apart. The last column is
/// not padded, so no line ends in spaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print empty, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header line and every row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i + 1 < columns {
                    text.push_str(cell);
                    let pad = widths[i] - cell.chars().count() + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                } else {
                    text.push_str(cell);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Writes `text` to stdout. A closed pipe (`dmq topic list | head -1`) is not an error.
pub fn print(text: &str) -> Result<(), CliError> {
    write_stdout(text.as_bytes())
}

/// Writes `bytes` to stdout and flushes. A closed pipe is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::Runtime(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// `value` as indented JSON and a newline, on stdout.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value always serializes");
    text.push('\n');
    print(&text)
}

/// `1,2,3`.
pub fn id_list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// A partition leader for a table: `none` when it has none (0), like kafka-topics.
pub fn leader_cell(leader: u64) -> String {
    if leader == 0 {
        "none".to_string()
    } else {
        leader.to_string()
    }
}

/// A topic with its config and every partition.
pub fn topic_json(t: &pb::TopicMetadata) -> Value {
    let config = t.config.unwrap_or_default();
    json!({
        "name": t.name,
        "topic_id": t.topic_id,
        "replication_factor": t.replication_factor,
        "config": {
            "min_insync_replicas": config.min_insync_replicas,
            "retention_ms": config.retention_ms,
            "retention_bytes": config.retention_bytes,
            "max_message_bytes": config.max_message_bytes,
        },
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": (p.leader != 0).then_some(p.leader),
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
        })).collect::<Vec<_>>(),
    })
}

/// `leader`, `follower`, `candidate`, `pre-candidate` or `unknown`.
pub fn role_name(role: i32) -> &'static str {
    match pb::ControllerRole::try_from(role).unwrap_or_default() {
        pb::ControllerRole::Leader => "leader",
        pb::ControllerRole::Follower => "follower",
        pb::ControllerRole::Candidate => "candidate",
        pb::ControllerRole::PreCandidate => "pre-candidate",
        pb::ControllerRole::Unspecified => "unknown",
    }
}

/// `ONLINE`, `OFFLINE`, `FENCED` or `UNKNOWN`.
pub fn broker_status_name(status: i32) -> &'static str {
    match pb::BrokerStatus::try_from(status).unwrap_or_default() {
        pb::BrokerStatus::Online => "ONLINE",
        pb::BrokerStatus::Offline => "OFFLINE",
        pb::BrokerStatus::Fenced => "FENCED",
        pb::BrokerStatus::Unspecified => "UNKNOWN",
    }
}

/// Bytes as JSON: a string when they are UTF-8, else their hex digits (the caller marks
/// which). `None` becomes `null`.
pub fn bytes_json(bytes: Option<&[u8]>) -> (Value, bool) {
    match bytes {
        None => (Value::Null, false),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Value::String(s.to_string()), false),
            Err(_) => (Value::String(hex(b)), true),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut t = Table::new(["PARTITION", "LEADER", "REPLICAS"]);
        t.row(["0", "1", "1,2,3"]);
        t.row(["10", "none", ""]);
        t.row(["2"]);
        assert_eq!(
            t.render(),
            "PARTITION  LEADER  REPLICAS\n\
             0          1       1,2,3\n\
             10         none\n\
             2\n"
        );
        assert!(!t.is_empty());
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut t = Table::new(["A", "B"]);
        t.row(["é", "x"]);
        assert_eq!(t.render(), "A  B\né  x\n");
        assert!(Table::new(["A"]).is_empty());
        assert_eq!(Table::new(["ONLY"]).render(), "ONLY\n");
    }

    #[test]
    fn topic_json_has_every_field() {
        let t = pb::TopicMetadata {
            name: "t".into(),
            topic_id: 7,
            replication_factor: 2,
            partitions: vec![pb::PartitionMetadata {
                partition: 0,
                leader: 0,
                leader_epoch: 3,
                replicas: vec![1, 2],
                isr: vec![1],
                ..Default::default()
            }],
            config: Some(pb::TopicConfig {
                min_insync_replicas: 1,
                ..Default::default()
            }),
        };
        let v = topic_json(&t);
        assert_eq!(v["name"], "t");
        assert_eq!(v["partitions"][0]["leader"], Value::Null);
        assert_eq!(v["partitions"][0]["replicas"], json!([1, 2]));
        assert_eq!(v["config"]["min_insync_replicas"], 1);
    }

    #[test]
    fn names_and_cells() {
        assert_eq!(role_name(pb::ControllerRole::Leader as i32), "leader");
        assert_eq!(role_name(99), "unknown");
        assert_eq!(
            broker_status_name(pb::BrokerStatus::Online as i32),
            "ONLINE"
        );
        assert_eq!(leader_cell(0), "none");
        assert_eq!(id_list(&[1, 2, 3]), "1,2,3");
        assert_eq!(bytes_json(Some(b"hi")), (json!("hi"), false));
        assert_eq!(bytes_json(Some(&[0xff, 0x01])), (json!("ff01"), true));
        assert_eq!(bytes_json(None), (Value::Null, false));
    }
}
