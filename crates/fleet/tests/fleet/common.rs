//! Fixtures: the migrated shared stack, gateways on free ports, targets, the base scenario, runs,
//! and the calibration sink.

use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use fleetbench_fleet::{Progress, RunOutcome, Target, TargetConfig};
use fleetbench_gateway::GatewayConfig;
use fleetbench_stack::StackState;

/// The sink tests compare measured times with analytic truths to a millisecond or two: they run
/// alone (write), the tests that load the machine (a stack, Postgres, a gateway) beside each other
/// (read). On a 2-core machine a stack test beside them was seen to move a p90 by 6 ms.
pub static QUIET: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub fn stack() -> &'static StackState {
    static MIGRATED: OnceLock<&'static StackState> = OnceLock::new();
    MIGRATED.get_or_init(|| {
        let state = fleetbench_stack::testing::shared(|_| {});
        let url = state.direct_db_url();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let dir = fleetbench_stack::testing::workspace_root().join("migrations");
                    fleetbench_schema::apply_dir(&url, &dir).await.unwrap();
                })
        })
        .join()
        .unwrap();
        state
    })
}

pub fn gateway(configure: impl FnOnce(&mut GatewayConfig)) -> String {
    let state = stack();
    let project = fleetbench_stack::ProjectConfig::load(
        &fleetbench_stack::testing::workspace_root().join("supabase"),
    )
    .unwrap();
    fleetbench_gateway::spawn(|url| {
        let mut c = GatewayConfig::for_stack(state, &project, url);
        configure(&mut c);
        c
    })
    .unwrap()
}

/// A gateway whose `/token` bucket per client refills `per_5min` every 5 minutes (burst 30), with
/// IP address forwarding as `forwarding` says.
pub fn limited_gateway(per_5min: u32, forwarding: bool) -> String {
    gateway(|c| {
        c.auth.rate_limits = Some(fleetbench_gateway::ratelimit::Limits::from_config(
            &fleetbench_stack::project::AuthRateLimits {
                token_refresh: per_5min,
                ..Default::default()
            },
        ));
        c.auth.sb_forwarded_for = forwarding;
    })
}

pub fn target(api_url: &str) -> Arc<Target> {
    let state = stack();
    Arc::new(
        Target::new(
            TargetConfig {
                kind: "local".into(),
                api_url: api_url.into(),
                anon_key: state.secrets.anon_key.clone(),
                service_key: state.secrets.service_role_key.clone(),
                db_url: Some(state.pooler_db_url()),
                forward_ip: false,
                auth_limit: None,
            },
            8,
            64,
            fleetbench_fleet::target::DEFAULT_TIMEOUT,
        )
        .unwrap(),
    )
}

pub const SCENARIO: &str = r#"name = "test"
[fleet]
agents = 8
seed = 5
[[load.stages]]
duration = "1s"
agents = 8
[[load.stages]]
duration = "3s"
agents = 8
[load]
grace = "10s"
[workload]
sample_interval = "100ms"
upload_interval = "500ms"
ingest = { rest = 0.5, pooler = 0.5 }
"#;

pub fn plan(overrides: &[&str]) -> fleetbench_scenario::Plan {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    fleetbench_scenario::load_str(SCENARIO, "test.toml", &o)
        .unwrap()
        .1
}

pub async fn run(plan: fleetbench_scenario::Plan, target: Arc<Target>) -> (RunOutcome, String) {
    let run_id = uuid::Uuid::new_v4().to_string();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let out = fleetbench_fleet::run(
        plan,
        target,
        run_id.clone(),
        Arc::new(Progress::default()),
        rx,
    )
    .await
    .unwrap();
    (out, run_id)
}

/// Removes run `run_id`'s users and rows from the stack: (table, rows deleted).
pub async fn clean_up(run_id: &str) -> Vec<(String, i64)> {
    fleetbench_fleet::cleanup(
        &stack().direct_db_url(),
        run_id,
        fleetbench_fleet::CLEANUP_BATCH,
        &mut |_, _| {},
    )
    .await
    .unwrap()
}

pub async fn db() -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&stack().direct_db_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

/// Rows in `system_metrics` of the run's users.
pub async fn stored(run_id: &str) -> i64 {
    db().await
        .query_one(
            "select count(*) from public.system_metrics m join auth.users u on u.id = m.user_id \
             where u.raw_app_meta_data ->> 'fleetbench_run_id' = $1",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0)
}

pub fn op<'a>(out: &'a RunOutcome, name: &str) -> &'a fleetbench_metrics::aggregate::Counts {
    &out.aggregate
        .operations
        .get(name)
        .unwrap_or_else(|| panic!("no {name} samples"))
        .total
}

/// A sink with `model` on a free port, and a target for it with `connections` upload connections.
pub async fn sink_target(
    model: fleetbench_sink::Model,
    connections: usize,
) -> (Arc<Target>, Arc<fleetbench_sink::Sink>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sink = fleetbench_sink::Sink::new(model);
    tokio::spawn(fleetbench_sink::serve(listener, sink.clone()));
    let target = Arc::new(
        Target::new(
            TargetConfig {
                kind: "remote".into(),
                api_url: url,
                anon_key: "k".into(),
                service_key: "k".into(),
                db_url: None,
                forward_ip: false,
                auth_limit: None,
            },
            1,
            connections,
            fleetbench_fleet::target::DEFAULT_TIMEOUT,
        )
        .unwrap(),
    );
    (target, sink)
}

pub fn fixed(ms: u64) -> fleetbench_sink::Model {
    fleetbench_sink::Model {
        latency: fleetbench_sink::Latency::Fixed(Duration::from_millis(ms)),
        stall: None,
        capacity: None,
    }
}

/// A fleet against `fleetbench sink` with `model`: (outcome, sink).
pub async fn against_sink(
    model: fleetbench_sink::Model,
    overrides: &[&str],
) -> (RunOutcome, Arc<fleetbench_sink::Sink>) {
    let (target, sink) = sink_target(model, 256).await;
    let mut o = vec![
        "workload.ingest.rest=1",
        "workload.ingest.pooler=0",
        "load.stages.0.duration=\"0s\"",
        "workload.sample_interval=\"100ms\"",
        "workload.upload_interval=\"100ms\"",
        "fleet.agents=50",
        "load.stages.0.agents=50",
        "load.stages.1.agents=50",
    ];
    o.extend_from_slice(overrides);
    let (out, _) = run(plan(&o), target).await;
    (out, sink)
}

/// Runs `scenario` (a whole file) against `target`.
pub async fn run_text(scenario: &str, target: Arc<Target>) -> RunOutcome {
    let plan = fleetbench_scenario::load_str(scenario, "t.toml", &[])
        .unwrap()
        .1;
    run(plan, target).await.0
}
