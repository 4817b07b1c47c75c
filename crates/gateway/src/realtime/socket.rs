//! One websocket: the handshake checks (API key, concurrent sockets), then a loop over client frames
//! (heartbeat, `phx_join`, `access_token`, `broadcast`, `phx_leave`), the heartbeat timeout and the
//! expiry of each channel's token, with a writer task draining the socket's outbound queue.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::changes::Kind;
use super::hub::{Channel, Claims, Conn, Outbound, Sub};
use super::protocol::{Frame, Vsn};
use super::{Realtime, filter, store};

pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(rt): State<Arc<Realtime>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let error = |status: StatusCode, msg: &str| {
        (status, axum::Json(json!({ "error": msg }))).into_response()
    };
    let vsn = match Vsn::parse(q.get("vsn").map(String::as_str)) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get("apikey").cloned());
    let Some(key) = key else {
        return error(StatusCode::UNAUTHORIZED, "Missing API key");
    };
    let claims = match verify(&key, &rt.keys) {
        Ok(c) => c,
        Err(reason) => return error(StatusCode::UNAUTHORIZED, &reason),
    };
    if let Some(max) = rt.settings.limits.as_ref().map(|l| l.max_connections)
        && rt.stats.connections.load(Ordering::Acquire) >= max as u64
    {
        return error(StatusCode::TOO_MANY_REQUESTS, "Too many connected users");
    }
    // Counted before the upgrade completes, so a burst of handshakes cannot overshoot the limit.
    rt.stats.connections.fetch_add(1, Ordering::AcqRel);
    rt.live.send_modify(|n| *n += 1);
    let failed = rt.clone();
    ws.max_frame_size(5_000_000)
        .on_failed_upgrade(move |_| {
            failed.stats.connections.fetch_sub(1, Ordering::AcqRel);
            failed.live.send_modify(|n| *n -= 1);
        })
        .on_upgrade(move |socket| async move {
            serve(socket, rt.clone(), vsn, claims).await;
            rt.stats.connections.fetch_sub(1, Ordering::AcqRel);
            rt.live.send_modify(|n| *n -= 1);
        })
}

/// A JWT's claims (an opaque key's role, for the key the socket connects with), or the reason it
/// is refused in Realtime's words.
pub fn verify(token: &str, keys: &crate::keys::ProjectKeys) -> Result<Claims, String> {
    if let Some(role) = keys.opaque_role(token) {
        return Ok(Claims {
            role: role.name().to_string(),
            sub: String::new(),
            exp: i64::MAX,
            json: serde_json::json!({ "role": role.name() }).to_string(),
        });
    }
    // Expiry is checked below, to say how long ago in Realtime's words.
    let c = keys
        .decode::<Value>(token, false)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                "JwtSignatureError: Failed to validate JWT signature".to_string()
            }
            _ => "MalformedJWT: The token provided is not a valid JWT".to_string(),
        })?;
    let (Some(role), Some(exp)) = (c["role"].as_str(), c["exp"].as_i64()) else {
        return Err("MalformedJWT: Fields `role` and `exp` are required in JWT".into());
    };
    let now = chrono::Utc::now().timestamp();
    if exp <= now {
        return Err(format!(
            "InvalidJWTExpiration: Token has expired {} seconds ago",
            now - exp
        ));
    }
    Ok(Claims {
        role: role.to_string(),
        sub: c["sub"].as_str().unwrap_or_default().to_string(),
        exp,
        json: c.to_string(),
    })
}

/// `INSERT|UPDATE|DELETE|*`; `None` is every event.
pub fn parse_event(e: &str) -> Result<Option<Kind>, String> {
    match e {
        "*" => Ok(None),
        "INSERT" => Ok(Some(Kind::Insert)),
        "UPDATE" => Ok(Some(Kind::Update)),
        "DELETE" => Ok(Some(Kind::Delete)),
        other => Err(format!(
            "event `{other}` is not INSERT, UPDATE, DELETE or *"
        )),
    }
}

struct Socket {
    rt: Arc<Realtime>,
    conn: Arc<Conn>,
    token: Claims,
    channels: HashMap<String, Arc<Channel>>,
}

async fn serve(ws: WebSocket, rt: Arc<Realtime>, vsn: Vsn, token: Claims) {
    let id = rt.next_conn.fetch_add(1, Ordering::Relaxed);
    let (conn, mut queue) = Conn::new(id, vsn, rt.settings.max_queue);
    let counters = conn.counters.clone();
    let (mut sink, mut stream) = ws.split();
    let write_timeout = rt.settings.write_timeout;
    let writer_conn = Arc::downgrade(&conn);
    let (finish, mut finished) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut draining = false;
        loop {
            let mut out = if draining {
                match queue.try_recv() {
                    Ok(out) => out,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    biased;
                    out = queue.recv() => match out {
                        Some(out) => out,
                        None => break,
                    },
                    _ = &mut finished => {
                        draining = true;
                        continue;
                    }
                }
            };
            let sent = tokio::time::timeout(
                write_timeout,
                sink.send(Message::Text(out.take_text().into())),
            );
            match sent.await {
                Ok(Ok(())) => Outbound::written(out),
                _ => {
                    if let Some(c) = writer_conn.upgrade() {
                        c.close("the socket did not accept a frame in time");
                    }
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });

    let mut s = Socket {
        rt: rt.clone(),
        conn: conn.clone(),
        token,
        channels: HashMap::new(),
    };
    let mut kill = conn.kill.subscribe();
    let mut stop = rt.stop.subscribe();
    let mut last_heard = Instant::now();
    let server_stopping = loop {
        let expiry = s.next_expiry();
        tokio::select! {
            msg = stream.next() => {
                let frame = match msg {
                    Some(Ok(Message::Text(t))) => Frame::decode_text(&t, vsn),
                    Some(Ok(Message::Binary(b))) => Frame::decode_binary(&b),
                    Some(Ok(_)) => { last_heard = Instant::now(); continue }
                    Some(Err(_)) | None => break false,
                };
                last_heard = Instant::now();
                match frame {
                    Ok(f) => s.handle(f).await,
                    Err(e) => tracing::debug!("realtime: socket {id}: {e}"),
                }
            }
            _ = tokio::time::sleep_until(last_heard + rt.settings.heartbeat_timeout) => {
                tracing::debug!("realtime: socket {id}: no heartbeat within {:?}", rt.settings.heartbeat_timeout);
                break false;
            }
            _ = tokio::time::sleep_until(expiry) => s.expire(),
            _ = kill.changed() => {
                if let Some(reason) = kill.borrow().clone() {
                    tracing::info!("realtime: socket {id} closed: {reason}");
                }
                break false;
            }
            _ = stop.changed() => break true,
        }
    };
    // Leaving: the channels go; their rows stay when the server is the one stopping, so the clients
    // can resume after the restart.
    let mut rows = Vec::new();
    for ch in s.channels.values() {
        rows.extend(rt.hub.remove_channel(ch));
    }
    if !server_stopping && !rows.is_empty() {
        rt.forget(rows).await;
    }
    conn.close("socket closed");
    drop(s);
    drop(conn);
    // The writer flushes what is queued, then closes; what it could not write is reported.
    let _ = finish.send(());
    let _ = writer.await;
    let lost = counters.lost.load(Ordering::Relaxed);
    if lost > 0 {
        rt.stats.lost.fetch_add(lost, Ordering::Relaxed);
        tracing::warn!("realtime: socket {id} closed with {lost} changes not delivered");
    }
}

impl Socket {
    fn send(&self, f: &Frame) {
        self.conn.send(f.encode(self.conn.vsn), None);
    }

    fn next_expiry(&self) -> Instant {
        let now = chrono::Utc::now().timestamp();
        let exp = self.channels.values().map(|c| c.claims().exp).min();
        match exp {
            Some(e) => Instant::now() + Duration::from_secs(e.saturating_sub(now).max(0) as u64),
            None => Instant::now() + Duration::from_secs(86_400),
        }
    }

    /// Channels whose token has expired get a system error, then `phx_close`.
    fn expire(&mut self) {
        let now = chrono::Utc::now().timestamp();
        let expired: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| c.claims().exp <= now)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in expired {
            let ago = now - self.channels[&topic].claims().exp;
            self.shutdown_channel(&topic, &format!("Token has expired {ago} seconds ago"));
        }
    }

    fn shutdown_channel(&mut self, topic: &str, message: &str) {
        let Some(ch) = self.channels.remove(topic) else {
            return;
        };
        let name = topic.strip_prefix("realtime:").unwrap_or(topic);
        self.send(&Frame {
            join_ref: ch.join_ref.clone(),
            ..Frame::new(
                topic,
                "system",
                json!({ "extension": "system", "status": "error", "message": message, "channel": name }),
            )
        });
        self.send(&Frame {
            join_ref: ch.join_ref.clone(),
            ..Frame::new(topic, "phx_close", json!({}))
        });
        let rows = self.rt.hub.remove_channel(&ch);
        let rt = self.rt.clone();
        tokio::spawn(async move { rt.forget(rows).await });
    }

    async fn handle(&mut self, f: Frame) {
        if f.topic == "phoenix" && f.event == "heartbeat" {
            return self.send(&Frame::reply(&f, "ok", json!({})));
        }
        match f.event.as_str() {
            "phx_join" => self.join(f).await,
            "phx_leave" => {
                if let Some(ch) = self.channels.remove(&f.topic) {
                    let rows = self.rt.hub.remove_channel(&ch);
                    self.rt.forget(rows).await;
                }
                self.send(&Frame::reply(&f, "ok", json!({})));
                self.send(&Frame::new(&f.topic, "phx_close", json!({})));
            }
            _ if !self.channels.contains_key(&f.topic) => {
                self.send(&Frame::reply(
                    &f,
                    "error",
                    json!({ "reason": "unmatched topic" }),
                ));
            }
            "access_token" => self.refresh(f),
            "broadcast" => self.broadcast(f),
            "presence" => self.send(&Frame::reply(&f, "ok", json!({}))),
            _ => self.send(&Frame::reply(
                &f,
                "error",
                json!({ "reason": "unknown event" }),
            )),
        }
    }

    fn refresh(&mut self, f: Frame) {
        if !self.rt.events.allow() {
            return self.shutdown_channel(&f.topic, "Too many messages per second");
        }
        let Some(token) = f.payload["access_token"].as_str() else {
            return;
        };
        if token.starts_with("sb_") {
            return;
        }
        match verify(token, &self.rt.keys) {
            Ok(claims) => {
                *self.channels[&f.topic].claims.lock().unwrap() = Arc::new(claims);
            }
            Err(reason) => {
                let message = reason
                    .split_once(": ")
                    .map_or(reason.as_str(), |(_, m)| m)
                    .to_string();
                self.shutdown_channel(&f.topic, &message);
            }
        }
    }

    fn broadcast(&mut self, f: Frame) {
        if !self.rt.events.allow() {
            return self.shutdown_channel(&f.topic, "Too many messages per second");
        }
        let me = self.channels[&f.topic].clone();
        for ch in self.rt.hub.channels(&f.topic) {
            if Arc::ptr_eq(&ch.conn, &self.conn) && !me.broadcast_self {
                continue;
            }
            let out = Frame::new(&f.topic, "broadcast", f.payload.clone());
            ch.conn.send(out.encode(ch.conn.vsn), None);
        }
        // realtime-js waits for this reply only when the channel was joined with `broadcast.ack`.
        if f.msg_ref.is_some() {
            self.send(&Frame::reply(&f, "ok", json!({})));
        }
    }

    async fn join(&mut self, f: Frame) {
        let reply_error = |s: &Socket, reason: &str| {
            s.send(&Frame::reply(&f, "error", json!({ "reason": reason })));
        };
        let Some(name) = f
            .topic
            .strip_prefix("realtime:")
            .filter(|n| !n.is_empty() && *n != "realtime")
        else {
            return reply_error(self, "Topic must be `realtime:<channel name>`");
        };
        let name = name.to_string();
        if !self.rt.joins.allow() {
            return reply_error(
                self,
                "ClientJoinRateLimitReached: Too many joins per second",
            );
        }
        if let Some(max) = self
            .rt
            .settings
            .limits
            .as_ref()
            .map(|l| l.max_channels_per_client)
            && self.channels.len() >= max
            && !self.channels.contains_key(&f.topic)
        {
            return reply_error(self, "ChannelRateLimitReached: Too many channels");
        }
        let token = f.payload["access_token"]
            .as_str()
            .or_else(|| f.payload["user_token"].as_str())
            .filter(|t| !t.starts_with("sb_"));
        let claims = match token {
            Some(t) => match verify(t, &self.rt.keys) {
                Ok(c) => c,
                Err(reason) => return reply_error(self, &reason),
            },
            None => self.token.clone(),
        };
        let config = &f.payload["config"];
        let mut bindings = Vec::new();
        let mut echo = Vec::new();
        for (i, pc) in config["postgres_changes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let event = pc["event"].as_str().unwrap_or("*").to_string();
            let schema = pc["schema"].as_str().unwrap_or("public").to_string();
            let table = pc["table"].as_str().unwrap_or("*").to_string();
            let filter_text = pc["filter"].as_str().map(str::to_string);
            let id = binding_id(&event, &schema, &table, filter_text.as_deref(), i);
            let mut e = json!({ "id": id, "event": event, "schema": schema, "table": table });
            if let Some(ft) = &filter_text {
                e["filter"] = json!(ft);
            }
            echo.push(e);
            bindings.push((id, event, schema, table, filter_text.unwrap_or_default()));
        }
        if let Some(old) = self.channels.remove(&f.topic) {
            let rows = self.rt.hub.remove_channel(&old);
            self.rt.forget(rows).await;
        }
        let channel = Arc::new(Channel {
            conn: self.conn.clone(),
            topic: f.topic.clone(),
            join_ref: f.join_ref.clone(),
            claims: Mutex::new(Arc::new(claims)),
            broadcast_self: config["broadcast"]["self"].as_bool().unwrap_or(false),
        });
        self.rt.hub.add_channel(channel.clone());
        self.channels.insert(f.topic.clone(), channel.clone());
        let response = if bindings.is_empty() {
            json!({})
        } else {
            json!({ "postgres_changes": echo })
        };
        self.send(&Frame::reply(&f, "ok", response));
        if !bindings.is_empty() {
            let rt = self.rt.clone();
            tokio::spawn(async move {
                let status = subscribe(&rt, &channel, bindings).await;
                let (status, message) = match status {
                    Ok(()) => ("ok", "Subscribed to PostgreSQL".to_string()),
                    Err(m) => ("error", m),
                };
                let frame = Frame {
                    join_ref: channel.join_ref.clone(),
                    ..Frame::new(
                        &channel.topic,
                        "system",
                        json!({ "message": message, "status": status,
                                "extension": "postgres_changes", "channel": name }),
                    )
                };
                channel.conn.send(frame.encode(channel.conn.vsn), None);
            });
        }
    }
}

/// Realtime's ids are a hash of the binding; the index keeps equal bindings apart.
fn binding_id(event: &str, schema: &str, table: &str, filter: Option<&str>, i: usize) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (event, schema, table, filter, i).hash(&mut h);
    (h.finish() % (1 << 27)) as u32
}

/// Makes the bindings live: each table must be published and readable by the role. Runs after the
/// join reply, as hosted Realtime does; the outcome is the `system` message.
async fn subscribe(
    rt: &Arc<Realtime>,
    channel: &Arc<Channel>,
    bindings: Vec<(u32, String, String, String, String)>,
) -> Result<(), String> {
    let db = rt.db().await?;
    let claims = channel.claims();
    let mut subs = Vec::new();
    for (id, event, schema, table, filter_text) in &bindings {
        let params =
            format!("[event: {event}, schema: {schema}, table: {table}, filters: [{filter_text}]]");
        let unable = |why: &str| {
            format!(
                "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: {params}. {why}"
            )
        };
        let action = parse_event(event).map_err(|e| unable(&e))?;
        let filters = filter::parse(filter_text).map_err(|e| unable(&e))?;
        let (published, readable) =
            store::check_table(&db, super::PUBLICATION, schema, table, &claims.role)
                .await
                .map_err(|e| unable(&e.to_string()))?;
        if !published {
            return Err(unable(&format!(
                "{schema}.{table} is not in publication {}",
                super::PUBLICATION
            )));
        }
        if !readable {
            return Err(unable(&format!(
                "permission denied for table {table} to role {}",
                claims.role
            )));
        }
        let row_id = store::insert(
            &db,
            &rt.settings.slot,
            rt.instance,
            schema,
            table,
            filter_text,
            event,
            &claims.json,
            &claims.role,
            &channel.topic,
        )
        .await
        .map_err(|e| unable(&e.to_string()))?;
        let key = store::resume_key(
            &claims.sub,
            &claims.role,
            &channel.topic,
            event,
            schema,
            table,
            filter_text,
        );
        let since_lsn = if rt.claim_orphan(&db, &key).await {
            0
        } else {
            store::current_lsn(&db)
                .await
                .map_err(|e| unable(&e.to_string()))?
        };
        subs.push(Arc::new(Sub {
            id: *id,
            channel: channel.clone(),
            schema: schema.clone(),
            table: table.clone(),
            action,
            filters,
            since_lsn,
            until_lsn: u64::MAX,
            row_id,
        }));
    }
    let still_joined = rt
        .hub
        .channels(&channel.topic)
        .iter()
        .any(|c| Arc::ptr_eq(c, channel));
    if channel.conn.is_closed() || !still_joined {
        let rows: Vec<i64> = subs.iter().map(|s| s.row_id).collect();
        rt.forget(rows).await;
        return Err("the channel was left while subscribing".into());
    }
    for s in subs {
        rt.hub.add_sub(s);
    }
    Ok(())
}
