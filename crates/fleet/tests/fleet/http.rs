//! The upload client (`fleetbench_fleet::http`) against a raw HTTP/1.1 server that answers as
//! scripted: the request written as given; every framing of an answer read whole, also when it
//! arrives in pieces; connections reused only when they may be; an idle connection the server
//! closed replaced; broken answers and silence failing, never sent twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fleetbench_fleet::http::{PEEK_AFTER, Pool};
use hyper::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    connection: usize,
    head: String,
    body: Vec<u8>,
}

/// What the server does with a request: writes each piece on its own (flushed), then keeps the
/// connection open or closes it.
struct Answer {
    pieces: Vec<&'static [u8]>,
    close: bool,
}

fn answer(pieces: &[&'static [u8]], close: bool) -> Answer {
    Answer {
        pieces: pieces.to_vec(),
        close,
    }
}

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections the server closed, by number, as it closes them.
    closed: mpsc::UnboundedReceiver<usize>,
}

/// Answers the n-th request it reads (counted over all connections) with `script(n)`.
async fn server(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/base/", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let script = Arc::new(script);
    let log = seen.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let (script, log, closed_tx) = (script.clone(), log.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut input = Vec::new();
                loop {
                    // One request: its head, then Content-Length bytes of body.
                    let (head_len, body_len) = loop {
                        let mut fields = [httparse::EMPTY_HEADER; 32];
                        let mut req = httparse::Request::new(&mut fields);
                        if let httparse::Status::Complete(n) = req.parse(&input).unwrap() {
                            let length = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                                .unwrap_or(0usize);
                            break (n, length);
                        }
                        let mut buf = [0u8; 4096];
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => input.extend_from_slice(&buf[..k]),
                        }
                    };
                    while input.len() < head_len + body_len {
                        let mut buf = [0u8; 4096];
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => input.extend_from_slice(&buf[..k]),
                        }
                    }
                    let rest = input.split_off(head_len + body_len);
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(Seen {
                            connection,
                            head: String::from_utf8(input[..head_len].to_vec()).unwrap(),
                            body: input[head_len..].to_vec(),
                        });
                        log.len() - 1
                    };
                    input = rest;
                    let Answer { pieces, close } = script(n);
                    for piece in pieces {
                        if tcp.write_all(piece).await.is_err() {
                            return;
                        }
                        tcp.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    if close {
                        drop(tcp);
                        closed_tx.send(connection).unwrap();
                        return;
                    }
                }
            });
        }
    });
    Server { url, seen, closed }
}

fn pool(server: &Server, timeout: Duration) -> Pool {
    Pool::with_tls(&server.url, 4, timeout, None).unwrap()
}

async fn post(pool: &Pool, body: &[u8]) -> Result<fleetbench_fleet::http::Reply, String> {
    let headers = [(
        HeaderName::from_static("x-test"),
        HeaderValue::from_static("a b"),
    )];
    pool.post(
        "/rest/v1/system_metrics",
        &headers,
        Bytes::copy_from_slice(body),
    )
    .await
    .map_err(|e| e.kind())
}

fn connections(server: &Server) -> Vec<usize> {
    server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.connection)
        .collect()
}

const CREATED: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";

#[tokio::test]
async fn every_framing_is_read_whole_on_one_kept_alive_connection() {
    let srv = server(|n| match n {
        0 => answer(&[CREATED], false),
        // An interim answer, then a head split mid-line and a body split in two.
        1 => answer(
            &[
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 O",
                b"K\r\ncontent-length: 5\r\n\r\nhel",
                b"lo",
            ],
            false,
        ),
        // Chunked, with an extension and a trailer, cut inside a chunk and inside a size line.
        2 => answer(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhe",
                b"llo\r\n",
                b"7\r\n, world\r\n",
                b"0\r\nX-Trailer: t\r\n\r\n",
            ],
            false,
        ),
        3 => answer(
            &[b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\n{}"],
            false,
        ),
        _ => answer(&[b"HTTP/1.1 204 No Content\r\n\r\n"], false),
    })
    .await;
    let pool = pool(&srv, Duration::from_secs(10));
    let bodies: [&[u8]; 5] = [b"[]", b"[1]", b"[1,2]", b"{\"a\":1}", b""];
    let mut replies = Vec::new();
    for body in bodies {
        replies.push(post(&pool, body).await.unwrap());
    }
    let got: Vec<(u16, &[u8])> = replies.iter().map(|r| (r.status, &r.body[..])).collect();
    assert_eq!(
        got,
        [
            (201, &b""[..]),
            (200, b"hello"),
            (200, b"hello, world"),
            (429, b"{}"),
            (204, b""),
        ]
    );
    assert_eq!(replies[3].retry_after, Some(Duration::from_secs(3)));
    assert_eq!(replies[0].retry_after, None);
    assert_eq!(pool.opened.load(std::sync::atomic::Ordering::Relaxed), 1);
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.connection).collect::<Vec<_>>(),
        [0; 5]
    );
    let port = srv
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    for (s, body) in seen.iter().zip(bodies) {
        assert_eq!(s.body, body);
        assert_eq!(
            s.head,
            format!(
                "POST /base/rest/v1/system_metrics HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\
                 x-test: a b\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
        );
    }
}

#[tokio::test]
async fn large_bodies_both_ways_and_the_connection_kept() {
    // 300 kB each way: above the size a request is written in one buffer, and many reads.
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
    head.extend_from_slice(&big);
    let answer_bytes: &'static [u8] = Box::leak(head.into_boxed_slice());
    let srv = server(move |n| match n {
        0 => answer(&[answer_bytes], false),
        _ => answer(&[CREATED], false),
    })
    .await;
    let pool = pool(&srv, Duration::from_secs(10));
    let reply = post(&pool, &big).await.unwrap();
    assert_eq!(reply.body.len(), big.len());
    assert!(reply.body == big[..], "the answer's body, byte for byte");
    assert_eq!(post(&pool, b"[]").await.unwrap().status, 201);
    let seen = srv.seen.lock().unwrap().clone();
    assert!(seen[0].body == big, "the request's body, byte for byte");
    assert_eq!(seen[1].body, b"[]");
    assert_eq!(connections(&srv), [0, 0]);
}

#[tokio::test]
async fn a_connection_is_reused_only_when_it_may_be() {
    let srv = server(|n| match n {
        0 => answer(
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na"],
            true,
        ),
        1 => answer(&[b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb"], true),
        // No length: the body runs to the connection's end.
        2 => answer(&[b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"the end"], true),
        _ => answer(&[CREATED], false),
    })
    .await;
    let pool = pool(&srv, Duration::from_secs(10));
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.push(post(&pool, b"[]").await.unwrap().body);
    }
    assert_eq!(bodies[..3], [&b"a"[..], b"b", b"until the end"]);
    assert_eq!(connections(&srv), [0, 1, 2, 3, 3]);
    assert_eq!(pool.opened.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_replaced_not_failed() {
    // The server closes after its answer without saying so.
    let mut srv = server(|n| answer(&[CREATED], n == 0)).await;
    let pool = pool(&srv, Duration::from_secs(10));
    assert_eq!(post(&pool, b"[]").await.unwrap().status, 201);
    assert_eq!(srv.closed.recv().await, Some(0));
    // The close is done (on loopback the end is in the client's socket by now); what is under
    // test is a connection idle for longer than PEEK_AFTER, so it waits that long.
    tokio::time::sleep(PEEK_AFTER * 2).await;
    assert_eq!(post(&pool, b"[]").await.unwrap().status, 201);
    assert_eq!(connections(&srv), [0, 1]);
}

#[tokio::test]
async fn broken_answers_and_silence_fail_and_are_never_sent_twice() {
    let srv = server(|n| match n {
        // Cut off inside the body.
        0 => answer(
            &[b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nabc"],
            true,
        ),
        1 => answer(&[b"NOT HTTP AT ALL\r\n\r\n"], false),
        2 => answer(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            false,
        ),
        // Closed without a word.
        3 => answer(&[], true),
        // A body too large to take.
        4 => answer(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"],
            false,
        ),
        // Silence, the connection held open.
        5 => answer(&[], false),
        _ => answer(&[CREATED], false),
    })
    .await;
    let pool = pool(&srv, Duration::from_millis(300));
    let mut kinds = Vec::new();
    for _ in 0..7 {
        kinds.push(post(&pool, b"[]").await.map(|r| r.status));
    }
    let t = || Err("transport".to_string());
    assert_eq!(
        kinds,
        [t(), t(), t(), t(), t(), Err("timeout".into()), Ok(201)]
    );
    // Seven requests, seven seen: none resent; each failure left its connection behind.
    assert_eq!(connections(&srv), [0, 1, 2, 3, 4, 5, 6]);
}
