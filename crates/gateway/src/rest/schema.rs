//! PostgREST's schema cache: the exposed schema's tables (columns, types, defaults), its functions
//! (input arguments, volatility, what they return) and the per-role settings (`alter role … set
//! statement_timeout`) that PostgREST applies when it switches role. Reloaded on
//! `NOTIFY pgrst, 'reload schema'` (the bootstrap's DDL event trigger sends it, as on hosted
//! projects) and once on a miss, so a migration applied after the gateway started is seen.

use std::collections::HashMap;

use serde::Deserialize;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, NoTls};

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// Fully qualified type (`extensions.vector(384)`, `timestamp with time zone`).
    pub sql_type: String,
    pub default: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub columns: Vec<Column>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Arg {
    pub name: String,
    #[serde(rename = "type")]
    pub sql_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Returns {
    Void,
    Scalar,
    Composite,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub args: Vec<Arg>,
    /// How many trailing arguments have defaults.
    pub defaults: usize,
    /// STABLE or IMMUTABLE: runs in a read-only transaction.
    pub read_only: bool,
    pub returns_set: bool,
    pub returns: Returns,
}

impl Function {
    /// Whether a call naming exactly `keys` fits this overload.
    pub fn accepts(&self, keys: &[&str]) -> bool {
        let required = self.args.len() - self.defaults.min(self.args.len());
        keys.iter().all(|k| self.args.iter().any(|a| a.name == *k))
            && self.args[..required]
                .iter()
                .all(|a| keys.contains(&a.name.as_str()))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub tables: HashMap<String, Table>,
    pub functions: HashMap<String, Vec<Function>>,
    /// `role -> [(setting, value)]`.
    pub role_settings: HashMap<String, Vec<(String, String)>>,
}

const TABLES: &str = "\
select c.relname::text, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) \
from pg_catalog.pg_class c \
join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped \
left join pg_catalog.pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum \
where n.nspname = $1 and c.relkind in ('r', 'p', 'v', 'm', 'f') and not c.relispartition \
order by c.relname, a.attnum";

const FUNCTIONS: &str = "\
select p.proname::text, p.pronargdefaults::int4, p.provolatile in ('s', 'i'), p.proretset, \
       case when p.prorettype = 'pg_catalog.void'::pg_catalog.regtype then 'void' \
            when t.typtype = 'c' or p.prorettype = 'pg_catalog.record'::pg_catalog.regtype then 'composite' \
            else 'scalar' end, \
       coalesce((select pg_catalog.json_agg(pg_catalog.json_build_object('name', coalesce(p.proargnames[i], ''), \
                   'type', pg_catalog.format_type(coalesce(p.proallargtypes[i], p.proargtypes[i - 1]), null)) order by i) \
                 from pg_catalog.generate_series(1, coalesce(pg_catalog.array_length(p.proallargtypes, 1), p.pronargs)) i \
                 where coalesce(p.proargmodes[i], 'i') in ('i', 'b', 'v')), '[]')::text \
from pg_catalog.pg_proc p \
join pg_catalog.pg_namespace n on n.oid = p.pronamespace \
join pg_catalog.pg_type t on t.oid = p.prorettype \
where n.nspname = $1 and p.prokind = 'f'";

const ROLE_SETTINGS: &str = "\
select r.rolname::text, s.setconfig \
from pg_catalog.pg_db_role_setting s \
join pg_catalog.pg_roles r on r.oid = s.setrole \
where s.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())) \
order by s.setdatabase";

impl Schema {
    /// Reads the cache over a direct connection (types come out fully qualified: the search path
    /// is emptied first).
    pub async fn load(db_url: &str, schema: &str) -> Result<Schema, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(db_url, NoTls).await?;
        let driver = tokio::spawn(conn);
        let loaded = Schema::read(&client, schema).await;
        drop(client);
        let _ = driver.await;
        loaded
    }

    async fn read(
        client: &tokio_postgres::Client,
        schema: &str,
    ) -> Result<Schema, tokio_postgres::Error> {
        client.batch_execute("set search_path = ''").await?;
        let mut out = Schema::default();
        for row in client.query_typed(TABLES, &[(&schema, Type::TEXT)]).await? {
            out.tables
                .entry(row.get(0))
                .or_insert_with(|| Table {
                    columns: Vec::new(),
                })
                .columns
                .push(Column {
                    name: row.get(1),
                    sql_type: row.get(2),
                    default: row.get(3),
                });
        }
        for row in client
            .query_typed(FUNCTIONS, &[(&schema, Type::TEXT)])
            .await?
        {
            let args: Vec<Arg> = serde_json::from_str(row.get::<_, &str>(5)).unwrap_or_default();
            let returns = match row.get::<_, &str>(4) {
                "void" => Returns::Void,
                "composite" => Returns::Composite,
                _ => Returns::Scalar,
            };
            out.functions.entry(row.get(0)).or_default().push(Function {
                defaults: row.get::<_, i32>(1) as usize,
                read_only: row.get(2),
                returns_set: row.get(3),
                returns,
                args,
            });
        }
        for row in client.query_typed(ROLE_SETTINGS, &[]).await? {
            let role: String = row.get(0);
            let settings: Vec<String> = row.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
            let entry = out.role_settings.entry(role).or_default();
            for kv in settings {
                if let Some((k, v)) = kv.split_once('=') {
                    // Database-specific settings come last and win.
                    entry.retain(|(name, _)| name != k);
                    entry.push((k.to_string(), v.to_string()));
                }
            }
        }
        Ok(out)
    }
}

/// Waits for `NOTIFY pgrst` and sends `()` on `reload` each time, reconnecting with backoff.
pub async fn listen(db_url: String, reload: tokio::sync::mpsc::UnboundedSender<()>) {
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        if let Ok((client, mut conn)) = tokio_postgres::connect(&db_url, NoTls).await {
            let tx = reload.clone();
            let driver = tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(n)))
                            if matches!(n.payload(), "" | "reload schema") =>
                        {
                            let _ = tx.send(());
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
            });
            if client.batch_execute("listen pgrst").await.is_ok() {
                backoff = std::time::Duration::from_millis(200);
                // Anything may have changed while disconnected.
                let _ = reload.send(());
            }
            let _ = driver.await;
        }
        if reload.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
    }
}
