//! `dmq controller restore FILE --data-dir DIR --node-id N --peers ...`: seeds DIR as member N
//! of a new controller cluster from a snapshot that `dmq cluster snapshot save` wrote. Run it
//! once per member (the same FILE and --peers everywhere), then start the members with
//! `dmq controller` on those data dirs. The new cluster gets a new cluster id (derived from the
//! snapshot and --peers unless --cluster-id is given), so members of the old cluster are
//! refused by the new one (see `dmq_controller::backup`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use dmq_controller::backup;

use crate::error::CliError;
use crate::peers::parse_peers;

/// `dmq controller restore`: seed a new controller cluster member's data dir from a snapshot.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dmq controller restore",
    about = "Seed DIR as one member of a new controller cluster from a snapshot FILE \
             (`dmq cluster snapshot save`); run it for every member, then start them",
    after_help = "Example (3 members; the same FILE and --peers on each):\n  dmq controller \
                  restore backup.snap --data-dir /var/lib/dmq/c1 --node-id 1 \\\n    --peers \
                  1=c1:9094/c1:9093,2=c2:9094/c2:9093,3=c3:9094/c3:9093"
)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// The new member's data dir: missing or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new member's id, one of --peers.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: u64,
    /// Every member of the new cluster, as for `dmq controller --peers`.
    #[arg(long, value_name = "ID=PEER_ADDR[/CLIENT_ADDR],...")]
    pub peers: String,
    /// The new cluster's id (default: derived from the snapshot and --peers, the same on
    /// every member).
    #[arg(long)]
    pub cluster_id: Option<String>,
}

/// The arguments of `dmq [global flags] controller restore ...`, if that is what `args` run.
pub fn invocation(args: &[OsString]) -> Option<Vec<OsString>> {
    let i = args
        .windows(2)
        .position(|w| w[0] == "controller" && w[1] == "restore")?;
    let mut out = vec![OsString::from("dmq controller restore")];
    out.extend(args[i + 2..].iter().cloned());
    Some(out)
}

pub fn run(args: RestoreArgs) -> Result<(), CliError> {
    let peers =
        parse_peers(&args.peers, args.node_id, 9093).map_err(|e| CliError::Usage(e.to_string()))?;
    let (b, metadata) = backup::read(&args.file).map_err(|e| CliError::Runtime(e.to_string()))?;
    let specs: Vec<String> = args
        .peers
        .split(',')
        .map(|p| p.trim().to_string())
        .collect();
    let cluster_id = args.cluster_id.clone().unwrap_or_else(|| {
        backup::derived_cluster_id(&b.header.cluster_id, crc32fast::hash(&b.data), &specs)
    });
    let voters = peers.keys().copied().collect();
    let r = backup::restore(
        &b,
        metadata,
        &args.data_dir,
        args.node_id,
        voters,
        &cluster_id,
    )
    .map_err(|e| CliError::Runtime(e.to_string()))?;
    eprintln!(
        "restored node {} of cluster {} in {}: {} brokers, {} topics, log after index {} (term \
         {}); the snapshot was of cluster {}. Start it with dmq controller --node-id {} \
         --data-dir {} --peers {}",
        args.node_id,
        r.cluster_id,
        args.data_dir.display(),
        r.brokers,
        r.topics,
        r.applied_index,
        r.term,
        b.header.cluster_id,
        args.node_id,
        args.data_dir.display(),
        args.peers
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_the_restore_invocation_and_parses_it() {
        assert_eq!(
            invocation(&os(&["dmq", "controller", "--node-id", "1"])),
            None
        );
        let args = invocation(&os(&[
            "dmq",
            "--log-format",
            "json",
            "controller",
            "restore",
            "b.snap",
            "--data-dir",
            "/d",
            "--node-id",
            "2",
            "--peers",
            "1=a:1,2=b:1",
        ]))
        .unwrap();
        let a = RestoreArgs::try_parse_from(args).unwrap();
        assert_eq!(
            (a.file.to_str(), a.node_id, a.peers.as_str()),
            (Some("b.snap"), 2, "1=a:1,2=b:1")
        );
        assert!(RestoreArgs::try_parse_from(os(&["x", "f", "--node-id", "0"])).is_err());
    }
}
