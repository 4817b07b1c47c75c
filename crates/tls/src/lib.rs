//! The trust every client fleetbench opens to a target shares, so that one setting covers them all:
//! the platform's root certificates plus, when `FLEETBENCH_CA_FILE` names a PEM file, the
//! certificates in it (the hosted double's CA, a corporate proxy's). The upload client, reqwest,
//! the Realtime WebSocket and Postgres all take their roots from here.
//!
//! Postgres URLs follow libpq: `sslmode` (`disable allow prefer require verify-ca verify-full`,
//! default `prefer`) and `sslrootcert` (a PEM file, or `system`) are read here, since tokio-postgres
//! knows only `disable prefer require` and verifies nothing by itself ([`pg`]).
//!
//! # Layout
//! - this file: [`roots`] (the extra CA), [`client_config`] (rustls with the platform verifier and
//!   those roots), [`TlsError`].
//! - [`pg`]: a Postgres URL with libpq's TLS settings, and connecting with them.
//! - [`verify`]: the two verifiers libpq's weaker modes need and rustls does not ship (accept any
//!   certificate; check the chain but not the name), written by hand for that reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

pub mod pg;
pub mod verify;

/// The variable naming a PEM file of extra root certificates.
pub const CA_FILE_VAR: &str = "FLEETBENCH_CA_FILE";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    CaFile { path: PathBuf, why: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Setting(String),
}

/// The certificates in the PEM file `path` (at least one).
pub fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |why: String| TlsError::CaFile {
        path: path.to_path_buf(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(err(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The extra roots from `FLEETBENCH_CA_FILE`, none when it is unset or empty.
pub fn roots() -> Result<Vec<CertificateDer<'static>>, TlsError> {
    match std::env::var_os(CA_FILE_VAR) {
        Some(p) if !p.is_empty() => read_pem(Path::new(&p)),
        _ => Ok(Vec::new()),
    }
}

/// The crypto provider every config here is built with (aws-lc-rs, as reqwest's).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client config that trusts the platform's roots and [`roots`], and checks the server's name.
/// Built once per process (every socket and pool shares it: loading the platform's roots is not
/// free), so `FLEETBENCH_CA_FILE` is read when the first client is made.
pub fn client_config() -> Result<rustls::ClientConfig, TlsError> {
    static CONFIG: std::sync::OnceLock<Result<rustls::ClientConfig, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| build_client_config().map_err(|e| e.to_string()))
        .clone()
        .map_err(TlsError::Setting)
}

fn build_client_config() -> Result<rustls::ClientConfig, TlsError> {
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(roots()?, provider())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// [`roots`] for reqwest (`ClientBuilder::tls_certs_merge`), which adds them to the platform's.
pub fn reqwest_roots() -> Result<Vec<reqwest::Certificate>, TlsError> {
    roots()?
        .iter()
        .map(|der| {
            reqwest::Certificate::from_der(der)
                .map_err(|e| TlsError::Setting(format!("{CA_FILE_VAR}: {e}")))
        })
        .collect()
}
