//! The `dmq` binary: everything lives in the library (`dmq::main_entry`), so the process-level
//! test crate can build the very same program as its own binary.

fn main() -> std::process::ExitCode {
    dmq::main_entry()
}
