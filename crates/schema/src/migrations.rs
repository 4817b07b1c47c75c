//! Migration files: `<version>_<name>.sql`, version = 14 digits (`YYYYMMDDHHMMSS`, UTC), ordered by
//! version, no version twice. Anything else in the folder that ends in `.sql` is an error, so a
//! misnamed file is never silently skipped.

use std::path::{Path, PathBuf};

use crate::SchemaError;

#[derive(Debug, Clone)]
pub struct Migration {
    pub version: String,
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
}

pub fn load_dir(dir: &Path) -> Result<Vec<Migration>, SchemaError> {
    let io = |source| SchemaError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out: Vec<Migration> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".sql") else {
            continue;
        };
        let bad = |reason: &str| SchemaError::BadFile {
            path: path.display().to_string(),
            reason: reason.into(),
        };
        let (version, name) = stem
            .split_once('_')
            .ok_or_else(|| bad("expected <YYYYMMDDHHMMSS>_<name>.sql"))?;
        if version.len() != 14 || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                "the version must be 14 digits (YYYYMMDDHHMMSS, as `supabase migration new` makes)",
            ));
        }
        if name.is_empty() {
            return Err(bad("the name after the version is empty"));
        }
        let sql = std::fs::read_to_string(&path).map_err(|source| SchemaError::Io {
            path: path.display().to_string(),
            source,
        })?;
        out.push(Migration {
            version: version.into(),
            name: name.into(),
            path: path.clone(),
            sql,
        });
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    if let Some(w) = out.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(SchemaError::BadFile {
            path: w[1].path.display().to_string(),
            reason: format!(
                "version {} is also used by {}",
                w[1].version,
                w[0].path.display()
            ),
        });
    }
    Ok(out)
}
