//! What the Realtime stand-in keeps in the database, as hosted Realtime keeps it in the tenant's:
//! the logical replication slot it polls, the `realtime.subscription` rows (so subscriptions outlive
//! a restart of the gateway and can be resumed), and the visibility check run as each subscriber.

use tokio_postgres::Client;
use uuid::Uuid;

const SETUP: &str = r#"
create schema if not exists realtime;
create table if not exists realtime.subscription (
    id bigint generated always as identity primary key,
    subscription_id uuid not null,
    entity regclass not null,
    filters text not null default '',
    action_filter text not null default '*',
    claims jsonb not null,
    claims_role text not null,
    topic text not null,
    instance uuid not null,
    created_at timestamptz not null default now()
);
alter table realtime.subscription add column if not exists slot text not null default '';
-- Which of `keys` the subscriber's role and claims may SELECT: row-level security is Postgres's own,
-- as in Realtime's apply_rls. The role switch is local to the caller's one-statement transaction.
create or replace function realtime.fleetbench_visible(role_name text, claims text, query text, keys text[])
returns setof text language plpgsql as $$
begin
    perform set_config('role', role_name, true);
    perform set_config('request.jwt.claims', claims, true);
    return query execute query using keys;
exception when insufficient_privilege then
    return;
end
$$;
revoke all on function realtime.fleetbench_visible(text, text, text, text[]) from public;
"#;

pub async fn setup(db: &Client, slot: &str) -> Result<(), tokio_postgres::Error> {
    // Two gateways starting at once on one database both try to create the schema.
    db.batch_execute("select pg_advisory_lock(7263541)").await?;
    let result = async {
        db.batch_execute(SETUP).await?;
        db.execute(
            "select pg_create_logical_replication_slot($1, 'pgoutput') \
             where not exists (select 1 from pg_replication_slots where slot_name = $1)",
            &[&slot],
        )
        .await
    }
    .await;
    db.batch_execute("select pg_advisory_unlock(7263541)")
        .await?;
    result?;
    db.batch_execute("set timezone = 'UTC'; set datestyle = 'ISO, YMD'")
        .await
}

/// Up to `max` changes (whole transactions) past the slot's confirmed position, not consumed.
pub async fn peek(
    db: &Client,
    slot: &str,
    publication: &str,
    max: i32,
) -> Result<Vec<Vec<u8>>, tokio_postgres::Error> {
    let rows = db
        .query(
            "select data from pg_logical_slot_peek_binary_changes($1, null, $2, \
             'proto_version', '1', 'publication_names', $3)",
            &[&slot, &max, &publication],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn advance(db: &Client, slot: &str, lsn: u64) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "select pg_replication_slot_advance($1, $2::text::pg_lsn)",
        &[&slot, &lsn_text(lsn)],
    )
    .await
    .map(drop)
}

pub async fn current_lsn(db: &Client) -> Result<u64, tokio_postgres::Error> {
    let text: String = db
        .query_one("select pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    Ok(parse_lsn(&text))
}

pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

/// A persisted subscription: enough to recognise the same client rejoining after a restart.
#[derive(Debug, Clone)]
pub struct Stored {
    pub row_id: i64,
    pub schema: String,
    pub table: String,
    pub filters: String,
    pub action: String,
    pub claims: String,
    /// The claims' `sub` (empty for a key without one).
    pub sub: String,
    pub role: String,
    pub topic: String,
}

impl Stored {
    /// Same user, same channel, same binding.
    pub fn resume_key(&self) -> String {
        resume_key(
            &self.sub,
            &self.role,
            &self.topic,
            &self.action,
            &self.schema,
            &self.table,
            &self.filters,
        )
    }

    /// The role and user, for log lines.
    pub fn who(&self) -> String {
        format!("{} {}", self.role, self.sub).trim_end().to_string()
    }
}

pub fn resume_key(
    sub: &str,
    role: &str,
    topic: &str,
    action: &str,
    schema: &str,
    table: &str,
    filters: &str,
) -> String {
    format!("{sub}\u{1f}{role}\u{1f}{topic}\u{1f}{action}\u{1f}{schema}.{table}\u{1f}{filters}")
}

#[allow(clippy::too_many_arguments)]
pub async fn insert(
    db: &Client,
    slot: &str,
    instance: Uuid,
    schema: &str,
    table: &str,
    filters: &str,
    action: &str,
    claims: &str,
    role: &str,
    topic: &str,
) -> Result<i64, tokio_postgres::Error> {
    let entity = format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        table.replace('"', "\"\"")
    );
    let row = db
        .query_one(
            "insert into realtime.subscription \
             (subscription_id, entity, filters, action_filter, claims, claims_role, topic, instance, slot) \
             values (gen_random_uuid(), $1::text::regclass, $2, $3, $4::text::jsonb, $5, $6, $7, $8) returning id",
            &[&entity, &filters, &action, &claims, &role, &topic, &instance, &slot],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn delete(db: &Client, row_ids: &[i64]) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "delete from realtime.subscription where id = any($1)",
        &[&row_ids],
    )
    .await
    .map(drop)
}

/// Subscriptions a previous instance polling the same slot left behind.
pub async fn orphans(
    db: &Client,
    slot: &str,
    instance: Uuid,
) -> Result<Vec<Stored>, tokio_postgres::Error> {
    let rows = db
        .query(
            "select s.id, n.nspname::text, c.relname::text, s.filters, s.action_filter, s.claims::text, \
                    coalesce(s.claims ->> 'sub', ''), s.claims_role, s.topic \
             from realtime.subscription s join pg_class c on c.oid = s.entity \
             join pg_namespace n on n.oid = c.relnamespace \
             where s.slot = $1 and s.instance <> $2 order by s.id",
            &[&slot, &instance],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Stored {
            row_id: r.get(0),
            schema: r.get(1),
            table: r.get(2),
            filters: r.get(3),
            action: r.get(4),
            claims: r.get(5),
            sub: r.get(6),
            role: r.get(7),
            topic: r.get(8),
        })
        .collect())
}

/// Whether `schema.table` is in the publication, and whether `role` may SELECT from it.
pub async fn check_table(
    db: &Client,
    publication: &str,
    schema: &str,
    table: &str,
    role: &str,
) -> Result<(bool, bool), tokio_postgres::Error> {
    let row = db
        .query_one(
            "select exists (select 1 from pg_publication_tables \
                            where pubname = $1 and schemaname = $2 and tablename = $3), \
                    coalesce((select has_table_privilege($4, c.oid, 'SELECT') from pg_class c \
                              join pg_namespace n on n.oid = c.relnamespace \
                              where n.nspname = $2 and c.relname = $3 \
                                and exists (select 1 from pg_roles where rolname = $4)), false)",
            &[&publication, &schema, &table, &role],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        for lsn in [0u64, 0x16_B374_D848, u64::MAX >> 1] {
            assert_eq!(parse_lsn(&lsn_text(lsn)), lsn);
        }
        assert_eq!(parse_lsn("16/B374D848"), 0x16_B374_D848);
    }
}
