//! The command line of `dmq-faults`, and its exit statuses.

use std::path::PathBuf;

use clap::Parser;

/// Every check passed.
pub const EXIT_PASS: u8 = 0;
/// A check failed, the cluster did not heal, a node crashed, or a harness step failed.
pub const EXIT_FAIL: u8 = 1;
/// The suite cannot run here (not root, no `ip netns`, no loop devices, bad flags): never a
/// pass.
pub const EXIT_UNSUPPORTED: u8 = 2;
/// Stopped by Ctrl-C (everything was cleaned up).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Fault seconds of `--short`.
pub const SHORT_DURATION_S: u64 = 120;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "dmq-faults",
    about = "Fault injection for dmq: a 3+3 node cluster in network namespaces, seeded faults \
             (kill -9, power loss, SIGSTOP, isolation, one-way cuts, zombie leaders), a ledger \
             of every acks=all write and checks that no acknowledged write is lost or changed. \
             Needs root.",
    after_help = "Exit status: 0 every check passed; 1 a violation, a crash, a cluster that \
                  did not heal, or a harness failure; 2 cannot run here (root, ip netns, loop \
                  devices) or bad flags; 130 interrupted.\n\nReplay a failure: pass the same \
                  --seed, --duration-s (or --short) and --faults; the first lines print the \
                  replay command."
)]
pub struct Options {
    /// Seed of the fault schedule (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The CI run: 120 s of faults (under 3 minutes in all).
    #[arg(long, conflicts_with = "duration_s")]
    pub short: bool,
    /// Seconds of faults (quiet gaps included) [default: 300].
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Only these fault kinds, comma-separated (see --list-kinds).
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Print the fault kinds and exit.
    #[arg(long)]
    pub list_kinds: bool,
    /// Print the planned faults and exit (needs no root).
    #[arg(long)]
    pub plan_only: bool,
    /// The dmq program to test (default: dmq-under-test next to this program).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Prefix of every namespace and of the work dir; runs at once need different ones.
    #[arg(long, default_value = "dmqf")]
    pub prefix: String,
    /// Work dir: disk images, mounts, logs (default: /tmp/dmq-faults-PREFIX).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Concurrent producers.
    #[arg(long, default_value_t = 6)]
    pub producers: u32,
    /// Partitions of the topic (replication factor 3, min_insync_replicas 2).
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// How long the cluster may take to heal after the faults.
    #[arg(long, default_value_t = 60)]
    pub heal_timeout_s: u64,
    /// Size of each node's disk image.
    #[arg(long, default_value_t = 192)]
    pub disk_mib: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the whole history as JSON lines to this file: every produce attempt, every
    /// record consumed, every record of the full reads.
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Examples printed per failed check.
    #[arg(long, default_value_t = 5)]
    pub examples: usize,
    /// Keep the node logs even when the run passes (they are always kept when it fails).
    #[arg(long)]
    pub keep_logs: bool,
}

impl Options {
    pub fn duration_s(&self) -> u64 {
        if self.short {
            SHORT_DURATION_S
        } else {
            self.duration_s.unwrap_or(300)
        }
    }

    /// The command line that replays this run's schedule.
    pub fn replay(&self, seed: u64) -> String {
        let mut cmd = format!("tests/faults/run.sh --seed {seed}");
        if self.short {
            cmd.push_str(" --short");
        } else {
            cmd.push_str(&format!(" --duration-s {}", self.duration_s()));
        }
        if !self.faults.is_empty() {
            cmd.push_str(&format!(" --faults {}", self.faults.join(",")));
        }
        if self.partitions != 3 {
            cmd.push_str(&format!(" --partitions {}", self.partitions));
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_lines() {
        let o = Options::parse_from(["dmq-faults", "--short"]);
        assert_eq!(o.duration_s(), 120);
        assert_eq!(o.replay(5), "tests/faults/run.sh --seed 5 --short");
        let o = Options::parse_from([
            "dmq-faults",
            "--duration-s",
            "1800",
            "--faults",
            "pause-long,one-way-cut",
        ]);
        assert_eq!(
            o.replay(9),
            "tests/faults/run.sh --seed 9 --duration-s 1800 --faults pause-long,one-way-cut"
        );
        assert!(Options::try_parse_from(["dmq-faults", "--short", "--duration-s", "5"]).is_err());
    }
}
