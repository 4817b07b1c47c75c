//! `--set key.path=value` overrides: applied to the scenario's TOML before it is typed, and the
//! dotted key named back in an error located in the resolved text.

use super::Located;

/// Sets `keys` under `node`; a number indexes an array (`load.stages.1.agents`).
fn set(node: &mut toml::Value, keys: &[&str], value: toml::Value) -> bool {
    let Some((first, rest)) = keys.split_first() else {
        *node = value;
        return true;
    };
    match node {
        toml::Value::Table(t) if rest.is_empty() => {
            t.insert(first.to_string(), value);
            true
        }
        toml::Value::Table(t) => {
            let child = t
                .entry(first.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            set(child, rest, value)
        }
        toml::Value::Array(items) => {
            match first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(child) => set(child, rest, value),
                None => false,
            }
        }
        _ => false,
    }
}

/// Applies `key.path=value` overrides to the document. Values are TOML (`5000`, `"2s"`, `true`);
/// anything that does not parse as TOML is taken as a string.
pub(super) fn apply_overrides(
    doc: &mut toml::Table,
    overrides: &[String],
) -> Result<(), Vec<Located>> {
    let mut errors = Vec::new();
    for o in overrides {
        let bad = |message: String| Located {
            file: "--set".into(),
            line: 0,
            column: 0,
            message,
        };
        let Some((path, raw)) = o.split_once('=') else {
            errors.push(bad(format!("{o:?} is not KEY=VALUE")));
            continue;
        };
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        let keys: Vec<&str> = path.trim().split('.').collect();
        let mut root = toml::Value::Table(std::mem::take(doc));
        let ok = set(&mut root, &keys, value);
        if let toml::Value::Table(t) = root {
            *doc = t;
        }
        if !ok {
            errors.push(bad(format!("{path:?} does not name a key that can be set")));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// How a file's name reads when its errors are located in the text resolved with `--set`.
pub(super) const RESOLVED: &str = " (as resolved with --set)";

/// The dotted key at `offset` of TOML as `toml` writes it (`[table]` and `[[array]]` headers, one
/// `key = value` a line): `fleet.agents`, `load.stages.1.duration`.
pub(super) fn key_path(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line
        .split_once(" = ")
        .map(|(k, _)| k.trim().trim_matches('"').to_string());
    let mut header: Option<String> = None;
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for l in text[..line_start].lines() {
        if let Some(h) = l.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
            let n = seen.entry(h).or_default();
            header = Some(format!("{h}.{n}"));
            *n += 1;
        } else if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            header = Some(h.to_string());
        }
    }
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (h, k) => k.or(h),
    }
}
