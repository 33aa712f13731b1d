//! The `dmq` program. `main.rs` only calls [`main_entry`]; the process-level tests build the
//! same code as their own binary.
//!
//! One concept per module: [`cli`] (flags), [`logging`], [`signal`] (shutdown signals),
//! [`peers`] (the `--peers` list), [`controller_cmd`] (`dmq controller`), [`broker_cmd`]
//! (`dmq broker`), [`error`] (exit statuses).

pub mod admin;
pub mod bench;
pub mod broker_cmd;
pub mod cli;
pub mod client_error;
pub mod client_opts;
pub mod cluster_cmd;
pub mod config_file;
pub mod consume_cmd;
pub mod controller_cmd;
pub mod dev_cmd;
pub mod error;
pub mod local_cluster;
pub mod logging;
pub mod ordinal;
pub mod output;
pub mod peers;
pub mod produce_cmd;
pub mod record_format;
pub mod restore_cmd;
pub mod signal;
pub mod snapshot_cmd;
pub mod topic_cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::CliError;

/// Parses the arguments, sets up logging and the tokio runtime, and runs the subcommand.
///
/// Exit status: 0 on success or clean shutdown, 1 on a runtime error, 2 on bad flags. Errors are
/// printed as one line on stderr.
pub fn main_entry() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `dmq controller restore` runs offline, with flags of its own.
    if let Some(restore) = restore_cmd::invocation(&args) {
        return match restore_cmd::RestoreArgs::try_parse_from(restore) {
            Ok(a) => match restore_cmd::run(a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(e) => {
                let _ = e.print();
                if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                }
            }
        };
    }
    if let Err(e) = config_file::apply(&args) {
        return fail(e);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; real errors exit with 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.worker_threads {
        builder.worker_threads(n as usize);
    }
    let runtime = match builder.enable_all().thread_name("dmq-worker").build() {
        Ok(rt) => rt,
        Err(e) => return fail(CliError::Runtime(format!("could not start tokio: {e}"))),
    };
    let service = match &cli.command {
        Command::Controller(_) => "dmq-controller",
        Command::Broker(_) => "dmq-broker",
        _ => "dmq",
    };
    let _logging = {
        let _rt = runtime.enter();
        let quiet = matches!(
            cli.command,
            Command::Topic(_) | Command::Cluster(_) | Command::Produce(_) | Command::Consume(_)
        );
        logging::init(cli.log_format, cli.otlp_endpoint.as_deref(), service, quiet)
    };
    let result = runtime.block_on(dispatch(cli.command));
    // Do not wait for tasks that ignore shutdown (e.g. a blocked peer connection).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Controller(args) => controller_cmd::run(args).await,
        Command::Broker(args) => broker_cmd::run(args).await,
        Command::Dev(args) => dev_cmd::run(args).await,
        Command::Bench(cli::BenchCommand::Meta(args)) => {
            bench::meta::run(args).await.map_err(CliError::Runtime)
        }
        Command::Bench(cli::BenchCommand::Produce(args)) => {
            bench::data::produce(args).await.map_err(CliError::Runtime)
        }
        Command::Bench(cli::BenchCommand::Consume(args)) => {
            bench::data::consume(args).await.map_err(CliError::Runtime)
        }
        Command::Bench(cli::BenchCommand::Failover(args)) => {
            bench::failover::run(args).await.map_err(CliError::Runtime)
        }
        Command::Bench(cli::BenchCommand::NewTopic(args)) => {
            bench::new_topic::run(args).await.map_err(CliError::Runtime)
        }
        Command::Bench(cli::BenchCommand::LogOpen(args)) => {
            bench::log_open::run(args).await.map_err(CliError::Runtime)
        }
        Command::Topic(command) => topic_cmd::run(command).await,
        Command::Cluster(command) => cluster_cmd::run(command).await,
        Command::Produce(args) => produce_cmd::run(args).await,
        Command::Consume(args) => consume_cmd::run(args).await,
    }
}

fn fail(e: CliError) -> ExitCode {
    eprintln!("error: {e}");
    e.exit_code()
}
