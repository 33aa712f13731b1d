//! Free loopback ports for the processes under test.
//!
//! A port is "free" if it can be bound on 127.0.0.1 right now; it is released before the child
//! binds it, so another process may take it in between: [`ControllerCluster::start`] retries
//! with new ports when a node dies at startup.
//!
//! Ports are drawn below the kernel's ephemeral range (`ip_local_port_range`), not with a bind to
//! port 0: a port from the ephemeral range can be taken at any moment as the *local* port of an
//! outgoing connection (peers reconnecting to a killed node do exactly that), which would make
//! `restart` of a node on its old port fail. Within this test process no port is handed out
//! twice; the walk starts at an offset derived from the process id to keep concurrent test
//! processes apart.
//!
//! [`ControllerCluster::start`]: crate::ControllerCluster::start

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

const LOW: u16 = 10_000;

struct Walk {
    next: u32,
    handed_out: std::collections::HashSet<u16>,
}

static WALK: Mutex<Option<Walk>> = Mutex::new(None);

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// `n` distinct ports, each bindable on 127.0.0.1 when returned.
pub fn free_ports(n: usize) -> Vec<u16> {
    let high = ephemeral_low();
    let mut guard = WALK.lock().unwrap_or_else(|e| e.into_inner());
    let span = u32::from(high.saturating_sub(LOW));
    if span < 1_000 {
        drop(guard);
        return ephemeral_ports(n);
    }
    let walk = guard.get_or_insert_with(|| Walk {
        next: std::process::id().wrapping_mul(7_919) % span,
        handed_out: Default::default(),
    });
    // Hold every chosen listener until all are chosen, so they are distinct.
    let mut held = Vec::with_capacity(n);
    let mut tries = 0;
    while held.len() < n {
        tries += 1;
        if tries > span {
            drop(held);
            drop(guard);
            return ephemeral_ports(n);
        }
        let port = LOW + (walk.next % span) as u16;
        walk.next = walk.next.wrapping_add(1);
        if walk.handed_out.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            walk.handed_out.insert(port);
            held.push((port, l));
        }
    }
    held.into_iter().map(|(p, _)| p).collect()
}

/// One free port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// The fallback: ports from binding port 0.
fn ephemeral_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_and_bindable() {
        let mut all = free_ports(20);
        all.extend(free_ports(20));
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), 40);
        for p in all {
            assert!(p >= LOW);
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }
}
