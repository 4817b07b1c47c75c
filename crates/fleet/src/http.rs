//! The fleet's shared HTTP/1.1 connections for uploads: at most `connections` of them to the API
//! host (plain TCP or TLS with the platform's roots), each carrying one request at a time and kept
//! alive between requests, as wrk's `-c` and a browser's per-host pool do.
//!
//! Why by hand. The upload is the generator's hot loop, and issue 5 holds it to 0.8 × wrk's
//! request rate on one core. Measured here against `fleetbench sink` (one core each): reqwest ran
//! at ~60k requests/s in a bare loop, and through the engine the generator on hyper's client
//! connection API reached 0.67–0.75 × wrk (`reports/benchmarks/2026-11-26-generator-vs-wrk/`).
//! hyper's client splits every request between the caller's task and a connection task joined by
//! channels, and builds a header map per request; oha, built on hyper, is at ~0.76 × wrk even on
//! a trivial target. Neither reqwest nor hyper-util can cap the connections per host either.
//! Here the request is written as one buffer (its fixed lines kept ready) and the answer parsed
//! with `httparse` in the upload's own future: one `send` and usually one `recv` a request, and
//! the generator at 0.81–0.87 × wrk (`…-generator-vs-wrk-http1/`). Auth and provisioning calls,
//! which are rare, stay on reqwest.
//!
//! What is understood of an answer: status and `Retry-After`; bodies framed by `Content-Length`,
//! by chunked transfer coding (trailers skipped) or by the connection's end; `Connection: close`
//! and HTTP/1.0 (the connection is then not reused); interim 1xx answers skipped. An answer that
//! breaks off, is not HTTP, or is too large (a head over 64 KiB, a body over 16 MiB) fails as
//! `transport`, as a connection that drops does: worth a retry later.
//!
//! Proxies as curl and reqwest read them from the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`; hyper-util's matcher, the one reqwest uses): an `https://` API is
//! reached through an HTTP `CONNECT` tunnel, an `http://` one by absolute-form requests to the
//! proxy, with `Proxy-Authorization` when the proxy's URL carries credentials.
//!
//! An idle connection the server has closed is noticed before it is used (see `Conn::stale`) and
//! replaced by a fresh one. A request
//! that may have reached the server is never resent here: the agent decides, with its backoff,
//! as for any other failure.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::failure::Failure;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Bodies up to this size are copied into the request's buffer and written with it.
const INLINE_BODY: usize = 64 * 1024;
/// An idle connection is looked at on its socket before use after this long (see `Conn::stale`).
pub const PEEK_AFTER: Duration = Duration::from_millis(1);

pub struct Pool {
    host: String,
    port: u16,
    /// `POST ` and the URL's path prefix (empty for a bare origin), before each request's path.
    start: Vec<u8>,
    /// ` HTTP/1.1`, the `Host` line, and the end of the line, after the path.
    host_line: Vec<u8>,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The proxy the environment names for the API, if any.
    via: Option<Via>,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
    timeout: Duration,
    connect_timeout: Duration,
    /// Connections opened over the pool's life.
    pub opened: AtomicU64,
}

/// An HTTP proxy on the way to the API.
struct Via {
    host: String,
    port: u16,
    /// `Proxy-Authorization`, when the proxy's URL carries credentials.
    auth: Option<HeaderValue>,
    /// `https://` API: a `CONNECT` tunnel to `host:port` of the API; else absolute-form requests.
    tunnel_to: Option<String>,
}

impl Via {
    /// The proxy the environment names for `uri`, if any; only `http://` proxies are spoken to.
    fn from_env(uri: &hyper::Uri, https: bool, authority: &str) -> Result<Option<Via>, String> {
        let matcher = hyper_util::client::proxy::matcher::Matcher::from_env();
        let Some(found) = matcher.intercept(uri) else {
            return Ok(None);
        };
        let proxy = found.uri();
        if proxy.scheme_str() != Some("http") {
            return Err(format!(
                "the proxy for {uri} is {}://…: the upload client speaks to http:// proxies only",
                proxy.scheme_str().unwrap_or("?")
            ));
        }
        let host = proxy
            .host()
            .ok_or_else(|| "the proxy's URL has no host".to_string())?;
        Ok(Some(Via {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: proxy.port_u16().unwrap_or(80),
            auth: found.basic_auth().cloned(),
            tunnel_to: https.then(|| authority.to_string()),
        }))
    }

    /// Opens the tunnel on `tcp`: `CONNECT`, then a 2xx head and nothing after it.
    async fn tunnel(&self, tcp: &mut TcpStream, to: &str) -> Result<(), Failure> {
        let refused = || Failure::Transport("proxy");
        let mut request = format!("CONNECT {to} HTTP/1.1\r\nhost: {to}\r\n");
        if let Some(auth) = self.auth.as_ref().and_then(|a| a.to_str().ok()) {
            request.push_str(&format!("proxy-authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|_| refused())?;
        let mut head = Vec::with_capacity(1024);
        loop {
            if tcp.read_buf(&mut head).await.map_err(|_| refused())? == 0 || head.len() > MAX_HEAD {
                return Err(refused());
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut answer = httparse::Response::new(&mut headers);
            match answer.parse(&head) {
                Ok(httparse::Status::Complete(len)) => {
                    let ok = answer.code.is_some_and(|c| (200..300).contains(&c));
                    return if ok && len == head.len() {
                        Ok(())
                    } else {
                        Err(refused())
                    };
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(refused()),
            }
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One kept-alive connection and its buffers (reused from request to request).
struct Conn {
    stream: Stream,
    /// Bytes read and not yet consumed.
    input: BytesMut,
    /// The request being written.
    output: Vec<u8>,
    /// When the last answer was read.
    idle_since: std::time::Instant,
}

/// What an answer's head says.
#[derive(Debug, PartialEq)]
struct Head {
    /// Bytes the head takes.
    len: usize,
    status: u16,
    retry_after: Option<Duration>,
    framing: Framing,
    /// The connection may carry another request after this answer.
    keep_alive: bool,
}

#[derive(Debug, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Pool {
    /// A pool for `api_url` (`http://` or `https://`, verified against the platform's roots and
    /// `FLEETBENCH_CA_FILE`).
    pub fn new(api_url: &str, connections: usize, timeout: Duration) -> Result<Pool, String> {
        let tls = if api_url.starts_with("https://") {
            Some(fleetbench_tls::client_config().map_err(|e| e.to_string())?)
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
        let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
        let host_port = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let via = Via::from_env(&uri, https, &host_port)?;
        // Through an HTTP proxy, plain requests name the whole URL (absolute form).
        let (start, host_line) = match &via {
            Some(v) if v.tunnel_to.is_none() => (
                format!(
                    "POST http://{authority}{}",
                    uri.path().trim_end_matches('/')
                ),
                format!(
                    " HTTP/1.1\r\nhost: {authority}\r\n{}",
                    v.auth
                        .as_ref()
                        .and_then(|a| a.to_str().ok())
                        .map_or(String::new(), |a| format!("proxy-authorization: {a}\r\n"))
                ),
            ),
            _ => (
                format!("POST {}", uri.path().trim_end_matches('/')),
                format!(" HTTP/1.1\r\nhost: {authority}\r\n"),
            ),
        };
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
            start: start.into_bytes(),
            host_line: host_line.into_bytes(),
            host,
            port,
            tls,
            via,
            idle: Mutex::new(Vec::with_capacity(connections)),
            slots: Semaphore::new(connections.max(1)),
            timeout,
            connect_timeout: Duration::from_secs(10).min(timeout),
            opened: AtomicU64::new(0),
        })
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let open = async {
            let (host, port) = self
                .via
                .as_ref()
                .map_or((self.host.as_str(), self.port), |v| {
                    (v.host.as_str(), v.port)
                });
            let mut tcp = TcpStream::connect((host, port))
                .await
                .map_err(|_| Failure::Transport("connect"))?;
            tcp.set_nodelay(true)
                .map_err(|_| Failure::Transport("connect"))?;
            if let Some((via, to)) = self
                .via
                .as_ref()
                .and_then(|v| v.tunnel_to.as_ref().map(|t| (v, t)))
            {
                via.tunnel(&mut tcp, to).await?;
            }
            let stream = match &self.tls {
                Some((connector, name)) => Stream::Tls(Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|_| Failure::Transport("tls"))?,
                )),
                None => Stream::Plain(tcp),
            };
            self.opened.fetch_add(1, Relaxed);
            Ok(Conn {
                stream,
                input: BytesMut::with_capacity(8 * 1024),
                output: Vec::with_capacity(4 * 1024),
                idle_since: std::time::Instant::now(),
            })
        };
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| Failure::Transport("connect"))?
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
        // A pooled connection the server has not closed meanwhile, else a new one.
        let pooled = loop {
            let Some(mut conn) = self.idle.lock().expect("idle list").pop() else {
                break None;
            };
            if !conn.stale() {
                break Some(conn);
            }
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            None => Box::pin(self.connect()).await?,
        };
        conn.output.clear();
        conn.output.extend_from_slice(&self.start);
        conn.output.extend_from_slice(path.as_bytes());
        conn.output.extend_from_slice(&self.host_line);
        for (name, value) in headers {
            conn.output.extend_from_slice(name.as_str().as_bytes());
            conn.output.extend_from_slice(b": ");
            conn.output.extend_from_slice(value.as_bytes());
            conn.output.extend_from_slice(b"\r\n");
        }
        conn.output.extend_from_slice(b"content-length: ");
        conn.output
            .extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        conn.output.extend_from_slice(b"\r\n\r\n");
        // A small body goes in the same buffer (one `send`); a large one (an outage's backlog)
        // after it, so that no connection keeps a buffer of its size.
        let inline = body.len() <= INLINE_BODY;
        if inline {
            conn.output.extend_from_slice(&body);
        }
        conn.send((!inline).then_some(&body[..]))
            .await
            .map_err(|_| broken())?;
        let (reply, keep_alive) = conn.answer().await?;
        if keep_alive {
            conn.idle_since = std::time::Instant::now();
            self.idle.lock().expect("idle list").push(conn);
        }
        Ok(reply)
    }
}

impl Conn {
    /// Writes the request: the buffer, then `rest` if any (flushed: TLS buffers its records).
    async fn send(&mut self, rest: Option<&[u8]>) -> std::io::Result<()> {
        async fn write(
            w: &mut (impl tokio::io::AsyncWrite + Unpin),
            output: &[u8],
            rest: Option<&[u8]>,
        ) -> std::io::Result<()> {
            w.write_all(output).await?;
            if let Some(rest) = rest {
                w.write_all(rest).await?;
            }
            w.flush().await
        }
        match &mut self.stream {
            Stream::Plain(s) => write(s, &self.output, rest).await,
            Stream::Tls(s) => write(s.as_mut(), &self.output, rest).await,
        }
    }

    /// Reads more of the answer: `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, Failure> {
        if self.input.capacity() - self.input.len() < 4096 {
            self.input.reserve(8 * 1024);
        }
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read_buf(&mut self.input).await,
            Stream::Tls(s) => s.read_buf(&mut self.input).await,
        }
        .map_err(|_| broken())?;
        Ok(n > 0)
    }

    /// Whether the server closed this idle connection, or sent on it unasked. A connection idle
    /// for [`PEEK_AFTER`] or more is looked at on the socket (`MSG_PEEK`, without waiting: one
    /// cheap system call); one back from its last answer a moment ago, through tokio's readiness
    /// flags (free, but they learn of a close only when the reactor next turns). A server that
    /// closes kept-alive connections does so after seconds idle, not within a millisecond.
    fn stale(&mut self) -> bool {
        if self.idle_since.elapsed() < PEEK_AFTER {
            return self.readable();
        }
        let tcp = match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        };
        let mut byte = [std::mem::MaybeUninit::uninit(); 1];
        match socket2::SockRef::from(tcp).peek(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            // Bytes: unasked-for data, unless they are TLS records that carry none (a session
            // ticket), which the TLS layer reads through.
            Ok(n) if n > 0 => match self.stream {
                Stream::Plain(_) => true,
                Stream::Tls(_) => self.readable(),
            },
            _ => true,
        }
    }

    /// Whether a read would complete at once (an end, an error, or data) as far as tokio knows.
    fn readable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        let polled = match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(&mut cx, &mut probe),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(&mut cx, &mut probe),
        };
        !matches!(polled, Poll::Pending)
    }

    /// The answer to the request just sent, and whether the connection may be reused.
    async fn answer(&mut self) -> Result<(Reply, bool), Failure> {
        self.input.clear();
        let head = loop {
            match parse_head(&self.input)? {
                Some(head) if (100..200).contains(&head.status) => self.input.advance(head.len),
                Some(head) => break head,
                None if self.input.len() > MAX_HEAD => {
                    return Err(broken());
                }
                None => {
                    if !self.fill().await? {
                        return Err(broken());
                    }
                }
            }
        };
        self.input.advance(head.len);
        let bodiless = head.status == 204 || head.status == 304;
        let (body, complete) = match head.framing {
            _ if bodiless => (Bytes::new(), true),
            Framing::Length(n) => {
                if n > MAX_BODY {
                    return Err(broken());
                }
                while self.input.len() < n {
                    if !self.fill().await? {
                        return Err(broken());
                    }
                }
                let body = Bytes::copy_from_slice(&self.input[..n]);
                self.input.advance(n);
                (body, true)
            }
            Framing::Chunked => (self.chunked().await?, true),
            Framing::UntilClose => {
                while self.fill().await? {
                    if self.input.len() > MAX_BODY {
                        return Err(broken());
                    }
                }
                let body = Bytes::copy_from_slice(&self.input);
                self.input.clear();
                (body, false)
            }
        };
        // Bytes beyond the answer were not asked for: the connection's state is unknown.
        let keep_alive = complete && head.keep_alive && self.input.is_empty();
        if self.input.capacity() > INLINE_BODY {
            // A large answer is over: its buffer is not kept with the connection.
            self.input = BytesMut::with_capacity(8 * 1024);
        }
        let reply = Reply {
            status: head.status,
            retry_after: head.retry_after,
            body,
        };
        Ok((reply, keep_alive))
    }

    /// A chunked body, trailers skipped.
    async fn chunked(&mut self) -> Result<Bytes, Failure> {
        let mut body = BytesMut::new();
        loop {
            let line = self.line().await?;
            let digits = line[..].split(|b| *b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(digits)
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or_else(broken)?;
            if size == 0 {
                // Trailer fields, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body.freeze());
            }
            if body.len() + size > MAX_BODY {
                return Err(broken());
            }
            while self.input.len() < size + 2 {
                if !self.fill().await? {
                    return Err(broken());
                }
            }
            body.extend_from_slice(&self.input[..size]);
            if &self.input[size..size + 2] != b"\r\n" {
                return Err(broken());
            }
            self.input.advance(size + 2);
        }
    }

    /// The next line of the input, without its CRLF.
    async fn line(&mut self) -> Result<BytesMut, Failure> {
        loop {
            if let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") {
                let line = self.input.split_to(end);
                self.input.advance(2);
                return Ok(line);
            }
            if self.input.len() > MAX_HEAD {
                return Err(broken());
            }
            if !self.fill().await? {
                return Err(broken());
            }
        }
    }
}

/// An answer that broke off, is not HTTP, or is too large: as a dropped connection is.
fn broken() -> Failure {
    Failure::Transport("transport")
}

/// The head at the start of `input`, if all of it is there.
fn parse_head(input: &[u8]) -> Result<Option<Head>, Failure> {
    // Uninitialised: the parser fills what it uses, and 4 KiB are not zeroed for every answer.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; 128];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        input,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(broken()),
    };
    let status = response.code.unwrap_or_default();
    let mut keep_alive = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    let mut coded = false;
    let mut retry_after = None;
    for field in response.headers.iter() {
        let value = std::str::from_utf8(field.value).unwrap_or_default().trim();
        if field.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| broken())?;
            if length.is_some_and(|m| m != n) {
                return Err(broken());
            }
            length = Some(n);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if field.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        } else if field.name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    // RFC 9112 §6.3: a transfer coding overrides any length; one not ending in chunked runs to
    // the connection's end.
    let framing = match (coded, chunked, length) {
        (true, true, _) => Framing::Chunked,
        (true, false, _) | (false, _, None) => Framing::UntilClose,
        (false, _, Some(n)) => Framing::Length(n),
    };
    if framing == Framing::UntilClose
        && !(100..200).contains(&status)
        && status != 204
        && status != 304
    {
        keep_alive = false;
    }
    Ok(Some(Head {
        len,
        status,
        retry_after,
        framing,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes()).unwrap().expect("a whole head")
    }

    #[test]
    fn heads_are_framed_as_rfc_9112_says() {
        let h = head("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (201, Framing::Length(0), true)
        );
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 500 Oops\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n");
        assert!(h.keep_alive, "a 204 has no body to wait for");
        let h = head(
            "HTTP/1.1 429 Too Many\r\ncontent-length: 2\r\nRetry-After: 7\r\nConnection: keep-alive, Close\r\n\r\n",
        );
        assert_eq!(h.retry_after, Some(Duration::from_secs(7)));
        assert!(!h.keep_alive, "Connection: close");
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0");
        let raw = "HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(head(raw).len, raw.len() - 3);
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(
            parse_head(b"HTTP/1.1 201 Created\r\nContent-Le")
                .unwrap()
                .is_none()
        );
        for bad in [
            "HTTP/1.1 2x1 Created\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()) == Err(broken()), "{bad:?}");
        }
    }
}
