//! `postgres_changes` filters: `column=op.value`, operators `eq neq lt lte gt gte in` (`in.(a,b)`,
//! at most 100 values), several joined by commas meaning AND. They are matched against the decoded
//! row: numbers compare as numbers, everything else as text, the way Realtime casts the filter value
//! to the column's type before comparing.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub column: String,
    pub op: Op,
    pub values: Vec<String>,
}

const MAX_IN_VALUES: usize = 100;

/// Parses a filter string; the error says which part is wrong.
pub fn parse(text: &str) -> Result<Vec<Filter>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in split_top_level(text) {
        let (column, rest) = part
            .split_once('=')
            .ok_or_else(|| format!("filter `{part}` is not `column=op.value`"))?;
        let (op, value) = rest
            .split_once('.')
            .ok_or_else(|| format!("filter `{part}` is not `column=op.value`"))?;
        let op = match op {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            other => {
                return Err(format!(
                    "filter `{part}`: operator `{other}` is not one of eq, neq, lt, lte, gt, gte, in"
                ));
            }
        };
        let values = if op == Op::In {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("filter `{part}`: `in` takes a list, `in.(a,b)`"))?;
            let vs: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().trim_matches('"').to_string())
                .collect();
            if vs.len() > MAX_IN_VALUES {
                return Err(format!(
                    "filter `{column}=in`: {} values, at most {MAX_IN_VALUES}",
                    vs.len()
                ));
            }
            vs
        } else {
            vec![value.to_string()]
        };
        if column.trim().is_empty() {
            return Err(format!("filter `{part}` names no column"));
        }
        out.push(Filter {
            column: column.trim().to_string(),
            op,
            values,
        });
    }
    Ok(out)
}

/// Splits on commas outside `in.(…)` lists.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Whether every filter holds for `row`. A filter on a column the row lacks does not hold.
pub fn matches(filters: &[Filter], row: &Map<String, Value>) -> bool {
    filters.iter().all(|f| {
        let Some(v) = row.get(&f.column) else {
            return false;
        };
        match f.op {
            Op::In => f
                .values
                .iter()
                .any(|want| compare(v, want) == Some(std::cmp::Ordering::Equal)),
            op => {
                let Some(ord) = compare(v, &f.values[0]) else {
                    return false;
                };
                use std::cmp::Ordering::*;
                match op {
                    Op::Eq => ord == Equal,
                    Op::Neq => ord != Equal,
                    Op::Lt => ord == Less,
                    Op::Lte => ord != Greater,
                    Op::Gt => ord == Greater,
                    Op::Gte => ord != Less,
                    Op::In => unreachable!(),
                }
            }
        }
    })
}

/// `value` compared with the filter's text; `None` when they cannot be compared (SQL NULL).
fn compare(value: &Value, want: &str) -> Option<std::cmp::Ordering> {
    match value {
        Value::Null => None,
        Value::Number(n) => {
            let want: f64 = want.parse().ok()?;
            n.as_f64()?.partial_cmp(&want)
        }
        Value::Bool(b) => {
            let want = match want {
                "true" | "t" => true,
                "false" | "f" => false,
                _ => return None,
            };
            Some(b.cmp(&want))
        }
        Value::String(s) => Some(s.as_str().cmp(want)),
        other => Some(other.to_string().as_str().cmp(want)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn operators_match_like_sql() {
        let r =
            row(json!({ "severity": "critical", "value": 91.5, "user_id": "u1", "note": null }));
        let yes = [
            "severity=eq.critical",
            "severity=neq.info",
            "value=gt.90",
            "value=gte.91.5",
            "value=lt.100",
            "value=lte.91.5",
            "severity=in.(warning,critical)",
            "severity=eq.critical,value=gt.90",
        ];
        for f in yes {
            assert!(matches(&parse(f).unwrap(), &r), "{f} should match");
        }
        let no = [
            "severity=eq.info",
            "value=gt.91.5",
            "severity=in.(info,warning)",
            "severity=eq.critical,value=lt.90",
            "note=eq.x",
            "missing=eq.x",
        ];
        for f in no {
            assert!(!matches(&parse(f).unwrap(), &r), "{f} should not match");
        }
    }

    #[test]
    fn bad_filters_say_why() {
        assert!(parse("severity").unwrap_err().contains("column=op.value"));
        assert!(
            parse("severity=like.x")
                .unwrap_err()
                .contains("operator `like`")
        );
        assert!(parse("id=in.1,2").unwrap_err().contains("in.(a,b)"));
        let many = format!(
            "id=in.({})",
            (0..101)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(parse(&many).unwrap_err().contains("at most 100"));
    }
}
