//! The replication poller: like Realtime's `ReplicationPoller`, one task reads the slot every
//! `poll_interval` (at once again while there is more), up to `poll_max_changes` per read, so
//! changes are handled in commit order on a single thread. For each batch it matches changes to
//! subscriptions (event, filters), asks Postgres which rows each subscriber's role may see, queues
//! the frames, waits until they are written, and only then advances the slot: a change that was not
//! written stays in the slot across a restart.
//!
//! After a restart, subscriptions the previous instance left in `realtime.subscription` are
//! *orphans*. If the slot holds undelivered changes, polling waits (at most `resume_window`) for
//! their clients to rejoin; a rejoining client receives the backlog. Orphans that do not return are
//! given the backlog as lost: the count is logged and added to the `lost` statistic.
//!
//! With `temporary_slot` (the `hosted` profile) a new instance starts from now instead, as hosted
//! Realtime's temporary slot does: what was committed while it was down is skipped and counted in
//! `skipped`. With `idle_backoff` it polls as hosted's `ReplicationPoller`: at once after consuming
//! changes, five intervals when idle ([`next_poll`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_postgres::Client;

use super::changes::{Change, Decoder, Kind};
use super::hub::{Ack, Channel, Claims, Conn, Sub};
use super::{Realtime, filter, store};

pub async fn run(rt: Arc<Realtime>, db: Client) {
    let mut stop = rt.stop.subscribe();
    let mut decoder = match Decoder::new(&db).await {
        Ok(d) => d,
        Err(e) => return tracing::error!("realtime: reading pg_type: {e}"),
    };
    let start = if rt.settings.temporary_slot {
        skip_backlog(&rt, &db).await.map(|()| None)
    } else {
        resume(&rt, &db).await
    };
    let mut sinks = start.unwrap_or_else(|e| {
        tracing::error!("realtime: starting from the slot: {e}");
        None
    });
    loop {
        if *stop.borrow() {
            break;
        }
        let polled = poll_once(&rt, &db, &mut decoder, &mut sinks)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("realtime: poll failed: {e}");
                Polled::Nothing
            });
        if polled == Polled::Nothing {
            rt.stats.idle_polls.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(wait) = next_poll(polled, &rt.settings) {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// What one poll of the slot found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polled {
    /// A full batch: there may be more.
    Full,
    /// Some changes, fewer than a batch.
    Some,
    Nothing,
}

/// How long to wait before the next poll (`None`: at once). Hosted Realtime polls again at once
/// after consuming changes and waits five intervals when idle; the plain stand-in waits one
/// interval unless the batch was full.
fn next_poll(p: Polled, s: &super::RealtimeSettings) -> Option<std::time::Duration> {
    match (p, s.idle_backoff) {
        (Polled::Full, _) | (Polled::Some, true) => None,
        (Polled::Some, false) | (Polled::Nothing, false) => Some(s.poll_interval),
        (Polled::Nothing, true) => Some(s.poll_interval * 5),
    }
}

/// Hosted Realtime's slot is temporary: a new instance starts from now. What the slot holds from
/// before is skipped (its row changes counted) and earlier subscriptions are forgotten.
async fn skip_backlog(rt: &Arc<Realtime>, db: &Client) -> Result<(), tokio_postgres::Error> {
    let slot = &rt.settings.slot;
    let rows = store::peek(db, slot, super::PUBLICATION, i32::MAX).await?;
    // pgoutput's row messages: Insert, Update, Delete.
    let skipped = rows
        .iter()
        .filter(|r| matches!(r.first(), Some(b'I' | b'U' | b'D')))
        .count() as u64;
    store::advance(db, slot, store::current_lsn(db).await?).await?;
    let orphans = store::orphans(db, slot, rt.instance).await?;
    let ids: Vec<i64> = orphans.iter().map(|o| o.row_id).collect();
    store::delete(db, &ids).await?;
    rt.stats.skipped.fetch_add(skipped, Ordering::Relaxed);
    if skipped > 0 {
        tracing::info!(
            "realtime: {skipped} changes committed while down are skipped (temporary slot)"
        );
    }
    rt.orphans_loaded.send_replace(true);
    Ok(())
}

/// Subscribers that did not return, and the LSN up to which the backlog they missed reaches.
struct Sinks {
    conns: Vec<(Arc<Conn>, store::Stored)>,
    until_lsn: u64,
}

async fn resume(rt: &Arc<Realtime>, db: &Client) -> Result<Option<Sinks>, tokio_postgres::Error> {
    let result = load_and_wait(rt, db).await;
    rt.orphans_loaded.send_replace(true);
    result
}

async fn load_and_wait(
    rt: &Arc<Realtime>,
    db: &Client,
) -> Result<Option<Sinks>, tokio_postgres::Error> {
    let orphans = store::orphans(db, &rt.settings.slot, rt.instance).await?;
    if orphans.is_empty() {
        return Ok(None);
    }
    let backlog = !store::peek(db, &rt.settings.slot, super::PUBLICATION, 1)
        .await?
        .is_empty();
    if !backlog {
        let ids: Vec<i64> = orphans.iter().map(|o| o.row_id).collect();
        store::delete(db, &ids).await?;
        return Ok(None);
    }
    let until_lsn = store::current_lsn(db).await?;
    tracing::info!(
        "realtime: {} subscriptions from before the restart; waiting up to {:?} for their clients",
        orphans.len(),
        rt.settings.resume_window
    );
    *rt.orphans.lock().unwrap() = orphans;
    rt.orphans_loaded.send_replace(true);
    let deadline = tokio::time::Instant::now() + rt.settings.resume_window;
    let mut stop = rt.stop.subscribe();
    loop {
        if rt.orphans.lock().unwrap().is_empty() {
            break;
        }
        tokio::select! {
            _ = rt.orphan_claimed.notified() => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = stop.changed() => break,
        }
    }
    let left = std::mem::take(&mut *rt.orphans.lock().unwrap());
    let mut conns = Vec::new();
    for (i, o) in left.into_iter().enumerate() {
        let conn = Conn::lost_sink(u64::MAX - i as u64);
        let claims = Claims {
            role: o.role.clone(),
            sub: o.sub.clone(),
            exp: i64::MAX,
            json: o.claims.clone(),
        };
        let channel = Arc::new(Channel {
            conn: conn.clone(),
            topic: o.topic.clone(),
            join_ref: None,
            claims: std::sync::Mutex::new(Arc::new(claims)),
            broadcast_self: false,
        });
        rt.hub.add_sub(Arc::new(Sub {
            id: 0,
            channel,
            schema: o.schema.clone(),
            table: o.table.clone(),
            action: super::socket::parse_event(&o.action).ok().flatten(),
            filters: filter::parse(&o.filters).unwrap_or_default(),
            since_lsn: 0,
            until_lsn,
            row_id: o.row_id,
        }));
        conns.push((conn, o));
    }
    Ok((!conns.is_empty()).then_some(Sinks { conns, until_lsn }))
}

/// Reads and delivers one batch; true when the slot may hold more.
async fn poll_once(
    rt: &Arc<Realtime>,
    db: &Client,
    decoder: &mut Decoder,
    sinks: &mut Option<Sinks>,
) -> Result<Polled, String> {
    let max = rt.settings.poll_max_changes;
    let rows = store::peek(db, &rt.settings.slot, super::PUBLICATION, max)
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        if settles(sinks, u64::MAX) {
            forget_orphans(db, sinks).await;
            report_lost(rt, sinks);
        }
        return Ok(Polled::Nothing);
    }
    let (changes, last_end) = decoder.decode(db, &rows).await?;
    let settling = settles(sinks, last_end.unwrap_or(0));
    // The absent subscribers' rows go before this batch reaches anyone: whoever receives it finds
    // them gone.
    if settling {
        forget_orphans(db, sinks).await;
    }
    let ack = Arc::new(Ack::default());
    dispatch(rt, db, &changes, &ack).await?;
    // They were handed their share of this batch as lost; reported before the others' frames are
    // waited for.
    if settling {
        report_lost(rt, sinks);
    }
    ack.wait().await;
    if let Some(end) = last_end {
        store::advance(db, &rt.settings.slot, end)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(if rows.len() as i32 >= max {
        Polled::Full
    } else {
        Polled::Some
    })
}

/// Whether a batch ending at `at` takes the poller past the backlog the absent subscribers missed.
fn settles(sinks: &Option<Sinks>, at: u64) -> bool {
    sinks.as_ref().is_some_and(|s| at >= s.until_lsn)
}

/// Removes the absent subscribers' stored subscriptions.
async fn forget_orphans(db: &Client, sinks: &Option<Sinks>) {
    let Some(s) = sinks else { return };
    let rows: Vec<i64> = s.conns.iter().map(|(_, o)| o.row_id).collect();
    if let Err(e) = store::delete(db, &rows).await {
        tracing::warn!("realtime: removing orphaned subscriptions: {e}");
    }
}

/// Reports what the absent subscribers lost and forgets them.
fn report_lost(rt: &Arc<Realtime>, sinks: &mut Option<Sinks>) {
    let Some(s) = sinks.take() else { return };
    for (conn, o) in &s.conns {
        rt.hub.remove_conn(conn);
        let lost = conn.counters.lost.load(Ordering::Relaxed);
        rt.stats.lost.fetch_add(lost, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                "realtime: {lost} changes of {}.{} for {} on {} were lost: the client did not rejoin within {:?} of the restart",
                o.schema,
                o.table,
                o.who(),
                o.topic,
                rt.settings.resume_window
            );
        }
    }
}

/// A change (by index), a subscription it matched, and the identity it is authorised with.
type Candidate = (usize, Arc<Sub>, Arc<Claims>);

/// Matches, authorises and queues one batch, in commit order per socket.
async fn dispatch(
    rt: &Realtime,
    db: &Client,
    changes: &[Change],
    ack: &Arc<Ack>,
) -> Result<(), String> {
    if changes.is_empty() {
        return Ok(());
    }
    // The pairs that pass event, time and filters.
    let candidates: Vec<Candidate> = rt.hub.with_subs(|subs| {
        let mut out = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let Some(list) = subs.get(&(c.table.schema.clone(), c.table.name.clone())) else {
                continue;
            };
            for s in list {
                if c.end_lsn > s.since_lsn
                    && c.end_lsn <= s.until_lsn
                    && s.wants(c.kind)
                    && filter::matches(&s.filters, c.row())
                {
                    out.push((i, s.clone(), s.channel.claims()));
                }
            }
        }
        out
    });
    if candidates.is_empty() {
        return Ok(());
    }
    let visible = visibility(db, changes, &candidates).await?;

    // One frame per change and channel, carrying the ids of every binding of that channel it matched.
    let mut per_change: Vec<Vec<(Arc<Channel>, Vec<u32>)>> = vec![Vec::new(); changes.len()];
    for (i, s, claims) in &candidates {
        if needs_check(&changes[*i], claims) && !visible.contains(&(*i, claims.json.as_str())) {
            continue;
        }
        let slot = &mut per_change[*i];
        match slot.iter_mut().find(|(ch, _)| Arc::ptr_eq(ch, &s.channel)) {
            Some((_, ids)) => ids.push(s.id),
            None => slot.push((s.channel.clone(), vec![s.id])),
        }
    }
    for (i, targets) in per_change.into_iter().enumerate() {
        if targets.is_empty() {
            continue;
        }
        let data = changes[i].data_json();
        for (channel, ids) in targets {
            let text = super::protocol::encode_change(
                channel.conn.vsn,
                channel.join_ref.as_deref(),
                &channel.topic,
                &ids,
                &data,
            );
            channel.conn.send(text, Some(ack));
            rt.stats.events.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Deletes are not checked (the row is gone), nor roles that bypass row-level security.
fn needs_check(c: &Change, claims: &Claims) -> bool {
    c.kind != Kind::Delete && c.table.rls && claims.role != "service_role"
}

/// Which (change, claims) are visible: one query per distinct identity and table, each run as that
/// identity, pipelined on the poller's connection.
async fn visibility<'a>(
    db: &Client,
    changes: &'a [Change],
    candidates: &'a [Candidate],
) -> Result<HashSet<(usize, &'a str)>, String> {
    // (table query, claims) → (role, change indices)
    let mut groups: HashMap<(&str, &str), (&str, Vec<usize>)> = HashMap::new();
    for (i, _, claims) in candidates {
        if !needs_check(&changes[*i], claims) {
            continue;
        }
        let (_, idx) = groups
            .entry((changes[*i].table.visible_sql.as_str(), claims.json.as_str()))
            .or_insert_with(|| (claims.role.as_str(), Vec::new()));
        if !idx.contains(i) {
            idx.push(*i);
        }
    }
    let queries = groups
        .iter()
        .map(|(&(sql, claims), (role, idx))| async move {
            let keys: Vec<&str> = idx.iter().map(|&i| changes[i].key_text.as_str()).collect();
            let rows = db
                .query(
                    "select realtime.fleetbench_visible($1, $2, $3, $4::text[])",
                    &[role, &claims, &sql, &keys],
                )
                .await?;
            let seen: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            Ok::<_, tokio_postgres::Error>(
                idx.iter()
                    .filter(|&&i| seen.contains(&changes[i].key_text))
                    .map(|&i| (i, claims))
                    .collect::<Vec<_>>(),
            )
        });
    let mut visible = HashSet::new();
    for r in futures_util::future::join_all(queries).await {
        visible.extend(r.map_err(|e| format!("visibility check: {e}"))?);
    }
    Ok(visible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_follow_hosted_realtime_only_when_asked() {
        let mut s = super::super::RealtimeSettings::default();
        let i = s.poll_interval;
        assert_eq!(next_poll(Polled::Full, &s), None);
        assert_eq!(next_poll(Polled::Some, &s), Some(i));
        assert_eq!(next_poll(Polled::Nothing, &s), Some(i));
        s.idle_backoff = true;
        assert_eq!(next_poll(Polled::Full, &s), None);
        assert_eq!(next_poll(Polled::Some, &s), None);
        assert_eq!(next_poll(Polled::Nothing, &s), Some(i * 5));
    }
}
