//! The `dmq` program, built inside this package so that the suites get its path from
//! `env!("CARGO_BIN_EXE_dmq-under-test")`.

fn main() -> std::process::ExitCode {
    dmq::main_entry()
}
