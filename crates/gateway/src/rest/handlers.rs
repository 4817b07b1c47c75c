//! The Data API's table endpoints: `GET` (select, filters, order, paging, `Prefer: count=exact`,
//! singular `Accept: application/vnd.pgrst.object+json`), `POST` (one `INSERT … SELECT FROM
//! json_populate_recordset` per request, `?columns=`, `Prefer: return=…, missing=default`), `PATCH`
//! and `DELETE` with filters. Functions are in [`super::rpc`]; the response helpers here serve both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::de::IgnoredAny;

use axum::body::Bytes;
use axum::extract::{Path, Query as QueryPairs, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::RestError;
use super::query::{Query, ident, literal};
use super::schema::{Schema, Table};
use super::{Caller, RestState, Statement, run};

type Shared = State<Arc<RestState>>;
type Pairs = QueryPairs<Vec<(String, String)>>;

const SINGULAR: &str = "application/vnd.pgrst.object+json";

/// The `Prefer` header's preferences.
#[derive(Debug, Default)]
struct Prefer {
    representation: bool,
    missing_default: bool,
    count: bool,
}

impl Prefer {
    fn from(headers: &HeaderMap) -> Prefer {
        let mut p = Prefer::default();
        for v in headers.get_all("prefer") {
            for item in v.to_str().unwrap_or("").split(',') {
                match item.trim() {
                    "return=representation" => p.representation = true,
                    "missing=default" => p.missing_default = true,
                    "count=exact" | "count=planned" | "count=estimated" => p.count = true,
                    _ => {}
                }
            }
        }
        p
    }
}

pub(super) fn singular(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(SINGULAR))
}

pub(super) fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

async fn table_of(state: &RestState, name: &str) -> Result<(Arc<Schema>, Table), RestError> {
    let schema = state.schema_with(|s| s.tables.contains_key(name)).await?;
    let table = schema.tables.get(name).cloned().ok_or_else(|| {
        RestError::new(
            StatusCode::NOT_FOUND,
            "PGRST205",
            format!(
                "Could not find the table '{}.{name}' in the schema cache",
                state.config.rest.schema
            ),
        )
    })?;
    Ok((schema, table))
}

pub(super) fn reject_unknown_params(q: &Query) -> Result<(), RestError> {
    match q.rest.first() {
        Some((k, v)) => Err(RestError::parse(
            format!("\"failed to parse filter ({v})\" (line 1, column 1)"),
            format!(
                "unexpected query parameter {k}={v}: not a filter (<column>=[not.]<operator>.<value>) nor select/order/limit/offset/columns"
            ),
        )),
        None => Ok(()),
    }
}

/// A JSON response with PostgREST's headers.
pub(super) fn json(status: StatusCode, body: String, range: Option<String>) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(range) = range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        r.headers_mut().insert(header::CONTENT_RANGE, range);
    }
    r
}

fn empty(status: StatusCode, range: String) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&range) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

/// The one object of a singular request, or 406 `PGRST116`.
pub(super) fn single(body: &str) -> Result<String, RestError> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(body).map_err(RestError::internal)?;
    match rows.as_slice() {
        [one] => Ok(one.to_string()),
        _ => Err(RestError::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST116",
            "JSON object requested, multiple (or no) rows returned",
        )
        .details(format!("The result contains {} rows", rows.len()))),
    }
}

/// Reads the `(body, count[, total])` row every row-returning statement here ends with.
pub(super) fn body_of(rows: &[tokio_postgres::Row]) -> (String, i64, Option<i64>) {
    let row = &rows[0];
    let total = if row.len() > 2 { row.get(2) } else { None };
    (row.get(0), row.get(1), total)
}

/// Content-Range and status of a read: 206 when a known total has more rows than were returned.
pub(super) fn read_range(
    offset: u64,
    n: i64,
    total: Option<i64>,
) -> Result<(StatusCode, String), RestError> {
    let total_s = total.map_or("*".to_string(), |t| t.to_string());
    if let Some(t) = total
        && offset > 0
        && offset as i64 >= t
        && n == 0
    {
        return Err(RestError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "PGRST103",
            "Requested range not satisfiable",
        )
        .details(format!(
            "An offset of {offset} was requested, but there are only {t} rows."
        )));
    }
    let range = if n == 0 {
        format!("*/{total_s}")
    } else {
        format!("{offset}-{}/{total_s}", offset as i64 + n - 1)
    };
    let status = match total {
        Some(t) if n < t => StatusCode::PARTIAL_CONTENT,
        _ => StatusCode::OK,
    };
    Ok((status, range))
}

/// `GET /<table>`.
pub async fn read(
    State(s): Shared,
    Path(name): Path<String>,
    QueryPairs(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let caller = Caller::from_headers(&s.config, &headers)?;
    let q = Query::parse(&pairs)?;
    reject_unknown_params(&q)?;
    let (schema, _) = table_of(&s, &name).await?;
    let source = qualified(&s.config.rest.schema, &name);
    let filter = q.where_sql("_t")?;
    let limit = q
        .limit
        .unwrap_or(u64::from(s.config.rest.max_rows))
        .min(u64::from(s.config.rest.max_rows));
    let total = if Prefer::from(&headers).count {
        format!(", (select count(*) from {source} _t{filter})::int8")
    } else {
        String::new()
    };
    let sql = format!(
        "select coalesce(json_agg(_s), '[]')::text, count(_s)::int8{total} from \
         (select {} from {source} _t{filter}{} limit {limit} offset {}) _s",
        q.select_sql(),
        q.order_sql("_t"),
        q.offset
    );
    let stmt = Statement {
        sql,
        body: None,
        read_only: true,
        returns_rows: true,
    };
    let (rows, _) = run(
        &s,
        &schema,
        &caller,
        &headers,
        "GET",
        &format!("/{name}"),
        stmt,
    )
    .await?;
    let (body, n, total) = body_of(&rows);
    let (status, range) = read_range(q.offset, n, total)?;
    if singular(&headers) {
        return Ok(json(StatusCode::OK, single(&body)?, Some(range)));
    }
    Ok(json(status, body, Some(range)))
}

/// The keys of each object of a write body (an array of objects, or one object), and the body as
/// a JSON array text to bind. Values are skipped, not built: Postgres parses them anyway, and the
/// original text is bound as it came.
fn payload(body: &Bytes) -> Result<(Vec<BTreeSet<String>>, String), RestError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Body {
        Many(Vec<BTreeMap<String, IgnoredAny>>),
        One(BTreeMap<String, IgnoredAny>),
    }
    let invalid = || RestError::body("Empty or invalid json");
    let text = std::str::from_utf8(body).map_err(|_| invalid())?;
    match serde_json::from_str::<Body>(text).map_err(|_| invalid())? {
        Body::Many(rows) => Ok((
            rows.into_iter().map(|r| r.into_keys().collect()).collect(),
            text.to_string(),
        )),
        Body::One(row) => Ok((vec![row.into_keys().collect()], format!("[{text}]"))),
    }
}

fn check_columns(table: &Table, name: &str, columns: &[String]) -> Result<(), RestError> {
    match columns.iter().find(|c| table.column(c).is_none()) {
        Some(c) => Err(RestError::new(
            StatusCode::BAD_REQUEST,
            "PGRST204",
            format!("Could not find the '{c}' column of '{name}' in the schema cache"),
        )),
        None => Ok(()),
    }
}

/// The write's statement: bare (affected count only) or wrapped to return the rows as JSON.
fn write_statement(
    write: String,
    representation: bool,
    returning: String,
    body: Option<String>,
) -> Statement {
    if representation {
        Statement {
            sql: format!(
                "with _w as ({write} returning {returning}) \
                 select coalesce(json_agg(_w), '[]')::text, count(*)::int8 from _w"
            ),
            body,
            read_only: false,
            returns_rows: true,
        }
    } else {
        Statement {
            sql: write,
            body,
            read_only: false,
            returns_rows: false,
        }
    }
}

/// The response of a write: `minimal_status` with no body, or the rows.
fn write_response(
    rows: &[tokio_postgres::Row],
    affected: u64,
    prefer: &Prefer,
    headers: &HeaderMap,
    minimal_status: StatusCode,
    representation_status: StatusCode,
) -> Result<Response, RestError> {
    if !prefer.representation {
        let total = if prefer.count {
            affected.to_string()
        } else {
            "*".into()
        };
        return Ok(empty(minimal_status, format!("*/{total}")));
    }
    let (body, n, _) = body_of(rows);
    let total = if prefer.count {
        n.to_string()
    } else {
        "*".into()
    };
    let range = if n == 0 {
        format!("*/{total}")
    } else {
        format!("0-{}/{total}", n - 1)
    };
    let body = if singular(headers) {
        single(&body)?
    } else {
        body
    };
    Ok(json(representation_status, body, Some(range)))
}

/// What every table write starts from: who calls, the query, the preferences, the table.
struct Write {
    caller: Caller,
    q: Query,
    prefer: Prefer,
    schema: Arc<Schema>,
    table: Table,
}

impl Write {
    async fn parse(
        s: &RestState,
        name: &str,
        pairs: &[(String, String)],
        headers: &HeaderMap,
    ) -> Result<Write, RestError> {
        let caller = Caller::from_headers(&s.config, headers)?;
        let q = Query::parse(pairs)?;
        reject_unknown_params(&q)?;
        let (schema, table) = table_of(s, name).await?;
        Ok(Write {
            caller,
            q,
            prefer: Prefer::from(headers),
            schema,
            table,
        })
    }
}

/// `POST /<table>`: the whole body is one `INSERT`.
pub async fn insert(
    State(s): Shared,
    Path(name): Path<String>,
    QueryPairs(pairs): Pairs,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RestError> {
    let Write {
        caller,
        q,
        prefer,
        schema,
        table,
    } = Write::parse(&s, &name, &pairs, &headers).await?;
    let (rows, rows_json) = payload(&body)?;
    let columns: Vec<String> = match &q.columns {
        Some(cols) => cols.clone(),
        None => {
            let first = rows.first().cloned().unwrap_or_default();
            if rows.iter().any(|r| *r != first) {
                return Err(RestError::body("All object keys must match"));
            }
            first.into_iter().collect()
        }
    };
    check_columns(&table, &name, &columns)?;
    let target = qualified(&s.config.rest.schema, &name);
    let cols = columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    if columns.is_empty() {
        if !rows.is_empty() {
            return Err(RestError::unsupported("inserting objects without keys"));
        }
        // `[]`: nothing to insert, as PostgREST answers it.
        let rows: Vec<tokio_postgres::Row> = Vec::new();
        return match prefer.representation {
            true => Ok(json(StatusCode::CREATED, "[]".into(), Some("*/0".into()))),
            false => write_response(
                &rows,
                0,
                &prefer,
                &headers,
                StatusCode::CREATED,
                StatusCode::CREATED,
            ),
        };
    }
    let write = if q.columns.is_some() && prefer.missing_default {
        let exprs = columns
            .iter()
            .map(|c| {
                let default = table.column(c).and_then(|col| col.default.clone());
                match default {
                    Some(d) => Ok(format!(
                        "case when _j ? {} then _r.{} else {d} end",
                        literal(c)?,
                        ident(c)
                    )),
                    None => Ok(format!("_r.{}", ident(c))),
                }
            })
            .collect::<Result<Vec<_>, RestError>>()?
            .join(", ");
        format!(
            "insert into {target} ({cols}) select {exprs} from jsonb_array_elements($1::jsonb) _j, \
             lateral jsonb_populate_record(null::{target}, _j) _r"
        )
    } else {
        format!(
            "insert into {target} ({cols}) select {cols} from json_populate_recordset(null::{target}, $1::json) _r"
        )
    };
    let stmt = write_statement(
        write,
        prefer.representation,
        q.select_sql(),
        Some(rows_json),
    );
    let (out, affected) = run(
        &s,
        &schema,
        &caller,
        &headers,
        "POST",
        &format!("/{name}"),
        stmt,
    )
    .await?;
    write_response(
        &out,
        affected,
        &prefer,
        &headers,
        StatusCode::CREATED,
        StatusCode::CREATED,
    )
}

/// `PATCH /<table>?<filters>`: the body's keys are set on every matching row.
pub async fn update(
    State(s): Shared,
    Path(name): Path<String>,
    QueryPairs(pairs): Pairs,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RestError> {
    let Write {
        caller,
        q,
        prefer,
        schema,
        table,
    } = Write::parse(&s, &name, &pairs, &headers).await?;
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&body).map_err(|_| RestError::body("Empty or invalid json"))?;
    let columns: Vec<String> = obj.keys().cloned().collect();
    check_columns(&table, &name, &columns)?;
    let target = qualified(&s.config.rest.schema, &name);
    if columns.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT, "*/*".into()));
    }
    let cols = columns
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let write = format!(
        "update {target} _t set ({cols}) = (select {cols} from json_populate_record(null::{target}, $1::json)){}",
        q.where_sql("_t")?
    );
    let stmt = write_statement(
        write,
        prefer.representation,
        q.select_sql(),
        Some(serde_json::Value::Object(obj).to_string()),
    );
    let (out, affected) = run(
        &s,
        &schema,
        &caller,
        &headers,
        "PATCH",
        &format!("/{name}"),
        stmt,
    )
    .await?;
    write_response(
        &out,
        affected,
        &prefer,
        &headers,
        StatusCode::NO_CONTENT,
        StatusCode::OK,
    )
}

/// `DELETE /<table>?<filters>`.
pub async fn delete(
    State(s): Shared,
    Path(name): Path<String>,
    QueryPairs(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let Write {
        caller,
        q,
        prefer,
        schema,
        ..
    } = Write::parse(&s, &name, &pairs, &headers).await?;
    let target = qualified(&s.config.rest.schema, &name);
    let write = format!("delete from {target} _t{}", q.where_sql("_t")?);
    let stmt = write_statement(write, prefer.representation, q.select_sql(), None);
    let (out, affected) = run(
        &s,
        &schema,
        &caller,
        &headers,
        "DELETE",
        &format!("/{name}"),
        stmt,
    )
    .await?;
    write_response(
        &out,
        affected,
        &prefer,
        &headers,
        StatusCode::NO_CONTENT,
        StatusCode::OK,
    )
}
