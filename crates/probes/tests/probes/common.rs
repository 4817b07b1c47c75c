//! Fixtures: a webhook receiver and the shared stack whose `anomaly-webhook` forwards to it, the
//! database webhook worker, one gateway, and probe contexts.

use std::sync::{Arc, OnceLock};

use fleetbench_fleet::{Clock, Target, TargetConfig};
use fleetbench_gateway::GatewayConfig;
use fleetbench_probes::Context;
use fleetbench_stack::StackState;

/// A receiver served from a thread of its own, so that it outlives every test's runtime.
pub fn receiver() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let r = fleetbench_probes::receiver::Receiver::new(Vec::new());
                let url = fleetbench_probes::receiver::serve("127.0.0.1:0".parse().unwrap(), r)
                    .await
                    .unwrap();
                tx.send(url).unwrap();
                std::future::pending::<()>().await
            })
        });
        rx.recv().unwrap()
    })
}

pub fn stack() -> &'static StackState {
    static MIGRATED: OnceLock<&'static StackState> = OnceLock::new();
    MIGRATED.get_or_init(|| {
        let forward = receiver().to_string();
        let state = fleetbench_stack::testing::shared(|o| {
            o.function_env.insert("ANOMALY_WEBHOOK_URL".into(), forward);
        });
        let (url, function) = (
            state.direct_db_url(),
            state.function_url("anomaly-webhook").unwrap(),
        );
        // Migrations, the webhook's target, and the pg_net worker on a runtime of its own.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let dir = fleetbench_stack::testing::workspace_root().join("migrations");
                fleetbench_schema::apply_dir(&url, &dir).await.unwrap();
                let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                db.execute(
                    "update fleetbench.webhook_targets set url = $1 where name = 'anomaly-webhook'",
                    &[&function],
                )
                .await
                .unwrap();
                tx.send(()).unwrap();
                let (_stop, stop_rx) = tokio::sync::watch::channel(false);
                fleetbench_stack::pgnet::run(url, 200.0, None, stop_rx).await;
            })
        });
        rx.recv().unwrap();
        state
    })
}

pub fn gateway() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let state = stack();
        let project = fleetbench_stack::ProjectConfig::load(
            &fleetbench_stack::testing::workspace_root().join("supabase"),
        )
        .unwrap();
        fleetbench_gateway::spawn(|url| GatewayConfig::for_stack(state, &project, url)).unwrap()
    })
}

/// A context for one probe run alone against the shared stack (measuring at once).
pub fn context() -> Context {
    context_at(gateway())
}

/// [`context`] through the gateway at `api_url`.
pub fn context_at(api_url: &str) -> Context {
    let state = stack();
    let api_url = api_url.to_string();
    let target = Target::new(
        TargetConfig {
            kind: "local".into(),
            api_url,
            anon_key: state.secrets.anon_key.clone(),
            service_key: state.secrets.service_role_key.clone(),
            db_url: Some(state.pooler_db_url()),
            forward_ip: false,
            auth_limit: None,
        },
        4,
        16,
        fleetbench_fleet::target::DEFAULT_TIMEOUT,
    )
    .unwrap();
    let (phase, rx) = tokio::sync::watch::channel(1u8);
    std::mem::forget(phase);
    Context {
        target: Arc::new(target),
        http: reqwest::Client::new(),
        admin_db_url: Some(state.direct_db_url()),
        pooler_db_url: Some(state.pooler_db_url()),
        direct_db_url: Some(state.direct_db_url()),
        run_id: uuid::Uuid::new_v4().to_string(),
        clock: Clock::new(),
        window_us: 1_000_000,
        phase: rx,
    }
}

pub async fn db() -> tokio_postgres::Client {
    fleetbench_probes::connect(&stack().direct_db_url())
        .await
        .unwrap()
}

/// Rows of `table` owned by the run's users, counted in the database.
pub async fn owned(run_id: &str, table: &str) -> i64 {
    db().await
        .query_one(
            &format!(
                "select count(*) from public.{table} t join auth.users u on u.id = t.user_id \
                 where u.raw_app_meta_data ->> 'fleetbench_run_id' = $1"
            ),
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0)
}

pub fn figure(r: &fleetbench_metrics::summary::ProbeReport, name: &str) -> f64 {
    r.figures
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no figure {name:?} in {:?}", r.figures))
        .value
}

/// The direct storm fills Postgres's connection slots on purpose: it runs alone (write), the
/// other tests of this binary beside each other (read).
pub static SLOTS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
