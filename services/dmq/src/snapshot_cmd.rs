//! `dmq cluster snapshot save FILE`: a consistent, checksummed backup of all controller
//! metadata, streamed from the controller leader (`GetSnapshot`), written atomically (see
//! `dmq_controller::backup` for the file format). `dmq controller restore FILE ...` seeds a new
//! controller cluster from it.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use dmq_controller::backup::{self, Backup};
use dmq_proto::v1::controller_service_client::ControllerServiceClient;
use dmq_proto::v1::{GetSnapshotRequest, SnapshotHeader};
use tonic::Code;

use crate::client_opts::ClientOpts;
use crate::error::CliError;

/// `dmq cluster snapshot ...`
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent snapshot of all metadata (topics, partition assignments, brokers),
    /// taken by the controller leader and checksummed, to FILE (written atomically).
    Save(SaveArgs),
}

/// `dmq cluster snapshot save`.
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// Where to write the snapshot (replaced atomically if it exists).
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The most bytes one streamed chunk may hold (the leader sends 1 MiB).
const CHUNK_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Redirects followed when the leader moved between finding it and asking it.
const REDIRECTS_MAX: usize = 3;

pub async fn run(command: SnapshotCommand) -> Result<(), CliError> {
    match command {
        SnapshotCommand::Save(args) => save(args).await,
    }
}

async fn save(args: SaveArgs) -> Result<(), CliError> {
    let opts = &args.client;
    let (_admin, probes) = opts.connect().await?;
    let Some((_, mut address)) = probes.iter().find_map(|p| p.leader()) else {
        return Err(opts.no_leader_or_unreachable(&probes));
    };
    let runtime = |m: String| CliError::Runtime(m);
    for _ in 0..=REDIRECTS_MAX {
        let endpoint = dmq_client::discovery::endpoint(&address, opts.timeout())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| runtime(format!("cannot reach the controller leader {address}: {e}")))?;
        let mut client =
            ControllerServiceClient::new(channel).max_decoding_message_size(CHUNK_BYTES_MAX);
        let call = tokio::time::timeout(opts.timeout(), client.get_snapshot(GetSnapshotRequest {}));
        let stream = match call.await {
            Err(_) => {
                return Err(runtime(format!(
                    "the controller leader {address} did not start the snapshot within {:?}; \
                     retry, or raise --timeout-ms",
                    opts.timeout()
                )));
            }
            Ok(Ok(stream)) => stream.into_inner(),
            Ok(Err(status)) => match dmq_client::discovery::leader_hint(&status) {
                Some(hint) if status.code() == Code::FailedPrecondition => {
                    address = hint;
                    continue;
                }
                _ => {
                    return Err(runtime(format!(
                        "the controller leader {address} refused the snapshot: {:?}: {}",
                        status.code(),
                        status.message()
                    )));
                }
            },
        };
        let backup = receive(stream, opts.timeout(), &address).await?;
        backup::write(&args.file, &backup).map_err(|e| runtime(e.to_string()))?;
        let h = &backup.header;
        eprintln!(
            "saved the metadata of cluster {} at index {} (term {}, feature level {}, {} bytes, \
             crc32 {:08x}) from {address} to {}",
            h.cluster_id,
            h.applied_index,
            h.term,
            h.feature_level,
            h.data_bytes,
            crc32fast::hash(&backup.data),
            args.file.display()
        );
        return Ok(());
    }
    Err(runtime(format!(
        "the controller leader kept moving ({REDIRECTS_MAX} redirects); retry"
    )))
}

/// Reads the whole stream and checks it: a header first, the data's length and checksum in the
/// last chunk. Each chunk must come within `timeout` of the one before.
async fn receive(
    mut stream: tonic::Streaming<dmq_proto::v1::SnapshotChunk>,
    timeout: std::time::Duration,
    address: &str,
) -> Result<Backup, CliError> {
    let broken = |m: String| {
        CliError::Runtime(format!(
            "the snapshot stream from {address} is unusable ({m}); nothing was written, retry"
        ))
    };
    let mut header: Option<SnapshotHeader> = None;
    let mut data = Vec::new();
    loop {
        let next = tokio::time::timeout(timeout, stream.message())
            .await
            .map_err(|_| broken(format!("no chunk within {timeout:?}")))?
            .map_err(|s| broken(format!("{:?}: {}", s.code(), s.message())))?;
        let Some(chunk) = next else {
            return Err(broken("it ended before its last chunk".into()));
        };
        if let Some(h) = chunk.header {
            if header.is_some() {
                return Err(broken("a second header".into()));
            }
            data.reserve(usize::try_from(h.data_bytes).unwrap_or(0));
            header = Some(h);
        }
        let Some(h) = &header else {
            return Err(broken("data before the header".into()));
        };
        data.extend_from_slice(&chunk.data);
        if data.len() as u64 > h.data_bytes {
            return Err(broken("more data than the header announced".into()));
        }
        if chunk.done {
            if data.len() as u64 != h.data_bytes {
                return Err(broken(format!(
                    "{} bytes instead of {}",
                    data.len(),
                    h.data_bytes
                )));
            }
            if crc32fast::hash(&data) != chunk.data_crc32 {
                return Err(broken("its checksum does not match".into()));
            }
            return Ok(Backup {
                header: header.expect("checked"),
                data: data.into(),
            });
        }
    }
}
