//! The seeded fault schedule: which faults, in which order, on which targets, held for how
//! long. [`plan`] is a pure function of the seed, the fault duration and the kinds allowed, so
//! `--seed N` replays the same faults with the same parameters (real timing varies).
//!
//! The plan starts with every allowed kind once, in a seeded order, so even a short run
//! exercises each kind; then it draws kinds at random until the nominal time (quiet gap + hold
//! + [`RECOVERY_ALLOWANCE_MS`] per fault) would pass the duration.
//!
//! A fault is one or more [`Step`]s injected at offsets within its hold, then healed together
//! at its end. Single kinds have one step at 0; [`FaultKind::Compound`] has two or three
//! primitive steps that overlap (say, kill the leader of a partition, then power-cut the
//! broker that took over while the first is still down): handovers that go wrong mid-way.
//!
//! Targets are roles ("the leader of partition 2", "the controller leader") resolved when the
//! step is injected, or fixed nodes ("broker 3").

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Time a fault's recovery is assumed to take when planning.
pub const RECOVERY_ALLOWANCE_MS: u64 = 1_000;

/// The kinds of fault, as the availability table names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 the leader of a partition, restart it after the hold.
    KillPartitionLeader,
    /// kill -9 the controller leader, restart it after the hold.
    KillControllerLeader,
    /// kill -9 every broker at once, restart them after the hold.
    KillAllBrokers,
    /// SIGTERM the leader of a partition (a leaving broker hands its leaderships over while
    /// writes are in flight), wait for its exit, restart it after the hold.
    RestartPartitionLeader,
    /// SIGTERM the controller leader (it transfers leadership first), restart it after the
    /// hold.
    RestartControllerLeader,
    /// Power loss (FS_IOC_SHUTDOWN without log flush, kill -9, remount) of a broker.
    PowerLossBroker,
    /// Power loss of a controller.
    PowerLossController,
    /// Power loss of every broker at once.
    PowerLossAllBrokers,
    /// SIGSTOP for less than the broker session timeout, then SIGCONT.
    PauseShort,
    /// SIGSTOP for longer than the broker session timeout, then SIGCONT.
    PauseLong,
    /// A broker cut from every other node (both directions).
    IsolateBroker,
    /// The controller leader cut from every other node.
    IsolateControllerLeader,
    /// Packets from some nodes to others dropped, the other direction untouched.
    OneWayCut,
    /// A partition leader cut from the other brokers, still reachable by the clients and the
    /// controllers.
    ZombieLeaderReachingControllers,
    /// A partition leader cut from the other brokers and the controllers, still reachable by
    /// the clients.
    ZombieLeaderClientsOnly,
    /// Two or three of the kinds above, overlapping, healed together.
    Compound,
    /// Not a fault but a planted loss, never planned unless asked for: every broker's disk is
    /// copied at the start of the hold and copied back at its end, so writes acked in between
    /// vanish from every replica. A run with it must fail (LOST); it shows the checks catch a
    /// real loss through the whole pipeline.
    SabotageRewindBrokerDisks,
}

impl FaultKind {
    /// The kinds a plan draws from by default.
    pub const ALL: [FaultKind; 16] = [
        FaultKind::KillPartitionLeader,
        FaultKind::KillControllerLeader,
        FaultKind::KillAllBrokers,
        FaultKind::RestartPartitionLeader,
        FaultKind::RestartControllerLeader,
        FaultKind::PowerLossBroker,
        FaultKind::PowerLossController,
        FaultKind::PowerLossAllBrokers,
        FaultKind::PauseShort,
        FaultKind::PauseLong,
        FaultKind::IsolateBroker,
        FaultKind::IsolateControllerLeader,
        FaultKind::OneWayCut,
        FaultKind::ZombieLeaderReachingControllers,
        FaultKind::ZombieLeaderClientsOnly,
        FaultKind::Compound,
    ];

    /// Kinds only planned when asked for by name.
    pub const EXTRA: [FaultKind; 1] = [FaultKind::SabotageRewindBrokerDisks];

    /// Kinds a compound fault's steps are drawn from.
    const PRIMITIVE: [FaultKind; 15] = [
        FaultKind::KillPartitionLeader,
        FaultKind::KillControllerLeader,
        FaultKind::KillAllBrokers,
        FaultKind::RestartPartitionLeader,
        FaultKind::RestartControllerLeader,
        FaultKind::PowerLossBroker,
        FaultKind::PowerLossController,
        FaultKind::PowerLossAllBrokers,
        FaultKind::PauseShort,
        FaultKind::PauseLong,
        FaultKind::IsolateBroker,
        FaultKind::IsolateControllerLeader,
        FaultKind::OneWayCut,
        FaultKind::ZombieLeaderReachingControllers,
        FaultKind::ZombieLeaderClientsOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillPartitionLeader => "kill-partition-leader",
            FaultKind::KillControllerLeader => "kill-controller-leader",
            FaultKind::KillAllBrokers => "kill-all-brokers",
            FaultKind::RestartPartitionLeader => "restart-partition-leader",
            FaultKind::RestartControllerLeader => "restart-controller-leader",
            FaultKind::PowerLossBroker => "power-loss-broker",
            FaultKind::PowerLossController => "power-loss-controller",
            FaultKind::PowerLossAllBrokers => "power-loss-all-brokers",
            FaultKind::PauseShort => "pause-short",
            FaultKind::PauseLong => "pause-long",
            FaultKind::IsolateBroker => "isolate-broker",
            FaultKind::IsolateControllerLeader => "isolate-controller-leader",
            FaultKind::OneWayCut => "one-way-cut",
            FaultKind::ZombieLeaderReachingControllers => "zombie-leader-reaching-controllers",
            FaultKind::ZombieLeaderClientsOnly => "zombie-leader-clients-only",
            FaultKind::Compound => "compound",
            FaultKind::SabotageRewindBrokerDisks => "sabotage-rewind-broker-disks",
        }
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .chain(FaultKind::EXTRA)
            .find(|k| k.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whom a fault hits, resolved when it is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The broker leading this partition.
    PartitionLeader(u32),
    /// The Raft leader of the controllers.
    ControllerLeader,
    Broker(u64),
    Controller(u64),
    AllBrokers,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::PartitionLeader(p) => write!(f, "the leader of partition {p}"),
            Target::ControllerLeader => f.write_str("the controller leader"),
            Target::Broker(id) => write!(f, "broker {id}"),
            Target::Controller(id) => write!(f, "controller {id}"),
            Target::AllBrokers => f.write_str("every broker"),
        }
    }
}

/// A one-way cut: packets from `from` to `to` are dropped (the blackhole route sits on the
/// sending side only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OneWay {
    /// A partition leader cannot send to the other brokers (its fetch answers are lost).
    LeaderToFollowers(u32),
    /// The other brokers cannot send to a partition leader (their fetches are lost).
    FollowersToLeader(u32),
    /// A partition leader cannot send to the clients (appended, but the answer is lost).
    LeaderToClients(u32),
    /// A broker cannot send to any controller (its heartbeats are lost).
    BrokerToControllers(u64),
    /// No controller can send to a broker (heartbeat answers and pushes are lost).
    ControllersToBroker(u64),
    /// The controller leader cannot send to the other controllers.
    ControllerLeaderToFollowers,
}

impl fmt::Display for OneWay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OneWay::LeaderToFollowers(p) => {
                write!(f, "the leader of partition {p} -> the other brokers")
            }
            OneWay::FollowersToLeader(p) => {
                write!(f, "the other brokers -> the leader of partition {p}")
            }
            OneWay::LeaderToClients(p) => write!(f, "the leader of partition {p} -> the clients"),
            OneWay::BrokerToControllers(b) => write!(f, "broker {b} -> every controller"),
            OneWay::ControllersToBroker(b) => write!(f, "every controller -> broker {b}"),
            OneWay::ControllerLeaderToFollowers => {
                f.write_str("the controller leader -> the other controllers")
            }
        }
    }
}

/// One action of a fault, `at_ms` after the fault started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub at_ms: u64,
    /// A primitive kind (never [`FaultKind::Compound`]).
    pub kind: FaultKind,
    pub target: Target,
    /// Only for [`FaultKind::OneWayCut`].
    pub one_way: Option<OneWay>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind)?;
        match self.one_way {
            Some(cut) => write!(f, "{cut}"),
            None => write!(f, "{}", self.target),
        }
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// 1-based position in the plan.
    pub index: usize,
    pub kind: FaultKind,
    /// At least one; the first at 0, in time order, all before `hold_ms`.
    pub steps: Vec<Step>,
    /// Quiet time before it is injected.
    pub gap_before_ms: u64,
    /// How long it lasts: downtime of a killed node, pause length, time cut off.
    pub hold_ms: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}: ", self.index, self.kind)?;
        if self.kind == FaultKind::Compound {
            let steps: Vec<String> = self
                .steps
                .iter()
                .map(|s| format!("{s} at {:.1}s", s.at_ms as f64 / 1000.0))
                .collect();
            write!(f, "[{}]", steps.join("; "))?;
        } else {
            let s = &self.steps[0];
            match s.one_way {
                Some(cut) => write!(f, "{cut}")?,
                None => write!(f, "{}", s.target)?,
            }
        }
        write!(
            f,
            " for {:.1}s (after {:.1}s quiet)",
            self.hold_ms as f64 / 1000.0,
            self.gap_before_ms as f64 / 1000.0
        )
    }
}

/// What a plan is made for.
#[derive(Clone, Debug)]
pub struct PlanSpec {
    pub seed: u64,
    /// Nominal time of all faults (gaps, holds and recovery allowances).
    pub duration_ms: u64,
    pub kinds: Vec<FaultKind>,
    pub partitions: u32,
    pub brokers: u64,
    pub controllers: u64,
    /// The controllers' broker session timeout: short pauses stay below it, long ones above.
    pub session_timeout_ms: u64,
}

/// The faults of `spec`, in order. Empty when no fault fits in the duration.
pub fn plan(spec: &PlanSpec) -> Vec<Fault> {
    assert!(
        !spec.kinds.is_empty(),
        "a plan needs at least one fault kind"
    );
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut first_round = spec.kinds.clone();
    // Fisher-Yates with our own rng, so the order depends on the seed alone.
    for i in (1..first_round.len()).rev() {
        let j = rng.random_range(0..=i);
        first_round.swap(i, j);
    }
    let mut faults = Vec::new();
    let mut used_ms = 0;
    loop {
        let kind = match first_round.get(faults.len()) {
            Some(&k) => k,
            None => spec.kinds[rng.random_range(0..spec.kinds.len())],
        };
        let fault = draw(&mut rng, spec, kind, faults.len() + 1);
        let cost = fault.gap_before_ms + fault.hold_ms + RECOVERY_ALLOWANCE_MS;
        if used_ms + cost > spec.duration_ms {
            // A first-round kind that does not fit is skipped, not the rest of the round.
            if faults.len() < first_round.len()
                && used_ms + 3 * RECOVERY_ALLOWANCE_MS <= spec.duration_ms
            {
                first_round.remove(faults.len());
                continue;
            }
            return faults;
        }
        used_ms += cost;
        faults.push(fault);
    }
}

fn draw(rng: &mut StdRng, spec: &PlanSpec, kind: FaultKind, index: usize) -> Fault {
    let gap_before_ms = rng.random_range(500..=3_000);
    let partition = rng.random_range(0..spec.partitions);
    if kind != FaultKind::Compound {
        let (step, hold_ms) = draw_step(rng, spec, kind, partition);
        return Fault {
            index,
            kind,
            steps: vec![step],
            gap_before_ms,
            hold_ms,
        };
    }
    // Steps on one partition, so later ones hit whoever took over from earlier ones.
    let hold_ms = rng.random_range(3_000..=9_000);
    let n = rng.random_range(2..=3);
    let mut at: Vec<u64> = (1..n)
        .map(|_| rng.random_range(200..=hold_ms * 2 / 3))
        .collect();
    at.insert(0, 0);
    at.sort_unstable();
    let steps = at
        .into_iter()
        .map(|at_ms| {
            let k = FaultKind::PRIMITIVE[rng.random_range(0..FaultKind::PRIMITIVE.len())];
            let (mut step, _) = draw_step(rng, spec, k, partition);
            step.at_ms = at_ms;
            step
        })
        .collect();
    Fault {
        index,
        kind,
        steps,
        gap_before_ms,
        hold_ms,
    }
}

/// One step of a primitive `kind` at offset 0, and the hold it would have alone.
fn draw_step(rng: &mut StdRng, spec: &PlanSpec, kind: FaultKind, partition: u32) -> (Step, u64) {
    let broker = rng.random_range(1..=spec.brokers);
    let controller = rng.random_range(1..=spec.controllers);
    let coin = rng.random_range(0..6u32);
    let session = spec.session_timeout_ms;
    let mut one_way = None;
    let (target, hold_ms) = match kind {
        FaultKind::KillPartitionLeader => (
            Target::PartitionLeader(partition),
            rng.random_range(500..=4_000),
        ),
        FaultKind::KillControllerLeader => {
            (Target::ControllerLeader, rng.random_range(500..=4_000))
        }
        FaultKind::KillAllBrokers => (Target::AllBrokers, rng.random_range(500..=3_000)),
        FaultKind::RestartPartitionLeader => (
            Target::PartitionLeader(partition),
            rng.random_range(500..=3_000),
        ),
        FaultKind::RestartControllerLeader => {
            (Target::ControllerLeader, rng.random_range(500..=3_000))
        }
        FaultKind::PowerLossBroker => (
            if coin < 4 {
                Target::PartitionLeader(partition)
            } else {
                Target::Broker(broker)
            },
            rng.random_range(500..=3_000),
        ),
        FaultKind::PowerLossController => (
            if coin < 3 {
                Target::ControllerLeader
            } else {
                Target::Controller(controller)
            },
            rng.random_range(500..=3_000),
        ),
        FaultKind::PowerLossAllBrokers => (Target::AllBrokers, rng.random_range(500..=3_000)),
        FaultKind::PauseShort | FaultKind::PauseLong => {
            let target = match coin {
                0..=2 => Target::PartitionLeader(partition),
                3 | 4 => Target::ControllerLeader,
                _ => Target::Broker(broker),
            };
            let hold = if kind == FaultKind::PauseShort {
                rng.random_range(300..=session * 5 / 6)
            } else {
                rng.random_range(session * 4 / 3..=session * 8 / 3)
            };
            (target, hold)
        }
        FaultKind::IsolateBroker => (
            if coin < 4 {
                Target::PartitionLeader(partition)
            } else {
                Target::Broker(broker)
            },
            rng.random_range(3_000..=9_000),
        ),
        FaultKind::IsolateControllerLeader => {
            (Target::ControllerLeader, rng.random_range(3_000..=9_000))
        }
        FaultKind::OneWayCut => {
            let (target, cut) = match coin {
                0 => (
                    Target::PartitionLeader(partition),
                    OneWay::LeaderToFollowers(partition),
                ),
                1 => (
                    Target::PartitionLeader(partition),
                    OneWay::FollowersToLeader(partition),
                ),
                2 => (
                    Target::PartitionLeader(partition),
                    OneWay::LeaderToClients(partition),
                ),
                3 => (Target::Broker(broker), OneWay::BrokerToControllers(broker)),
                4 => (Target::Broker(broker), OneWay::ControllersToBroker(broker)),
                _ => (
                    Target::ControllerLeader,
                    OneWay::ControllerLeaderToFollowers,
                ),
            };
            one_way = Some(cut);
            (target, rng.random_range(3_000..=8_000))
        }
        FaultKind::ZombieLeaderReachingControllers | FaultKind::ZombieLeaderClientsOnly => (
            Target::PartitionLeader(partition),
            rng.random_range(4_000..=10_000),
        ),
        FaultKind::SabotageRewindBrokerDisks => {
            (Target::AllBrokers, rng.random_range(3_000..=6_000))
        }
        FaultKind::Compound => unreachable!("a compound fault is drawn by `draw`"),
    };
    (
        Step {
            at_ms: 0,
            kind,
            target,
            one_way,
        },
        hold_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64, duration_ms: u64) -> PlanSpec {
        PlanSpec {
            seed,
            duration_ms,
            kinds: FaultKind::ALL.to_vec(),
            partitions: 3,
            brokers: 3,
            controllers: 3,
            session_timeout_ms: 3_000,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        assert_eq!(plan(&spec(7, 600_000)), plan(&spec(7, 600_000)));
        assert_ne!(plan(&spec(7, 600_000)), plan(&spec(8, 600_000)));
        // A shorter run is a prefix of a longer one with the same seed, unless the last
        // first-round kinds did not fit.
        let long = plan(&spec(11, 1_800_000));
        let short = plan(&spec(11, 600_000));
        assert!(short.len() < long.len());
        assert_eq!(short[..], long[..short.len()]);
    }

    #[test]
    fn fits_the_duration_and_starts_with_every_kind() {
        for seed in 0..50 {
            let s = spec(seed, 400_000);
            let faults = plan(&s);
            let used: u64 = faults
                .iter()
                .map(|f| f.gap_before_ms + f.hold_ms + RECOVERY_ALLOWANCE_MS)
                .sum();
            assert!(used <= s.duration_ms, "seed {seed}: {used}");
            let mut first: Vec<FaultKind> = faults[..FaultKind::ALL.len()]
                .iter()
                .map(|f| f.kind)
                .collect();
            first.sort();
            assert_eq!(first, FaultKind::ALL.to_vec(), "seed {seed}");
            for (i, f) in faults.iter().enumerate() {
                assert_eq!(f.index, i + 1);
                assert!(!f.steps.is_empty() && f.steps[0].at_ms == 0, "{f}");
                for st in &f.steps {
                    assert_eq!(st.one_way.is_some(), st.kind == FaultKind::OneWayCut, "{f}");
                    assert!(st.at_ms < f.hold_ms, "{f}");
                    assert!(st.kind != FaultKind::Compound, "{f}");
                }
                assert!(f.steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "{f}");
                assert_eq!(f.steps.len() > 1, f.kind == FaultKind::Compound, "{f}");
                match f.kind {
                    FaultKind::PauseShort => assert!(f.hold_ms < s.session_timeout_ms, "{f}"),
                    FaultKind::PauseLong => assert!(f.hold_ms > s.session_timeout_ms, "{f}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn the_short_run_covers_most_kinds() {
        // What `--short` plans (120 s): every kind once for most seeds.
        let mut complete = 0;
        for seed in 0..100 {
            let faults = plan(&spec(seed, 120_000));
            let mut kinds: Vec<FaultKind> = faults.iter().map(|f| f.kind).collect();
            kinds.sort();
            kinds.dedup();
            assert!(kinds.len() >= 12, "seed {seed}: {kinds:?}");
            if kinds.len() == FaultKind::ALL.len() {
                complete += 1;
            }
        }
        assert!(
            complete >= 50,
            "{complete} of 100 short plans cover every kind"
        );
    }

    #[test]
    fn only_the_kinds_asked_for() {
        let mut s = spec(3, 120_000);
        s.kinds = vec![FaultKind::PauseLong, FaultKind::OneWayCut];
        let faults = plan(&s);
        assert!(faults.len() >= 4);
        assert!(faults.iter().all(|f| s.kinds.contains(&f.kind)));
        assert_eq!(FaultKind::parse("pause-long"), Some(FaultKind::PauseLong));
        assert_eq!(
            FaultKind::parse("sabotage-rewind-broker-disks"),
            Some(FaultKind::SabotageRewindBrokerDisks)
        );
        assert!(
            (0..20)
                .flat_map(|seed| plan(&spec(seed, 600_000)))
                .all(|f| f.kind != FaultKind::SabotageRewindBrokerDisks),
            "the sabotage is never planned unless asked for"
        );
        assert_eq!(FaultKind::parse("nope"), None);
    }
}
