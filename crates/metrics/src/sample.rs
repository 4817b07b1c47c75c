//! One operation as a driver saw it. Times are offsets from the run's start in microseconds, so a
//! sample is plain data that crosses threads and files without a clock attached.

/// How an operation ended. An error is counted by its kind (`http_429`, `http_503`, `timeout`,
/// `connect`, `db_57014`, …), never dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub operation: &'static str,
    /// When the schedule wanted the operation to start.
    pub intended_us: u64,
    /// When it was actually sent (≥ intended when the generator runs behind).
    pub sent_us: u64,
    pub done_us: u64,
    pub outcome: Outcome,
    /// Rows the target acknowledged (writes).
    pub rows: u64,
    pub bytes: u64,
}

impl Sample {
    /// Latency from the intended start.
    pub fn latency_us(&self) -> u64 {
        self.done_us.saturating_sub(self.intended_us)
    }

    /// Service time: from the send.
    pub fn service_us(&self) -> u64 {
        self.done_us.saturating_sub(self.sent_us)
    }
}
