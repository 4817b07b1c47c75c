//! A small Realtime client (Phoenix V1 JSON frames over tokio-tungstenite), as a dashboard uses it:
//! connect with the anon key, join `realtime:<topic>` with `postgres_changes` bindings and the
//! user's token, wait for "Subscribed to PostgreSQL", heartbeat every 25 s. Every wait has a
//! deadline: a probe reports what did not happen instead of hanging.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How often a client heartbeats (realtime-js's default).
pub const HEARTBEAT: Duration = Duration::from_secs(25);

pub struct Socket {
    stream: Stream,
    next_ref: u64,
}

impl Socket {
    pub async fn connect(api_url: &str, apikey: &str) -> anyhow::Result<Socket> {
        let url = format!(
            "{}/realtime/v1/websocket?apikey={apikey}&vsn=1.0.0",
            api_url.replacen("http", "ws", 1)
        );
        // wss:// trusts what every other client does (the platform's roots, FLEETBENCH_CA_FILE).
        let tls = fleetbench_tls::client_config()?;
        let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(tls));
        let (stream, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
                .await
                .map_err(|e| anyhow::anyhow!("Realtime websocket: {e}"))?;
        Ok(Socket {
            stream,
            next_ref: 0,
        })
    }

    /// Sends a frame; returns its ref.
    pub async fn push(
        &mut self,
        topic: &str,
        event: &str,
        payload: Value,
        join_ref: Option<&str>,
    ) -> anyhow::Result<String> {
        self.next_ref += 1;
        let r = self.next_ref.to_string();
        let frame = json!({ "topic": topic, "event": event, "payload": payload, "ref": r, "join_ref": join_ref });
        self.stream.send(Message::text(frame.to_string())).await?;
        Ok(r)
    }

    pub async fn heartbeat(&mut self) -> anyhow::Result<()> {
        self.push("phoenix", "heartbeat", json!({}), None)
            .await
            .map(|_| ())
    }

    /// The next frame; `None` when the server closed the socket.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                    Ok(v) => return Some(v),
                    Err(_) => continue,
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Hands channel `realtime:<topic>` a refreshed access token, as realtime-js's `setAuth` does.
    pub async fn set_access_token(&mut self, topic: &str, token: &str) -> anyhow::Result<()> {
        let topic = format!("realtime:{topic}");
        let payload = json!({ "access_token": token });
        self.push(&topic, "access_token", payload, Some(&topic))
            .await
            .map(|_| ())
    }

    /// Joins `realtime:<topic>` with `postgres_changes` bindings as the holder of `token` and waits
    /// until the subscription is live: `Ok(Ok(()))`, or `Ok(Err(reason))` when the server refused it
    /// (the join reply's or the `system` message's words). Changes that arrive meanwhile are kept
    /// in `early`.
    pub async fn subscribe(
        &mut self,
        topic: &str,
        token: &str,
        changes: Value,
        within: Duration,
        early: &mut Vec<Value>,
    ) -> anyhow::Result<Result<(), String>> {
        let deadline = Instant::now() + within;
        let topic = format!("realtime:{topic}");
        let payload = json!({
            "config": { "broadcast": { "self": false }, "presence": { "key": "" }, "postgres_changes": changes },
            "access_token": token,
        });
        let r = self.push(&topic, "phx_join", payload, Some(&topic)).await?;
        let mut replied = false;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next())
                .await
                .map_err(|_| anyhow::anyhow!("no answer to the join of {topic} within {within:?}"))?
                .ok_or_else(|| {
                    anyhow::anyhow!("the server closed the socket while joining {topic}")
                })?;
            if frame["topic"] != json!(topic) {
                early.push(frame);
                continue;
            }
            match frame["event"].as_str() {
                Some("phx_reply") if frame["ref"] == json!(r) => {
                    if frame["payload"]["status"] != "ok" {
                        return Ok(Err(frame["payload"]["response"].to_string()));
                    }
                    replied = true;
                }
                Some("system") if replied => {
                    return Ok(if frame["payload"]["status"] == "ok" {
                        Ok(())
                    } else {
                        Err(frame["payload"]["message"]
                            .as_str()
                            .unwrap_or("refused")
                            .to_string())
                    });
                }
                Some("phx_error") | Some("phx_close") => {
                    return Ok(Err(format!("{}: {}", frame["event"], frame["payload"])));
                }
                _ => early.push(frame),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// The `record` of a `postgres_changes` frame, with its commit timestamp (Unix µs) when given.
pub fn change(frame: &Value) -> Option<(&Value, Option<i64>)> {
    if frame["event"] != "postgres_changes" {
        return None;
    }
    let data = &frame["payload"]["data"];
    let commit = data["commit_timestamp"]
        .as_str()
        .and_then(crate::inject::parse_ts);
    Some((&data["record"], commit))
}

/// The `postgres_changes` binding for INSERTs into `public.<table>`, optionally filtered.
pub fn inserts(table: &str, filter: Option<String>) -> Value {
    let mut b = json!({ "event": "INSERT", "schema": "public", "table": table });
    if let Some(f) = filter {
        b["filter"] = json!(f);
    }
    json!([b])
}
