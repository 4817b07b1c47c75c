//! Live counters for the progress display and the run's phase, which probes and collectors wait on.

use std::sync::atomic::AtomicU64;

/// Live counters for the progress display (relaxed atomics; the measurements are the aggregates).
#[derive(Debug, Default)]
pub struct Progress {
    pub provisioned: AtomicU64,
    pub active: AtomicU64,
    pub in_flight: AtomicU64,
    pub uploads: AtomicU64,
    pub errors: AtomicU64,
    pub rows_written: AtomicU64,
    pub backlog_rows: AtomicU64,
    /// 0 while provisioning, 1 during the load phase, 2 once it is over.
    pub load_started: AtomicU64,
    /// The same phase, for tasks that wait on it (probes start measuring with the load).
    pub phase: tokio::sync::watch::Sender<u8>,
    /// The generator behind its schedule: uploads started over a window late, arrivals dropped.
    pub late: AtomicU64,
    pub dropped: AtomicU64,
    /// The operations aggregated live, once the load phase has begun (when the run is exported
    /// live or has `abort_on_fail` thresholds).
    pub live: std::sync::OnceLock<std::sync::Arc<crate::abort::Live>>,
}
