//! The goose users: each one agent, its on-start transaction `provision` and its one transaction
//! `upload`, with the agent's session, machine model and backlog as goose session data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use fleetbench_fleet::Target;
use fleetbench_fleet::agent::{IngestPath, credentials};
use fleetbench_fleet::target::{Failure as Refused, Session, wire};
use fleetbench_fleet::telemetry::{Machine, Row};
use fleetbench_scenario::Plan;
use goose::prelude::*;
use rand::{Rng, SeedableRng};

/// What every goose user shares.
pub struct Fleet {
    pub(crate) plan: Plan,
    pub(crate) target: Target,
    pub(crate) run_id: String,
    pub(crate) traces: Vec<Arc<fleetbench_collector::trace::Trace>>,
    pub(crate) rows_sampled: AtomicU64,
    pub(crate) rows_written: AtomicU64,
    pub(crate) rows_dropped: AtomicU64,
}

/// Rows as fleetbench counts them in a goose run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCounts {
    pub sampled: u64,
    pub written: u64,
    pub dropped: u64,
}

impl Fleet {
    /// The users' shared state for one goose run (`run_id` tags the users it creates).
    pub fn new(
        plan: Plan,
        target: Target,
        run_id: String,
        traces: Vec<Arc<fleetbench_collector::trace::Trace>>,
    ) -> Fleet {
        Fleet {
            plan,
            target,
            run_id,
            traces,
            rows_sampled: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
            rows_dropped: AtomicU64::new(0),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn rows(&self) -> RowCounts {
        RowCounts {
            sampled: self.rows_sampled.load(Relaxed),
            written: self.rows_written.load(Relaxed),
            dropped: self.rows_dropped.load(Relaxed),
        }
    }
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
        value.set_sensitive(
            ["apikey", "authorization"]
                .iter()
                .any(|s| k.eq_ignore_ascii_case(s)),
        );
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
        let (email, password) = credentials(&self.target.config.service_key, &self.run_id, index);
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
    pub(crate) async fn provision(&self, user: &mut GooseUser) -> TransactionResult {
        let index = u32::try_from(user.weighted_users_index).unwrap_or(u32::MAX);
        let (email, password) = credentials(&self.target.config.service_key, &self.run_id, index);
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
    pub(crate) async fn upload(&self, user: &mut GooseUser) -> TransactionResult {
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
