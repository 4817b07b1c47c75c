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
    /// The access token (a JWT for the `authenticated` role).
    pub token: String,
    pub device: Uuid,
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
    let short = &ctx.run_id[..8.min(ctx.run_id.len())];
    let mut users: Vec<(u32, User)> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let email = format!("probe-{probe}-{i:04}-{short}@fleetbench.load.test");
            let password = format!("fbp-{}-{probe}-{i}", ctx.run_id);
            let id = ctx
                .target
                .create_user(&email, &password, &ctx.run_id)
                .await
                .map_err(|e| anyhow::anyhow!("creating probe user {email}: {e}"))?;
            let session = ctx
                .target
                .sign_in(&email, &password)
                .await
                .map_err(|e| anyhow::anyhow!("signing in probe user {email}: {e}"))?;
            let mut rng = rand::rngs::SmallRng::seed_from_u64(u64::from(i));
            let device = fleetbench_fleet::telemetry::Device::draw("desktop", &mut rng);
            let token = session.access_token().to_string();
            let device = ctx
                .target
                .create_device(&token, &device, &format!("probe-{probe}-{i}"))
                .await
                .map_err(|e| anyhow::anyhow!("creating a device for {email}: {e}"))?;
            anyhow::Ok((i, User { id, token, device }))
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
