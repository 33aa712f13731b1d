//! `dmq-etcd-bench`: `dmq bench meta`'s workload against an etcd cluster (see
//! `dmq_tests::etcd_bench`). `tests/bench/metadata_vs_etcd.sh` runs it beside `dmq bench meta`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = dmq_tests::etcd_bench::EtcdBenchArgs::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dmq-etcd-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dmq_tests::etcd_bench::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmq-etcd-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
