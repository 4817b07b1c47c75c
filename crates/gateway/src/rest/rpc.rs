//! The Data API's function endpoints: `POST /rpc/<fn>` with named arguments, and `GET` for
//! STABLE/IMMUTABLE ones; results are the rows (set-returning), the object, or the scalar.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query as QueryPairs, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::RestError;
use super::handlers::{
    body_of, json, qualified, read_range, reject_unknown_params, single, singular,
};
use super::query::{Query, ident};
use super::schema::{Function, Returns, Schema};
use super::{Caller, RestState, Statement, run};

type Shared = State<Arc<RestState>>;
type Pairs = QueryPairs<Vec<(String, String)>>;

/// `POST /rpc/<fn>` with a JSON object of named arguments.
pub async fn rpc_post(
    State(s): Shared,
    Path(name): Path<String>,
    QueryPairs(pairs): Pairs,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RestError> {
    let args: serde_json::Map<String, serde_json::Value> =
        if body.iter().all(u8::is_ascii_whitespace) {
            serde_json::Map::new()
        } else {
            serde_json::from_slice(&body).map_err(|_| RestError::body("Empty or invalid json"))?
        };
    let q = Query::parse(&pairs)?;
    reject_unknown_params(&q)?;
    call(&s, &name, args, q, &headers, "POST").await
}

/// `GET /rpc/<fn>?arg=value&<filters>`: STABLE and IMMUTABLE functions only.
pub async fn rpc_get(
    State(s): Shared,
    Path(name): Path<String>,
    QueryPairs(pairs): Pairs,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let mut q = Query::parse(&pairs)?;
    let args: serde_json::Map<String, serde_json::Value> = std::mem::take(&mut q.rest)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    call(&s, &name, args, q, &headers, "GET").await
}

fn pick<'a>(
    state: &RestState,
    schema: &'a Schema,
    name: &str,
    keys: &[&str],
) -> Result<&'a Function, RestError> {
    schema
        .functions
        .get(name)
        .and_then(|overloads| overloads.iter().find(|f| f.accepts(keys)))
        .ok_or_else(|| {
            let mut sorted = keys.to_vec();
            sorted.sort();
            RestError::new(
                StatusCode::NOT_FOUND,
                "PGRST202",
                format!(
                    "Could not find the function {}.{name}({}) in the schema cache",
                    state.config.rest.schema,
                    sorted.join(", ")
                ),
            )
        })
}

async fn call(
    s: &Arc<RestState>,
    name: &str,
    args: serde_json::Map<String, serde_json::Value>,
    q: Query,
    headers: &HeaderMap,
    method: &str,
) -> Result<Response, RestError> {
    let caller = Caller::from_headers(&s.config, headers)?;
    let keys: Vec<&str> = args.keys().map(String::as_str).collect();
    let schema = s
        .schema_with(|sc| {
            sc.functions
                .get(name)
                .is_some_and(|o| o.iter().any(|f| f.accepts(&keys)))
        })
        .await?;
    let f = pick(s, &schema, name, &keys)?;
    if method == "GET" && !f.read_only {
        return Err(RestError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "PGRST101",
            "Cannot use the GET method on RPC for a function that is not STABLE or IMMUTABLE",
        ));
    }
    let target = qualified(&s.config.rest.schema, name);
    let passed: Vec<_> = f
        .args
        .iter()
        .filter(|a| args.contains_key(&a.name))
        .collect();
    let call_args = passed
        .iter()
        .map(|a| format!("{} := _a.{}", ident(&a.name), ident(&a.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let from_args = if passed.is_empty() {
        "(select) _a".to_string()
    } else {
        format!(
            "json_to_record($1::json) as _a({})",
            passed
                .iter()
                .map(|a| format!("{} {}", ident(&a.name), a.sql_type))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let fcall = format!("{target}({call_args})");
    let limit = q
        .limit
        .unwrap_or(u64::from(s.config.rest.max_rows))
        .min(u64::from(s.config.rest.max_rows));
    let set_source = |projection: &str| -> Result<String, RestError> {
        Ok(format!(
            "select coalesce(json_agg(_s), '[]')::text, count(_s)::int8 from \
             (select {projection} from {from_args}, lateral {fcall} _t{}{} limit {limit} offset {}) _s",
            q.where_sql("_t")?,
            q.order_sql("_t"),
            q.offset
        ))
    };
    let (sql, returns_rows) = match (f.returns, f.returns_set) {
        (Returns::Void, _) => (format!("select {fcall} from {from_args}"), false),
        (Returns::Composite, true) => (set_source(&q.select_sql())?, true),
        (Returns::Scalar, true) => (
            format!(
                "select coalesce(json_agg(_t.v), '[]')::text, count(*)::int8 from {from_args}, lateral {fcall} as _t(v)"
            ),
            true,
        ),
        (Returns::Composite, false) => (
            format!("select row_to_json(_t)::text, 1::int8 from {from_args}, lateral {fcall} _t"),
            true,
        ),
        (Returns::Scalar, false) => (
            format!("select to_json({fcall})::text, 1::int8 from {from_args}"),
            true,
        ),
    };
    let body = (!passed.is_empty()).then(|| serde_json::Value::Object(args.clone()).to_string());
    let stmt = Statement {
        sql,
        body,
        read_only: f.read_only,
        returns_rows,
    };
    let (rows, _) = run(
        s,
        &schema,
        &caller,
        headers,
        method,
        &format!("/rpc/{name}"),
        stmt,
    )
    .await?;
    if !returns_rows {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (body, n, _) = body_of(&rows);
    if f.returns_set {
        let (_, range) = read_range(q.offset, n, None)?;
        let body = if singular(headers) {
            single(&body)?
        } else {
            body
        };
        return Ok(json(StatusCode::OK, body, Some(range)));
    }
    Ok(json(StatusCode::OK, body, None))
}
