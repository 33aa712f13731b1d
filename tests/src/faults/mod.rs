//! `dmq-faults`: a Jepsen-style fault-injection suite for the real `dmq` binary.
//!
//! A run builds a small world of network namespaces (3 controllers, 3 brokers and the client,
//! each in its own, linked through a bridge in a switch namespace; [`layout`], [`net`]), gives
//! each server its own loop-mounted ext4 disk ([`disk`]) and starts the servers inside their
//! namespaces ([`node`], [`cluster`]). Producers and consumers ([`workload`]) write unique
//! values with acks=all and read them back while a seeded schedule of faults ([`schedule`],
//! played by [`nemesis`]) kills, power-cuts, pauses and cuts off nodes. Every produce attempt
//! goes into a ledger ([`history`]), classified by the broker's answer ([`classify`]). After
//! the faults everything is healed and every partition read in full twice, from two leaders
//! ([`final_read`]); the named checks ([`checks`]) compare the ledger, the consumers' reads and
//! the full reads, and [`availability`] measures how long writes stopped per fault kind.
//!
//! The client side runs in one thread that joined the client namespace (`setns`) before
//! building a current-thread tokio runtime, so every socket the harness opens belongs to that
//! namespace (a socket belongs to the namespace of the thread that creates it); the other
//! namespaces are only entered by the server processes, between fork and exec. One process
//! keeps one ledger and one clock, with no IPC to get wrong.
//!
//! [`run::main_with`] is the program; `tests/faults/run.sh` builds and runs it.

pub mod availability;
pub mod checks;
pub mod classify;
pub mod cleanup;
pub mod cli;
pub mod cluster;
pub mod disk;
pub mod final_read;
pub mod history;
pub mod layout;
pub mod meta;
pub mod nemesis;
pub mod net;
pub mod node;
pub mod report;
pub mod run;
pub mod schedule;
pub mod workload;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use history::{Clock, secs};

/// Set by SIGINT / SIGTERM / SIGHUP: the run stops at the next step and cleans up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// One progress line on stdout, stamped with the run's clock.
pub fn say(clock: &Clock, line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{:>8.3}s] {line}", secs(clock.now()));
    let _ = out.flush();
}
