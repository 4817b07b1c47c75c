//! Scoring deliveries against what was sent: each sent event was delivered once, more than once, or
//! lost by the deadline. One sample per event (`lost` for the missing ones, dated at the deadline),
//! latency from the send, and from the commit when the event carried one.

use fleetbench_metrics::Aggregate;
use fleetbench_metrics::aggregate::histogram;
use hdrhistogram::Histogram;

use crate::{Context, Timing};

/// One arrival: when (µs on the run's clock), and the event's commit on the same clock if known.
pub type Arrival = (u64, Option<u64>);

pub struct Tally {
    pub delivered: u64,
    pub lost: u64,
    /// Arrivals beyond the first.
    pub duplicates: u64,
    /// Arrivals dated before their commit (the target's clock runs ahead of this machine's).
    pub before_commit: u64,
    pub from_send: Histogram<u64>,
    pub from_commit: Histogram<u64>,
}

/// `events`: per sent event, its send (µs on the clock) and its arrivals.
pub fn score<'a>(
    ctx: &Context,
    agg: &mut Aggregate,
    operation: &'static str,
    events: impl Iterator<Item = (u64, Option<&'a [Arrival]>)>,
    deadline_us: u64,
) -> Tally {
    let mut t = Tally {
        delivered: 0,
        lost: 0,
        duplicates: 0,
        before_commit: 0,
        from_send: histogram(),
        from_commit: histogram(),
    };
    for (sent, arrivals) in events {
        match arrivals.filter(|a| !a.is_empty()) {
            Some(a) => {
                t.delivered += 1;
                t.duplicates += a.len() as u64 - 1;
                let (at, commit) = a[0];
                t.before_commit += u64::from(commit.is_some_and(|c| c > at));
                ctx.sample(
                    agg,
                    operation,
                    Timing {
                        intended_us: sent,
                        sent_us: commit.unwrap_or(sent).clamp(sent, at.max(sent)),
                        done_us: at,
                    },
                    None,
                );
                t.from_send
                    .saturating_record(at.saturating_sub(sent).max(1));
                if let Some(c) = commit.filter(|c| *c <= at) {
                    t.from_commit.saturating_record((at - c).max(1));
                }
            }
            None => {
                t.lost += 1;
                ctx.sample(
                    agg,
                    operation,
                    Timing {
                        intended_us: sent,
                        sent_us: sent,
                        done_us: deadline_us,
                    },
                    Some("lost"),
                );
            }
        }
    }
    t
}
