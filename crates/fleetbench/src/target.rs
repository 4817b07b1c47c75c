//! Which Supabase the run targets: `SUPABASE_URL` and its keys from the environment,
//! or else the embedded local stack, brought up and migrated on demand. Secrets stay in
//! [`fleetbench_fleet::TargetConfig`]; what is shown is the redacted URL.

use std::path::Path;

use anyhow::Context;
use fleetbench_fleet::TargetConfig;

use crate::{CommandError, local, migrate};

pub use fleetbench_runner::{Endpoints, redact};

/// The first of `names` set to something (CI sets a missing secret to the empty string).
pub fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// Set by `--i-accept-this-target-is-not-on-the-allowlist`.
pub static FORCE_UNLISTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The host an HTTP client connects to for `url`, lower case, without brackets: parsed by the
/// parser the clients use (the `url` crate's WHATWG rules, as reqwest's), never by hand, so that
/// what the allowlist judges is what is connected to (`https://a#@b` is `a`).
fn host(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
}

/// The hosts a Postgres connection connects to, as the code that connects read its string
/// ([`fleetbench_tls::pg::PgConnect`]: libpq's TLS settings taken out, the rest tokio-postgres's):
/// every `host`, and every `hostaddr`, which is where it actually connects when given; a Unix
/// socket is this machine's own.
fn db_hosts(config: &tokio_postgres::Config) -> Vec<String> {
    use tokio_postgres::config::Host;
    let names = config.get_hosts().iter().map(|h| match h {
        Host::Tcp(name) => name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
        Host::Unix(_) => "localhost".to_string(),
    });
    let addrs = config.get_hostaddrs().iter().map(|a| a.to_string());
    names.chain(addrs).collect()
}

/// This machine's own loopback, always allowed (other 127/8 addresses are treated as remote, so
/// that tests can stand a "remote" project on one).
fn loopback(host: &str) -> bool {
    ["127.0.0.1", "localhost", "::1"].contains(&host)
}

/// A remote target must be named by an allowlist (the scenario's `[target] allow_hosts`, or
/// FLEETBENCH_ALLOW_HOSTS, comma-separated) unless the deliberately long flag is given; this
/// machine's own loopback (127.0.0.1, localhost, ::1) is always allowed. `what` names where the
/// URL came from.
pub fn check_allowed(what: &str, url: &str, scenario_allow: &[String]) -> Result<(), CommandError> {
    let host = host(url).ok_or_else(|| {
        CommandError::invalid(anyhow::anyhow!(
            "{what} ({}) is not a URL with a host; nothing was sent",
            redact(url)
        ))
    })?;
    judge(what, &[host], scenario_allow)
}

/// A Postgres connection string, read once as it will be connected with: it must parse (said
/// without the URL: it carries a password), a plaintext-capable `sslmode` towards another machine
/// is said, never silent, and every host it connects to must be allowed ([`check_allowed`]).
pub fn check_db_allowed(
    what: &str,
    url: &str,
    scenario_allow: &[String],
) -> Result<(), CommandError> {
    let pg = fleetbench_tls::pg::PgConnect::parse(url).map_err(|e| {
        CommandError::invalid(anyhow::anyhow!(
            "{what} is not a Postgres connection string ({e}): expected postgresql://USER:PASSWORD@HOST:PORT/postgres[?sslmode=verify-full&sslrootcert=FILE] (port 6543 for the transaction pooler); nothing was sent"
        ))
    })?;
    if pg.may_be_plaintext() {
        eprintln!(
            "warning: {what} asks for sslmode={:?} towards another machine: the password and the data may cross the network in plaintext; use sslmode=verify-full&sslrootcert=FILE",
            pg.mode
        );
    }
    judge(what, &db_hosts(&pg.config), scenario_allow)
}

/// Every one of `hosts` is loopback or on an allowlist, or the flag says to go on anyway.
fn judge(what: &str, hosts: &[String], scenario_allow: &[String]) -> Result<(), CommandError> {
    let from_env: Vec<String> = env(&["FLEETBENCH_ALLOW_HOSTS"])
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let listed = |h: &String| {
        loopback(h)
            || scenario_allow
                .iter()
                .chain(&from_env)
                .any(|a| a.to_ascii_lowercase() == *h)
    };
    let Some(h) = hosts.iter().find(|h| !listed(h)) else {
        return Ok(());
    };
    if FORCE_UNLISTED.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "warning: {h} ({what}) is on no allowlist; running against it because --i-accept-this-target-is-not-on-the-allowlist was given"
        );
        return Ok(());
    }
    Err(CommandError::invalid(anyhow::anyhow!(
        "{what} points at {h}, which no allowlist names: add it to the scenario's [target] allow_hosts or to FLEETBENCH_ALLOW_HOSTS (the staging project's hosts), or pass --i-accept-this-target-is-not-on-the-allowlist; nothing was sent"
    )))
}

/// The live export's credentials from the environment: `FLEETBENCH_RW_USERNAME` with
/// `FLEETBENCH_RW_PASSWORD` (basic), or `FLEETBENCH_RW_BEARER_TOKEN`, and `FLEETBENCH_RW_HTTP_HEADERS`
/// (`Name:value,Name:value`). Errors name the variable, never its value.
pub fn remote_write_auth() -> Result<fleetbench_runner::remote_write::Auth, CommandError> {
    let invalid = |m: String| CommandError::invalid(anyhow::anyhow!(m));
    let basic = match (
        env(&["FLEETBENCH_RW_USERNAME"]),
        env(&["FLEETBENCH_RW_PASSWORD"]),
    ) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "FLEETBENCH_RW_USERNAME and FLEETBENCH_RW_PASSWORD go together: set both or neither".into(),
            ));
        }
    };
    let bearer = env(&["FLEETBENCH_RW_BEARER_TOKEN"]);
    if basic.is_some() && bearer.is_some() {
        return Err(invalid(
            "FLEETBENCH_RW_BEARER_TOKEN and FLEETBENCH_RW_USERNAME/PASSWORD are both set: the endpoint takes one".into(),
        ));
    }
    let headers = env(&["FLEETBENCH_RW_HTTP_HEADERS"]);
    let basic = basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    fleetbench_runner::remote_write::Auth::new(basic, bearer.as_deref(), headers.as_deref())
        .map_err(|e| invalid(format!("FLEETBENCH_RW_*: {e}")))
}

/// Hard caps every run obeys, whatever its scenario says: agents, uploads per second, and the load's
/// duration (FLEETBENCH_MAX_AGENTS, FLEETBENCH_MAX_RATE, FLEETBENCH_MAX_DURATION raise or lower them).
pub fn check_caps(
    agents: f64,
    rate: f64,
    duration: std::time::Duration,
) -> Result<(), CommandError> {
    let cap = |name: &str, default: f64| -> Result<f64, CommandError> {
        match env(&[name]) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0)
                .ok_or_else(|| {
                    CommandError::invalid(anyhow::anyhow!(
                        "{name}={v:?} is not a positive number: set it like {name}={default} or unset it (the default is {default})"
                    ))
                }),
        }
    };
    let max_duration = match env(&["FLEETBENCH_MAX_DURATION"]) {
        None => std::time::Duration::from_secs(4 * 3600),
        Some(v) => humantime::parse_duration(v.trim()).map_err(|e| {
            CommandError::invalid(anyhow::anyhow!(
                "FLEETBENCH_MAX_DURATION={v:?}: {e} (write e.g. 4h)"
            ))
        })?,
    };
    let (max_agents, max_rate) = (
        cap("FLEETBENCH_MAX_AGENTS", 200_000.0)?,
        cap("FLEETBENCH_MAX_RATE", 20_000.0)?,
    );
    let over = [
        (agents > max_agents)
            .then(|| format!("{agents} agents (cap {max_agents}, FLEETBENCH_MAX_AGENTS)")),
        (rate > max_rate)
            .then(|| format!("{rate:.0} uploads/s (cap {max_rate}, FLEETBENCH_MAX_RATE)")),
        (duration > max_duration).then(|| {
            format!("{duration:?} of load (cap {max_duration:?}, FLEETBENCH_MAX_DURATION)")
        }),
    ];
    let over: Vec<String> = over.into_iter().flatten().collect();
    if over.is_empty() {
        Ok(())
    } else {
        Err(CommandError::invalid(anyhow::anyhow!(
            "over the hard caps: {}; raise the cap deliberately if this is intended; nothing was sent",
            over.join(", ")
        )))
    }
}

/// The target, or invalid input (exit 2) when the environment is incomplete or the remote host is
/// on no allowlist (the environment's only: commands without a scenario).
pub fn resolve(needs_pooler: bool) -> Result<Endpoints, CommandError> {
    resolve_allowed(needs_pooler, &[])
}

/// `SUPABASE_URL` must be an http(s) URL with a host; said without its credentials.
fn check_api_url(url: &str) -> Result<(), CommandError> {
    let shown = redact(url);
    let parsed = url.parse::<axum::http::Uri>();
    let ok = parsed.as_ref().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    });
    if ok {
        return Ok(());
    }
    Err(CommandError::invalid(anyhow::anyhow!(
        "SUPABASE_URL ({shown}) is not an http(s) URL with a host: set it to the project URL, e.g. https://<project-ref>.supabase.co; nothing was sent"
    )))
}

/// A key goes into a header: visible ASCII only (a pasted newline or space is the usual cause).
fn check_key(name: &str, key: &str) -> Result<(), CommandError> {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(());
    }
    Err(CommandError::invalid(anyhow::anyhow!(
        "{name} holds characters an HTTP header cannot carry (a space, a newline or non-ASCII: the key was pasted with something around it); copy the key again from the project's API settings; nothing was sent"
    )))
}

/// Whether `url` is a project hosted by Supabase (`<ref>.supabase.co`), whose Auth limits default
/// to the hosted ones.
fn supabase_hosted(url: &str) -> bool {
    let host = host(url).unwrap_or_default();
    host.ends_with(".supabase.co") || host.ends_with(".supabase.in")
}

/// The local stack's `/token` limit: the project's `[auth.rate_limit]` under the `hosted` profile,
/// none under `unlimited`.
fn local_auth_limit(
    state: &fleetbench_stack::StackState,
) -> Option<fleetbench_fleet::target::AuthLimit> {
    if state.profile != fleetbench_stack::Profile::Hosted {
        return None;
    }
    let project = state
        .supabase_dir
        .as_deref()
        .and_then(|d| fleetbench_stack::ProjectConfig::load(d).ok())
        .unwrap_or_default();
    Some(fleetbench_fleet::target::AuthLimit {
        per_5min: project.auth.rate_limit.token_refresh,
        burst: 30,
    })
}

/// `FLEETBENCH_IP_FORWARDING` (`on`/`off`, default off): whether the project forwards client
/// addresses, so that each agent signs in as its own address.
fn ip_forwarding() -> Result<bool, CommandError> {
    match env(&["FLEETBENCH_IP_FORWARDING"]).as_deref() {
        None | Some("off") => Ok(false),
        Some("on") => Ok(true),
        Some(other) => Err(CommandError::invalid(anyhow::anyhow!(
            "FLEETBENCH_IP_FORWARDING={other:?}: expected on or off"
        ))),
    }
}

/// Forwarding needs the secret key: the hosted gateway passes `Sb-Forwarded-For` on with no other.
fn check_forwarding_key(service_key: &str) -> Result<(), CommandError> {
    if service_key.starts_with("sb_secret_") {
        return Ok(());
    }
    Err(CommandError::invalid(anyhow::anyhow!(
        "FLEETBENCH_IP_FORWARDING=on needs SUPABASE_SECRET_KEY (an sb_secret_ key) as the service key: \
         the API gateway passes Sb-Forwarded-For on with that key only; nothing was sent"
    )))
}

/// [`resolve`] with the scenario's allowlist too.
pub fn resolve_allowed(needs_pooler: bool, allow: &[String]) -> Result<Endpoints, CommandError> {
    if let Some(url) = env(&["SUPABASE_URL"]) {
        check_api_url(&url)?;
        check_allowed("SUPABASE_URL", &url, allow)?;
        let anon = env(&["SUPABASE_ANON_KEY", "SUPABASE_PUBLISHABLE_KEY"]);
        // Forwarded addresses count only with the secret key: prefer it when forwarding is asked.
        let forward_ip = ip_forwarding()?;
        let service = if forward_ip {
            env(&["SUPABASE_SECRET_KEY", "SUPABASE_SERVICE_ROLE_KEY"])
        } else {
            env(&["SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"])
        };
        let (Some(anon_key), Some(service_key)) = (anon, service) else {
            return Err(CommandError::invalid(anyhow::anyhow!(
                "SUPABASE_URL is set, so a remote project is targeted, but SUPABASE_ANON_KEY (or SUPABASE_PUBLISHABLE_KEY) \
                 and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) are not both set"
            )));
        };
        check_key("SUPABASE_ANON_KEY", &anon_key)?;
        check_key("SUPABASE_SERVICE_ROLE_KEY", &service_key)?;
        let db_url = env(&["SUPABASE_DB_URL"]);
        for name in ["SUPABASE_DB_URL", "SUPABASE_DB_SESSION_URL"] {
            if let Some(url) = env(&[name]) {
                check_db_allowed(name, &url, allow)?;
            }
        }
        if needs_pooler && db_url.is_none() {
            return Err(CommandError::invalid(anyhow::anyhow!(
                "the scenario sends part of the fleet through the pooler (workload.ingest.pooler) but SUPABASE_DB_URL is not set"
            )));
        }
        if forward_ip {
            check_forwarding_key(&service_key)?;
        }
        return Ok(Endpoints {
            admin_db_url: env(&["SUPABASE_DB_SESSION_URL", "SUPABASE_DB_URL"]),
            direct_db_url: env(&["SUPABASE_DB_SESSION_URL"]),
            config: TargetConfig {
                kind: "remote".into(),
                api_url: url.trim_end_matches('/').to_string(),
                anon_key,
                service_key,
                db_url,
                forward_ip,
                // A hosted project's defaults until the scenario says otherwise
                // ([target] token_rate_limit); unknown for any other host.
                auth_limit: supabase_hosted(&url)
                    .then_some(fleetbench_fleet::target::AuthLimit::HOSTED),
            },
        });
    }
    let state = local::ensure_up(None)?;
    // stdout of `run` is the report path alone; the migration account goes to stderr.
    eprintln!("{}", migrate::apply_dir(None, Path::new("migrations"))?);
    let api_url = state
        .api_url()
        .context("the local stack runs without its gateway (no daemon)")?;
    // Forwarded addresses count only with the secret key.
    let service_key = match (&state.secrets.opaque, state.ip_forwarding) {
        (Some(k), true) => k.secret.clone(),
        _ => state.secrets.service_role_key.clone(),
    };
    Ok(Endpoints {
        admin_db_url: Some(state.direct_db_url()),
        direct_db_url: Some(state.direct_db_url()),
        config: TargetConfig {
            kind: "local".into(),
            api_url,
            anon_key: state.secrets.anon_key.clone(),
            service_key,
            db_url: Some(state.pooler_db_url()),
            forward_ip: state.ip_forwarding,
            auth_limit: local_auth_limit(&state),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::{check_allowed, check_db_allowed, db_hosts, host};

    #[test]
    fn hosts_are_compared_without_port_credentials_or_case() {
        assert_eq!(
            host("https://ABC.supabase.co/rest/v1").unwrap(),
            "abc.supabase.co"
        );
        assert_eq!(host("http://[::1]:8080").unwrap(), "::1");
        assert_eq!(
            db_hosts(
                &fleetbench_tls::pg::PgConnect::parse("postgres://u:p@db.x.io:6543/postgres")
                    .unwrap()
                    .config
            ),
            ["db.x.io"]
        );
        let staging = ["staging.supabase.co".to_string()];
        assert!(check_allowed("SUPABASE_URL", "http://127.0.0.1:9/", &[]).is_ok());
        assert!(check_allowed("SUPABASE_URL", "https://prod.supabase.co", &staging).is_err());
        assert!(check_allowed("SUPABASE_URL", "https://Staging.supabase.co:443", &staging).is_ok());
    }

    /// The allowlist judges the host the client connects to, whatever the text around it.
    #[test]
    fn the_allowlist_cannot_be_walked_around() {
        let staging = [
            "staging.supabase.co".to_string(),
            "db.staging.example".to_string(),
        ];
        for (url, connects_to) in [
            ("https://evil.example#@staging.supabase.co", "evil.example"),
            ("https://evil.example?@staging.supabase.co", "evil.example"),
            ("https://evil.example/@staging.supabase.co", "evil.example"),
            ("https://evil.example\\@staging.supabase.co", "evil.example"),
            ("https://staging.supabase.co@evil.example", "evil.example"),
            (
                "https://staging.supabase.co.evil.example",
                "staging.supabase.co.evil.example",
            ),
        ] {
            assert_eq!(host(url).as_deref(), Some(connects_to), "{url}");
            assert!(
                check_allowed("SUPABASE_URL", url, &staging).is_err(),
                "{url}"
            );
        }
        // Database URLs: every host and hostaddr, in both spellings tokio-postgres reads.
        for url in [
            "postgresql://u:p@prod.example:5432/postgres",
            "postgresql://u:p@db.staging.example:5432,prod.example:5432/postgres",
            "host=db.staging.example hostaddr=203.0.113.9 user=u dbname=postgres",
            "postgresql://u:p@db.staging.example/postgres?host=prod.example",
        ] {
            assert!(
                check_db_allowed("SUPABASE_DB_URL", url, &staging).is_err(),
                "{url}"
            );
        }
        assert!(
            check_db_allowed(
                "SUPABASE_DB_URL",
                "postgresql://u:p@DB.staging.example:6543/postgres",
                &staging
            )
            .is_ok()
        );
        assert!(check_db_allowed("SUPABASE_DB_URL", "host=/run/postgresql user=u", &[]).is_ok());
        assert!(check_db_allowed("SUPABASE_DB_URL", "postgresql://u@127.0.0.1:1/x", &[]).is_ok());
        // libpq's TLS settings, which tokio-postgres does not read, are no obstacle.
        let tls = "postgresql://u:p@db.staging.example:6543/postgres?sslmode=verify-full&sslrootcert=system";
        assert!(check_db_allowed("SUPABASE_DB_URL", tls, &staging).is_ok());
    }
}
