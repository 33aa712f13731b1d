//! The flags every client command takes (`--bootstrap`, `-o`, `--timeout-ms`) and connecting
//! to the controllers with a clear diagnosis when that fails.

use std::time::Duration;

use dmq_client::discovery::DiscoveryOptions;
use dmq_client::{Admin, AdminOptions, ClientError, pb};
use tokio::time::Instant;

use crate::client_error::{ErrorContext, no_leader_message, unreachable_message};
use crate::error::CliError;
use crate::output::OutputFormat;

/// What `dmq dev` starts and prints (its controllers on BASE.. with the default base port).
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9000,127.0.0.1:9001,127.0.0.1:9002";

/// When no controller can be reached at all (connection refused, no answer), a command gives
/// up after this long, or `--timeout-ms` if shorter: nobody is there to elect a leader.
pub const UNREACHABLE_GIVE_UP: Duration = Duration::from_secs(2);

/// Bound on one GetControllerInfo while connecting (or `--timeout-ms` if shorter).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Flags shared by the client commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOpts {
    /// Client addresses of the controllers, comma-separated (any subset holding a live
    /// controller is enough).
    #[arg(
        short = 'b',
        long,
        env = "DMQ_BOOTSTRAP",
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        default_value = DEFAULT_BOOTSTRAP,
        value_parser = parse_address
    )]
    pub bootstrap: Vec<String>,

    /// Output format on stdout.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Bound on each cluster call, finding the controller leader and retries included, in
    /// milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

/// One `--bootstrap` address: `host:port` or `http://host:port`.
fn parse_address(s: &str) -> Result<String, String> {
    let s = s.trim();
    dmq_client::discovery::endpoint(s, Duration::from_secs(1))
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// What a controller said about itself, or why it did not.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The address asked.
    pub address: String,
    pub answer: Result<pb::GetControllerInfoResponse, ClientError>,
}

impl Probe {
    /// Connection refused, reset, or no answer in time.
    pub fn unreachable(&self) -> bool {
        matches!(
            self.answer,
            Err(ClientError::Transport { .. } | ClientError::Timeout { .. })
        )
    }

    /// The leader this controller names, as (id, client address).
    pub fn leader(&self) -> Option<(u64, String)> {
        let info = self.answer.as_ref().ok()?;
        (info.leader_id != 0).then(|| (info.leader_id, info.leader_address.clone()))
    }
}

impl ClientOpts {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Admin options bounded by `--timeout-ms`.
    pub fn admin_options(&self) -> AdminOptions {
        let timeout = self.timeout();
        let defaults = AdminOptions::default();
        AdminOptions {
            discovery: DiscoveryOptions {
                call_timeout: defaults.discovery.call_timeout.min(timeout),
                ..defaults.discovery
            },
            request_timeout: timeout,
            deadline: timeout,
            retry: defaults.retry,
        }
    }

    /// The context for error messages, before anything is known about the cluster.
    pub fn context(&self) -> ErrorContext {
        ErrorContext {
            controllers: self.bootstrap.clone(),
            topic: None,
        }
    }

    /// An admin whose controllers name a leader, and what each bootstrap controller said last.
    /// Fails with one actionable line: nobody reachable (after about
    /// [`UNREACHABLE_GIVE_UP`]), or no leader within about `--timeout-ms` (the last round of
    /// questions is not cut short).
    pub async fn connect(&self) -> Result<(Admin, Vec<Probe>), CliError> {
        let (admin, probes) = self.probe_until_leader().await?;
        if probes.iter().any(|p| p.leader().is_some()) {
            return Ok((admin, probes));
        }
        Err(self.no_leader_or_unreachable(&probes))
    }

    /// Like [`connect`](Self::connect) but returns the probes also when no controller names a
    /// leader (for `cluster status`); fails only on bad flags.
    pub async fn probe_until_leader(&self) -> Result<(Admin, Vec<Probe>), CliError> {
        let admin = Admin::new(self.bootstrap.clone(), self.admin_options())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let timeout = self.timeout();
        let start = Instant::now();
        let give_up_unreachable = UNREACHABLE_GIVE_UP.min(timeout);
        // Not shortened near the deadline: a round cut short would report live controllers
        // as unreachable.
        let probe_timeout = PROBE_TIMEOUT.min(timeout);
        let mut pause = Duration::from_millis(50);
        loop {
            let probes = probe_all(&admin, admin.controllers(), probe_timeout).await;
            if probes.iter().any(|p| p.leader().is_some()) {
                return Ok((admin, probes));
            }
            let elapsed = start.elapsed();
            let limit = if probes.iter().all(Probe::unreachable) {
                give_up_unreachable
            } else {
                timeout
            };
            if elapsed + pause >= limit {
                return Ok((admin, probes));
            }
            tracing::debug!(?elapsed, "no controller names a leader yet");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The error for probes in which no controller names a leader.
    pub fn no_leader_or_unreachable(&self, probes: &[Probe]) -> CliError {
        if probes.iter().all(Probe::unreachable) {
            let first = probes
                .iter()
                .find_map(|p| p.answer.as_ref().err())
                .map(error_detail)
                .unwrap_or_default();
            CliError::Runtime(unreachable_message(&self.bootstrap, &first))
        } else {
            let answered: Vec<String> = probes
                .iter()
                .filter_map(|p| {
                    let info = p.answer.as_ref().ok()?;
                    Some(format!("{} ({})", info.node_id, p.address))
                })
                .collect();
            CliError::Runtime(no_leader_message(&format!(
                "controllers {} answered but none names a leader (waited up to {:?})",
                answered.join(", "),
                self.timeout()
            )))
        }
    }
}

/// The cause of a transport failure or a timeout, for "cannot reach" messages.
fn error_detail(e: &ClientError) -> String {
    match e {
        ClientError::Transport { message, .. } => message.clone(),
        ClientError::Timeout { .. } => "no answer in time".to_string(),
        other => other.to_string(),
    }
}

/// GetControllerInfo of every address at once, each bounded by `timeout`.
pub async fn probe_all(admin: &Admin, addresses: &[String], timeout: Duration) -> Vec<Probe> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, address) in addresses.iter().enumerate() {
        let admin = admin.clone();
        let address = address.clone();
        tasks.spawn(async move {
            let answer = match tokio::time::timeout(timeout, admin.controller_info(&address)).await
            {
                Ok(answer) => answer,
                Err(_) => Err(ClientError::Timeout {
                    what: format!("controller {address} did not answer within {timeout:?}"),
                }),
            };
            (i, Probe { address, answer })
        });
    }
    let mut probes: Vec<(usize, Probe)> = tasks.join_all().await;
    probes.sort_by_key(|(i, _)| *i);
    probes.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        opts: ClientOpts,
    }

    fn parse(args: &[&str]) -> Result<ClientOpts, clap::Error> {
        let mut v = vec!["t"];
        v.extend(args);
        T::try_parse_from(v).map(|t| t.opts)
    }

    #[test]
    fn defaults_are_what_dmq_dev_prints() {
        let o = parse(&[]).unwrap();
        if std::env::var_os("DMQ_BOOTSTRAP").is_none() {
            assert_eq!(
                o.bootstrap,
                ["127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002"]
            );
        }
        assert_eq!(o.output, OutputFormat::Table);
        assert_eq!(o.timeout(), Duration::from_secs(10));
        let a = o.admin_options();
        assert_eq!((a.deadline, a.request_timeout), (o.timeout(), o.timeout()));
    }

    #[test]
    fn bootstrap_is_a_comma_separated_list() {
        let o = parse(&["--bootstrap", "a:1, b:2,http://c:3", "-o", "json"]).unwrap();
        assert_eq!(o.bootstrap, ["a:1", "b:2", "http://c:3"]);
        assert_eq!(o.output, OutputFormat::Json);
        let o = parse(&["-b", "a:1", "--timeout-ms", "250"]).unwrap();
        assert_eq!(o.bootstrap, ["a:1"]);
        assert_eq!(o.timeout_ms, 250);
    }

    #[test]
    fn bad_values_are_flag_errors() {
        for bad in [
            &["--bootstrap", "nohost"][..],
            &["--bootstrap", "a:1,,b:2"],
            &["-o", "yaml"],
            &["--timeout-ms", "0"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.use_stderr(), "{bad:?}");
        }
    }
}
