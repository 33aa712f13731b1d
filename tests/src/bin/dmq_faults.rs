//! `dmq-faults`: the fault-injection suite (see `dmq_tests::faults` and README.md, "Fault
//! injection"). Run it with `tests/faults/run.sh` (root needed).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let opts = dmq_tests::faults::cli::Options::parse();
    std::process::ExitCode::from(dmq_tests::faults::run::main_with(opts))
}
