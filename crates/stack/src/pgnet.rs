//! The pg_net stand-in's worker. Database webhooks call `net.http_post` (see `sql/pg_net.sql`),
//! which only queues the request; rows become visible to this worker when their transaction
//! commits, so requests go out after commit as pg_net sends them. The worker wakes on
//! `NOTIFY fleetbench_net` (or every second), starts at most `max_per_second` requests a second
//! (pg_net's documented reliable rate is 200/s), and records each answer in `net._http_response`,
//! kept six hours like pg_net's. A request is removed from the queue only with its answer recorded.

use std::time::Duration;

use tokio_postgres::Client;

use crate::Result;

pub const SQL: &str = include_str!("../sql/pg_net.sql");

/// pg_net's documented rate.
pub const DEFAULT_MAX_PER_SECOND: f64 = 200.0;

const BATCH: i64 = 100;

/// Runs until `shutdown` is set; connection failures are retried. `trust` is a PEM file of extra
/// roots (the `hosted` stack's own CA, which signs the gateway that webhooks post to, as hosted
/// pg_net trusts the project's certificate).
pub async fn run(
    db_url: String,
    max_per_second: f64,
    trust: Option<std::path::PathBuf>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    crate::listen::supervise("pg_net worker", shutdown, |stop| {
        let (db_url, trust) = (db_url.clone(), trust.clone());
        async move { run_connected(&db_url, max_per_second, trust.as_deref(), stop).await }
    })
    .await
}

/// The worker's HTTP client, trusting `trust`'s certificates beside the platform's.
fn http_client(trust: Option<&std::path::Path>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = trust {
        let pem =
            std::fs::read(path).map_err(crate::io_err(format!("reading {}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| crate::StackError::Config(format!("{}: {e}", path.display())))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| crate::StackError::Config(format!("the pg_net worker's HTTP client: {e}")))
}

struct Request {
    id: i64,
    method: String,
    url: String,
    headers: serde_json::Value,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

struct Answer {
    id: i64,
    status: Option<i32>,
    content_type: Option<String>,
    headers: serde_json::Value,
    content: Option<String>,
    timed_out: bool,
    error: Option<String>,
}

async fn run_connected(
    db_url: &str,
    max_per_second: f64,
    trust: Option<&std::path::Path>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mut listening = crate::listen::Listening::connect(db_url, "fleetbench_net").await?;
    let client = &listening.client;
    client.batch_execute(SQL).await?;
    let http = http_client(trust)?;
    let gap = Duration::from_secs_f64(1.0 / max_per_second.max(0.001));
    let mut next_start = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let batch = queued(client).await?;
        if batch.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                Some(()) = listening.wakeups.recv() => {}
                _ = shutdown.changed() => return Ok(()),
            }
            listening.check("pg_net worker")?;
            continue;
        }
        let mut sending = Vec::with_capacity(batch.len());
        for req in batch {
            tokio::time::sleep_until(next_start).await;
            next_start = next_start.max(tokio::time::Instant::now()) + gap;
            sending.push(tokio::spawn(send(http.clone(), req)));
        }
        for task in sending {
            if let Ok(answer) = task.await {
                record(client, &answer).await?;
            }
        }
        client
            .execute(
                "delete from net._http_response where created < now() - interval '6 hours'",
                &[],
            )
            .await?;
    }
}

async fn queued(db: &Client) -> Result<Vec<Request>> {
    let rows = db
        .query(
            "select id, method, url, headers, body, timeout_milliseconds from net.http_request_queue \
             order by id limit $1",
            &[&BATCH],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Request {
            id: r.get(0),
            method: r.get(1),
            url: r.get(2),
            headers: r.get(3),
            body: r.get(4),
            timeout: Duration::from_millis(r.get::<_, i32>(5).max(1) as u64),
        })
        .collect())
}

async fn send(http: reqwest::Client, req: Request) -> Answer {
    let method =
        reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut builder = http.request(method, &req.url).timeout(req.timeout);
    if let Some(h) = req.headers.as_object() {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                builder = builder.header(k, v);
            }
        }
    }
    if let Some(body) = req.body {
        builder = builder.body(body);
    }
    match builder.send().await {
        Ok(res) => {
            let status = Some(i32::from(res.status().as_u16()));
            let headers: serde_json::Map<String, serde_json::Value> = res
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.into())))
                .collect();
            let content_type = res
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let content = res.text().await.ok();
            Answer {
                id: req.id,
                status,
                content_type,
                headers: headers.into(),
                content,
                timed_out: false,
                error: None,
            }
        }
        Err(e) => Answer {
            id: req.id,
            status: None,
            content_type: None,
            headers: serde_json::Value::Null,
            content: None,
            timed_out: e.is_timeout(),
            error: Some(e.to_string()),
        },
    }
}

async fn record(db: &Client, a: &Answer) -> Result<()> {
    db.execute(
        "with gone as (delete from net.http_request_queue where id = $1) \
         insert into net._http_response (id, status_code, content_type, headers, content, timed_out, error_msg) \
         values ($1, $2, $3, $4, $5, $6, $7) on conflict (id) do nothing",
        &[&a.id, &a.status, &a.content_type, &a.headers, &a.content, &a.timed_out, &a.error],
    )
    .await?;
    Ok(())
}
