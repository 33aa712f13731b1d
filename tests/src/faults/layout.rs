//! Names, addresses and paths of one run, all derived from its prefix.
//!
//! Every node (3 controllers, 3 brokers) and the workload client lives in a network namespace
//! `<prefix>-<node>` with one veth interface (`eth0`) whose other end sits on a bridge in the
//! switch namespace `<prefix>-sw`. Addresses are in [`SUBNET`] and exist only inside those
//! namespaces; no namespace has a default route and nothing is configured in the root
//! namespace, so no packet can leave. Ports are fixed: every node has its own address.
//!
//! Files live under the work dir (`/tmp/dmq-faults-<prefix>` by default): `img/` the disk
//! images, `mnt/<node>` their mount points (the data dir is `mnt/<node>/data`), `logs/` the
//! node logs (outside the disks, so a power loss keeps them).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The run's addresses: `10.77.0.0/24`.
pub const SUBNET: (u8, u8, u8) = (10, 77, 0);
pub const PREFIX_LEN: u8 = 24;
pub const CONTROLLER_CLIENT_PORT: u16 = 9093;
pub const CONTROLLER_PEER_PORT: u16 = 9094;
pub const BROKER_PORT: u16 = 9092;

/// One namespace's occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Node {
    Controller(u64),
    Broker(u64),
    /// The workload: producers, consumers and the harness's own calls.
    Client,
}

impl Node {
    /// `c1`, `b2`, `client`.
    pub fn name(self) -> String {
        match self {
            Node::Controller(id) => format!("c{id}"),
            Node::Broker(id) => format!("b{id}"),
            Node::Client => "client".into(),
        }
    }

    pub fn ip(self) -> Ipv4Addr {
        let (a, b, c) = SUBNET;
        let host = match self {
            Node::Controller(id) => 10 + id as u8,
            Node::Broker(id) => 20 + id as u8,
            Node::Client => 100,
        };
        Ipv4Addr::new(a, b, c, host)
    }

    /// The client API address (ControllerService or BrokerService); `None` for the client.
    pub fn service_addr(self) -> Option<String> {
        match self {
            Node::Controller(_) => Some(format!("{}:{CONTROLLER_CLIENT_PORT}", self.ip())),
            Node::Broker(_) => Some(format!("{}:{BROKER_PORT}", self.ip())),
            Node::Client => None,
        }
    }

    pub fn is_broker(self) -> bool {
        matches!(self, Node::Broker(_))
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Controller(id) => write!(f, "controller {id}"),
            Node::Broker(id) => write!(f, "broker {id}"),
            Node::Client => f.write_str("the client"),
        }
    }
}

/// The names and paths of one run.
#[derive(Clone, Debug)]
pub struct Layout {
    pub prefix: String,
    pub work_dir: PathBuf,
    pub controllers: u64,
    pub brokers: u64,
}

impl Layout {
    /// `prefix` must be a short name of `[a-z0-9-]`: it names namespaces and paths.
    pub fn new(prefix: &str, work_dir: Option<PathBuf>) -> Result<Layout, String> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 20
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "--prefix {prefix:?}: use 1 to 20 characters of a-z, 0-9 and '-'"
            ));
        }
        Ok(Layout {
            prefix: prefix.to_string(),
            work_dir: work_dir
                .unwrap_or_else(|| std::env::temp_dir().join(format!("dmq-faults-{prefix}"))),
            controllers: 3,
            brokers: 3,
        })
    }

    /// Controllers, then brokers.
    pub fn servers(&self) -> Vec<Node> {
        (1..=self.controllers)
            .map(Node::Controller)
            .chain((1..=self.brokers).map(Node::Broker))
            .collect()
    }

    /// Every namespace occupant: the servers and the client.
    pub fn nodes(&self) -> Vec<Node> {
        let mut all = self.servers();
        all.push(Node::Client);
        all
    }

    pub fn ns(&self, node: Node) -> String {
        format!("{}-{}", self.prefix, node.name())
    }

    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Every namespace this run may create, the switch last.
    pub fn all_ns(&self) -> Vec<String> {
        let mut all: Vec<String> = self.nodes().into_iter().map(|n| self.ns(n)).collect();
        all.push(self.switch_ns());
        all
    }

    /// The file `ip netns` keeps for a namespace.
    pub fn ns_path(&self, name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }

    pub fn img_dir(&self) -> PathBuf {
        self.work_dir.join("img")
    }

    pub fn mnt_dir(&self) -> PathBuf {
        self.work_dir.join("mnt")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.work_dir.join("logs")
    }

    pub fn image(&self, node: Node) -> PathBuf {
        self.img_dir().join(format!("{}.img", node.name()))
    }

    pub fn mount_point(&self, node: Node) -> PathBuf {
        self.mnt_dir().join(node.name())
    }

    pub fn data_dir(&self, node: Node) -> PathBuf {
        self.mount_point(node).join("data")
    }

    pub fn log_file(&self, node: Node) -> PathBuf {
        self.log_dir().join(format!("{}.log", node.name()))
    }

    /// The lock that keeps two runs with one prefix apart (outside the work dir, which the
    /// run deletes).
    pub fn lock_file(&self) -> PathBuf {
        std::env::temp_dir().join(format!("dmq-faults-{}.lock", self.prefix))
    }

    /// Every controller's client address, comma-separated (brokers' `--controllers`).
    pub fn controller_addrs(&self) -> Vec<String> {
        (1..=self.controllers)
            .map(|id| Node::Controller(id).service_addr().expect("a controller"))
            .collect()
    }

    /// The controllers' `--peers`: `ID=PEER_ADDR/CLIENT_ADDR,...`.
    pub fn peers(&self) -> String {
        (1..=self.controllers)
            .map(|id| {
                let ip = Node::Controller(id).ip();
                format!("{id}={ip}:{CONTROLLER_PEER_PORT}/{ip}:{CONTROLLER_CLIENT_PORT}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let l = Layout::new("dmqf", Some("/w".into())).unwrap();
        assert_eq!(l.ns(Node::Broker(2)), "dmqf-b2");
        assert_eq!(l.switch_ns(), "dmqf-sw");
        assert_eq!(l.all_ns().len(), 8);
        assert_eq!(Node::Controller(3).ip().to_string(), "10.77.0.13");
        assert_eq!(
            Node::Broker(1).service_addr().as_deref(),
            Some("10.77.0.21:9092")
        );
        assert_eq!(
            l.peers(),
            "1=10.77.0.11:9094/10.77.0.11:9093,2=10.77.0.12:9094/10.77.0.12:9093,\
             3=10.77.0.13:9094/10.77.0.13:9093"
        );
        assert_eq!(l.data_dir(Node::Broker(1)), Path::new("/w/mnt/b1/data"));
        assert!(Layout::new("Bad Name", None).is_err());
        assert!(Layout::new("", None).is_err());
    }
}
