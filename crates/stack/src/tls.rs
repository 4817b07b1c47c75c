//! The `hosted` profile's certificates. A CA is made once per home (`<home>/tls/local-ca.pem`, its
//! key beside it with mode 0600; `.fleetbench/` is never committed) and signs, at each `up`, a
//! server certificate for `localhost` and `127.0.0.1` in the instance's `run/`, which the gateway (HTTPS and
//! WSS) and the poolers (TLS required, as "Enforce SSL") present. Clients trust the CA file:
//! fleetbench through `FLEETBENCH_CA_FILE` or `sslrootcert`, Deno through `DENO_CERT`, Python
//! through `SSL_CERT_FILE`. The CA is name-constrained to `localhost` and 127.0.0.1: trusting it
//! (as `FLEETBENCH_CA_FILE` does for every client) lets it vouch for this machine only, whoever
//! gets its key. Certificates carry rcgen's default validity (1975 to 4096), so no
//! clock, real or moved by a test, ever finds them expired.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType,
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

/// The CA's certificate in `<home>/tls/` (a name of its own: a home made before the CA was
/// name-constrained keeps its old `ca.pem`, which is no longer used).
const CA_PEM: &str = "local-ca.pem";

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "fleetbench local stack CA");
    name.push(DnType::OrganizationName, "fleetbench");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".into()),
            GeneralSubtree::IpAddress(CidrSubnet::V4([127, 0, 0, 1], [255, 255, 255, 255])),
        ],
        excluded_subtrees: Vec::new(),
    });
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
    let (cert, key) = (dir.join(CA_PEM), dir.join("local-ca.key"));
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
        ca: dir.join(CA_PEM),
        cert: paths.run().join("server.pem"),
        key: paths.run().join("server.key"),
    };
    write_private(&files.key, &key.serialize_pem())?;
    user.own(&files.key)?;
    std::fs::write(&files.cert, cert.pem())
        .map_err(io_err(format!("writing {}", files.cert.display())))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    /// Whoever holds the CA's key can vouch for this machine only: a certificate it signs for
    /// any other name is refused by a client that trusts it.
    #[test]
    fn the_local_ca_vouches_for_this_machine_only() {
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params().unwrap().self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params().unwrap(), ca_key);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let leaf = |name: &str| -> CertificateDer<'static> {
            let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let key = KeyPair::generate().unwrap();
            params.signed_by(&key, &issuer).unwrap().der().clone()
        };
        let check = |cert_for: &str, asked: &str| {
            verifier.verify_server_cert(
                &leaf(cert_for),
                &[],
                &ServerName::try_from(asked.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        check("localhost", "localhost").expect("localhost is within the constraints");
        check("127.0.0.1", "127.0.0.1").expect("127.0.0.1 is within the constraints");
        for name in ["staging.supabase.co", "example.com"] {
            let refused = check(name, name).expect_err("a name outside the constraints");
            assert!(
                format!("{refused:?}").contains("NameConstraint"),
                "{refused:?}"
            );
        }
    }
}
