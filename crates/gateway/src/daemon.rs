//! The stack daemon that `stack up` starts in the background (`fleetbench stack serve`): the
//! pg_cron and pg_net stand-ins, and the API gateway (`SUPABASE_URL`: Auth, the Data API, Edge
//! Functions, Realtime) configured from the project's `supabase/config.toml` and the stack
//! profile, with whatever extra routes the caller serves beside it (fleetbench's webhook
//! receiver). It stops when `stop` resolves, letting Realtime flush its sockets and keep their
//! subscriptions for the clients to resume after a restart.

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use fleetbench_stack::{ProjectConfig, StackPaths, StackState, scheduler};

use crate::GatewayConfig;

/// The longest the daemon waits for the scheduler's first pass before listening anyway (`stack up`
/// gives the daemon 15 s to open its port).
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

/// The stack's state for the instance directory `instance`.
pub fn load_state(instance: PathBuf) -> anyhow::Result<StackState> {
    let paths = StackPaths {
        home: PathBuf::new(),
        instance,
    };
    Ok(StackState::load(&paths.state_file())?)
}

/// Serves the stack described by `state` on its daemon port until `stop` resolves.
pub async fn serve(
    state: StackState,
    extra: Router,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let port = state
        .daemon
        .as_ref()
        .context("the state file has no daemon port")?
        .port;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (caught_up_tx, mut caught_up) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(scheduler::run(
        state.direct_db_url(),
        stop_rx.clone(),
        caught_up_tx,
    ));
    let pg_net = tokio::spawn(fleetbench_stack::pgnet::run(
        state.direct_db_url(),
        webhook_rate()?,
        state.tls.as_ref().map(|t| t.ca.clone()),
        stop_rx.clone(),
    ));
    let project = match &state.supabase_dir {
        Some(dir) => ProjectConfig::load(dir)?,
        None => ProjectConfig::default(),
    };
    let public_url = state
        .api_url()
        .context("the state file has no daemon port")?;
    let config = GatewayConfig::for_stack(&state, &project, public_url.clone());
    let (gateway, realtime) = crate::build(config)?;
    let app = Router::new()
        .route("/", get(root))
        .route("/health", get(root))
        .merge(extra)
        .merge(gateway)
        .fallback(not_served);
    // `stack up` waits for this port: jobs missed while the stack was down run before it opens
    // (bounded well inside that wait, so a slow database does not fail the start).
    if tokio::time::timeout(CATCH_UP_WAIT, caught_up.wait_for(|done| *done))
        .await
        .is_err()
    {
        tracing::warn!(
            "the scheduler's first pass took over {CATCH_UP_WAIT:?}; serving without waiting for it"
        );
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let server = crate::listen::serve(listener, state.tls.as_ref(), app, stop_rx.clone()).await?;
    tracing::info!("stack daemon listening on {public_url}");
    stop.await;
    tracing::info!("stack daemon stopping");
    if let Some(rt) = &realtime {
        rt.shutdown();
    }
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = pg_net.await;
    let _ = server.await;
    if let Some(rt) = &realtime {
        rt.closed().await;
    }
    Ok(())
}

async fn root() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "service": "fleetbench local stack", "status": "ok" }))
}

async fn not_served(uri: axum::http::Uri) -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "message": format!("{} is not served by the local stack", uri.path()),
        })),
    )
}

/// `FLEETBENCH_WEBHOOK_RATE`: the most database-webhook requests started per second (pg_net's
/// documented 200 by default).
fn webhook_rate() -> anyhow::Result<f64> {
    match std::env::var("FLEETBENCH_WEBHOOK_RATE") {
        Err(_) => Ok(fleetbench_stack::pgnet::DEFAULT_MAX_PER_SECOND),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
            _ => anyhow::bail!(
                "FLEETBENCH_WEBHOOK_RATE={v:?}: expected a positive number of requests per second"
            ),
        },
    }
}
