//! A Postgres connection string read as libpq reads its TLS settings, with a safer default.
//! `sslmode` is one of `disable allow prefer require verify-ca verify-full`; without one it is
//! `verify-full` for a remote host and `prefer` for this machine (loopback or a Unix socket), where
//! libpq says `prefer` everywhere and so falls back to plaintext on the network without a word.
//! `sslrootcert` is a PEM file or `system` (the platform's roots, which libpq allows only with
//! `verify-full`). Without `sslrootcert`, `verify-full` trusts the platform's roots and
//! `FLEETBENCH_CA_FILE`, and `verify-ca` `FLEETBENCH_CA_FILE` alone (a chain to any public root
//! proves nothing without the name: libpq would look for `~/.postgresql/root.crt`, and fail
//! without it); `require` with a root file checks the chain as `verify-ca` does, as libpq does.
//! `allow` is treated as `prefer`: TLS first, plaintext only if the server offers no TLS; such a
//! mode on a remote host is [`PgConnect::may_be_plaintext`], which callers say. A mode that asks
//! for TLS never falls back to plaintext. `channel_binding` is tokio-postgres's, as libpq's.

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::verify::{AnyCertificate, ChainOnly};
use crate::{TlsError, provider, read_pem, roots};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<SslMode, TlsError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(TlsError::Setting(format!(
                    "sslmode={other:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }
}

/// How to reach one Postgres: tokio-postgres's config, the mode asked for, and the TLS connector.
#[derive(Clone)]
pub struct PgConnect {
    pub config: tokio_postgres::Config,
    pub mode: SslMode,
    pub tls: MakeRustlsConnect,
}

/// A connection string that could not be used, or what Postgres said ([`error_text`]).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Url(#[from] TlsError),
    #[error("{}", error_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

/// A database error as one line: its message and SQLSTATE (`Display` of tokio-postgres only says
/// "db error"), never the connection string. The one way every crate turns one into text.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl PgConnect {
    /// Reads `url` (a `postgres://` URL or libpq's `key=value` form).
    pub fn parse(url: &str) -> Result<PgConnect, TlsError> {
        let (rest, mode, root) = split_tls(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| TlsError::Setting(format!("not a Postgres connection string: {e}")))?;
        let mode = mode.unwrap_or(if local(&config) {
            SslMode::Prefer
        } else {
            SslMode::VerifyFull
        });
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let verifier = verifier(mode, root.as_deref())?;
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(PgConnect {
            config,
            mode,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// Whether this connection may go over the network in plaintext: a mode below `require`
    /// towards a host that is not this machine.
    pub fn may_be_plaintext(&self) -> bool {
        self.mode < SslMode::Require && !local(&self.config)
    }

    /// A connection, its driver spawned on the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("postgres connection ended: {e}");
            }
        });
        Ok(client)
    }
}

/// Whether every host of `config` is this machine: a Unix socket, `localhost` or a loopback
/// address (and every `hostaddr` a loopback one).
fn local(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts = config.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    });
    hosts && config.get_hostaddrs().iter().all(|a| a.is_loopback())
}

/// Connects to `url` with its TLS settings (see the module doc).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, PgError> {
    Ok(PgConnect::parse(url)?.connect().await?)
}

/// `url` without `sslmode` and `sslrootcert`, and those two.
fn split_tls(url: &str) -> Result<(String, Option<SslMode>, Option<String>), TlsError> {
    let (mut mode, mut root) = (None, None);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url)
            .map_err(|e| TlsError::Setting(format!("not a Postgres URL: {e}")))?;
        let mut kept = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => mode = Some(v.parse()?),
                "sslrootcert" => root = Some(v.into_owned()),
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(kept);
        }
        return Ok((parsed.to_string(), mode, root));
    }
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        match word.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.parse()?),
            Some(("sslrootcert", v)) => root = Some(v.to_string()),
            _ => kept.push(word),
        }
    }
    Ok((kept.join(" "), mode, root))
}

/// The certificate check `mode` and `root` ask for.
fn verifier(mode: SslMode, root: Option<&str>) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let full = |extra| -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
        Ok(Arc::new(
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider())?,
        ))
    };
    let chain: Arc<dyn ServerCertVerifier> = match root {
        Some("system") if mode < SslMode::VerifyFull => {
            return Err(TlsError::Setting(format!(
                "sslrootcert=system needs sslmode=verify-full (as libpq), not {mode:?}"
            )));
        }
        Some("system") => full(Vec::new())?,
        Some(file) => {
            let mut store = rustls::RootCertStore::empty();
            for cert in read_pem(std::path::Path::new(file))? {
                store.add(cert)?;
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
                .build()
                .map_err(|e| TlsError::Setting(format!("sslrootcert={file}: {e}")))?
        }
        None if mode == SslMode::VerifyCa => {
            let named = roots()?;
            if named.is_empty() {
                return Err(TlsError::Setting(
                    "sslmode=verify-ca needs the roots to check against: set sslrootcert=FILE (Supabase's CA from the project's database settings) or FLEETBENCH_CA_FILE".into(),
                ));
            }
            let mut store = rustls::RootCertStore::empty();
            for cert in named {
                store.add(cert)?;
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
                .build()
                .map_err(|e| TlsError::Setting(format!("FLEETBENCH_CA_FILE: {e}")))?
        }
        None if mode >= SslMode::VerifyCa => full(roots()?)?,
        None => return Ok(Arc::new(AnyCertificate(provider()))),
    };
    Ok(match mode {
        SslMode::VerifyFull => chain,
        SslMode::VerifyCa | SslMode::Require => Arc::new(ChainOnly(chain)),
        _ => Arc::new(AnyCertificate(provider())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_the_url() {
        let (rest, mode, root) = split_tls(
            "postgres://postgres.ref:p%40ss@db.example:6543/postgres?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt&application_name=x",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://postgres.ref:p%40ss@db.example:6543/postgres?application_name=x"
        );
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root.as_deref(), Some("/tmp/ca.crt"));
        let (rest, mode, root) = split_tls("host=h user=u sslmode=require dbname=d").unwrap();
        assert_eq!(rest, "host=h user=u dbname=d");
        assert_eq!((mode, root), (Some(SslMode::Require), None));
        // Without sslmode: verify-full on the network, prefer on this machine.
        let remote = PgConnect::parse("postgres://u@db.example/d").unwrap();
        assert_eq!(
            (remote.mode, remote.may_be_plaintext()),
            (SslMode::VerifyFull, false)
        );
        for here in [
            "postgres://u@127.0.0.1:5432/d",
            "postgres://u@localhost/d",
            "host=/run/postgresql user=u",
        ] {
            let local = PgConnect::parse(here).unwrap();
            assert_eq!(
                (local.mode, local.may_be_plaintext()),
                (SslMode::Prefer, false),
                "{here}"
            );
        }
        // A plaintext-capable mode on the network is said to be one.
        let prefer = PgConnect::parse("postgres://u@db.example/d?sslmode=prefer").unwrap();
        assert!(prefer.may_be_plaintext());
        let disguised = PgConnect::parse("host=localhost hostaddr=203.0.113.9 user=u").unwrap();
        assert_eq!(
            disguised.mode,
            SslMode::VerifyFull,
            "hostaddr is where it connects"
        );
        // verify-ca checks against named roots only: none named is an error, not any public CA.
        if std::env::var_os(crate::CA_FILE_VAR).is_none() {
            let e = PgConnect::parse("postgres://u@db.example/d?sslmode=verify-ca")
                .err()
                .unwrap();
            assert!(e.to_string().contains("sslrootcert"), "{e}");
        }
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let e = PgConnect::parse("postgres://u@h/d?sslmode=verify_full")
            .err()
            .unwrap();
        assert!(e.to_string().contains("verify-full"), "{e}");
        let e = PgConnect::parse("postgres://u@h/d?sslmode=require&sslrootcert=system")
            .err()
            .unwrap();
        assert!(e.to_string().contains("needs sslmode=verify-full"), "{e}");
        let e = PgConnect::parse("postgres://u@h/d?sslmode=verify-ca&sslrootcert=/nonexistent.pem")
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent.pem"), "{e}");
    }
}
