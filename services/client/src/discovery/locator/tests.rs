//! The locator against in-process fake controllers: slow, hanging, failing, leaderless.
//! Time is tokio's paused clock, so delays are exact and tests take no wall time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmq_proto::v1 as pb;
use tokio::time::Instant;
use tonic::Status;

use super::*;

#[derive(Clone, Debug)]
enum Answer {
    /// Names `id` at `address` as the leader in `term` (a leader or a follower that knows it).
    Leader {
        id: u64,
        address: &'static str,
        term: u64,
    },
    /// OK, but no leader known.
    NoLeader,
    /// An error status.
    Fail,
    /// Never answers.
    Hang,
}

fn leader(id: u64, address: &'static str, term: u64) -> Answer {
    Answer::Leader { id, address, term }
}

/// Answers in order, each after its delay; the last one repeats.
type Script = Vec<(Duration, Answer)>;

/// A script per address.
#[derive(Clone, Default)]
struct FakeProbe {
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    calls: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl FakeProbe {
    fn set(&self, address: &str, script: Script) {
        assert!(!script.is_empty());
        self.scripts.lock().unwrap().insert(address.into(), script);
    }

    fn calls(&self) -> Vec<(String, Instant)> {
        self.calls.lock().unwrap().clone()
    }

    fn called(&self) -> Vec<String> {
        self.calls().into_iter().map(|(a, _)| a).collect()
    }

    fn forget_calls(&self) {
        self.calls.lock().unwrap().clear();
    }
}

impl ControllerProbe for FakeProbe {
    async fn get_info(&self, address: &str) -> Result<pb::GetControllerInfoResponse, Status> {
        let (delay, answer) = {
            let mut scripts = self.scripts.lock().unwrap();
            let script = scripts.get_mut(address).expect("unknown fake controller");
            if script.len() > 1 {
                script.remove(0)
            } else {
                script[0].clone()
            }
        };
        self.calls
            .lock()
            .unwrap()
            .push((address.to_string(), Instant::now()));
        tokio::time::sleep(delay).await;
        match answer {
            Answer::Leader {
                id,
                address: a,
                term,
            } => Ok(pb::GetControllerInfoResponse {
                node_id: 99,
                leader_id: id,
                leader_address: a.into(),
                term,
                ..Default::default()
            }),
            Answer::NoLeader => Ok(pb::GetControllerInfoResponse {
                node_id: 98,
                term: 1,
                ..Default::default()
            }),
            Answer::Fail => Err(Status::unavailable("fake controller down")),
            Answer::Hang => std::future::pending().await,
        }
    }
}

const SEED: u64 = 42;

fn opts() -> DiscoveryOptions {
    DiscoveryOptions {
        seed: Some(SEED),
        ..DiscoveryOptions::default()
    }
}

fn locator(probe: &FakeProbe, controllers: &[&str]) -> LeaderLocator<FakeProbe> {
    LeaderLocator::with_probe(
        controllers.iter().map(|c| c.to_string()).collect(),
        opts(),
        probe.clone(),
    )
    .unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn info(id: u64, address: &str, term: u64) -> LeaderInfo {
    LeaderInfo {
        id,
        address: address.into(),
        term,
    }
}

#[tokio::test(start_paused = true)]
async fn first_success_wins_while_others_hang_or_fail() {
    let probe = FakeProbe::default();
    probe.set("c1:1", vec![(ms(0), Answer::Hang)]);
    probe.set("c2:1", vec![(ms(0), Answer::Fail)]);
    probe.set("c3:1", vec![(ms(10), Answer::NoLeader)]);
    // A follower naming the leader counts.
    probe.set("c4:1", vec![(ms(300), leader(7, "c7:1", 4))]);
    let l = locator(&probe, &["c1:1", "c2:1", "c3:1", "c4:1"]);

    let start = Instant::now();
    assert_eq!(l.leader().await, info(7, "c7:1", 4));
    assert_eq!(
        start.elapsed(),
        ms(300),
        "did not wait for the hanging controller"
    );
    assert_eq!(probe.calls().len(), 4, "every controller asked, at once");
    assert!(probe.calls().iter().all(|(_, at)| *at == start));
    assert_eq!(l.cached(), Some(info(7, "c7:1", 4)));
    assert_eq!(l.term(), 4);

    // Cached: no more calls.
    assert_eq!(l.leader().await, info(7, "c7:1", 4));
    assert_eq!(probe.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn first_success_not_first_completion_wins() {
    let probe = FakeProbe::default();
    probe.set("c1:1", vec![(ms(0), Answer::Fail)]);
    probe.set("c2:1", vec![(ms(5), Answer::NoLeader)]);
    probe.set("c3:1", vec![(ms(100), leader(3, "c3:1", 2))]);
    probe.set("c4:1", vec![(ms(200), leader(4, "c4:1", 3))]);
    let l = locator(&probe, &["c1:1", "c2:1", "c3:1", "c4:1"]);

    let start = Instant::now();
    assert_eq!(l.leader().await, info(3, "c3:1", 2));
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn hanging_controllers_are_cut_off_by_the_call_timeout() {
    let probe = FakeProbe::default();
    probe.set(
        "c1:1",
        vec![(ms(0), Answer::Hang), (ms(0), leader(1, "c1:1", 1))],
    );
    let l = locator(&probe, &["c1:1"]);

    let start = Instant::now();
    assert_eq!(l.leader().await, info(1, "c1:1", 1));
    let calls = probe.calls();
    assert_eq!(calls.len(), 2);
    let first_pause = calls[1].1 - calls[0].1;
    // One call timeout (1 s), then the first backoff pause (0.8–1 s).
    assert!(
        first_pause >= ms(1800) && first_pause <= ms(2000),
        "{first_pause:?}"
    );
    assert_eq!(start.elapsed(), first_pause);
}

#[tokio::test(start_paused = true)]
async fn backs_off_1_2_4_8_8_with_jitter_when_every_controller_fails() {
    let probe = FakeProbe::default();
    let mut script = vec![(ms(0), Answer::Fail); 6];
    script.push((ms(0), leader(1, "c1:1", 1)));
    probe.set("c1:1", script);
    probe.set("c2:1", vec![(ms(0), Answer::NoLeader)]);
    let l = locator(&probe, &["c1:1", "c2:1"]);

    assert_eq!(l.leader().await, info(1, "c1:1", 1));

    let starts: Vec<Instant> = probe
        .calls()
        .into_iter()
        .filter(|(a, _)| a == "c1:1")
        .map(|(_, at)| at)
        .collect();
    assert_eq!(starts.len(), 7, "six failed rounds, then success");
    let pauses: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let secs = Duration::from_secs;
    for (pause, base) in pauses.iter().zip([1, 2, 4, 8, 8, 8]) {
        assert!(
            *pause >= secs(base).mul_f64(0.8) && *pause <= secs(base),
            "pause {pause:?} outside [0.8, 1]·{base} s; all: {pauses:?}"
        );
    }
    // The jitter comes from the seeded RNG: the same seed gives the same pauses.
    let mut expected = Backoff::from_options(&opts());
    for (pause, want) in pauses.iter().zip((0..6).map(|_| expected.next_delay())) {
        // tokio timers round up to the millisecond.
        assert!(
            *pause >= want && *pause <= want + ms(1),
            "{pause:?} vs {want:?}"
        );
    }

    // After a success the backoff starts over at 1 s.
    l.invalidate();
    probe.set(
        "c1:1",
        vec![(ms(0), Answer::Fail), (ms(0), leader(1, "c1:1", 1))],
    );
    probe.forget_calls();
    l.leader().await;
    let calls: Vec<_> = probe
        .calls()
        .into_iter()
        .filter(|(a, _)| a == "c1:1")
        .collect();
    let pause = calls[1].1 - calls[0].1;
    assert!(pause >= ms(800) && pause <= ms(1000), "{pause:?}");
}

#[tokio::test(start_paused = true)]
async fn three_consecutive_heartbeat_failures_forget_the_leader() {
    let probe = FakeProbe::default();
    probe.set("c1:1", vec![(ms(0), leader(1, "c1:1", 1))]);
    let l = locator(&probe, &["c1:1"]);
    l.leader().await;

    assert!(!l.on_heartbeat_failure());
    assert!(!l.on_heartbeat_failure());
    l.on_heartbeat_success();
    assert!(!l.on_heartbeat_failure());
    assert!(!l.on_heartbeat_failure());
    assert!(
        l.cached().is_some(),
        "a success in between resets the count"
    );
    assert!(l.on_heartbeat_failure(), "third in a row");
    assert_eq!(l.cached(), None);
    assert_eq!(l.term(), 1, "the term is remembered");

    probe.forget_calls();
    assert_eq!(l.leader().await, info(1, "c1:1", 1));
    assert_eq!(probe.called(), ["c1:1"], "rediscovered");
}

#[tokio::test(start_paused = true)]
async fn not_leader_hint_is_tried_first() {
    let probe = FakeProbe::default();
    probe.set("c1:1", vec![(ms(0), leader(1, "c1:1", 1))]);
    probe.set("c2:1", vec![(ms(0), leader(1, "c1:1", 1))]);
    probe.set("c3:1", vec![(ms(0), leader(3, "c3:1", 2))]);
    let l = locator(&probe, &["c1:1", "c2:1", "c3:1"]);
    assert_eq!(l.leader().await, info(1, "c1:1", 1));

    // c1 lost leadership and says c3 leads now: only c3 is asked.
    l.on_not_leader(Some("c3:1".into()));
    assert_eq!(l.cached(), None);
    probe.forget_calls();
    assert_eq!(l.leader().await, info(3, "c3:1", 2));
    assert_eq!(probe.called(), ["c3:1"]);

    // A hint that does not pan out falls back to asking everyone.
    probe.set("c9:1", vec![(ms(0), Answer::Fail)]);
    l.on_not_leader(Some("c9:1".into()));
    probe.forget_calls();
    let found = l.leader().await;
    let called = probe.called();
    assert_eq!(called[0], "c9:1");
    assert!(called.len() >= 2, "then everyone: {called:?}");
    assert!(found == info(1, "c1:1", 1) || found == info(3, "c3:1", 2));

    // NOT_LEADER without a hint: plain rediscovery.
    l.on_not_leader(None);
    probe.forget_calls();
    l.leader().await;
    assert_eq!(probe.called()[0], "c1:1", "no hint to try first");
}

#[tokio::test(start_paused = true)]
async fn push_with_higher_term_is_taken_and_stale_push_ignored() {
    let probe = FakeProbe::default();
    probe.set("c1:1", vec![(ms(0), leader(1, "c1:1", 5))]);
    let l = locator(&probe, &["c1:1", "c2:1"]);
    probe.set("c2:1", vec![(ms(0), Answer::Fail)]);
    l.leader().await;
    probe.forget_calls();

    assert!(!l.on_controller_changed(5, 2, "c2:1".into()), "same term");
    assert!(!l.on_controller_changed(4, 2, "c2:1".into()), "older term");
    assert_eq!(l.cached(), Some(info(1, "c1:1", 5)));

    assert!(l.on_controller_changed(6, 2, "c2:1".into()));
    assert_eq!(l.cached(), Some(info(2, "c2:1", 6)));
    assert_eq!(l.leader().await, info(2, "c2:1", 6));
    assert!(probe.calls().is_empty(), "a push needs no discovery");

    // Stale even after the leader was forgotten: the term is remembered.
    l.invalidate();
    assert!(!l.on_controller_changed(6, 1, "c1:1".into()));
    assert_eq!(l.cached(), None);
    assert!(l.on_controller_changed(7, 1, "c1:1".into()));
    assert_eq!(l.cached(), Some(info(1, "c1:1", 7)));
}

#[tokio::test(start_paused = true)]
async fn push_ends_a_backoff_wait() {
    let probe = FakeProbe::default();
    probe.set("c1:1", vec![(ms(0), Answer::Fail)]);
    let l = Arc::new(locator(&probe, &["c1:1"]));
    let start = Instant::now();
    let waiting = tokio::spawn({
        let l = l.clone();
        async move { l.leader().await }
    });
    while probe.calls().is_empty() {
        tokio::task::yield_now().await;
    }
    assert!(l.on_controller_changed(3, 2, "c2:1".into()));
    assert_eq!(waiting.await.unwrap(), info(2, "c2:1", 3));
    assert!(
        start.elapsed() < ms(800),
        "woke before the first pause ended"
    );
}

#[tokio::test(start_paused = true)]
async fn discovery_does_not_override_a_newer_push() {
    let probe = FakeProbe::default();
    probe.set("c1:1", vec![(ms(500), leader(1, "c1:1", 3))]);
    let l = Arc::new(locator(&probe, &["c1:1"]));
    let waiting = tokio::spawn({
        let l = l.clone();
        async move { l.leader().await }
    });
    while probe.calls().is_empty() {
        tokio::task::yield_now().await;
    }
    assert!(l.on_controller_changed(5, 2, "c2:1".into()));
    assert_eq!(waiting.await.unwrap(), info(2, "c2:1", 5));
    assert_eq!(l.cached(), Some(info(2, "c2:1", 5)));
}

#[test]
fn rejects_bad_controller_lists() {
    let probe = FakeProbe::default();
    assert!(matches!(
        LeaderLocator::with_probe(vec![], opts(), probe.clone()),
        Err(DiscoveryError::NoControllers)
    ));
    assert!(matches!(
        LeaderLocator::with_probe(vec!["no-port".into()], opts(), probe.clone()),
        Err(DiscoveryError::InvalidAddress { .. })
    ));
    let l = LeaderLocator::with_probe(
        vec!["a:1".into(), " a:1 ".into(), "b:1".into()],
        opts(),
        probe,
    )
    .unwrap();
    assert_eq!(l.controllers(), ["a:1", "b:1"]);
}

/// Controllers learned from the cluster are asked too: with every configured controller gone
/// (replaced by newly added ones), the leader is still found; relearning replaces the list.
#[tokio::test(start_paused = true)]
async fn learned_controllers_are_asked_after_the_configured_ones() {
    let probe = FakeProbe::default();
    probe.set("c1:1", vec![(ms(0), Answer::Fail)]);
    probe.set("c4:1", vec![(ms(5), leader(4, "c4:1", 9))]);
    let l = locator(&probe, &["c1:1"]);
    l.learn_controllers(["c1:1".to_string(), "c4:1".into(), "not an address".into()]);
    assert_eq!(
        l.all_controllers(),
        vec!["c1:1".to_string(), "c4:1".to_string()]
    );
    assert_eq!(l.leader().await, info(4, "c4:1", 9));
    assert_eq!(probe.called(), vec!["c1:1".to_string(), "c4:1".to_string()]);
    l.learn_controllers(Vec::<String>::new());
    assert_eq!(l.all_controllers(), vec!["c1:1".to_string()]);
}
