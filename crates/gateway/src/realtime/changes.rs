//! From pgoutput messages to Realtime's change records: whole transactions (a change is known to be
//! committed only at its Commit), each change with its table's columns and the row as JSON typed the
//! way Realtime casts wal2json values (numbers, booleans and JSON as such, timestamps in ISO form),
//! and the serialised `data` object hosted Realtime sends.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio_postgres::Client;

use super::pgoutput::{self, Datum, Message};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Insert,
    Update,
    Delete,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Insert => "INSERT",
            Kind::Update => "UPDATE",
            Kind::Delete => "DELETE",
        }
    }
}

/// A published table as the decoder knows it.
#[derive(Debug)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub columns: Vec<(String, String)>,
    /// Replica-identity key columns (the primary key by default).
    pub key: Vec<usize>,
    pub rls: bool,
    /// `[{"name":…,"type":…}]`, built once per relation.
    pub columns_json: Value,
    /// The query that returns which of a set of keys the current role may see.
    pub visible_sql: String,
}

#[derive(Debug)]
pub struct Change {
    pub table: Arc<Table>,
    pub kind: Kind,
    /// The commit's end LSN: the slot may be advanced to it once the change is delivered.
    pub end_lsn: u64,
    pub commit_time_us: i64,
    pub record: Option<Map<String, Value>>,
    pub old_record: Option<Map<String, Value>>,
    /// The key as text, for the visibility check.
    pub key_text: String,
}

impl Change {
    /// The row the filters look at: the new row, or the old one for deletes.
    pub fn row(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.record
            .as_ref()
            .or(self.old_record.as_ref())
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
    }

    /// The `data` object of a `postgres_changes` payload. With row-level security on, a delete's
    /// `old_record` carries only the key, as hosted Realtime does.
    pub fn data_json(&self) -> String {
        let ts = chrono::DateTime::from_timestamp_micros(self.commit_time_us)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        let mut data = json!({
            "schema": self.table.schema,
            "table": self.table.name,
            "commit_timestamp": ts,
            "type": self.kind.as_str(),
            "columns": self.table.columns_json,
            "errors": Value::Null,
        });
        if let Some(r) = &self.record {
            data["record"] = Value::Object(r.clone());
        }
        if let Some(old) = &self.old_record {
            let old = if self.table.rls && self.kind == Kind::Delete {
                self.table
                    .key
                    .iter()
                    .filter_map(|&i| {
                        let name = &self.table.columns[i].0;
                        old.get(name).map(|v| (name.clone(), v.clone()))
                    })
                    .collect()
            } else {
                old.clone()
            };
            data["old_record"] = Value::Object(old);
        }
        data.to_string()
    }
}

/// Decoding state that outlives one poll: relations announced earlier and the type names.
pub struct Decoder {
    relations: HashMap<u32, Arc<Table>>,
    types: HashMap<u32, String>,
}

impl Decoder {
    pub async fn new(db: &Client) -> Result<Decoder, tokio_postgres::Error> {
        let rows = db
            .query("select oid, typname::text from pg_type", &[])
            .await?;
        Ok(Decoder {
            relations: HashMap::new(),
            types: rows
                .iter()
                .map(|r| (r.get::<_, u32>(0), r.get::<_, String>(1)))
                .collect(),
        })
    }

    /// Decodes one peeked batch (rows of pgoutput bytes) into committed changes, in commit order,
    /// and the end LSN of the batch's last commit.
    pub async fn decode(
        &mut self,
        db: &Client,
        rows: &[Vec<u8>],
    ) -> Result<(Vec<Change>, Option<u64>), String> {
        let mut out = Vec::new();
        let mut last_end = None;
        let mut txn: Vec<Change> = Vec::new();
        let mut commit_time_us = 0;
        for bytes in rows {
            match pgoutput::decode(bytes).map_err(|e| e.to_string())? {
                Message::Begin {
                    commit_time_us: t, ..
                } => {
                    commit_time_us = t;
                    txn.clear();
                }
                Message::Commit { end_lsn, .. } => {
                    last_end = Some(end_lsn);
                    for mut c in txn.drain(..) {
                        c.end_lsn = end_lsn;
                        out.push(c);
                    }
                }
                Message::Relation(r) => {
                    let table = self.table(db, r).await?;
                    self.relations.insert(table.0, Arc::new(table.1));
                }
                Message::Insert { relation, new } => {
                    let table = self.relation(relation)?;
                    txn.push(change(
                        table,
                        Kind::Insert,
                        commit_time_us,
                        Some(&new),
                        None,
                    ));
                }
                Message::Update { relation, old, new } => {
                    let table = self.relation(relation)?;
                    txn.push(change(
                        table,
                        Kind::Update,
                        commit_time_us,
                        Some(&new),
                        old.as_deref(),
                    ));
                }
                Message::Delete { relation, old } => {
                    let table = self.relation(relation)?;
                    txn.push(change(
                        table,
                        Kind::Delete,
                        commit_time_us,
                        None,
                        Some(&old),
                    ));
                }
                Message::Truncate { .. } | Message::Other(_) => {}
            }
        }
        Ok((out, last_end))
    }

    fn relation(&self, oid: u32) -> Result<Arc<Table>, String> {
        self.relations
            .get(&oid)
            .cloned()
            .ok_or_else(|| format!("change for relation {oid} before its Relation message"))
    }

    async fn table(&mut self, db: &Client, r: pgoutput::Relation) -> Result<(u32, Table), String> {
        let rls: bool = db
            .query_opt(
                "select relrowsecurity from pg_class where oid = $1",
                &[&r.oid],
            )
            .await
            .map_err(|e| e.to_string())?
            .map(|row| row.get(0))
            .unwrap_or(false);
        if r.columns
            .iter()
            .any(|c| !self.types.contains_key(&c.type_oid))
        {
            let rows = db
                .query("select oid, typname::text from pg_type", &[])
                .await
                .map_err(|e| e.to_string())?;
            self.types = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        }
        let columns: Vec<(String, String)> = r
            .columns
            .iter()
            .map(|c| {
                let ty = self
                    .types
                    .get(&c.type_oid)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into());
                (c.name.clone(), ty)
            })
            .collect();
        let key: Vec<usize> = (0..r.columns.len()).filter(|&i| r.columns[i].key).collect();
        let columns_json = Value::Array(
            columns
                .iter()
                .map(|(n, t)| json!({ "name": n, "type": t }))
                .collect(),
        );
        let entity = format!("{}.{}", quote(&r.schema), quote(&r.name));
        let key_expr = key_expr(
            &key.iter()
                .map(|&i| columns[i].0.as_str())
                .collect::<Vec<_>>(),
        );
        let visible_sql =
            format!("select {key_expr} from {entity} where {key_expr} = any($1::text[])");
        Ok((
            r.oid,
            Table {
                schema: r.schema,
                name: r.name,
                columns,
                key,
                rls,
                columns_json,
                visible_sql,
            },
        ))
    }
}

/// The key as one text value: the column itself for a one-column key, a row literal otherwise.
fn key_expr(columns: &[&str]) -> String {
    match columns {
        [] => "ctid::text".into(),
        [one] => format!("{}::text", quote(one)),
        many => format!(
            "row({})::text",
            many.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn change(
    table: Arc<Table>,
    kind: Kind,
    commit_time_us: i64,
    new: Option<&[Datum]>,
    old: Option<&[Datum]>,
) -> Change {
    let record = new.map(|t| row(&table, t));
    // A default-identity update carries no old tuple: the key comes from the new row.
    let old_record = match (kind, old) {
        (Kind::Update, None) => record.as_ref().map(|r| key_only(&table, r)),
        (_, Some(t)) => Some(row(&table, t)),
        _ => None,
    };
    let source = record.as_ref().or(old_record.as_ref());
    let key_text = key_text(&table, source);
    Change {
        table,
        kind,
        end_lsn: 0,
        commit_time_us,
        record,
        old_record,
        key_text,
    }
}

fn key_only(table: &Table, r: &Map<String, Value>) -> Map<String, Value> {
    table
        .key
        .iter()
        .filter_map(|&i| {
            let n = &table.columns[i].0;
            r.get(n).map(|v| (n.clone(), v.clone()))
        })
        .collect()
}

/// The key's text the way `key_expr` renders it in SQL.
fn key_text(table: &Table, r: Option<&Map<String, Value>>) -> String {
    let Some(r) = r else { return String::new() };
    let text = |i: &usize| match r.get(&table.columns[*i].0) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    match table.key.as_slice() {
        [one] => text(one),
        many => format!("({})", many.iter().map(text).collect::<Vec<_>>().join(",")),
    }
}

fn row(table: &Table, tuple: &[Datum]) -> Map<String, Value> {
    let mut m = Map::with_capacity(tuple.len());
    for ((name, ty), d) in table.columns.iter().zip(tuple) {
        match d {
            Datum::Null => {
                m.insert(name.clone(), Value::Null);
            }
            Datum::Text(t) => {
                m.insert(name.clone(), typed(ty, t));
            }
            Datum::Unchanged => {}
        }
    }
    m
}

/// A column's text value as Realtime's `realtime.cast` + `to_jsonb` would render it.
pub fn typed(ty: &str, text: &str) -> Value {
    match ty {
        "bool" => Value::Bool(text == "t"),
        "int2" | "int4" | "int8" | "oid" => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.into())),
        "float4" | "float8" | "numeric" => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => serde_json::from_str(text).unwrap_or(Value::from(f)),
            _ => Value::String(text.into()),
        },
        "json" | "jsonb" => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()))
        }
        "timestamptz" => Value::String(iso_timestamp(text, true)),
        "timestamp" => Value::String(iso_timestamp(text, false)),
        _ => Value::String(text.into()),
    }
}

/// `2026-11-26 08:41:10.12+00` → `2026-11-26T08:41:10.12+00:00` (the session runs with DateStyle
/// ISO and TimeZone UTC).
fn iso_timestamp(text: &str, with_zone: bool) -> String {
    let mut s = text.replacen(' ', "T", 1);
    if with_zone {
        let sign = s.rfind(['+', '-']).filter(|&i| i > 10);
        if let Some(i) = sign
            && s.len() - i == 3
        {
            s.push_str(":00");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_like_realtime() {
        assert_eq!(typed("int8", "42"), json!(42));
        assert_eq!(typed("bool", "t"), json!(true));
        assert_eq!(typed("float4", "91.5"), json!(91.5));
        assert_eq!(typed("float8", "NaN"), json!("NaN"));
        assert_eq!(typed("jsonb", r#"{"a":[1]}"#), json!({ "a": [1] }));
        assert_eq!(
            typed("timestamptz", "2026-11-26 08:41:10.123+00"),
            json!("2026-11-26T08:41:10.123+00:00")
        );
        assert_eq!(
            typed("timestamp", "2026-11-26 08:41:10"),
            json!("2026-11-26T08:41:10")
        );
        assert_eq!(typed("uuid", "6f1c"), json!("6f1c"));
    }
}
