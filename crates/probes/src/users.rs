//! Probe users: created through the Auth admin API with the run's id in their app metadata (so the
//! run's cleanup removes them and every row they own), signed in, each with one device.

use anyhow::Context as _;
use futures_util::StreamExt;
use rand::SeedableRng;
use uuid::Uuid;

use crate::Context;

#[derive(Clone)]
pub struct User {
    pub id: Uuid,
    pub device: Uuid,
    /// The address it signs in and refreshes as, when the project forwards addresses.
    address: std::net::IpAddr,
    /// Shared by every clone: a refresh is seen by all.
    tokens: std::sync::Arc<Tokens>,
}

/// A probe user's session: the access token (a JWT for the `authenticated` role) its requests and
/// channels carry, and what refreshing it takes.
struct Tokens {
    access: std::sync::RwLock<String>,
    refresh: std::sync::Mutex<String>,
    /// Unix seconds, and the lifetime the token had when it arrived.
    expires: std::sync::Mutex<(i64, i64)>,
}

/// Probe users sign in as their own addresses when the project forwards them: from the top of the
/// fleet's range (`agent::address`), away from the first 120,000 agents.
fn address(i: u32) -> std::net::IpAddr {
    fleetbench_fleet::agent::address(120_000 + i)
}

/// Attempts of a `/token` call answered 429 before the probe gives up.
const TOKEN_ATTEMPTS: u32 = 6;

/// A `/token` call retried while GoTrue answers 429. GoTrue sends no `Retry-After`: the wait grows
/// by 2 s an attempt (the hosted bucket refills one call every 2 s), and the target's `/token`
/// budget, when the limit is known, paces the retry as well.
async fn patiently<T, F, Fut>(mut call: F) -> Result<T, fleetbench_fleet::target::Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, fleetbench_fleet::target::Failure>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(fleetbench_fleet::target::Failure::Status { status: 429, .. })
                if attempt < TOKEN_ATTEMPTS =>
            {
                tokio::time::sleep(std::time::Duration::from_secs(2 * u64::from(attempt))).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Refresh this long before expiry at most (less for short-lived tokens), as the fleet does.
const REFRESH_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

impl User {
    fn new(
        id: Uuid,
        device: Uuid,
        address: std::net::IpAddr,
        session: &fleetbench_fleet::target::Session,
    ) -> User {
        User {
            id,
            device,
            address,
            tokens: std::sync::Arc::new(Tokens {
                access: std::sync::RwLock::new(session.access_token().to_string()),
                refresh: std::sync::Mutex::new(session.refresh_token.clone()),
                expires: std::sync::Mutex::new((session.expires_at, session.lifetime_s)),
            }),
        }
    }

    /// The current access token.
    pub fn token(&self) -> String {
        self.tokens.access.read().expect("token lock").clone()
    }

    /// Refreshes the session when it is due (half its lifetime left, or a minute): the new access
    /// token, or none when it was not due.
    pub async fn refresh_if_due(
        &self,
        target: &fleetbench_fleet::Target,
    ) -> Result<Option<String>, fleetbench_fleet::target::Failure> {
        let from = Some(self.address);
        let (expires_at, lifetime) = *self.tokens.expires.lock().expect("token lock");
        let lead = fleetbench_fleet::agent::refresh_lead(REFRESH_MARGIN, lifetime);
        if (expires_at - chrono::Utc::now().timestamp()) as f64 > lead {
            return Ok(None);
        }
        let refresh = self.tokens.refresh.lock().expect("token lock").clone();
        let next = patiently(|| target.refresh_from(&refresh, from)).await?;
        let access = next.access_token().to_string();
        *self.tokens.access.write().expect("token lock") = access.clone();
        *self.tokens.refresh.lock().expect("token lock") = next.refresh_token.clone();
        *self.tokens.expires.lock().expect("token lock") = (next.expires_at, next.lifetime_s);
        Ok(Some(access))
    }
}

/// Without the token.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "User {{ id: {}, device: {}, <token redacted> }}",
            self.id, self.device
        )
    }
}

/// `n` users for probe `probe`, eight provisioned at a time.
pub async fn provision(ctx: &Context, probe: &str, n: u32) -> anyhow::Result<Vec<User>> {
    let tag = fleetbench_fleet::agent::run_tag(&ctx.run_id);
    let tag = &tag;
    let mut users: Vec<(u32, User)> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let email = format!("probe-{probe}-{i:04}-{tag}@fleetbench.load.test");
            let password = fleetbench_fleet::agent::password(
                &ctx.target.config.service_key,
                &ctx.run_id,
                &format!("probe-{probe}-{i}"),
            );
            let id = ctx
                .target
                .create_user(&email, &password, &ctx.run_id)
                .await
                .map_err(|e| anyhow::anyhow!("creating probe user {email}: {e}"))?;
            let from = Some(address(i));
            let session = patiently(|| ctx.target.sign_in_from(&email, &password, from))
                .await
                .map_err(|e| anyhow::anyhow!("signing in probe user {email}: {e}"))?;
            let mut rng = rand::rngs::SmallRng::seed_from_u64(u64::from(i));
            let device = fleetbench_fleet::telemetry::Device::draw("desktop", &mut rng);
            let device = ctx
                .target
                .create_device(
                    session.access_token(),
                    &device,
                    &format!("probe-{probe}-{i}"),
                )
                .await
                .map_err(|e| anyhow::anyhow!("creating a device for {email}: {e}"))?;
            anyhow::Ok((i, User::new(id, device, address(i), &session)))
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .context("provisioning probe users")?;
    users.sort_by_key(|(i, _)| *i);
    Ok(users.into_iter().map(|(_, u)| u).collect())
}
