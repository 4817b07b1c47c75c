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
    /// The one way to make a sample: `operation` due at `intended_us`, sent at `sent_us`, done at
    /// `done_us`, ended by the error of kind `error` or by none; `rows` count only when it did not
    /// fail (the target acknowledged nothing otherwise).
    pub fn new(
        operation: &'static str,
        (intended_us, sent_us, done_us): (u64, u64, u64),
        error: Option<String>,
        rows: u64,
        bytes: u64,
    ) -> Sample {
        Sample {
            operation,
            intended_us,
            sent_us,
            done_us,
            rows: if error.is_none() { rows } else { 0 },
            outcome: error.map_or(Outcome::Ok, Outcome::Error),
            bytes,
        }
    }

    /// Latency from the intended start.
    pub fn latency_us(&self) -> u64 {
        self.done_us.saturating_sub(self.intended_us)
    }

    /// Service time: from the send.
    pub fn service_us(&self) -> u64 {
        self.done_us.saturating_sub(self.sent_us)
    }
}
