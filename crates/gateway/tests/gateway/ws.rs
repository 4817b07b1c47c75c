//! A minimal Realtime test client over tokio-tungstenite: pushes frames, reads them with a deadline,
//! and waits for a frame matching a predicate. Every wait is bounded so a lost event fails the test
//! instead of hanging it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::Gateway;

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Ws {
    stream: Stream,
    v2: bool,
    next_ref: u64,
}

/// A frame as `{topic, event, payload, ref, join_ref}` whichever serializer carried it.
pub type Frame = Value;

impl Ws {
    pub async fn connect(
        url: &str,
        key: &str,
        vsn: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let ws_url = format!(
            "{}/realtime/v1/websocket?apikey={key}&vsn={vsn}",
            url.replacen("http", "ws", 1)
        );
        let (stream, _) = tokio_tungstenite::connect_async(ws_url).await?;
        Ok(Ws {
            stream,
            v2: vsn == "2.0.0",
            next_ref: 0,
        })
    }

    pub async fn open(g: &Gateway) -> Ws {
        Ws::connect(&g.url, &g.anon, "1.0.0")
            .await
            .expect("websocket handshake")
    }

    /// Sends a frame; returns its ref.
    pub async fn push(
        &mut self,
        topic: &str,
        event: &str,
        payload: Value,
        join_ref: Option<&str>,
    ) -> String {
        self.next_ref += 1;
        let r = self.next_ref.to_string();
        let text = if self.v2 {
            json!([join_ref, r, topic, event, payload]).to_string()
        } else {
            json!({ "topic": topic, "event": event, "payload": payload, "ref": r, "join_ref": join_ref })
                .to_string()
        };
        self.stream
            .send(Message::text(text))
            .await
            .expect("sending a frame");
        r
    }

    /// The next frame, `None` when the server closed the socket; panics after `WAIT`.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("a frame within the wait");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("frames are JSON");
                    return Some(if self.v2 {
                        json!({ "join_ref": v[0], "ref": v[1], "topic": v[2], "event": v[3], "payload": v[4] })
                    } else {
                        v
                    });
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads until a frame satisfies `want`; panics if the socket closes first.
    pub async fn until(&mut self, what: &str, want: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            match self.next().await {
                Some(f) if want(&f) => return f,
                Some(_) => continue,
                None => panic!("socket closed while waiting for {what}"),
            }
        }
    }

    /// Joins `realtime:<name>` and returns the reply's payload.
    pub async fn join(&mut self, name: &str, token: Option<&str>, config: Value) -> Value {
        let topic = format!("realtime:{name}");
        let mut payload = json!({ "config": config });
        if let Some(t) = token {
            payload["access_token"] = json!(t);
        }
        let r = self
            .push(&topic, "phx_join", payload, Some(&r_join(&topic)))
            .await;
        let reply = self
            .until("the join reply", |f| {
                f["event"] == "phx_reply" && f["ref"] == json!(r)
            })
            .await;
        reply["payload"].clone()
    }

    /// Joins with `postgres_changes` bindings and waits for the subscription to go live.
    pub async fn subscribe(&mut self, name: &str, token: &str, changes: Value) -> Value {
        let reply = self
            .join(name, Some(token), json!({ "postgres_changes": changes }))
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
        let system = self.system(name).await;
        assert_eq!(system["payload"]["status"], "ok", "{system}");
        reply
    }

    /// The next `system` frame of a channel.
    pub async fn system(&mut self, name: &str) -> Frame {
        let topic = format!("realtime:{name}");
        self.until("a system message", |f| {
            f["event"] == "system" && f["topic"] == json!(topic)
        })
        .await
    }

    /// The next `postgres_changes` payload.
    pub async fn change(&mut self) -> Value {
        self.until("a postgres_changes event", |f| {
            f["event"] == "postgres_changes"
        })
        .await["payload"]
            .clone()
    }
}

fn r_join(topic: &str) -> String {
    format!("j-{topic}")
}

/// An HS256 token with these claims, signed with the stack's secret.
pub fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A user's token that expires `secs` from now.
pub fn user_token(secret: &str, user_id: &str, secs: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + secs;
    token(
        secret,
        json!({ "sub": user_id, "role": "authenticated", "aud": "authenticated", "exp": exp }),
    )
}
