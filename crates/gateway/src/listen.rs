//! Serving the gateway's router on a bound listener, over plain HTTP or, with the stack's
//! certificate, HTTPS (and so WSS for Realtime), until told to stop. `axum-server` does the TLS
//! side: axum's own `serve` has no TLS.

use anyhow::Context;
use axum::Router;
use fleetbench_stack::tls::TlsFiles;

pub type Served = tokio::task::JoinHandle<std::io::Result<()>>;

/// Serves `app` on `listener`, over TLS with `tls`'s certificate when there is one, until `stop`
/// reads true (then lets open requests finish, up to 5 s over TLS).
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<&TlsFiles>,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Served> {
    listener.set_nonblocking(true)?;
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let Some(tls) = tls else {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        return Ok(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        }));
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .with_context(|| format!("loading {} and its key", tls.cert.display()))?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let server = axum_server::from_tcp_rustls(listener, config)?.handle(handle);
    Ok(tokio::spawn(async move { server.serve(app).await }))
}
