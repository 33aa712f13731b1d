//! `dmq-nats-bench`: `dmq bench produce` / `consume`'s workloads against NATS JetStream (see
//! `dmq_tests::nats_bench`). `tests/bench/produce_vs_nats.sh` runs it beside `dmq bench`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = dmq_tests::nats_bench::NatsBenchArgs::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dmq-nats-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dmq_tests::nats_bench::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmq-nats-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
