//! Node ids from a Kubernetes StatefulSet pod name, and the `--peers` list of a StatefulSet.
//!
//! A StatefulSet names its pods `<statefulset-name>-<ordinal>` with ordinals from 0 (unless
//! `spec.ordinals.start` says otherwise) and sets each pod's hostname to that name. DistributedMQ
//! node ids start at 1 (0 means "no node"), so a pod's node id is its ordinal + 1:
//! `dmq-controller-0` is node 1, `dmq-controller-2` is node 3.
//!
//! Each pod also has a stable DNS name through the StatefulSet's headless Service:
//! `<pod>.<service>.<namespace>.svc.cluster.local`, which [`peers_for_statefulset`] uses to build
//! the `--peers` value every controller is started with.
//!
//! This module uses only `std`, so it can be tested on its own:
//! `rustc --edition 2024 --test services/dmq/src/ordinal.rs -o /tmp/ordtest && /tmp/ordtest`.

use std::fmt;

/// Why a hostname does not give a node id; each message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrdinalError {
    /// The hostname (or its first DNS label) is empty.
    Empty,
    /// The first label does not end in `-<digits>`.
    NoOrdinal { hostname: String },
    /// The first label is only `-<digits>`: there is no StatefulSet name before the ordinal.
    NoName { hostname: String },
    /// The ordinal is too large to add 1 to.
    TooLarge { hostname: String },
}

const FIX: &str = "set --node-id or run in a StatefulSet, whose pods are named \
                   <statefulset-name>-<ordinal> (node id = ordinal + 1)";

impl fmt::Display for OrdinalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrdinalError::Empty => write!(f, "the hostname is empty: {FIX}"),
            OrdinalError::NoOrdinal { hostname } => write!(
                f,
                "hostname \"{hostname}\" does not end in -<ordinal> (e.g. dmq-controller-0): {FIX}"
            ),
            OrdinalError::NoName { hostname } => write!(
                f,
                "hostname \"{hostname}\" has no StatefulSet name before the ordinal \
                 (expected e.g. dmq-controller-0): {FIX}"
            ),
            OrdinalError::TooLarge { hostname } => write!(
                f,
                "hostname \"{hostname}\": the ordinal is too large for a node id: {FIX}"
            ),
        }
    }
}

impl std::error::Error for OrdinalError {}

/// The pod ordinal in `hostname`: the digits after the last `-` of its first DNS label.
///
/// Surrounding whitespace is ignored (a hostname read from a file ends in a newline), and an FQDN
/// (`dmq-controller-2.dmq-controller.ns.svc.cluster.local`) counts by its first label.
pub fn ordinal_from_hostname(hostname: &str) -> Result<u64, OrdinalError> {
    let trimmed = hostname.trim();
    let label = trimmed.split('.').next().unwrap_or("");
    if label.is_empty() {
        return Err(OrdinalError::Empty);
    }
    let Some((name, digits)) = label.rsplit_once('-') else {
        return Err(OrdinalError::NoOrdinal {
            hostname: trimmed.to_string(),
        });
    };
    // Only plain ASCII digits: `str::parse::<u64>` would also take "+3".
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OrdinalError::NoOrdinal {
            hostname: trimmed.to_string(),
        });
    }
    if name.is_empty() {
        return Err(OrdinalError::NoName {
            hostname: trimmed.to_string(),
        });
    }
    digits.parse::<u64>().map_err(|_| OrdinalError::TooLarge {
        hostname: trimmed.to_string(),
    })
}

/// The node id of the StatefulSet pod named `hostname`: its ordinal + 1
/// (`dmq-controller-2` -> 3).
pub fn node_id_from_hostname(hostname: &str) -> Result<u64, OrdinalError> {
    let ordinal = ordinal_from_hostname(hostname)?;
    ordinal
        .checked_add(1)
        .ok_or_else(|| OrdinalError::TooLarge {
            hostname: hostname.trim().to_string(),
        })
}

/// The stable DNS name of pod `ordinal` of StatefulSet `name` behind the headless Service
/// `service`: `<name>-<ordinal>.<service>.<namespace>.svc.cluster.local`, or the short
/// `<name>-<ordinal>.<service>` (resolved through the pod's DNS search path, so only from the
/// same namespace) when `namespace` is `None`.
pub fn pod_dns_name(name: &str, service: &str, namespace: Option<&str>, ordinal: u64) -> String {
    match namespace {
        Some(ns) => format!("{name}-{ordinal}.{service}.{ns}.svc.cluster.local"),
        None => format!("{name}-{ordinal}.{service}"),
    }
}

/// The `--peers` value for a StatefulSet of `replicas` controllers:
/// `1=<pod-0 dns>:<peer_port>/<pod-0 dns>:<client_port>,2=...`, node id = ordinal + 1, with the
/// pods' DNS names from [`pod_dns_name`]. Every controller of the set gets the same value.
pub fn peers_for_statefulset(
    name: &str,
    service: &str,
    namespace: Option<&str>,
    replicas: u32,
    peer_port: u16,
    client_port: u16,
) -> String {
    (0..u64::from(replicas))
        .map(|ordinal| {
            let host = pod_dns_name(name, service, namespace, ordinal);
            format!("{}={host}:{peer_port}/{host}:{client_port}", ordinal + 1)
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_give_ordinal_plus_one() {
        let cases = [
            ("dmq-controller-0", 1),
            ("dmq-controller-1", 2),
            ("dmq-controller-2", 3),
            ("dmq-broker-9", 10),
            ("dmq-broker-10", 11),
            ("web-123", 124),
            ("a-0", 1),
            ("my-set-with-many-dashes-7", 8),
            ("set2-4", 5),
            ("dmq-controller-007", 8),
        ];
        for (host, id) in cases {
            assert_eq!(node_id_from_hostname(host), Ok(id), "{host}");
            assert_eq!(ordinal_from_hostname(host), Ok(id - 1), "{host}");
        }
    }

    #[test]
    fn fqdns_count_by_their_first_label() {
        let cases = [
            (
                "dmq-controller-2.dmq-controller.default.svc.cluster.local",
                3,
            ),
            ("dmq-controller-2.dmq-controller.ns.svc.cluster.local.", 3),
            ("dmq-broker-0.dmq-broker", 1),
            ("dmq-controller-1.", 2),
            // Only the first label matters: the rest may have anything.
            ("dmq-controller-1.not-an-ordinal.example", 2),
        ];
        for (host, id) in cases {
            assert_eq!(node_id_from_hostname(host), Ok(id), "{host}");
        }
    }

    #[test]
    fn whitespace_around_the_hostname_is_ignored() {
        assert_eq!(node_id_from_hostname("dmq-controller-1\n"), Ok(2));
        assert_eq!(node_id_from_hostname("  dmq-controller-1 \t"), Ok(2));
    }

    #[test]
    fn hostnames_without_an_ordinal_are_rejected() {
        for host in [
            "dmq-controller",
            "dmq-controller-",
            "localhost",
            "7",
            "dmq_controller_2",
            "dmq-controller-x",
            "dmq-controller-2a",
            "dmq-controller-+2",
            "dmq-controller--",
            "dmq-controller-2 3",
            "dmq-controller-٣", // a non-ASCII digit
            "host.dmq-controller-2",
            "dmq-controller.2",
        ] {
            let err = node_id_from_hostname(host).unwrap_err();
            assert!(
                matches!(err, OrdinalError::NoOrdinal { .. }),
                "{host}: {err:?}"
            );
        }
    }

    #[test]
    fn empty_hostnames_are_rejected() {
        for host in ["", "   ", "\n", ".", ".dmq-controller-1"] {
            assert_eq!(
                node_id_from_hostname(host),
                Err(OrdinalError::Empty),
                "{host:?}"
            );
        }
    }

    #[test]
    fn an_ordinal_without_a_name_is_rejected() {
        for host in ["-0", "-12.svc"] {
            let err = node_id_from_hostname(host).unwrap_err();
            assert!(
                matches!(err, OrdinalError::NoName { .. }),
                "{host}: {err:?}"
            );
        }
    }

    #[test]
    fn ordinals_too_large_are_rejected() {
        // u64::MAX parses but has no successor; one more digit does not parse at all.
        let max = format!("set-{}", u64::MAX);
        assert_eq!(ordinal_from_hostname(&max), Ok(u64::MAX));
        assert!(matches!(
            node_id_from_hostname(&max),
            Err(OrdinalError::TooLarge { .. })
        ));
        let huge = format!("set-{}0", u64::MAX);
        assert!(matches!(
            node_id_from_hostname(&huge),
            Err(OrdinalError::TooLarge { .. })
        ));
        assert_eq!(
            node_id_from_hostname(&format!("set-{}", u64::MAX - 1)),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        for host in ["", "localhost", "-3", &format!("s-{}", u64::MAX)] {
            let msg = node_id_from_hostname(host).unwrap_err().to_string();
            assert!(
                msg.contains("set --node-id or run in a StatefulSet"),
                "{host}: {msg}"
            );
        }
        let msg = node_id_from_hostname("my-laptop.local")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("\"my-laptop.local\""), "{msg}");
        assert!(msg.contains("-<ordinal>"), "{msg}");
    }

    #[test]
    fn peers_use_the_headless_service_dns_names() {
        assert_eq!(
            peers_for_statefulset(
                "dmq-controller",
                "dmq-controller",
                Some("prod"),
                3,
                9094,
                9093
            ),
            "1=dmq-controller-0.dmq-controller.prod.svc.cluster.local:9094/\
             dmq-controller-0.dmq-controller.prod.svc.cluster.local:9093,\
             2=dmq-controller-1.dmq-controller.prod.svc.cluster.local:9094/\
             dmq-controller-1.dmq-controller.prod.svc.cluster.local:9093,\
             3=dmq-controller-2.dmq-controller.prod.svc.cluster.local:9094/\
             dmq-controller-2.dmq-controller.prod.svc.cluster.local:9093"
        );
    }

    #[test]
    fn peers_without_a_namespace_use_short_names() {
        assert_eq!(
            peers_for_statefulset("c", "c-hl", None, 2, 1, 2),
            "1=c-0.c-hl:1/c-0.c-hl:2,2=c-1.c-hl:1/c-1.c-hl:2"
        );
        assert_eq!(peers_for_statefulset("c", "c", None, 0, 1, 2), "");
        assert_eq!(
            peers_for_statefulset("c", "c", None, 1, 1, 2),
            "1=c-0.c:1/c-0.c:2"
        );
    }

    #[test]
    fn every_pod_finds_itself_in_the_peers() {
        // The id a pod derives from its hostname is the id of its own entry in --peers.
        let peers = peers_for_statefulset(
            "dmq-controller",
            "dmq-controller",
            Some("ns"),
            5,
            9094,
            9093,
        );
        for ordinal in 0..5u64 {
            let fqdn = pod_dns_name("dmq-controller", "dmq-controller", Some("ns"), ordinal);
            let id = node_id_from_hostname(&format!("dmq-controller-{ordinal}")).unwrap();
            assert_eq!(node_id_from_hostname(&fqdn), Ok(id));
            let entry = format!("{id}={fqdn}:9094/{fqdn}:9093");
            assert_eq!(
                peers.split(',').filter(|e| *e == entry).count(),
                1,
                "{entry}"
            );
        }
    }
}
