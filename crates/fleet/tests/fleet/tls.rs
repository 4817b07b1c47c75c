//! Uploads over TLS: verified against a test root, refused when self-signed.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// A TLS server with a fresh self-signed certificate for `localhost` answering 201 to anything;
/// (port, certificate).
async fn tls_server() -> (u16, rustls::pki_types::CertificateDer<'static>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], private)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(201)
                                .body(http_body_util::Full::new(bytes::Bytes::from(path)))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn uploads_go_over_verified_tls() {
    let (port, cert) = tls_server().await;
    let url = format!("https://localhost:{port}/base");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let trusting = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let pool =
        fleetbench_fleet::http::Pool::with_tls(&url, 2, Duration::from_secs(10), Some(trusting))
            .unwrap();
    for _ in 0..5 {
        let reply = pool
            .post(
                "/rest/v1/system_metrics",
                &[],
                bytes::Bytes::from_static(b"[]"),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(&reply.body[..], b"/base/rest/v1/system_metrics");
    }
    assert_eq!(
        pool.opened.load(Relaxed),
        1,
        "one kept-alive connection serves them all"
    );
    // The platform's roots do not know a self-signed certificate: refused as a TLS failure.
    let strict = fleetbench_fleet::http::Pool::new(&url, 2, Duration::from_secs(10)).unwrap();
    let err = strict
        .post("/x", &[], bytes::Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "tls");
}
