//! The `hosted` profile's certificates. A CA is made once per home (`<home>/tls/ca.pem`, its key
//! beside it with mode 0600; `.fleetbench/` is never committed) and signs, at each `up`, a server
//! certificate for `localhost` and `127.0.0.1` in the instance's `run/`, which the gateway (HTTPS and
//! WSS) and the poolers (TLS required, as "Enforce SSL") present. Clients trust the CA file:
//! fleetbench through `FLEETBENCH_CA_FILE` or `sslrootcert`, Deno through `DENO_CERT`, Python
//! through `SSL_CERT_FILE`. Certificates carry rcgen's default validity (1975 to 4096), so no
//! clock, real or moved by a test, ever finds them expired.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};

use crate::paths::StackPaths;
use crate::postgres::write_private;
use crate::process::ServiceUser;
use crate::{Result, StackError, io_err};

/// The files a TLS stack serves with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The CA certificate (PEM) clients trust.
    pub ca: PathBuf,
    /// The server certificate (PEM) and its private key (PKCS#8 PEM, owned by the service user).
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "fleetbench local stack CA");
    name.push(DnType::OrganizationName, "fleetbench");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn cert_err(e: rcgen::Error) -> StackError {
    StackError::Config(format!("making the stack's certificates: {e}"))
}

/// The CA's key, made with its certificate the first time.
fn ca_key(dir: &Path) -> Result<KeyPair> {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    if let (Ok(_), Ok(pem)) = (std::fs::metadata(&cert), std::fs::read_to_string(&key)) {
        return KeyPair::from_pem(&pem).map_err(cert_err);
    }
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let signing = KeyPair::generate().map_err(cert_err)?;
    let ca = ca_params()?.self_signed(&signing).map_err(cert_err)?;
    write_private(&key, &signing.serialize_pem())?;
    std::fs::write(&cert, ca.pem()).map_err(io_err(format!("writing {}", cert.display())))?;
    Ok(signing)
}

/// The CA (made once) and a fresh server certificate for this instance.
pub fn ensure(paths: &StackPaths, user: ServiceUser) -> Result<TlsFiles> {
    let dir = paths.home.join("tls");
    let issuer = Issuer::new(ca_params()?, ca_key(&dir)?);
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "fleetbench local stack");
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().map_err(cert_err)?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(cert_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: paths.run().join("server.pem"),
        key: paths.run().join("server.key"),
    };
    write_private(&files.key, &key.serialize_pem())?;
    user.own(&files.key)?;
    std::fs::write(&files.cert, cert.pem())
        .map_err(io_err(format!("writing {}", files.cert.display())))?;
    Ok(files)
}
