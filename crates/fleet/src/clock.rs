//! The run's clock: microseconds since a fixed start, shared by every sample of a run, and the
//! wall time that start reads.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Microseconds since a fixed start, shared by every sample of a run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    wall: DateTime<Utc>,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            wall: Utc::now(),
        }
    }

    /// A clock whose zero is the wall time `wall` (past or future): shards of one run share it, so
    /// their windows line up.
    pub fn at(wall: DateTime<Utc>) -> Clock {
        let (now, now_wall) = (Instant::now(), Utc::now());
        let ahead = (wall - now_wall).to_std();
        let start = match ahead {
            Ok(d) => now + d,
            Err(_) => now
                .checked_sub((now_wall - wall).to_std().unwrap_or_default())
                .unwrap_or(now),
        };
        Clock { start, wall }
    }
    /// A clock that starts now but reads `wall`: rows are dated from `wall` on at the real pace.
    /// For rehearsing a calendar edge (the last seconds of a month) without waiting for it.
    pub fn reading(wall: DateTime<Utc>) -> Clock {
        Clock {
            start: Instant::now(),
            wall,
        }
    }
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    pub fn instant(&self, us: u64) -> Instant {
        self.start + Duration::from_micros(us)
    }
    pub fn wall(&self, us: u64) -> DateTime<Utc> {
        self.wall + chrono::Duration::microseconds(us as i64)
    }
    pub fn started_at(&self) -> DateTime<Utc> {
        self.wall
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
