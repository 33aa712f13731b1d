//! `--peers`: the list of every controller, `ID=PEER_ADDR[/CLIENT_ADDR]`, comma-separated.
//!
//! Addresses are `HOST:PORT` where HOST is a name, an IPv4 address or a bracketed IPv6 address
//! (`[::1]:9094`). Names are kept as given (they are resolved when connecting), so DNS names of a
//! Kubernetes headless Service work.

use std::collections::BTreeMap;

use dmq_controller::node::PeerAddrs;

/// What is wrong with a `--peers` value; each message names the offending entry and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersError {
    #[error(
        "--peers is empty: list every controller as ID=PEER_ADDR[/CLIENT_ADDR], comma-separated, \
         e.g. 1=10.0.0.1:9094,2=10.0.0.2:9094,3=10.0.0.3:9094"
    )]
    Empty,
    #[error(
        "--peers entry \"{entry}\": {reason}; expected ID=PEER_HOST:PORT[/CLIENT_HOST:PORT], \
         e.g. 1=10.0.0.1:9094/10.0.0.1:9093"
    )]
    BadEntry { entry: String, reason: String },
    #[error(
        "--peers entry \"{entry}\": id {id} appears more than once; give each controller one id"
    )]
    DuplicateId { entry: String, id: u64 },
    #[error(
        "--peers entry \"{entry}\": peer address {addr} is used by another entry too; give each \
         controller its own address"
    )]
    DuplicateAddr { entry: String, addr: String },
    #[error("--node-id {id} is not in --peers (ids: {ids}); list this controller in --peers too")]
    NotAPeer { id: u64, ids: String },
}

/// Parses and validates `spec` for the controller `node_id` whose client API listens on
/// `listen_port` (the default client port of every peer). Empty entries (a trailing comma) and
/// spaces around entries are ignored.
pub fn parse_peers(
    spec: &str,
    node_id: u64,
    listen_port: u16,
) -> Result<BTreeMap<u64, PeerAddrs>, PeersError> {
    let mut peers = BTreeMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: &str| PeersError::BadEntry {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let (id, addrs) = entry
            .split_once('=')
            .ok_or_else(|| bad("missing '=' between the id and the address"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("the id must be a positive integer"))?;
        if id == 0 {
            return Err(bad("the id must be at least 1 (0 means \"no node\")"));
        }
        let (raft, client) = match addrs.split_once('/') {
            Some((raft, client)) => (raft.trim(), Some(client.trim())),
            None => (addrs.trim(), None),
        };
        let raft_host = check_addr(raft).map_err(|r| bad(&format!("peer address: {r}")))?;
        let client = match client {
            Some(c) => {
                check_addr(c).map_err(|r| bad(&format!("client address: {r}")))?;
                c.to_string()
            }
            None => format!("{raft_host}:{listen_port}"),
        };
        if peers.contains_key(&id) {
            return Err(PeersError::DuplicateId {
                entry: entry.to_string(),
                id,
            });
        }
        if peers.values().any(|p: &PeerAddrs| p.raft == raft) {
            return Err(PeersError::DuplicateAddr {
                entry: entry.to_string(),
                addr: raft.to_string(),
            });
        }
        peers.insert(
            id,
            PeerAddrs {
                raft: raft.to_string(),
                client,
            },
        );
    }
    if peers.is_empty() {
        return Err(PeersError::Empty);
    }
    if !peers.contains_key(&node_id) {
        let ids: Vec<String> = peers.keys().map(u64::to_string).collect();
        return Err(PeersError::NotAPeer {
            id: node_id,
            ids: ids.join(", "),
        });
    }
    Ok(peers)
}

/// Checks `HOST:PORT` and returns HOST as written (brackets kept for IPv6).
fn check_addr(addr: &str) -> Result<&str, String> {
    if addr.is_empty() {
        return Err("it is empty".into());
    }
    let (host, port) = if addr.starts_with('[') {
        let end = addr
            .find(']')
            .ok_or("an IPv6 address needs a closing ']'")?;
        let host = &addr[..=end];
        let port = addr[end + 1..]
            .strip_prefix(':')
            .ok_or(format!("\"{addr}\" has no :PORT"))?;
        if host[1..end].parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("\"{host}\" is not an IPv6 address"));
        }
        (host, port)
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or(format!("\"{addr}\" has no :PORT"))?;
        if host.contains(':') {
            return Err(format!(
                "\"{addr}\": put an IPv6 address in brackets, e.g. [::1]:9094"
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(format!("\"{addr}\" has no host"));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '=' || c == '/') {
        return Err(format!("\"{host}\" is not a host name or IP address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(host),
        _ => Err(format!("\"{port}\" is not a port (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(raft: &str, client: &str) -> PeerAddrs {
        PeerAddrs {
            raft: raft.into(),
            client: client.into(),
        }
    }

    #[test]
    fn explicit_client_addresses() {
        let p = parse_peers(
            "1=127.0.0.1:9101/127.0.0.1:9001,2=127.0.0.1:9102/127.0.0.1:9002",
            2,
            9093,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[&1], addrs("127.0.0.1:9101", "127.0.0.1:9001"));
        assert_eq!(p[&2], addrs("127.0.0.1:9102", "127.0.0.1:9002"));
    }

    #[test]
    fn client_address_defaults_to_peer_host_and_listen_port() {
        let p = parse_peers(" 1=c-0.dmq:9094 , 2=10.0.0.2:9094,3=[::1]:9094,", 1, 9093).unwrap();
        assert_eq!(p[&1], addrs("c-0.dmq:9094", "c-0.dmq:9093"));
        assert_eq!(p[&2], addrs("10.0.0.2:9094", "10.0.0.2:9093"));
        assert_eq!(p[&3], addrs("[::1]:9094", "[::1]:9093"));
    }

    #[test]
    fn single_node() {
        let p = parse_peers("7=localhost:1", 7, 2).unwrap();
        assert_eq!(p[&7], addrs("localhost:1", "localhost:2"));
    }

    fn err(spec: &str, node: u64) -> String {
        parse_peers(spec, node, 9093).unwrap_err().to_string()
    }

    #[test]
    fn bad_entries_are_named() {
        for (spec, entry, hint) in [
            ("1=a:1,2", "\"2\"", "missing '='"),
            ("1=a:1,x=b:2", "\"x=b:2\"", "positive integer"),
            ("1=a:1,0=b:2", "\"0=b:2\"", "at least 1"),
            ("1=a:1,2=b", "\"2=b\"", "no :PORT"),
            ("1=a:1,2=b:0", "\"2=b:0\"", "not a port"),
            ("1=a:1,2=b:70000", "\"2=b:70000\"", "not a port"),
            ("1=a:1,2=:5", "\"2=:5\"", "no host"),
            ("1=a:1,2=::1:5", "\"2=::1:5\"", "brackets"),
            ("1=a:1,2=[::1:5", "\"2=[::1:5\"", "closing"),
            ("1=a:1,2=[zz]:5", "\"2=[zz]:5\"", "not an IPv6"),
            ("1=a:1,2=b:2/", "\"2=b:2/\"", "client address: it is empty"),
            ("1=a:1,2=b:2/c", "\"2=b:2/c\"", "client address"),
            ("1=a:1,1=b:2", "\"1=b:2\"", "more than once"),
            ("1=a:1,2=a:1", "\"2=a:1\"", "another entry"),
        ] {
            let e = err(spec, 1);
            assert!(e.contains(entry), "{spec}: {e}");
            assert!(e.contains(hint), "{spec}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn empty_and_missing_self() {
        assert_eq!(parse_peers(" , ", 1, 1), Err(PeersError::Empty));
        let e = err("1=a:1,2=b:1", 3);
        assert!(
            e.contains("--node-id 3 is not in --peers (ids: 1, 2)"),
            "{e}"
        );
    }
}
