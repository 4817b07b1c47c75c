//! Which Supabase the run targets (INTERFACE.md): `SUPABASE_URL` and its keys from the environment,
//! or else the embedded local stack, brought up and migrated on demand. Secrets stay in
//! [`fleetbench_fleet::TargetConfig`]; what is shown is the redacted URL.

use std::path::Path;

use anyhow::Context;
use fleetbench_fleet::TargetConfig;

use crate::{Failure, local, migrate};

pub struct Resolved {
    pub config: TargetConfig,
    /// Where cleanup and checks run SQL (session pooler or direct; never shown).
    pub admin_db_url: Option<String>,
    /// Where the pooler probe's comparison storm goes: Postgres itself locally, the session pooler
    /// remotely (hosted projects' direct host is not in the environment contract).
    pub direct_db_url: Option<String>,
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// `scheme://host[:port]` of a URL: what outputs may show of it.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}")
}

/// The target, or invalid input (exit 2) when the environment is incomplete.
pub fn resolve(needs_pooler: bool) -> Result<Resolved, Failure> {
    if let Some(url) = env(&["SUPABASE_URL"]) {
        let anon = env(&["SUPABASE_ANON_KEY", "SUPABASE_PUBLISHABLE_KEY"]);
        let service = env(&["SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"]);
        let (Some(anon_key), Some(service_key)) = (anon, service) else {
            return Err(Failure::invalid(anyhow::anyhow!(
                "SUPABASE_URL is set, so a remote project is targeted, but SUPABASE_ANON_KEY (or SUPABASE_PUBLISHABLE_KEY) \
                 and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) are not both set"
            )));
        };
        let db_url = env(&["SUPABASE_DB_URL"]);
        if needs_pooler && db_url.is_none() {
            return Err(Failure::invalid(anyhow::anyhow!(
                "the scenario sends part of the fleet through the pooler (workload.ingest.pooler) but SUPABASE_DB_URL is not set"
            )));
        }
        return Ok(Resolved {
            admin_db_url: env(&["SUPABASE_DB_SESSION_URL", "SUPABASE_DB_URL"]),
            direct_db_url: env(&["SUPABASE_DB_SESSION_URL"]),
            config: TargetConfig {
                kind: "remote".into(),
                api_url: url.trim_end_matches('/').to_string(),
                anon_key,
                service_key,
                db_url,
            },
        });
    }
    let state = local::ensure_up(None)?;
    // stdout of `run` is the report path alone; the migration account goes to stderr.
    eprintln!("{}", migrate::apply_dir(None, Path::new("migrations"))?);
    let api_url = state
        .api_url()
        .context("the local stack runs without its gateway (no daemon)")?;
    Ok(Resolved {
        admin_db_url: Some(state.direct_db_url()),
        direct_db_url: Some(state.direct_db_url()),
        config: TargetConfig {
            kind: "local".into(),
            api_url,
            anon_key: state.secrets.anon_key.clone(),
            service_key: state.secrets.service_role_key.clone(),
            db_url: Some(state.pooler_db_url()),
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn redaction_keeps_only_scheme_and_host() {
        assert_eq!(
            super::redact("postgres://postgres.ref:s3cret@pooler.supabase.com:6543/postgres?x=1"),
            "postgres://pooler.supabase.com:6543"
        );
        assert_eq!(
            super::redact("https://abc.supabase.co/"),
            "https://abc.supabase.co"
        );
    }
}
