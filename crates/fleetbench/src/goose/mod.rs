//! `fleetbench goose SCENARIO -- <goose flags>` (cargo feature `goose`, on by default): the
//! scenario's agents as goose 0.19 users, so that goose's command line, console, reports,
//! thresholds and baselines measure them.
//!
//! Each goose user is one agent. Its on-start transaction provisions it as the engine does (an
//! admin-created user tagged with the run, a password sign-in, its device), and its one
//! transaction, `upload`, samples a batch from the same telemetry model (or trace) and sends it on
//! the agent's ingestion path: refreshed before the token expires, signed in again on 401. HTTP
//! goes through goose's own client and is timed by goose; the pooler path's SQL is timed here and
//! recorded with `record_custom_request_duration` as `PG pooler.insert_metrics`. Request bodies
//! and answers are the engine's own ([`fleetbench_fleet::target::wire`]).
//!
//! What goose does differently (README, "goose"): it is a closed loop only (a user's next upload
//! starts `think_time` after the last one ended, whatever the stages say about rates), it times an
//! HTTP request to the response headers, and a failed upload is retried at the next iteration
//! rather than after a backoff.
//!
//! `--cross-check` runs the same closed workload (`load.model = "closed"` with
//! `workload.iterations`) with fleetbench's engine and then with goose against the same target,
//! and compares them operation by operation: request counts must be equal, medians and 99th
//! percentiles within `--tolerance` of each other (or `--min-delta` apart): [`cross_check`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use anyhow::Context;
use fleetbench_fleet::Target;
use fleetbench_fleet::agent::{IngestPath, credentials};
use fleetbench_fleet::target::{Failure as Refused, Session, wire};
use fleetbench_fleet::telemetry::{Machine, Row};
use fleetbench_scenario::{LoadModel, Plan};
use goose::config::GooseConfiguration;
use goose::prelude::*;
use rand::{Rng, SeedableRng};

use crate::{CommandError, run, target};

mod cross_check;

pub use crate::GooseArgs as Args;

/// What every goose user shares.
struct Fleet {
    plan: Plan,
    target: Target,
    run_id: String,
    traces: Vec<Arc<fleetbench_collector::trace::Trace>>,
    rows_sampled: AtomicU64,
    rows_written: AtomicU64,
    rows_dropped: AtomicU64,
}

/// One agent's state, as goose session data (which must be `Clone`).
#[derive(Clone)]
struct Seat(Arc<tokio::sync::Mutex<Agent>>);

struct Agent {
    index: u32,
    user_id: uuid::Uuid,
    device_id: uuid::Uuid,
    machine: Machine,
    path: IngestPath,
    session: Session,
    /// Rows sampled and not yet accepted, oldest first.
    backlog: Vec<Row>,
}

fn refused(what: &str, e: &Refused) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(format!("{what}: {e}")))
}

/// A JSON POST through goose's client, named `name` in goose's metrics: the status and the body.
async fn post(
    user: &mut GooseUser,
    name: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, String), Box<TransactionError>> {
    let mut builder = user
        .get_request_builder(&GooseMethod::Post, path)?
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        // Keys and tokens are marked sensitive: goose's request, debug and error logs print
        // headers, and a sensitive value prints as `Sensitive`.
        let mut value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
            Box::new(TransactionError::Custom(format!(
                "{name}: a header value is not valid"
            )))
        })?;
        value.set_sensitive(matches!(*k, "apikey" | "authorization"));
        builder = builder.header(*k, value);
    }
    let request = GooseRequest::builder()
        .method(GooseMethod::Post)
        .path(path)
        .name(name)
        .set_request_builder(builder)
        .build();
    let answer = user.request(request).await?;
    let response = answer.response.map_err(|e| {
        Box::new(TransactionError::Custom(format!(
            "{name}: no answer ({})",
            if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            }
        )))
    })?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((status, text))
}

fn status_error(name: &str, status: u16, body: &str) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(format!(
        "{name}: HTTP {status}: {}",
        body.chars().take(200).collect::<String>()
    )))
}

fn to_json(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value serialises")
}

impl Fleet {
    async fn sign_in(
        &self,
        user: &mut GooseUser,
        index: u32,
    ) -> Result<Session, Box<TransactionError>> {
        let (email, password) = credentials(&self.run_id, index);
        let (status, body) = post(
            user,
            "auth.password",
            "/auth/v1/token?grant_type=password",
            &[("apikey", &self.target.config.anon_key)],
            to_json(&wire::password(&email, &password)),
        )
        .await?;
        if status >= 400 {
            return Err(status_error("auth.password", status, &body));
        }
        wire::session(&body).map_err(|e| refused("auth.password", &e))
    }

    /// The on-start transaction: the agent's user, sign-in and device.
    async fn provision(&self, user: &mut GooseUser) -> TransactionResult {
        let index = u32::try_from(user.weighted_users_index).unwrap_or(u32::MAX);
        let (email, password) = credentials(&self.run_id, index);
        let machine = fleetbench_fleet::provision::machine(&self.plan, index, &self.traces);
        let bearer = format!("Bearer {}", self.target.config.service_key);
        let (status, body) = post(
            user,
            "auth.admin_create_user",
            "/auth/v1/admin/users",
            &[
                ("apikey", &self.target.config.service_key),
                ("authorization", &bearer),
            ],
            to_json(&wire::admin_user(&email, &password, &self.run_id)),
        )
        .await?;
        if status >= 400 {
            return Err(status_error("auth.admin_create_user", status, &body));
        }
        let user_id = wire::id(&body, "admin user").map_err(|e| refused("admin user", &e))?;
        let session = self.sign_in(user, index).await?;
        let hostname = format!("{}-{index:06}", machine.device.form_factor);
        let bearer = format!("Bearer {}", session.access_token());
        let (status, body) = post(
            user,
            "rest.create_device",
            "/rest/v1/devices",
            &[
                ("apikey", &self.target.config.anon_key),
                ("authorization", &bearer),
                ("prefer", "return=representation"),
                ("accept", "application/vnd.pgrst.object+json"),
            ],
            to_json(&wire::device(&machine.device, &hostname)),
        )
        .await?;
        if status >= 400 {
            return Err(status_error("rest.create_device", status, &body));
        }
        let device_id = wire::id(&body, "device").map_err(|e| refused("device", &e))?;
        let mut roll = rand::rngs::SmallRng::seed_from_u64(self.plan.seed ^ u64::from(index));
        let path =
            if fleetbench_fleet::provision::pick(roll.random(), &self.plan.ingest) == "pooler" {
                IngestPath::Pooler
            } else {
                IngestPath::Rest
            };
        user.set_session_data(Seat(Arc::new(tokio::sync::Mutex::new(Agent {
            index,
            user_id,
            device_id,
            machine,
            path,
            session,
            backlog: Vec::new(),
        }))));
        Ok(())
    }

    /// The repeated transaction: one upload interval's samples, sent.
    async fn upload(&self, user: &mut GooseUser) -> TransactionResult {
        let Some(seat) = user.get_session_data::<Seat>().cloned() else {
            // Provisioning failed for this user: nothing to upload as.
            return Err(Box::new(TransactionError::Custom(
                "upload: the agent was not provisioned".into(),
            )));
        };
        let mut agent = seat.0.lock().await;
        self.sample(&mut agent);
        let margin = self
            .plan
            .refresh_margin
            .mul_f64(1.0 + rand::rng().random_range(0.0..0.1));
        if agent.session.expires_at - chrono::Utc::now().timestamp() <= margin.as_secs() as i64 {
            self.refresh(user, &mut agent).await?;
        }
        // At most 1000 rows per request (the Data API's max_rows); the rest go next time.
        let take = agent.backlog.len().min(1000);
        let body = fleetbench_fleet::body::rows_json(&agent.backlog[..take]);
        let result = match agent.path {
            IngestPath::Rest => {
                let mut result = self.insert_rest(user, &agent.session, body.clone()).await?;
                if matches!(result, Err(Refused::Status { status: 401, .. })) {
                    agent.session = self.sign_in(user, agent.index).await?;
                    result = self.insert_rest(user, &agent.session, body).await?;
                }
                result
            }
            IngestPath::Pooler => {
                let started = Instant::now();
                let result = self.target.insert_pooler(body.into()).await.map(|_| ());
                let error = result.as_ref().err().map(Refused::kind);
                user.record_custom_request_duration(
                    "PG",
                    "pooler.insert_metrics",
                    started.elapsed(),
                    result.is_ok(),
                    None,
                    error.as_deref(),
                )
                .await?;
                result
            }
        };
        match result {
            Ok(()) => {
                agent.backlog.drain(..take);
                self.rows_written.fetch_add(take as u64, Relaxed);
                Ok(())
            }
            Err(e) => {
                if !e.retryable() {
                    // Refused for good: retrying cannot help (as the engine, dropped and counted).
                    agent.backlog.drain(..take);
                    self.rows_dropped.fetch_add(take as u64, Relaxed);
                }
                Err(refused("upload", &e))
            }
        }
    }

    /// One upload interval of samples into the backlog (the oldest dropped beyond the cap).
    fn sample(&self, agent: &mut Agent) {
        let n = self.plan.batch_rows;
        let now = chrono::Utc::now();
        for i in 0..n {
            let back = self.plan.sample_interval * (n - 1 - i);
            let ts = now - chrono::Duration::from_std(back).unwrap_or_default();
            let (device, user) = (agent.device_id, agent.user_id);
            let row = agent.machine.sample(device, user, ts);
            agent.backlog.push(row);
        }
        self.rows_sampled.fetch_add(u64::from(n), Relaxed);
        let max = self.plan.max_backlog_rows.max(n) as usize;
        if agent.backlog.len() > max {
            let excess = agent.backlog.len() - max;
            agent.backlog.drain(..excess);
            self.rows_dropped.fetch_add(excess as u64, Relaxed);
        }
    }

    /// The refresh grant; a refresh token the server no longer honours means signing in again.
    async fn refresh(&self, user: &mut GooseUser, agent: &mut Agent) -> TransactionResult {
        let (status, body) = post(
            user,
            "auth.refresh",
            "/auth/v1/token?grant_type=refresh_token",
            &[("apikey", &self.target.config.anon_key)],
            to_json(&wire::refresh(&agent.session.refresh_token)),
        )
        .await?;
        agent.session = match status {
            400 => self.sign_in(user, agent.index).await?,
            s if s >= 400 => return Err(status_error("auth.refresh", s, &body)),
            _ => wire::session(&body).map_err(|e| refused("auth.refresh", &e))?,
        };
        Ok(())
    }

    /// A batch through the Data API: the outcome as the engine classifies it.
    async fn insert_rest(
        &self,
        user: &mut GooseUser,
        session: &Session,
        body: Vec<u8>,
    ) -> Result<Result<(), Refused>, Box<TransactionError>> {
        let bearer = session.bearer().to_str().unwrap_or_default().to_string();
        let (status, text) = post(
            user,
            "rest.insert_metrics",
            "/rest/v1/system_metrics",
            &[
                ("apikey", &self.target.config.anon_key),
                ("authorization", &bearer),
                ("prefer", "return=minimal"),
            ],
            body,
        )
        .await?;
        Ok(match status {
            201 => Ok(()),
            s if s >= 400 => Err(Refused::Status {
                status: s,
                retry_after: None,
                body: text,
            }),
            s => Err(Refused::Protocol(format!("insert answered {s}, not 201"))),
        })
    }
}

/// Goose's own flags, read before anything is sent (`-- --help` prints goose's help).
fn parse_flags(flags: &[String]) -> Result<Option<GooseConfiguration>, CommandError> {
    if flags.iter().any(|f| f == "--help" || f == "-h") {
        let mut help = <GooseConfiguration as clap::CommandFactory>::command()
            .name("fleetbench goose SCENARIO --");
        help.print_long_help()?;
        return Ok(None);
    }
    GooseConfiguration::parse_args_default(flags)
        .map(Some)
        .map_err(|e| {
            CommandError::invalid(anyhow::anyhow!(
                "goose's flags (after --): {e}; `fleetbench goose SCENARIO -- --help` lists them"
            ))
        })
}

/// What goose's flags leave unset, taken from the scenario.
fn configure(
    mut config: GooseConfiguration,
    flags: &[String],
    plan: &Plan,
    api_url: &str,
    out: &std::path::Path,
) -> GooseConfiguration {
    config.host.get_or_insert_with(|| api_url.to_string());
    config.users.get_or_insert(plan.agents as usize);
    if config.increase_rate.is_none() && config.increase_time.is_none() {
        // The first stage's ramp to its level, or everyone within a second.
        let (end, level) = plan.stages.first().copied().unwrap_or_default();
        let rate = (level / end.as_secs_f64().max(1.0)).max(1.0);
        config.increase_rate = Some(format!("{rate:.3}"));
    }
    let planned = flags
        .iter()
        .any(|f| f == "--test-plan" || f.starts_with("--test-plan="));
    if !planned && config.run_time.is_none() && config.iterations.is_none() {
        match plan.iterations {
            Some(n) => config.iterations = Some(n as usize),
            None => {
                config.run_time = Some(format!("{}s", plan.duration().as_secs().max(1)));
                // Everything the users did, starting included: as fleetbench counts.
                config.no_reset_metrics = true;
            }
        }
    }
    if config.report_file.is_empty() {
        for name in ["goose-report.html", "goose-report.json"] {
            config
                .report_file
                .push(out.join(name).display().to_string());
        }
    }
    config
        .timeout
        .get_or_insert_with(|| format!("{:.3}", plan.request_timeout.as_secs_f64()));
    // Two processes (or tests) at once must not fight over goose's controller ports.
    config.no_telnet = true;
    config.no_websocket = true;
    config
}

/// The goose attack for `fleet`: one scenario, the agents' two transactions.
async fn attack(
    fleet: Arc<Fleet>,
    config: GooseConfiguration,
) -> Result<goose::metrics::GooseMetrics, CommandError> {
    let provision: TransactionFunction = {
        let fleet = fleet.clone();
        Arc::new(move |user| {
            let fleet = fleet.clone();
            Box::pin(async move { fleet.provision(user).await })
        })
    };
    let upload: TransactionFunction = {
        let fleet = fleet.clone();
        Arc::new(move |user| {
            let fleet = fleet.clone();
            Box::pin(async move { fleet.upload(user).await })
        })
    };
    let mut agents = scenario!("DesktopAgent")
        .register_transaction(
            Transaction::new(provision)
                .set_name("provision")
                .set_on_start(),
        )
        .register_transaction(Transaction::new(upload).set_name("upload"));
    // A closed loop pauses its think time; agents upload once an interval, which goose's loop
    // can only approach as a pause of one interval after each upload (there is no rate in goose).
    let think = match fleet.plan.model {
        LoadModel::Closed => fleet.plan.think_time,
        LoadModel::Agents | LoadModel::ArrivalRate => fleet.plan.upload_interval,
    };
    if !think.is_zero() {
        agents = agents
            .set_wait_time(think, think)
            .map_err(|e| anyhow::anyhow!("goose: {e}"))?;
    }
    let metrics = GooseAttack::initialize_with_config(config)
        .map_err(|e| anyhow::anyhow!("goose: {e}"))?
        .register_scenario(agents)
        .execute()
        .await;
    match metrics {
        Ok(m) => Ok(m),
        // Every report was written; the thresholds decide the exit code, as `run`'s do.
        Err(GooseError::ThresholdsFailed { failed, .. }) => Err(CommandError {
            code: crate::EXIT_THRESHOLDS,
            error: anyhow::anyhow!(
                "goose thresholds failed: {}",
                failed
                    .iter()
                    .map(|t| format!("{} (observed {})", t.rule, t.observed))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }),
        Err(e) => Err(anyhow::anyhow!("goose: {e}").into()),
    }
}

pub fn goose(args: Args) -> Result<(), CommandError> {
    let (plan, _) = run::load(&args.scenario, &args.overrides)?;
    let Some(flags) = parse_flags(&args.goose)? else {
        return Ok(());
    };
    if args.cross_check && (plan.model != LoadModel::Closed || plan.iterations.is_none()) {
        return Err(CommandError::invalid(anyhow::anyhow!(
            "--cross-check needs a workload both can count exactly: load.model = \"closed\" and workload.iterations \
             (e.g. --set load.model=closed --set workload.iterations=20)"
        )));
    }
    let traces = fleetbench_fleet::provision::load_traces(&plan)
        .map_err(|e| CommandError::invalid(anyhow::anyhow!(e)))?;
    target::check_caps(f64::from(plan.agents), plan.peak_rate(), plan.duration())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::out_dir::default_out(&format!("{}-goose", plan.name)));
    crate::out_dir::writable(&out)?;
    let needs_pooler = plan
        .ingest
        .iter()
        .any(|(p, share)| p == "pooler" && *share > 0.0);
    let resolved = target::resolve_allowed(needs_pooler, &plan.allow_hosts)?;
    let api_url = resolved.config.api_url.clone();
    let config = configure(flags, &args.goose, &plan, &api_url, &out);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let ours = if args.cross_check {
            Some(cross_check::engine_run(&plan, &resolved).await?)
        } else {
            None
        };
        let run_id = uuid::Uuid::new_v4().to_string();
        eprintln!(
            "goose {run_id}: {} against {} {} as goose users",
            plan.name,
            resolved.config.kind,
            target::redact(&api_url)
        );
        let fleet = Arc::new(Fleet {
            target: Target::new(resolved.config.clone(), 16, 1, plan.request_timeout)
                .map_err(|e| anyhow::anyhow!(e))?,
            plan: plan.clone(),
            run_id: run_id.clone(),
            traces,
            rows_sampled: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            rows_dropped: AtomicU64::new(0),
        });
        let result = attack(fleet.clone(), config).await;
        eprintln!(
            "goose: rows sampled {}, written {}, dropped {}",
            fleet.rows_sampled.load(Relaxed),
            fleet.rows_written.load(Relaxed),
            fleet.rows_dropped.load(Relaxed)
        );
        write_rows(&out, &fleet)?;
        if plan.cleanup {
            let cleanup = fleetbench_runner::finish::clean(&resolved, &run_id).await;
            eprintln!("{}", cleanup.describe("goose", &run_id));
        }
        let metrics = result?;
        for name in ["goose-report.html", "goose-report.json"] {
            if out.join(name).exists() {
                println!("{}", out.join(name).display());
            }
        }
        if let Some(ours) = ours {
            cross_check::compare(&ours, &metrics, &args, &out)?;
        }
        Ok::<(), CommandError>(())
    })
}

/// fleetbench's account of the goose run's rows, beside goose's reports.
fn write_rows(out: &std::path::Path, fleet: &Fleet) -> anyhow::Result<()> {
    let rows = serde_json::json!({
        "run_id": fleet.run_id,
        "rows_sampled": fleet.rows_sampled.load(Relaxed),
        "rows_written": fleet.rows_written.load(Relaxed),
        "rows_dropped": fleet.rows_dropped.load(Relaxed),
    });
    let path = out.join("goose-rows.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&rows)?)
        .with_context(|| format!("writing {}", path.display()))
}
