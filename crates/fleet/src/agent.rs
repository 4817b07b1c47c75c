//! A virtual desktop agent: a small state machine owned by one worker, not a task of its own. It
//! holds its identity, its machine, its tokens (exactly one live refresh token) and its backlog of
//! samples not yet accepted. An upload takes the agent's session and batch into a short-lived
//! future (polled by the worker) and gives them back with the outcome; while it is out the agent is
//! `busy` and keeps sampling.
//!
//! Retries use capped exponential backoff with full jitter, or the server's `Retry-After`; a 401
//! signs in again; the access token is refreshed `refresh_margin` (± 10 %) before it expires.

use std::time::Duration;

use fleetbench_metrics::Sample;
use rand::Rng;
use rand::rngs::SmallRng;

use uuid::Uuid;

use crate::target::{Failure, Session, Target};
use crate::telemetry::{Machine, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestPath {
    Rest,
    Pooler,
}

impl IngestPath {
    pub fn operation(self) -> &'static str {
        match self {
            IngestPath::Rest => "rest.insert_metrics",
            IngestPath::Pooler => "pooler.insert_metrics",
        }
    }
}

pub struct Agent {
    pub index: u32,
    pub user_id: Uuid,
    pub device_id: Uuid,
    pub machine: Machine,
    pub path: IngestPath,
    /// `None` while an upload holds it.
    pub session: Option<Session>,
    /// Samples taken and not yet accepted by the target, oldest first.
    pub backlog: Vec<Row>,
    /// The intended start of the upload that will carry the backlog's oldest rows.
    pub pending_since_us: Option<u64>,
    pub failures: u32,
    /// No new attempt before this (backoff).
    pub retry_at_us: u64,
    /// Active on `[from_us, until_us)` of the load phase.
    pub from_us: u64,
    pub until_us: u64,
}

impl Agent {
    pub fn busy(&self) -> bool {
        self.session.is_none()
    }
}

/// An agent's sign-in: derived from the run and the agent's index, so 100,000 idle agents do not
/// each keep two strings.
pub fn credentials(run_id: &str, index: u32) -> (String, String) {
    let short = &run_id[..8.min(run_id.len())];
    (
        format!("agent-{index:06}-{short}@fleetbench.load.test"),
        format!("fb-{run_id}-{index}"),
    )
}

/// Full-jitter exponential backoff, capped at 30 s, or the server's `Retry-After` if larger.
pub fn backoff(failures: u32, retry_after: Option<Duration>, rng: &mut SmallRng) -> Duration {
    let cap = Duration::from_secs(30);
    let ceiling = Duration::from_millis(250)
        .saturating_mul(1u32 << failures.min(10))
        .min(cap);
    let jittered = ceiling.mul_f64(rng.random::<f64>());
    retry_after.map_or(jittered, |r| r.max(jittered))
}

/// What an upload hands back.
pub struct Attempt {
    pub index: u32,
    /// The intended start of the upload (the tick its oldest rows were due at).
    pub intended_us: u64,
    pub session: Session,
    /// Rows the target did not accept (empty on success).
    pub unsent: Vec<Row>,
    pub rows_written: u64,
    pub failure: Option<Failure>,
    pub samples: Vec<Sample>,
}

/// Everything one upload needs, moved into its future.
pub struct Upload {
    pub index: u32,
    /// With the index, the agent's credentials should it have to sign in again.
    pub run_id: std::sync::Arc<str>,
    pub path: IngestPath,
    pub session: Session,
    pub rows: Vec<Row>,
    pub intended_us: u64,
    /// Refresh when the token expires within this (already jittered).
    pub refresh_margin: Duration,
}

async fn timed<T>(
    clock: &crate::Clock,
    operation: &'static str,
    intended_us: u64,
    rows: u64,
    bytes: u64,
    call: impl std::future::Future<Output = Result<T, Failure>>,
) -> (Result<T, Failure>, Sample) {
    let sent_us = clock.now_us();
    let result = call.await;
    let times = (intended_us.min(sent_us), sent_us, clock.now_us());
    let sample = Sample::new(operation, times, Failure::kind_of(&result), rows, bytes);
    (result, sample)
}

/// One batch on `path`, timed from `intended_us`: rows written.
async fn insert(
    target: &Target,
    clock: &crate::Clock,
    path: IngestPath,
    session: &Session,
    intended_us: u64,
    rows: u64,
    body: bytes::Bytes,
) -> (Result<u64, Failure>, Sample) {
    let bytes = body.len() as u64;
    let sent_us = clock.now_us();
    let result = match path {
        IngestPath::Rest => target
            .insert_rest(session.bearer(), body)
            .await
            .map(|()| rows),
        IngestPath::Pooler => Box::pin(target.insert_pooler(body)).await,
    };
    let times = (intended_us.min(sent_us), sent_us, clock.now_us());
    let sample = Sample::new(
        path.operation(),
        times,
        Failure::kind_of(&result),
        rows,
        bytes,
    );
    (result, sample)
}

/// A password sign-in with the agent's own credentials, timed into `samples`: the way back when
/// the server refuses the agent's refresh token (400) or its access token (401).
async fn sign_in_again(
    target: &Target,
    clock: &crate::Clock,
    run_id: &str,
    index: u32,
    samples: &mut Vec<Sample>,
) -> Option<Session> {
    let (email, password) = credentials(run_id, index);
    let (r, s) = Box::pin(timed(
        clock,
        "auth.password",
        clock.now_us(),
        0,
        0,
        target.sign_in(&email, &password),
    ))
    .await;
    samples.push(s);
    r.ok()
}

impl Upload {
    /// Refresh if due, upload, and on 401 sign in once and upload again.
    pub async fn run(self, target: &Target, clock: &crate::Clock) -> Attempt {
        let Upload {
            index,
            run_id,
            path,
            mut session,
            rows,
            intended_us,
            refresh_margin,
        } = self;
        let mut samples = Vec::with_capacity(1);
        let now_s = chrono::Utc::now().timestamp();
        if session.expires_at - now_s <= refresh_margin.as_secs() as i64 {
            let (r, s) = Box::pin(timed(
                clock,
                "auth.refresh",
                clock.now_us(),
                0,
                0,
                target.refresh(&session.refresh_token),
            ))
            .await;
            samples.push(s);
            match r {
                Ok(next) => session = next,
                // A refresh token the server no longer honours: sign in again.
                Err(Failure::Status { status: 400, .. }) => {
                    if let Some(next) =
                        sign_in_again(target, clock, &run_id, index, &mut samples).await
                    {
                        session = next;
                    }
                }
                Err(_) => {}
            }
        }
        let body = bytes::Bytes::from(crate::body::rows_json(&rows));
        // Futures are moved when they are boxed: the upload's own future stays small, with the
        // rare and the large paths boxed.
        let (mut result, s) = insert(
            target,
            clock,
            path,
            &session,
            intended_us,
            rows.len() as u64,
            body.clone(),
        )
        .await;
        samples.push(s);
        if let Err(Failure::Status { status: 401, .. }) = result
            && let Some(next) = sign_in_again(target, clock, &run_id, index, &mut samples).await
        {
            session = next;
            let (retry, s) = Box::pin(insert(
                target,
                clock,
                path,
                &session,
                clock.now_us(),
                rows.len() as u64,
                body,
            ))
            .await;
            samples.push(s);
            result = retry;
        }
        match result {
            Ok(written) => Attempt {
                index,
                intended_us,
                session,
                unsent: Vec::new(),
                rows_written: written,
                failure: None,
                samples,
            },
            Err(f) => Attempt {
                index,
                intended_us,
                session,
                unsent: rows,
                rows_written: 0,
                failure: Some(f),
                samples,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_is_capped_jittered_and_honours_retry_after() {
        let mut rng = SmallRng::seed_from_u64(1);
        for failures in 0..40 {
            let d = backoff(failures, None, &mut rng);
            assert!(d <= Duration::from_secs(30));
            assert!(d <= Duration::from_millis(250) * (1 << failures.min(10)));
        }
        let spread: Vec<Duration> = (0..100).map(|_| backoff(3, None, &mut rng)).collect();
        assert!(
            spread.iter().any(|d| *d < Duration::from_millis(500))
                && spread.iter().any(|d| *d > Duration::from_millis(1500))
        );
        assert!(backoff(0, Some(Duration::from_secs(7)), &mut rng) >= Duration::from_secs(7));
    }
}
