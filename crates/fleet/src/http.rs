//! The fleet's shared HTTP/1.1 connections for uploads: at most `connections` of them to the API
//! host (plain TCP or TLS with the platform's roots), each carrying one request at a time and kept
//! alive between requests, as wrk's `-c` and a browser's per-host pool do.
//!
//! Written on hyper's connection API rather than through reqwest because the upload path is the
//! generator's hot loop and a load test must hold a fixed connection count. Measured on this
//! machine against `fleetbench sink` (one core each, 64 connections, 600-byte POSTs): reqwest
//! 60k requests/s, hyper-util's pooled client 93k, hyper's connection API 112k, wrk 112k; and
//! neither reqwest nor hyper-util can cap the connections per host. Auth and provisioning calls,
//! which are rare, stay on reqwest.
//!
//! A request that a pooled connection could not even start (the server had closed it while it
//! sat idle) is sent again on a fresh connection; one that may have reached the server is never
//! resent here: the agent decides, with its backoff, as for any other failure.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::target::Failure;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

type Sender = SendRequest<Full<Bytes>>;

pub struct Pool {
    host: String,
    port: u16,
    /// `host[:port]` for the `Host` header.
    authority: HeaderValue,
    /// The URL's path, prefixed to every request path (empty for a bare origin).
    prefix: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    idle: Mutex<Vec<Sender>>,
    slots: Semaphore,
    timeout: Duration,
    connect_timeout: Duration,
    /// Connections opened over the pool's life.
    pub opened: AtomicU64,
}

impl Pool {
    /// A pool for `api_url` (`http://` or `https://`, verified against the platform's roots).
    pub fn new(api_url: &str, connections: usize, timeout: Duration) -> Result<Pool, String> {
        let tls = if api_url.starts_with("https://") {
            use rustls_platform_verifier::ConfigVerifierExt;
            Some(
                rustls::ClientConfig::with_platform_verifier()
                    .map_err(|e| format!("TLS set-up: {e}"))?,
            )
        } else {
            None
        };
        Pool::with_tls(api_url, connections, timeout, tls)
    }

    /// As [`Pool::new`], with a TLS configuration of the caller's (tests bring their own roots).
    pub fn with_tls(
        api_url: &str,
        connections: usize,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Pool, String> {
        let uri: hyper::Uri = api_url
            .parse()
            .map_err(|e| format!("{api_url:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "{api_url:?}: the API URL must start with http:// or https://"
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{api_url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = HeaderValue::from_str(uri.authority().map_or(&host, |a| a.as_str()))
            .map_err(|e| e.to_string())?;
        let tls = match (https, tls) {
            (true, Some(config)) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            (true, None) => return Err("an https URL needs a TLS configuration".into()),
            (false, _) => None,
        };
        Ok(Pool {
            host,
            port,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
            tls,
            idle: Mutex::new(Vec::with_capacity(connections)),
            slots: Semaphore::new(connections.max(1)),
            timeout,
            connect_timeout: Duration::from_secs(10).min(timeout),
            opened: AtomicU64::new(0),
        })
    }

    async fn connect(&self) -> Result<Sender, Failure> {
        let open = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|_| Failure::Transport("connect"))?;
            tcp.set_nodelay(true)
                .map_err(|_| Failure::Transport("connect"))?;
            let sender = match &self.tls {
                Some((connector, name)) => {
                    let stream = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|_| Failure::Transport("tls"))?;
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|_| Failure::Transport("connect"))?;
                    tokio::spawn(conn);
                    sender
                }
                None => {
                    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .map_err(|_| Failure::Transport("connect"))?;
                    tokio::spawn(conn);
                    sender
                }
            };
            self.opened.fetch_add(1, Relaxed);
            Ok(sender)
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| Failure::Transport("connect"))?
    }

    fn request(
        &self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> hyper::Request<Full<Bytes>> {
        let mut req = hyper::Request::post(format!("{}{path}", self.prefix))
            .body(Full::new(body))
            .expect("a path and a body make a request");
        let h = req.headers_mut();
        h.insert(hyper::header::HOST, self.authority.clone());
        for (k, v) in headers {
            h.insert(k.clone(), v.clone());
        }
        req
    }

    /// `POST path` with `headers` and `body` on a pooled connection. Waiting for a free
    /// connection counts against the timeout, as it counts in the caller's latency.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Reply, Failure> {
        tokio::time::timeout(self.timeout, self.post_inner(path, headers, body))
            .await
            .map_err(|_| Failure::Transport("timeout"))?
    }

    async fn post_inner(
        &self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Reply, Failure> {
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let mut req = self.request(path, headers, body);
        // Pooled connections first; a request none of them could start goes on a new one.
        let mut fresh = false;
        loop {
            let pooled = self.idle.lock().expect("idle list").pop();
            let mut sender = match pooled {
                Some(s) => s,
                None => {
                    fresh = true;
                    Box::pin(self.connect()).await?
                }
            };
            if sender.ready().await.is_err() {
                if fresh {
                    return Err(Failure::Transport("transport"));
                }
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let retry_after = res
                        .headers()
                        .get(hyper::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = res
                        .into_body()
                        .collect()
                        .await
                        .map_err(|_| Failure::Transport("transport"))?
                        .to_bytes();
                    if !sender.is_closed() {
                        self.idle.lock().expect("idle list").push(sender);
                    }
                    return Ok(Reply {
                        status,
                        retry_after,
                        body,
                    });
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the connection was already gone. Try the next one.
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(Failure::Transport("transport")),
                },
            }
        }
    }
}
