//! The RLS probe's Realtime attempts: A's channels on B's alerts, and a join with a forged token.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::attempts::Attempts;
use crate::users::User;
use crate::ws::{self, Socket};
use crate::{Context, inject};

/// How long Realtime may take to deliver A's own marker alert (which proves delivery caught up).
const MARKER_WITHIN: Duration = Duration::from_secs(20);

/// A subscribes to B's alerts (filtered to B, and unfiltered) and tries a forged join; B raises an
/// alert, then A raises one. Realtime delivers in commit order on a socket, so once A's own alert
/// arrives, any of B's that RLS let through would have arrived before it.
pub(super) async fn realtime(
    ctx: &Context,
    a: &User,
    b: &User,
    fake: &str,
    at: &mut Attempts,
) -> anyhow::Result<()> {
    let cfg = &ctx.target.config;
    let mut socket = Socket::connect(&cfg.api_url, &cfg.anon_key).await?;
    let mut early = Vec::new();
    let within = Duration::from_secs(20);
    let filtered = socket
        .subscribe(
            "rls:b-filtered",
            &a.token(),
            ws::inserts("alerts", Some(format!("user_id=eq.{}", b.id))),
            within,
            &mut early,
        )
        .await?;
    let unfiltered = socket
        .subscribe(
            "rls:unfiltered",
            &a.token(),
            ws::inserts("alerts", None),
            within,
            &mut early,
        )
        .await?;
    let forged_join = socket
        .subscribe(
            "rls:forged",
            fake,
            ws::inserts("alerts", None),
            within,
            &mut early,
        )
        .await?;
    at.push(
        "Realtime",
        "join with a token forged for B",
        match forged_join {
            Ok(()) => Err("the channel went live".into()),
            Err(reason) => Ok(reason),
        },
    );
    if unfiltered.is_err() {
        at.push(
            "Realtime",
            "A's own alerts channel",
            Ok(format!("could not subscribe: {unfiltered:?}")),
        );
    }
    inject::thermal(&ctx.http, cfg, b)
        .await
        .map_err(|e| anyhow::anyhow!("B's alert: {e}"))?;
    let marker = inject::thermal(&ctx.http, cfg, a)
        .await
        .map_err(|e| anyhow::anyhow!("A's marker alert: {e}"))?;
    let deadline = Instant::now() + MARKER_WITHIN;
    let (mut foreign, mut marker_seen) = (Vec::new(), false);
    let mut frames = early;
    loop {
        for f in frames.drain(..) {
            if let Some((record, _)) = ws::change(&f) {
                if record["user_id"] == json!(b.id) {
                    foreign.push(f["topic"].as_str().unwrap_or("?").to_string());
                } else if inject::key_of(record) == Some(marker) {
                    marker_seen = true;
                }
            }
        }
        if marker_seen || unfiltered.is_err() {
            break;
        }
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(f)) => frames.push(f),
            _ => break,
        }
    }
    socket.close().await;
    let got = |topic: &str| foreign.iter().filter(|t| t.ends_with(topic)).count();
    let conclusive = marker_seen;
    for (what, topic, joined) in [
        (
            "B's alerts on a channel filtered to B",
            "b-filtered",
            &filtered,
        ),
        (
            "B's alerts on an unfiltered channel",
            "unfiltered",
            &unfiltered,
        ),
    ] {
        let n = got(topic);
        at.push(
            "Realtime",
            what,
            if n > 0 {
                Err(format!("{n} of B's alerts delivered to A"))
            } else if let Err(reason) = joined {
                Ok(format!("not subscribed: {reason}"))
            } else if conclusive {
                Ok("none delivered (A's own later alert arrived)".into())
            } else {
                Err("inconclusive: A's own alert never arrived, so absence proves nothing".into())
            },
        );
    }
    Ok(())
}
