//! PostgREST's query-string grammar, parsed into SQL fragments: `select=` (columns, `alias:`,
//! `::cast`, JSON arrows), horizontal filters (`col=[not.]op.value` with `eq neq gt gte lt lte in is
//! like ilike`, and `or=(…)` / `and=(…)` trees), `order=`, `limit=`, `offset=`. Filter values become
//! quoted SQL literals of unknown type, so Postgres types them from the column as PostgREST's
//! parameters are typed; identifiers are always double-quoted.
//!
//! Hand-written: PostgREST's grammar is its own (no crate parses it), and small enough to keep here.

use super::error::RestError;

/// A parsed request query.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Query {
    pub select: Vec<SelectItem>,
    pub filter: Vec<Cond>,
    pub order: Vec<OrderTerm>,
    pub limit: Option<u64>,
    pub offset: u64,
    /// `columns=`: the payload keys to insert.
    pub columns: Option<Vec<String>>,
    /// Query keys that are neither reserved nor filters (RPC arguments on `GET /rpc/…`).
    pub rest: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    pub alias: Option<String>,
    /// `*`, a column, or a column with JSON arrows.
    pub column: String,
    pub path: Vec<(Arrow, String)>,
    pub cast: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrow {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Op {
        column: String,
        negated: bool,
        op: String,
        value: String,
    },
    Logic {
        or: bool,
        negated: bool,
        conds: Vec<Cond>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderTerm {
    pub column: String,
    pub desc: bool,
    pub nulls: Option<bool>,
}

/// `"` around an identifier, doubling any inside.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal (standard_conforming_strings is on, so only `'` needs doubling).
pub fn literal(value: &str) -> Result<String, RestError> {
    if value.contains('\0') {
        return Err(RestError::parse(
            "failed to parse filter",
            "a value contains a NUL byte",
        ));
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// Splits on `sep` outside parentheses and double quotes.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted, mut escaped) =
        (vec![], String::new(), 0, false, false);
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                escaped = true;
                cur.push(c);
                continue;
            }
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            c if c == sep && !quoted && depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

fn parse_select(s: &str) -> Result<Vec<SelectItem>, RestError> {
    let mut items = Vec::new();
    for raw in split_top(s, ',') {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        if raw.contains('(') {
            return Err(RestError::unsupported(&format!(
                "resource embedding or aggregates in select ({raw})"
            )));
        }
        let (alias, rest) = match raw.split_once(':') {
            Some((a, r)) if !r.starts_with(':') && !a.is_empty() => (Some(a.to_string()), r),
            _ => (None, raw),
        };
        let (body, cast) = match rest.split_once("::") {
            Some((b, c)) => {
                if c.is_empty()
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ' ')
                {
                    return Err(RestError::parse(
                        "\"failed to parse select parameter\"",
                        format!("unexpected cast {c:?}"),
                    ));
                }
                (b, Some(c.to_string()))
            }
            None => (rest, None),
        };
        let (column, path) = parse_arrows(body);
        items.push(SelectItem {
            alias,
            column,
            path,
            cast,
        });
    }
    Ok(items)
}

fn parse_arrows(s: &str) -> (String, Vec<(Arrow, String)>) {
    let mut parts = Vec::new();
    let mut rest = s;
    let column_end = rest.find("->").unwrap_or(rest.len());
    let column = rest[..column_end].to_string();
    rest = &rest[column_end..];
    while let Some(r) = rest.strip_prefix("->") {
        let (arrow, r) = match r.strip_prefix('>') {
            Some(r) => (Arrow::Text, r),
            None => (Arrow::Json, r),
        };
        let end = r.find("->").unwrap_or(r.len());
        parts.push((arrow, r[..end].to_string()));
        rest = &r[end..];
    }
    (column, parts)
}

const OPS: [&str; 10] = [
    "eq", "neq", "gt", "gte", "lt", "lte", "in", "is", "like", "ilike",
];

/// `[not.]op.value` for `column`.
fn parse_op(column: &str, s: &str) -> Result<Cond, RestError> {
    let bad = || {
        RestError::parse(
            format!("\"failed to parse filter ({s})\" (line 1, column 1)"),
            format!(
                "unexpected filter on {column:?}: expected [not.]<operator>.<value> with one of {OPS:?}"
            ),
        )
    };
    let (negated, s2) = match s.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (op, value) = s2.split_once('.').ok_or_else(bad)?;
    if !OPS.contains(&op) {
        return Err(bad());
    }
    Ok(Cond::Op {
        column: column.to_string(),
        negated,
        op: op.to_string(),
        value: value.to_string(),
    })
}

/// `(a.eq.1,or(b.gt.2,c.is.null))`, the value of `or=` / `and=`.
fn parse_logic(or: bool, negated: bool, s: &str) -> Result<Cond, RestError> {
    let inner = s
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            RestError::parse(
                format!("\"failed to parse logic tree ({s})\" (line 1, column 1)"),
                "expected a parenthesised, comma-separated list of conditions",
            )
        })?;
    let mut conds = Vec::new();
    for item in split_top(inner, ',') {
        let (neg, item2) = match item.strip_prefix("not.") {
            Some(r) => (true, r.to_string()),
            None => (false, item.clone()),
        };
        if let Some(r) = item2.strip_prefix("or(") {
            conds.push(parse_logic(true, neg, &format!("({r}"))?);
        } else if let Some(r) = item2.strip_prefix("and(") {
            conds.push(parse_logic(false, neg, &format!("({r}"))?);
        } else {
            let (column, rest) = item.split_once('.').ok_or_else(|| {
                RestError::parse(
                    format!("\"failed to parse logic tree ({s})\" (line 1, column 1)"),
                    format!("expected <column>.<operator>.<value>, got {item:?}"),
                )
            })?;
            conds.push(parse_op(column, rest)?);
        }
    }
    Ok(Cond::Logic { or, negated, conds })
}

fn parse_order(s: &str) -> Result<Vec<OrderTerm>, RestError> {
    let mut terms = Vec::new();
    for t in s.split(',').filter(|t| !t.is_empty()) {
        let mut parts = t.split('.');
        let column = parts.next().unwrap_or_default().to_string();
        let mut term = OrderTerm {
            column,
            desc: false,
            nulls: None,
        };
        for p in parts {
            match p {
                "asc" => term.desc = false,
                "desc" => term.desc = true,
                "nullsfirst" => term.nulls = Some(true),
                "nullslast" => term.nulls = Some(false),
                other => {
                    return Err(RestError::parse(
                        format!("\"failed to parse order ({s})\" (line 1, column 1)"),
                        format!(
                            "unexpected {other:?}: expected asc, desc, nullsfirst or nullslast"
                        ),
                    ));
                }
            }
        }
        terms.push(term);
    }
    Ok(terms)
}

fn parse_count(key: &str, v: &str) -> Result<u64, RestError> {
    v.parse().map_err(|_| {
        RestError::parse(
            format!("\"failed to parse {key} ({v})\""),
            "expected a non-negative integer",
        )
    })
}

impl Query {
    /// Parses decoded query pairs. `filters_allowed` is false for `GET /rpc/…`, whose unknown keys
    /// are arguments, not filters, when they name one (decided by the caller via `rest`).
    pub fn parse(pairs: &[(String, String)]) -> Result<Query, RestError> {
        let mut q = Query::default();
        for (k, v) in pairs {
            match k.as_str() {
                "select" => q.select = parse_select(v)?,
                "order" => q.order = parse_order(v)?,
                "limit" => q.limit = Some(parse_count("limit", v)?),
                "offset" => q.offset = parse_count("offset", v)?,
                "columns" => {
                    q.columns = Some(
                        v.split(',')
                            .map(|c| c.trim().trim_matches('"').to_string())
                            .filter(|c| !c.is_empty())
                            .collect(),
                    )
                }
                "or" | "and" => q.filter.push(parse_logic(k == "or", false, v)?),
                "not.or" | "not.and" => q.filter.push(parse_logic(k == "not.or", true, v)?),
                "on_conflict" => return Err(RestError::unsupported("on_conflict (upsert)")),
                _ if OPS.iter().any(|op| {
                    v.starts_with(&format!("{op}.")) || v.starts_with(&format!("not.{op}."))
                }) =>
                {
                    q.filter.push(parse_op(k, v)?)
                }
                _ => q.rest.push((k.clone(), v.clone())),
            }
        }
        Ok(q)
    }

    /// The select list over `qualifier` (`*` when none was asked for).
    pub fn select_sql(&self) -> String {
        if self.select.is_empty() {
            return "*".into();
        }
        let items: Vec<String> = self
            .select
            .iter()
            .map(|i| {
                let mut sql = if i.column == "*" {
                    "*".to_string()
                } else {
                    ident(&i.column)
                };
                for (arrow, key) in &i.path {
                    let key_sql = match key.parse::<i64>() {
                        Ok(n) => n.to_string(),
                        Err(_) => format!("'{}'", key.replace('\'', "''")),
                    };
                    sql.push_str(match arrow {
                        Arrow::Json => "->",
                        Arrow::Text => "->>",
                    });
                    sql.push_str(&key_sql);
                }
                if let Some(c) = &i.cast {
                    sql = format!("({sql})::{c}");
                }
                let name = i
                    .alias
                    .clone()
                    .or_else(|| i.path.last().map(|(_, k)| k.clone()));
                match name {
                    Some(n) if i.column != "*" => format!("{sql} as {}", ident(&n)),
                    _ => sql,
                }
            })
            .collect();
        items.join(", ")
    }

    /// `where …` (or nothing) with every column qualified by `qualifier`.
    pub fn where_sql(&self, qualifier: &str) -> Result<String, RestError> {
        if self.filter.is_empty() {
            return Ok(String::new());
        }
        let parts = self
            .filter
            .iter()
            .map(|c| cond_sql(c, qualifier))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(format!(" where {}", parts.join(" and ")))
    }

    pub fn order_sql(&self, qualifier: &str) -> String {
        if self.order.is_empty() {
            return String::new();
        }
        let terms: Vec<String> = self
            .order
            .iter()
            .map(|t| {
                let mut s = format!("{qualifier}.{}", ident(&t.column));
                if t.desc {
                    s.push_str(" desc");
                }
                match t.nulls {
                    Some(true) => s.push_str(" nulls first"),
                    Some(false) => s.push_str(" nulls last"),
                    None => {}
                }
                s
            })
            .collect();
        format!(" order by {}", terms.join(", "))
    }
}

/// `in.(a,"b,c")` values, unquoted.
fn in_list(value: &str) -> Result<Vec<String>, RestError> {
    let inner = value
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            RestError::parse(
                format!("\"failed to parse filter (in.{value})\" (line 1, column 4)"),
                "expected in.(value,value,…)",
            )
        })?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    Ok(split_top(inner, ',')
        .into_iter()
        .map(|v| {
            let v = v.trim();
            match v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                Some(q) => q.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => v.to_string(),
            }
        })
        .collect())
}

fn cond_sql(c: &Cond, q: &str) -> Result<String, RestError> {
    match c {
        Cond::Logic { or, negated, conds } => {
            let parts = conds
                .iter()
                .map(|c| cond_sql(c, q))
                .collect::<Result<Vec<_>, _>>()?;
            let joined = if parts.is_empty() {
                "true".to_string()
            } else {
                parts.join(if *or { " or " } else { " and " })
            };
            Ok(if *negated {
                format!("not ({joined})")
            } else {
                format!("({joined})")
            })
        }
        Cond::Op {
            column,
            negated,
            op,
            value,
        } => {
            let (column, path) = parse_arrows(column);
            let mut col = format!("{q}.{}", ident(&column));
            for (arrow, key) in &path {
                col.push_str(match arrow {
                    Arrow::Json => "->",
                    Arrow::Text => "->>",
                });
                col.push_str(&literal(key)?);
            }
            let expr = match op.as_str() {
                "eq" => format!("{col} = {}", literal(value)?),
                "neq" => format!("{col} <> {}", literal(value)?),
                "gt" => format!("{col} > {}", literal(value)?),
                "gte" => format!("{col} >= {}", literal(value)?),
                "lt" => format!("{col} < {}", literal(value)?),
                "lte" => format!("{col} <= {}", literal(value)?),
                "like" | "ilike" => format!("{col} {op} {}", literal(&value.replace('*', "%"))?),
                "in" => {
                    let items = in_list(value)?
                        .iter()
                        .map(|v| literal(v))
                        .collect::<Result<Vec<_>, _>>()?;
                    if items.is_empty() {
                        "false".to_string()
                    } else {
                        format!("{col} in ({})", items.join(", "))
                    }
                }
                "is" => match value.to_ascii_lowercase().as_str() {
                    "null" => format!("{col} is null"),
                    "not_null" => format!("{col} is not null"),
                    "true" => format!("{col} is true"),
                    "false" => format!("{col} is false"),
                    "unknown" => format!("{col} is unknown"),
                    _ => {
                        return Err(RestError::parse(
                            format!("\"failed to parse filter (is.{value})\" (line 1, column 4)"),
                            "is. takes null, not_null, true, false or unknown",
                        ));
                    }
                },
                other => unreachable!("operator {other} passed parse_op"),
            };
            Ok(if *negated {
                format!("not ({expr})")
            } else {
                expr
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Query, RestError> {
        Query::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn filters_become_quoted_sql() {
        let query = q(&[
            ("device_id", "eq.abc"),
            ("cpu_pct", "gte.50"),
            ("hostname", "like.*o'k*"),
            ("kind", "in.(thermal,\"disk, full\")"),
            ("acknowledged_at", "is.null"),
            ("severity", "not.eq.info"),
            (
                "or",
                "(cpu_pct.gt.90,and(mem_used_bytes.lt.5,ts.is.not_null))",
            ),
        ])
        .unwrap();
        assert_eq!(
            query.where_sql("t").unwrap(),
            " where t.\"device_id\" = 'abc' and t.\"cpu_pct\" >= '50' and t.\"hostname\" like '%o''k%' \
             and t.\"kind\" in ('thermal', 'disk, full') and t.\"acknowledged_at\" is null \
             and not (t.\"severity\" = 'info') \
             and (t.\"cpu_pct\" > '90' or (t.\"mem_used_bytes\" < '5' and t.\"ts\" is not null))"
        );
    }

    #[test]
    fn select_order_and_paging() {
        let query = q(&[
            (
                "select",
                "id,temp:cpu_temp_c,ts::text,top_processes->0->>name",
            ),
            ("order", "ts.desc.nullslast,id"),
            ("limit", "10"),
            ("offset", "20"),
        ])
        .unwrap();
        assert_eq!(
            query.select_sql(),
            "\"id\", \"cpu_temp_c\" as \"temp\", (\"ts\")::text, \"top_processes\"->0->>'name' as \"name\""
        );
        assert_eq!(
            query.order_sql("t"),
            " order by t.\"ts\" desc nulls last, t.\"id\""
        );
        assert_eq!((query.limit, query.offset), (Some(10), 20));
    }

    #[test]
    fn bad_input_names_the_problem() {
        let e = q(&[("cpu_pct", "gte.5"), ("limit", "ten")]).unwrap_err();
        assert_eq!((e.code.as_str(), e.status.as_u16()), ("PGRST100", 400));
        assert!(e.message.contains("limit"), "{e:?}");
        let e = q(&[("order", "ts.sideways")]).unwrap_err();
        assert!(e.details.unwrap().contains("sideways"));
        let e = q(&[("or", "cpu_pct.gt.1")]).unwrap_err();
        assert_eq!(e.code, "PGRST100");
        let e = q(&[("select", "id,devices(hostname)")]).unwrap_err();
        assert_eq!(e.code, "PGRST127");
        // A key that is not a filter is kept for the caller (RPC arguments).
        let query = q(&[("match_count", "5")]).unwrap();
        assert_eq!(
            query.rest,
            vec![("match_count".to_string(), "5".to_string())]
        );
        let e = q(&[("x", "is.maybe")]).unwrap().where_sql("t").unwrap_err();
        assert!(e.details.unwrap().contains("not_null"));
    }
}
