//! The `[probes.*]` sections: which end-to-end probes run beside the fleet, and their sizes. A
//! section's presence enables its probe; every key has a default, so `[probes.rls]` alone is
//! enough. `fleetbench probe NAME` reads the same section from `--set` keys alone
//! ([`crate::load::probe_plan`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub const PROBES: &[&str] = &["realtime", "rag", "partitions", "pooler", "webhook", "rls"];

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probes {
    /// The shard of a sharded run (`--shard I/N`) that runs the probes: one shard only, so that
    /// no two shards create the same probe users, tables or connection storms (default 0).
    pub shard: Option<u32>,
    pub realtime: Option<RealtimeProbe>,
    pub rag: Option<RagProbe>,
    pub partitions: Option<PartitionsProbe>,
    pub pooler: Option<PoolerProbe>,
    pub webhook: Option<WebhookProbe>,
    pub rls: Option<RlsProbe>,
}

fn span(s: &str) -> Spanned<String> {
    Spanned::new(0..0, s.to_string())
}

macro_rules! defaults {
    ($($f:ident: $t:ty = $v:expr;)*) => {
        $(fn $f() -> $t { $v })*
    };
}

defaults! {
    d_subscribers: u32 = 10;
    d_alerts: u32 = 50;
    d_interval: Spanned<String> = span("200ms");
    d_wait: Spanned<String> = span("10s");
    d_true: bool = true;
    d_users: u32 = 2;
    d_memories: u32 = 2000;
    d_clusters: u32 = 20;
    d_k: u32 = 10;
    d_queries: u32 = 200;
    d_rate: Spanned<String> = span("20/s");
    d_ef: Vec<u32> = vec![10, 20, 40, 80, 160];
    d_months: u32 = 6;
    d_rows_per_month: u32 = 20_000;
    d_devices: u32 = 20;
    d_repeats: u32 = 20;
    d_clients: u32 = 1000;
    d_concurrency: u32 = 200;
    d_pooler_queries: u32 = 3;
    d_webhook_alerts: u32 = 20;
    d_webhook_interval: Spanned<String> = span("250ms");
    d_webhook_wait: Spanned<String> = span("20s");
}

/// Dashboards subscribed to their own alerts while thermal anomalies are injected at known instants.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeProbe {
    /// Dashboard users, each with a device and a subscribed socket.
    #[serde(default = "d_subscribers")]
    pub subscribers: u32,
    /// Thermal anomalies injected in all, one every `interval`, round robin over the users.
    #[serde(default = "d_alerts")]
    pub alerts: u32,
    #[serde(default = "d_interval")]
    pub interval: Spanned<String>,
    /// How long after the last injection an alert may still arrive before it counts as lost.
    #[serde(default = "d_wait")]
    pub wait: Spanned<String>,
    /// Halfway, one dashboard drops its socket and subscribes again.
    #[serde(default = "d_true")]
    pub reconnect: bool,
}

/// Clustered memories, `match_memories` at a rate through the Data API, recall against exact search.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RagProbe {
    #[serde(default = "d_users")]
    pub users: u32,
    /// Memories per user.
    #[serde(default = "d_memories")]
    pub memories: u32,
    /// Clusters the embeddings gather around (per user).
    #[serde(default = "d_clusters")]
    pub clusters: u32,
    /// `match_count`, and the k of recall@k.
    #[serde(default = "d_k")]
    pub k: u32,
    #[serde(default = "d_queries")]
    pub queries: u32,
    #[serde(default = "d_rate")]
    pub rate: Spanned<String>,
    /// `hnsw.ef_search` values swept (through SQL, as the user).
    #[serde(default = "d_ef")]
    pub ef_search: Vec<u32>,
}

/// Months of history, the dashboard's queries on the partitioned table and an unpartitioned copy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionsProbe {
    /// Months of history, loaded one month at a time; the queries run after each.
    #[serde(default = "d_months")]
    pub months: u32,
    #[serde(default = "d_rows_per_month")]
    pub rows_per_month: u32,
    #[serde(default = "d_devices")]
    pub devices: u32,
    /// Runs of each query per data size (the median and p95 are reported).
    #[serde(default = "d_repeats")]
    pub repeats: u32,
}

/// A connection storm through the transaction pooler, and the same storm made directly.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolerProbe {
    #[serde(default = "d_clients")]
    pub clients: u32,
    /// Connection attempts in flight at once.
    #[serde(default = "d_concurrency")]
    pub concurrency: u32,
    /// Queries each client runs once connected (it holds its connection until every client has
    /// connected, so the storm's clients are simultaneous).
    #[serde(default = "d_pooler_queries")]
    pub queries: u32,
    /// Repeat the storm against the database directly (session URL remotely, Postgres locally).
    #[serde(default = "d_true")]
    pub direct: bool,
}

/// Alert insert → database webhook → `anomaly-webhook` → fleetbench's webhook receiver.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookProbe {
    #[serde(default = "d_webhook_alerts")]
    pub alerts: u32,
    #[serde(default = "d_webhook_interval")]
    pub interval: Spanned<String>,
    #[serde(default = "d_webhook_wait")]
    pub wait: Spanned<String>,
    /// Where the receiver's deliveries are read (the function's `ANOMALY_WEBHOOK_URL`); the local
    /// stack's own receiver when absent.
    #[serde(default)]
    pub receiver: Option<String>,
    /// Run the receiver in this process on ADDR (point the function's `ANOMALY_WEBHOOK_URL` at it).
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
}

/// Cross-user reads and writes through the Data API, SQL as the user, and Realtime.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RlsProbe {}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbesPlan {
    /// `[probes] shard`: the shard of a sharded run that runs them.
    pub shard: u32,
    pub realtime: Option<RealtimePlan>,
    pub rag: Option<RagPlan>,
    pub partitions: Option<PartitionsPlan>,
    pub pooler: Option<PoolerPlan>,
    pub webhook: Option<WebhookPlan>,
    pub rls: bool,
}

impl ProbesPlan {
    /// Whether shard `index` of `count` runs the probes (a whole run always does).
    pub fn on_shard(&self, (index, count): (u32, u32)) -> bool {
        count <= 1 || index == self.shard
    }

    /// The names of the probes that run.
    pub fn names(&self) -> Vec<&'static str> {
        let on = [
            self.realtime.is_some(),
            self.rag.is_some(),
            self.partitions.is_some(),
            self.pooler.is_some(),
            self.webhook.is_some(),
            self.rls,
        ];
        PROBES
            .iter()
            .zip(on)
            .filter_map(|(n, on)| on.then_some(*n))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RealtimePlan {
    pub subscribers: u32,
    pub alerts: u32,
    pub interval: Duration,
    pub wait: Duration,
    pub reconnect: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RagPlan {
    pub users: u32,
    pub memories: u32,
    pub clusters: u32,
    pub k: u32,
    pub queries: u32,
    /// Queries per second.
    pub rate: f64,
    pub ef_search: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionsPlan {
    pub months: u32,
    pub rows_per_month: u32,
    pub devices: u32,
    pub repeats: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolerPlan {
    pub clients: u32,
    pub concurrency: u32,
    pub queries: u32,
    pub direct: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhookPlan {
    pub alerts: u32,
    pub interval: Duration,
    pub wait: Duration,
    pub receiver: Option<String>,
    pub listen: Option<std::net::SocketAddr>,
}
