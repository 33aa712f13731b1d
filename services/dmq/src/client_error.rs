//! A failed client call as the one line the CLI prints: what went wrong and what to run next.
//!
//! [`ClientError`]'s own `Display` is already one line; here it gets the command's context
//! (the topic, the controllers asked) and the next step (`dmq topic list`, `dmq cluster
//! status`, `dmq dev`, `--bootstrap`).

use dmq_client::ClientError;

use crate::error::CliError;

/// What the command was doing, for the message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorContext {
    /// Controller client addresses (bootstrap, plus any learned), to tell a controller that
    /// cannot be reached from a broker.
    pub controllers: Vec<String>,
    /// The topic the command is about, if any.
    pub topic: Option<String>,
}

impl ErrorContext {
    /// The same context about `topic`.
    pub fn with_topic(mut self, topic: &str) -> ErrorContext {
        self.topic = Some(topic.to_string());
        self
    }

    /// Adds controller addresses (e.g. the leader's as the controllers report it).
    pub fn learn_controllers(&mut self, addresses: impl IntoIterator<Item = String>) {
        for a in addresses {
            if !a.is_empty() && !self.controllers.contains(&a) {
                self.controllers.push(a);
            }
        }
    }

    /// `e` as a runtime error (exit status 1) with its one-line message.
    pub fn error(&self, e: &ClientError) -> CliError {
        CliError::Runtime(message(e, self))
    }
}

/// "Nobody answered at these addresses": start a cluster or fix `--bootstrap`.
pub fn unreachable_message(addresses: &[String], detail: &str) -> String {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    one_line(&format!(
        "cannot reach any controller at {}{detail}; start a local cluster with `dmq dev`, or \
         point --bootstrap / DMQ_BOOTSTRAP at the controllers' client addresses",
        addresses.join(", ")
    ))
}

/// "The controllers answer but have no leader", with `detail` in parentheses.
pub fn no_leader_message(detail: &str) -> String {
    one_line(&format!(
        "the cluster has no controller leader ({detail}; an election may be under way, or \
         fewer than a majority of the controllers run); check it with: dmq cluster status"
    ))
}

/// The one-line message for `e` in `ctx`.
pub fn message(e: &ClientError, ctx: &ErrorContext) -> String {
    let topic = ctx.topic.as_deref();
    let text = match e {
        ClientError::NotFound { what } => match topic {
            Some(t) if what.contains("partition ") => {
                format!(
                    "no such partition: {what}; see the partitions with: dmq topic describe {t}"
                )
            }
            Some(t) => format!("topic \"{t}\" does not exist; list topics with: dmq topic list"),
            None => format!("not found: {what}"),
        },
        ClientError::AlreadyExists { what } => match topic {
            Some(t) => {
                let maybe_ours = if what.contains("earlier attempt") {
                    " (an earlier attempt of this command lost its answer and may have created it)"
                } else {
                    ""
                };
                format!(
                    "topic \"{t}\" already exists{maybe_ours}; see it with: dmq topic describe {t}"
                )
            }
            None => format!("already exists: {what}"),
        },
        ClientError::NoLeader { what } if what.contains("controllers") => {
            no_leader_message("no controller named one in time")
        }
        ClientError::NoLeader { what } => {
            let see = topic.map_or_else(
                || "dmq cluster status".to_string(),
                |t| format!("dmq topic describe {t}"),
            );
            format!(
                "partition {what} has no leader right now (its in-sync replicas are offline, or \
                 a new leader is being chosen); retry, or check it with: {see}"
            )
        }
        ClientError::Transport { address, message } if ctx.controllers.contains(address) => {
            format!(
                "cannot reach controller {address} ({message}); tried {}: start a local \
                 cluster with `dmq dev`, or point --bootstrap / DMQ_BOOTSTRAP at the \
                 controllers' client addresses",
                ctx.controllers.join(", ")
            )
        }
        ClientError::Transport { address, message } => format!(
            "cannot reach broker {address} ({message}); check the brokers with: dmq cluster status"
        ),
        ClientError::Timeout { what } => format!(
            "timed out: {what}; raise --timeout-ms, or check the cluster with: dmq cluster status"
        ),
        ClientError::OffsetOutOfRange { .. } => {
            format!("{e}; or start with --from-beginning / --from-end")
        }
        other => other.to_string(),
    };
    one_line(&text)
}

/// Line breaks and runs of spaces folded into single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(topic: Option<&str>) -> ErrorContext {
        ErrorContext {
            controllers: vec!["127.0.0.1:9000".into(), "127.0.0.1:9001".into()],
            topic: topic.map(str::to_string),
        }
    }

    #[test]
    fn unknown_topic_says_how_to_list_topics() {
        let e = ClientError::NotFound {
            what: "topic \"x\" does not exist; list the topics or create it first".into(),
        };
        assert_eq!(
            message(&e, &ctx(Some("x"))),
            "topic \"x\" does not exist; list topics with: dmq topic list"
        );
        let p = ClientError::NotFound {
            what: "partition 7 of topic \"x\" (it has 3 partitions)".into(),
        };
        assert_eq!(
            message(&p, &ctx(Some("x"))),
            "no such partition: partition 7 of topic \"x\" (it has 3 partitions); see the \
             partitions with: dmq topic describe x"
        );
        assert_eq!(
            message(&e, &ctx(None)),
            format!("not found: {}", e_what(&e))
        );
    }

    fn e_what(e: &ClientError) -> String {
        match e {
            ClientError::NotFound { what } => what.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn no_controller_leader_points_at_cluster_status() {
        let e = ClientError::NoLeader {
            what: "the controllers (an election is under way)".into(),
        };
        let m = message(&e, &ctx(None));
        assert!(m.starts_with("the cluster has no controller leader"), "{m}");
        assert!(m.ends_with("check it with: dmq cluster status"), "{m}");
        let p = message(
            &ClientError::NoLeader { what: "t-0".into() },
            &ctx(Some("t")),
        );
        assert!(p.starts_with("partition t-0 has no leader"), "{p}");
        assert!(p.ends_with("dmq topic describe t"), "{p}");
    }

    #[test]
    fn unreachable_names_the_addresses_and_dmq_dev() {
        let e = ClientError::Transport {
            address: "127.0.0.1:9001".into(),
            message: "Connection refused (os error 111)".into(),
        };
        assert_eq!(
            message(&e, &ctx(None)),
            "cannot reach controller 127.0.0.1:9001 (Connection refused (os error 111)); tried \
             127.0.0.1:9000, 127.0.0.1:9001: start a local cluster with `dmq dev`, or point \
             --bootstrap / DMQ_BOOTSTRAP at the controllers' client addresses"
        );
        let b = ClientError::Transport {
            address: "10.0.0.5:9200".into(),
            message: "Connection refused".into(),
        };
        assert!(message(&b, &ctx(Some("t"))).starts_with("cannot reach broker 10.0.0.5:9200"));
        let all = unreachable_message(&["a:1".into(), "b:2".into()], "Connection refused");
        assert_eq!(
            all,
            "cannot reach any controller at a:1, b:2 (Connection refused); start a local cluster \
             with `dmq dev`, or point --bootstrap / DMQ_BOOTSTRAP at the controllers' client \
             addresses"
        );
    }

    #[test]
    fn every_message_is_one_line() {
        let errors = [
            ClientError::AlreadyExists {
                what: "topic \"t\"\nexists".into(),
            },
            ClientError::InvalidArgument {
                message: "bad\nname".into(),
            },
            ClientError::Timeout {
                what: "controller a:1 did not answer".into(),
            },
            ClientError::OffsetOutOfRange {
                topic: "t".into(),
                partition: 0,
                offset: 9,
                log_start: 0,
                high_watermark: 3,
            },
            ClientError::Other(tonic::Status::unimplemented(
                "Produce is\nnot implemented yet",
            )),
            ClientError::Closed,
        ];
        for e in &errors {
            for c in [ctx(None), ctx(Some("t"))] {
                let m = message(e, &c);
                assert!(!m.contains('\n') && !m.is_empty(), "{m:?}");
            }
        }
        assert_eq!(
            message(&errors[0], &ctx(Some("t"))),
            "topic \"t\" already exists; see it with: dmq topic describe t"
        );
        assert!(message(&errors[2], &ctx(None)).contains("raise --timeout-ms"));
        assert!(message(&errors[3], &ctx(Some("t"))).contains("--from-beginning"));
    }

    #[test]
    fn learned_controllers_count_as_controllers() {
        let mut c = ctx(None);
        c.learn_controllers(["10.0.0.1:9000".to_string(), String::new()]);
        assert_eq!(c.controllers.len(), 3);
        let e = ClientError::Transport {
            address: "10.0.0.1:9000".into(),
            message: "reset".into(),
        };
        assert!(
            c.error(&e)
                .to_string()
                .starts_with("cannot reach controller")
        );
    }
}
