//! What a run observed, and all the checks look at: every produce attempt (the ledger), every
//! record a consumer read, and the full reads of every partition after the faults.
//!
//! Nothing here knows about processes, so the self-tests of [`checks`](super::checks) build a
//! history by hand.
//!
//! # To ensure correctness
//! - Times are microseconds since the run started on one monotonic clock ([`Clock`]) shared by
//!   every task of the harness, so "A was acknowledged before B was sent" compares two readings
//!   of the same clock.
//! - An attempt is recorded once its outcome is known (answer or client deadline); attempts of
//!   one value are made by one producer, one after the other, so `sent_at` orders them.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Microseconds since the run started.
pub type Micros = u64;

/// The run's clock: [`Micros`] since it was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn now(&self) -> Micros {
        self.start.elapsed().as_micros() as Micros
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// `us` as seconds, for people.
pub fn secs(us: Micros) -> f64 {
    Duration::from_micros(us).as_secs_f64()
}

/// What one Produce attempt ended with (the taxonomy is in [`classify`](super::classify)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (acks=all) at this offset.
    Acked { offset: u64, acked_at: Micros },
    /// Certainly not appended.
    Refused { reason: String },
    /// Anything else: it may or may not have been appended.
    Unknown { what: String },
}

/// One Produce request of one record.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub value: String,
    pub partition: u32,
    pub producer: u32,
    /// 1 for the first attempt of this value, 2 for its first retry, ...
    pub attempt: u32,
    /// The broker it was sent to.
    pub broker: u64,
    pub sent_at: Micros,
    /// When the answer came, or the client deadline passed.
    pub done_at: Micros,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// One record a consumer got from a Fetch answer.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumedRead {
    pub partition: u32,
    pub offset: u64,
    pub value: String,
    /// The high watermark of the answer that carried it.
    pub high_watermark: u64,
    pub broker: u64,
    pub read_at: Micros,
}

/// A whole partition read from one broker after the faults.
#[derive(Clone, Debug, Serialize)]
pub struct FullRead {
    /// Which read this is, for reports ("read 1 ...").
    pub label: String,
    pub partition: u32,
    pub broker: u64,
    pub log_start_offset: u64,
    /// The high watermark when the read ended: the read covers `log_start_offset..it`.
    pub high_watermark: u64,
    /// `(offset, value)` in the order the broker returned them.
    #[serde(skip)]
    pub records: Vec<(u64, String)>,
}

/// Everything the checks need.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub attempts: Vec<Attempt>,
    pub reads: Vec<ConsumedRead>,
    pub full_reads: Vec<FullRead>,
}

impl History {
    /// Writes every attempt, consumed record and full-read record as one JSON object per line
    /// (`{"attempt": ...}`, `{"read": ...}`, `{"full_read": ..., "offset": N, "value": ...}`).
    pub fn write_ledger(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for a in &self.attempts {
            serde_json::to_writer(&mut *out, &serde_json::json!({ "attempt": a }))?;
            out.write_all(b"\n")?;
        }
        for r in &self.reads {
            serde_json::to_writer(&mut *out, &serde_json::json!({ "read": r }))?;
            out.write_all(b"\n")?;
        }
        for f in &self.full_reads {
            for (offset, value) in &f.records {
                let line = serde_json::json!({
                    "full_read": f.label,
                    "partition": f.partition,
                    "broker": f.broker,
                    "offset": offset,
                    "value": value,
                });
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()
    }
}

/// A record value as text: values are produced as UTF-8, anything else is shown lossily (and
/// then matches no attempt).
pub fn value_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_is_one_json_object_per_line() {
        let h = History {
            attempts: vec![Attempt {
                value: "p0-1".into(),
                partition: 0,
                producer: 0,
                attempt: 1,
                broker: 2,
                sent_at: 10,
                done_at: 20,
                outcome: Outcome::Acked {
                    offset: 0,
                    acked_at: 20,
                },
            }],
            reads: vec![],
            full_reads: vec![FullRead {
                label: "read 1".into(),
                partition: 0,
                broker: 2,
                log_start_offset: 0,
                high_watermark: 1,
                records: vec![(0, "p0-1".into())],
            }],
        };
        let mut out = Vec::new();
        h.write_ledger(&mut out).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["attempt"]["outcome"], "acked");
        assert_eq!(lines[0]["attempt"]["offset"], 0);
        assert_eq!(lines[1]["value"], "p0-1");
    }
}
