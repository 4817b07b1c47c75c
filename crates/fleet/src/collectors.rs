//! Real collectors: agents whose telemetry is this machine's, read by the sysinfo [`Collector`]
//! every sample interval and uploaded through the Data API every upload interval as their own user,
//! as the desktop agent does. Used by `fleetbench collect --push` and, as their own group
//! (`collector.insert_metrics`), beside the simulated fleet in a run.

use std::time::Duration;

use fleetbench_collector::{Collector, Reading};
use fleetbench_metrics::Sample;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::target::{Failure, Session, Target};
use crate::telemetry::Device;
use crate::{Clock, agent};

pub const OPERATION: &str = "collector.insert_metrics";

/// What one real collector did.
#[derive(Debug, Default)]
pub struct Pushed {
    pub user_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub samples: u64,
    pub rows_written: u64,
    pub uploads: u64,
    pub failed_uploads: u64,
    /// Every operation it timed (sign-in, device, uploads).
    pub timings: Vec<Sample>,
}

/// A reading as a `system_metrics` row of `device` owned by `user`, taken at `ts`.
pub fn row(r: &Reading, device: Uuid, user: Uuid, ts: chrono::DateTime<chrono::Utc>) -> Value {
    let mut v = serde_json::to_value(r).expect("a reading serialises");
    let o = v.as_object_mut().expect("a reading is an object");
    o.remove("t_ms");
    o.insert("device_id".into(), device.to_string().into());
    o.insert("user_id".into(), user.to_string().into());
    o.insert("ts".into(), ts.to_rfc3339().into());
    v
}

fn timed(
    operation: &'static str,
    sent: u64,
    done: u64,
    rows: u64,
    r: &Result<(), Failure>,
) -> Sample {
    Sample::new(operation, (sent, sent, done), Failure::kind_of(r), rows, 0)
}

/// Signs in as a new user of `run_id` (index `index`), registers this machine, then samples every
/// `sample` and uploads every `upload` until `stop` turns true; what is unsent at the end is
/// uploaded once more.
pub async fn push(
    target: &Target,
    run_id: &str,
    index: u32,
    sample: Duration,
    upload: Duration,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) -> Result<Pushed, Failure> {
    let mut out = Pushed::default();
    let (email, password) = agent::credentials(&target.config.service_key, run_id, 900_000 + index);
    let t0 = clock.now_us();
    let user = target.create_user(&email, &password, run_id).await?;
    let mut session = target.sign_in(&email, &password).await?;
    out.timings
        .push(timed("auth.password", t0, clock.now_us(), 0, &Ok(())));
    let mut collector = Collector::new();
    let (hostname, cores, ram, disk) = collector.machine();
    let first = collector.sample();
    let device = Device {
        form_factor: "desktop",
        cores,
        ram_bytes: ram,
        disk_bytes: disk,
        has_gpu: first.gpu_temp_c.is_some(),
        has_battery: first.battery_pct.is_some(),
    };
    let device_id = target
        .create_device(
            session.access_token(),
            &device,
            &format!("{hostname}-collector-{index}"),
        )
        .await?;
    out.user_id = Some(user);
    out.device_id = Some(device_id);

    let mut rng = SmallRng::seed_from_u64(u64::from(index));
    let mut backlog: Vec<Value> = Vec::new();
    let mut failures = 0u32;
    let mut ticks = tokio::time::interval(sample);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_upload = tokio::time::Instant::now() + upload;
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if !stopping {
            let r = collector.sample();
            backlog.push(row(&r, device_id, user, chrono::Utc::now()));
            out.samples += 1;
        }
        if (stopping || tokio::time::Instant::now() >= next_upload) && !backlog.is_empty() {
            if session.expires_at - chrono::Utc::now().timestamp() < 60
                && let Ok(s) = target.refresh(&session.refresh_token).await
            {
                session = s;
            }
            let rows = backlog.len() as u64;
            let body = bytes::Bytes::from(serde_json::to_vec(&backlog).expect("rows serialise"));
            let sent = clock.now_us();
            let mut result = target.insert_rest(session.bearer(), body.clone()).await;
            if matches!(result, Err(Failure::Status { status: 401, .. })) {
                session = relogin(target, &email, &password).await?;
                result = target.insert_rest(session.bearer(), body).await;
            }
            out.timings
                .push(timed(OPERATION, sent, clock.now_us(), rows, &result));
            out.uploads += 1;
            match result {
                Ok(()) => {
                    out.rows_written += rows;
                    backlog.clear();
                    failures = 0;
                    next_upload = tokio::time::Instant::now() + upload;
                }
                Err(f) => {
                    out.failed_uploads += 1;
                    failures += 1;
                    next_upload = tokio::time::Instant::now()
                        + agent::backoff(failures, f.retry_after(), &mut rng);
                    if !f.retryable() {
                        backlog.clear();
                    }
                }
            }
        }
        if stopping {
            return Ok(out);
        }
    }
}

async fn relogin(target: &Target, email: &str, password: &str) -> Result<Session, Failure> {
    target.sign_in(email, password).await
}
