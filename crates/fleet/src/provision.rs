//! Provisioning: each agent's user created through the Auth admin API (never `/signup`), signed in
//! with its password, and its device registered, a few agents at a time, each call retried with
//! backoff; and each agent's machine (a profile following the model, or replaying a trace).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use fleetbench_metrics::Aggregate;
use fleetbench_scenario::Plan;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::agent::{Agent, IngestPath, backoff};
use crate::target::{Failure, Target};
use crate::telemetry::Machine;
use crate::{Clock, Progress};

/// Why a run could not start its load: no agent provisioned, or a trace to replay unreadable.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no agent could be provisioned; the last failure: {0}")]
    NoAgents(String),
    #[error("{0}")]
    Replay(String),
}

/// What provisioning made of the plan's agents (those of this shard).
pub struct Provisioned {
    pub agents: Vec<Agent>,
    /// The agents this shard was to provision.
    pub planned: u32,
    /// Why the last agent that could not be provisioned was refused, if one was.
    pub last_failure: Option<String>,
}

/// The agents the plan needs (those of this shard), provisioned `provision_concurrency` at a
/// time until done or `stop`; their calls' samples go into `aggregate`. Fails only when no agent
/// could be provisioned.
pub async fn fleet(
    plan: &Arc<Plan>,
    target: &Arc<Target>,
    run_id: &str,
    clock: Clock,
    stop: &watch::Receiver<bool>,
    progress: &Progress,
    aggregate: &mut Aggregate,
) -> Result<Provisioned, EngineError> {
    let needed = plan.agents_needed();
    let planned = (0..needed).filter(|&i| plan.in_shard(i)).count() as u32;
    let traces = Arc::new(load_traces(plan).map_err(EngineError::Replay)?);
    let mut agents: Vec<Agent> = Vec::with_capacity(needed as usize);
    let mut last_failure = None;
    let mut set = JoinSet::new();
    let mut next = 0;
    while (next < needed || !set.is_empty()) && !(*stop.borrow() && set.is_empty()) {
        while next < needed && set.len() < plan.provision_concurrency as usize && !*stop.borrow() {
            if !plan.in_shard(next) {
                next += 1;
                continue;
            }
            set.spawn(one(
                target.clone(),
                plan.clone(),
                run_id.to_string(),
                next,
                clock,
                stop.clone(),
                traces.clone(),
            ));
            next += 1;
        }
        let Some(done) = set.join_next().await else {
            break;
        };
        let (samples, result) = done.expect("provisioning task");
        samples.iter().for_each(|s| aggregate.add(s));
        match result {
            Ok(agent) => {
                progress.provisioned.fetch_add(1, Relaxed);
                agents.push(agent);
            }
            Err(f) => last_failure = Some(f.to_string()),
        }
    }
    if agents.is_empty() {
        return Err(EngineError::NoAgents(
            last_failure.unwrap_or_else(|| "none".into()),
        ));
    }
    Ok(Provisioned {
        agents,
        planned,
        last_failure,
    })
}

/// The traces of `[workload.replay]`, read once for the whole fleet.
pub fn load_traces(plan: &Plan) -> Result<Vec<Arc<fleetbench_collector::trace::Trace>>, String> {
    plan.replay.as_ref().map_or(Ok(Vec::new()), |r| {
        r.traces
            .iter()
            .map(|p| {
                fleetbench_collector::trace::Trace::read(p)
                    .map(Arc::new)
                    .map_err(|e| format!("workload.replay: {e}"))
            })
            .collect()
    })
}

/// Agent `index`'s machine: a built-in or file profile, following the model or replaying a trace.
pub fn machine(
    plan: &Plan,
    index: u32,
    traces: &[Arc<fleetbench_collector::trace::Trace>],
) -> Machine {
    let mut machine = Machine::new(
        plan.seed,
        index,
        &plan.profiles,
        &plan.anomalies,
        &plan.custom_profiles,
    );
    if let Some(r) = plan.replay.as_ref().filter(|_| !traces.is_empty()) {
        let mut rng = SmallRng::seed_from_u64(plan.seed ^ 0x7265_706C_6179 ^ u64::from(index));
        if rng.random_bool(r.share.clamp(0.0, 1.0)) {
            let trace = traces[index as usize % traces.len()].clone();
            let offset = if r.offsets {
                rng.random_range(0.0..crate::telemetry::Replay::span_ms(&trace).max(1.0))
            } else {
                0.0
            };
            machine.replay = Some(crate::telemetry::Replay::new(
                trace,
                plan.sample_interval,
                r.time_scale,
                offset,
                r.jitter,
            ));
        }
    }
    machine
}

/// The entry of `mix` (name → share) that `roll` in [0, 1) falls on.
pub fn pick(roll: f64, mix: &[(String, f64)]) -> &str {
    let mut left = roll;
    for (name, share) in mix {
        left -= share;
        if left < 0.0 {
            return name;
        }
    }
    mix.last().map_or("rest", |(n, _)| n)
}

async fn with_retries<T, F, Fut>(
    clock: &Clock,
    operation: &'static str,
    samples: &mut Vec<fleetbench_metrics::Sample>,
    rng: &mut SmallRng,
    stop: &watch::Receiver<bool>,
    mut call: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut failures = 0;
    loop {
        let sent = clock.now_us();
        let result = call().await;
        let times = (sent, sent, clock.now_us());
        samples.push(fleetbench_metrics::Sample::new(
            operation,
            times,
            Failure::kind_of(&result),
            0,
            0,
        ));
        match result {
            Err(f) if f.retryable() && failures < 8 && !*stop.borrow() => {
                failures += 1;
                tokio::time::sleep(backoff(failures, f.retry_after(), rng)).await;
            }
            other => return other,
        }
    }
}

/// Creates an agent's user: its id, or `None` when it exists already. An agent's email and
/// password derive from the run id and its index, so an existing one is this agent's own: made
/// by an earlier attempt whose answer was lost (a timeout, a dropped connection), or by this
/// shard's earlier start. Its id then comes from the sign-in.
async fn create(
    target: &Target,
    email: &str,
    password: &str,
    run_id: &str,
) -> Result<Option<uuid::Uuid>, Failure> {
    match target.create_user(email, password, run_id).await {
        Err(Failure::Status {
            status: 422, body, ..
        }) if body.contains("email_exists") => Ok(None),
        other => other.map(Some),
    }
}

/// Creates, signs in and registers the device of agent `index`.
async fn one(
    target: Arc<Target>,
    plan: Arc<Plan>,
    run_id: String,
    index: u32,
    clock: Clock,
    stop: watch::Receiver<bool>,
    traces: Arc<Vec<Arc<fleetbench_collector::trace::Trace>>>,
) -> (Vec<fleetbench_metrics::Sample>, Result<Agent, Failure>) {
    // Samples, not an aggregate: a few per agent, added to the run's aggregate by the caller.
    let mut samples = Vec::with_capacity(3);
    let mut rng = SmallRng::seed_from_u64(plan.seed.wrapping_add(u64::from(index)));
    let (email, password) = crate::agent::credentials(&target.config.service_key, &run_id, index);
    let machine = machine(&plan, index, &traces);
    let result = async {
        let created = with_retries(
            &clock,
            "auth.admin_create_user",
            &mut samples,
            &mut rng,
            &stop,
            || create(&target, &email, &password, &run_id),
        )
        .await?;
        let session = with_retries(
            &clock,
            "auth.password",
            &mut samples,
            &mut rng,
            &stop,
            || target.sign_in_from(&email, &password, Some(crate::agent::address(index))),
        )
        .await?;
        let user_id = created.or(session.user_id).ok_or_else(|| {
            Failure::Protocol("the user existed and the sign-in did not name it".into())
        })?;
        let hostname = format!("{}-{index:06}", machine.device.form_factor);
        let device_id = with_retries(
            &clock,
            "rest.create_device",
            &mut samples,
            &mut rng,
            &stop,
            || target.create_device(session.access_token(), &machine.device, &hostname),
        )
        .await?;
        let path = if pick(rng.random(), &plan.ingest) == "pooler" {
            IngestPath::Pooler
        } else {
            IngestPath::Rest
        };
        Ok(Agent {
            index,
            user_id,
            device_id,
            machine: machine.clone(),
            path,
            session: Some(session),
            backlog: Vec::new(),
            pending_since_us: None,
            failures: 0,
            retry_at_us: 0,
            from_us: 0,
            until_us: 0,
        })
    }
    .await;
    (samples, result)
}
