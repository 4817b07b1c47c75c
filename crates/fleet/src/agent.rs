//! A virtual desktop agent: a small state machine owned by one worker, not a task of its own. It
//! holds its identity, its machine, its tokens (exactly one live refresh token) and its backlog of
//! samples not yet accepted. An upload takes the agent's session and batch into a short-lived
//! future (polled by the worker) and gives them back with the outcome; while it is out the agent is
//! `busy` and keeps sampling.
//!
//! Retries use capped exponential backoff with full jitter, or the server's `Retry-After`; a 401
//! signs in again; the access token is refreshed `refresh_margin` (± 10 %) before it expires, or
//! half its lifetime before when that is sooner ([`refresh_lead`]); a refresh or sign-in
//! that is throttled or fails for now keeps the rows for a later retry.

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
/// The address agent `index` signs in from when the project forwards client addresses: its own,
/// stable, in the benchmarking range 198.18.0.0/15 (RFC 2544), so that no real address is named.
pub fn address(index: u32) -> std::net::IpAddr {
    let base = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 1));
    std::net::IpAddr::V4((base + index % ((1 << 17) - 2)).into())
}

/// Agent `index`'s e-mail and password in run `run_id`. The e-mail names the run by a digest of
/// its whole id (two runs whose ids share a prefix never share a user); the password is
/// [`password`] keyed by the project's service key, so every shard of the run derives the same
/// one and nobody who reads the run's published files can.
pub fn credentials(service_key: &str, run_id: &str, index: u32) -> (String, String) {
    (
        format!("agent-{index:06}-{}@fleetbench.load.test", run_tag(run_id)),
        password(service_key, run_id, &format!("agent-{index}")),
    )
}

/// The run's tag in its users' e-mails: 16 hex digits of SHA-256 of its id.
pub fn run_tag(run_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, run_id.as_bytes());
    hex(&digest.as_ref()[..8])
}

/// The password of user `who` (`agent-7`, `probe-rls-0003`) in run `run_id`: HMAC-SHA-256 keyed by
/// the service key over the run and the user, 32 hex digits. The service key is a secret no run
/// file, log or label carries; the run id is published everywhere, so it cannot be the secret.
pub fn password(service_key: &str, run_id: &str, who: &str) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, service_key.as_bytes());
    let tag = hmac::sign(
        &key,
        format!("fleetbench password\0{run_id}\0{who}").as_bytes(),
    );
    hex(&tag.as_ref()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
) -> Result<Session, Failure> {
    let (email, password) = credentials(&target.config.service_key, run_id, index);
    let (r, s) = Box::pin(timed(
        clock,
        "auth.password",
        clock.now_us(),
        0,
        0,
        target.sign_in_from(&email, &password, Some(address(index))),
    ))
    .await;
    samples.push(s);
    r
}

/// How long before its expiry a token with `lifetime_s` to live in all is refreshed: `margin`, or
/// half its lifetime when that is sooner (a 30 s token is refreshed every ~15 s, not before every
/// upload; an hour's token `margin` before the hour is up).
pub fn refresh_lead(margin: Duration, lifetime_s: i64) -> f64 {
    margin.as_secs_f64().min(lifetime_s.max(0) as f64 / 2.0)
}

impl Upload {
    /// Refresh if due, upload, and on 401 sign in once and upload again. Rows come back unsent,
    /// to be retried, whenever the refusal is one a retry can change: a rate-limited or failed
    /// refresh or sign-in included.
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
        let lead = refresh_lead(refresh_margin, session.lifetime_s);
        if (session.expires_at - chrono::Utc::now().timestamp()) as f64 <= lead {
            let refreshed = refresh(target, clock, &run_id, index, &session, &mut samples).await;
            match refreshed {
                Ok(next) => session = next,
                // Throttled or failed, and the old token is no good any more: try again later.
                Err(f) if f.retryable() && session.expires_at <= chrono::Utc::now().timestamp() => {
                    return Attempt::failed(index, intended_us, session, rows, f, samples);
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
        if let Err(Failure::Status { status: 401, .. }) = result {
            match sign_in_again(target, clock, &run_id, index, &mut samples).await {
                Ok(next) => {
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
                // A sign-in throttled or failed for now: the rows wait for it, not the bin.
                Err(f) if f.retryable() => result = Err(f),
                Err(_) => {}
            }
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
            Err(f) => Attempt::failed(index, intended_us, session, rows, f, samples),
        }
    }
}

/// The refresh grant, timed into `samples`; a refresh token the server no longer honours (400)
/// means signing in again.
async fn refresh(
    target: &Target,
    clock: &crate::Clock,
    run_id: &str,
    index: u32,
    session: &Session,
    samples: &mut Vec<Sample>,
) -> Result<Session, Failure> {
    let (r, s) = Box::pin(timed(
        clock,
        "auth.refresh",
        clock.now_us(),
        0,
        0,
        target.refresh_from(&session.refresh_token, Some(address(index))),
    ))
    .await;
    samples.push(s);
    match r {
        Err(Failure::Status { status: 400, .. }) => {
            sign_in_again(target, clock, run_id, index, samples).await
        }
        r => r,
    }
}

impl Attempt {
    fn failed(
        index: u32,
        intended_us: u64,
        session: Session,
        unsent: Vec<Row>,
        failure: Failure,
        samples: Vec<Sample>,
    ) -> Attempt {
        Attempt {
            index,
            intended_us,
            session,
            unsent,
            rows_written: 0,
            failure: Some(failure),
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Everything a run publishes (its id, the agents' e-mails and indices) does not give an
    /// agent's password; shards holding the same key agree on it.
    #[test]
    fn passwords_need_the_key_and_ids_sharing_a_prefix_share_no_user() {
        let run = "3f9c2a71-0d4e-4b8a-9c1e-5a6b7c8d9e0f";
        let (email, secret) = credentials("sb_secret_one", run, 7);
        assert_eq!(
            (email.clone(), secret.clone()),
            credentials("sb_secret_one", run, 7)
        );
        assert_ne!(secret, credentials("sb_secret_two", run, 7).1);
        assert_ne!(secret, credentials("sb_secret_one", run, 8).1);
        assert_eq!(secret.len(), 32);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
        // Nothing of the run id in it (the old `fb-<run id>-<index>` was all published facts).
        assert!(!secret.contains("fb-") && !secret.contains(&run[..8]));
        // Two run ids sharing their first 8 characters name different users.
        let other = "3f9c2a71-ffff-4b8a-9c1e-5a6b7c8d9e0f";
        assert_ne!(email, credentials("sb_secret_one", other, 7).0);
        assert!(email.starts_with("agent-000007-") && email.len() < 64);
    }

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

    #[test]
    fn short_tokens_are_refreshed_once_per_half_lifetime_not_per_upload() {
        let margin = Duration::from_secs(60);
        assert_eq!(refresh_lead(margin, 3600), 60.0);
        assert_eq!(refresh_lead(margin, 30), 15.0);
        assert_eq!(refresh_lead(margin, 0), 0.0);
    }
}
