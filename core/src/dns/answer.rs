//! What a lookup found, turned into the ordered targets a gateway is tried
//! on: SRV records sorted by priority with their weights kept (RFC 2782),
//! each SRV target's A and AAAA addresses merged under its priority and
//! weight (RFC 3263 §4.2), and the shortest TTL among the records used.
//!
//! The records come in as plain values, so this ordering is tested without a
//! resolver; the daemon's DNS task fills them from hickory's answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One address a gateway name resolved to, with the SRV record's priority
/// (lower first) and weight (share among equal priorities) that led to it.
/// Addresses found by A/AAAA alone get priority 0 and weight 0: they are one
/// group, tried in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub priority: u16,
    pub weight: u16,
}

/// A lookup's result: targets in the order to try them, and how long the
/// records that gave them may be kept (their shortest TTL, not yet clamped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub targets: Vec<Target>,
    pub ttl: Duration,
}

/// Why a lookup gave no targets. Plain values (no resolver types), so an
/// event can carry one to any layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no answer in time")]
    Timeout,
    #[error("{name} does not exist (NXDOMAIN)")]
    NoSuchName { name: String },
    #[error("{name} has no {kind} records")]
    NoRecords { name: String, kind: &'static str },
    #[error("the server answered {0}")]
    Server(String),
    /// RFC 2782: an SRV record whose target is `.` says the service is
    /// decidedly not offered at this domain.
    #[error("{name} says it offers no SIP service (SRV target `.`)")]
    NoService { name: String },
    #[error("{0}")]
    Other(String),
}

/// One SRV record, as found (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, lower-case, without a final dot (`""` for `.`).
    pub target: String,
    pub ttl: u32,
}

/// A host's A and AAAA records, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    pub ips: Vec<IpAddr>,
    /// The shortest TTL among them.
    pub ttl: u32,
}

impl Answer {
    /// A host's addresses on one port: IPv4 first, then IPv6, each once.
    pub fn from_addresses(addresses: &Addresses, port: u16) -> Answer {
        Answer {
            targets: merged(addresses, port, 0, 0),
            ttl: Duration::from_secs(u64::from(addresses.ttl)),
        }
    }

    /// SRV records and each one's target addresses → the targets by
    /// priority (then heavier weight first, then name, so equal inputs give
    /// equal answers and a re-resolution that changed nothing publishes
    /// nothing). A target whose addresses could not be found is left out; if
    /// none could, the first error is the answer's.
    pub fn from_srv(
        name: &str,
        mut records: Vec<(SrvRecord, Result<Addresses, LookupError>)>,
    ) -> Result<Answer, LookupError> {
        if records.iter().all(|(srv, _)| srv.target.is_empty()) {
            return Err(LookupError::NoService { name: name.into() });
        }
        records.retain(|(srv, _)| !srv.target.is_empty());
        records.sort_by(|(a, _), (b, _)| {
            (a.priority, std::cmp::Reverse(a.weight), &a.target, a.port).cmp(&(
                b.priority,
                std::cmp::Reverse(b.weight),
                &b.target,
                b.port,
            ))
        });
        let mut targets = Vec::new();
        let mut ttl = u32::MAX;
        let mut first_error = None;
        for (srv, addresses) in records {
            match addresses {
                Ok(addresses) => {
                    ttl = ttl.min(srv.ttl).min(addresses.ttl);
                    for target in merged(&addresses, srv.port, srv.priority, srv.weight) {
                        if !targets.contains(&target) {
                            targets.push(target);
                        }
                    }
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match (targets.is_empty(), first_error) {
            (true, Some(error)) => Err(error),
            (true, None) => Err(LookupError::NoRecords {
                name: name.into(),
                kind: "A/AAAA",
            }),
            (false, _) => Ok(Answer {
                targets,
                ttl: Duration::from_secs(u64::from(ttl)),
            }),
        }
    }
}

/// A and AAAA addresses on one port: IPv4 first (Vigil's usual listeners),
/// then IPv6, duplicates dropped, each kept in the server's order otherwise.
fn merged(addresses: &Addresses, port: u16, priority: u16, weight: u16) -> Vec<Target> {
    let v4 = addresses.ips.iter().filter(|ip| ip.is_ipv4());
    let v6 = addresses.ips.iter().filter(|ip| ip.is_ipv6());
    let mut targets: Vec<Target> = Vec::with_capacity(addresses.ips.len());
    for ip in v4.chain(v6) {
        let target = Target {
            addr: SocketAddr::new(*ip, port),
            priority,
            weight,
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str], ttl: u32) -> Addresses {
        Addresses {
            ips: list.iter().map(|ip| ip.parse().unwrap()).collect(),
            ttl,
        }
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str, ttl: u32) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
            ttl,
        }
    }

    fn t(addr: &str, priority: u16, weight: u16) -> Target {
        Target {
            addr: addr.parse().unwrap(),
            priority,
            weight,
        }
    }

    #[test]
    fn a_and_aaaa_merge_v4_first_without_duplicates() {
        let found = ips(&["::1", "127.0.0.2", "127.0.0.1", "127.0.0.2"], 300);
        let answer = Answer::from_addresses(&found, 5071);
        assert_eq!(
            answer.targets,
            [
                t("127.0.0.2:5071", 0, 0),
                t("127.0.0.1:5071", 0, 0),
                t("[::1]:5071", 0, 0)
            ]
        );
        assert_eq!(answer.ttl, Duration::from_secs(300));
    }

    #[test]
    fn srv_targets_sort_by_priority_and_keep_their_weight() {
        let answer = Answer::from_srv(
            "_sip._udp.carrier.test",
            vec![
                (
                    srv(20, 0, 5062, "backup.test", 600),
                    Ok(ips(&["127.0.0.3"], 60)),
                ),
                (
                    srv(10, 40, 5061, "gw2.test", 600),
                    Ok(ips(&["127.0.0.2", "::1"], 90)),
                ),
                (
                    srv(10, 60, 5060, "gw1.test", 30),
                    Ok(ips(&["127.0.0.1"], 600)),
                ),
            ],
        )
        .expect("answer");
        assert_eq!(
            answer.targets,
            [
                t("127.0.0.1:5060", 10, 60),
                t("127.0.0.2:5061", 10, 40),
                t("[::1]:5061", 10, 40),
                t("127.0.0.3:5062", 20, 0),
            ]
        );
        assert_eq!(answer.ttl, Duration::from_secs(30), "the shortest TTL");
    }

    #[test]
    fn an_srv_target_without_addresses_is_left_out() {
        let gone = LookupError::NoSuchName {
            name: "gone.test".into(),
        };
        let answer = Answer::from_srv(
            "_sip._udp.carrier.test",
            vec![
                (srv(10, 0, 5060, "gone.test", 60), Err(gone.clone())),
                (srv(20, 0, 5060, "gw.test", 60), Ok(ips(&["127.0.0.5"], 60))),
            ],
        );
        assert_eq!(
            answer.map(|a| a.targets),
            Ok(vec![t("127.0.0.5:5060", 20, 0)])
        );
        let none = Answer::from_srv(
            "_sip._udp.carrier.test",
            vec![(srv(10, 0, 5060, "gone.test", 60), Err(gone.clone()))],
        );
        assert_eq!(none, Err(gone));
    }

    #[test]
    fn a_dot_target_means_no_service() {
        let answer = Answer::from_srv(
            "_sip._udp.carrier.test",
            vec![(srv(0, 0, 0, "", 60), Ok(ips(&[], 60)))],
        );
        assert!(matches!(answer, Err(LookupError::NoService { .. })));
    }
}
