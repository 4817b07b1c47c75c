//! Names from INTERFACE.md that scenarios, dashboards and tools rely on, in one place.

pub const SYSTEM_METRICS: &str = "system_metrics";
pub const DEVICES: &str = "devices";
pub const ALERTS: &str = "alerts";
pub const MEMORIES: &str = "memories";
pub const PROFILES: &str = "profiles";
pub const MATCH_MEMORIES: &str = "match_memories";
/// The publication Realtime reads.
pub const REALTIME_PUBLICATION: &str = "supabase_realtime";
/// The `app_metadata` key that tags a user (and so every row it owns) with the run that created it.
pub const RUN_ID_KEY: &str = "fleetbench_run_id";
/// Embedding width of `memories.embedding`.
pub const EMBEDDING_DIM: usize = 384;
/// Default `cpu_temp_c` at or above which a critical thermal alert is raised.
pub const THERMAL_CRITICAL_C: f32 = 95.0;
