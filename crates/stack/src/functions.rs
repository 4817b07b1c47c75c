//! Edge Functions under the plain Deno CLI: one hermetic Deno process per function in
//! `supabase/functions/<name>/index.ts` (folders starting with `_` or `.` hold shared code, as in
//! the Supabase CLI), each on a free 127.0.0.1 port, with `verify_jwt` read from
//! `supabase/config.toml` for the gateway to enforce. Env: `supabase/functions/.env`, then the
//! stack's `SUPABASE_*` values, then the caller's overrides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::install::Toolchain;
use crate::paths::StackPaths;
use crate::process::{is_alive, spawn_detached, tail};
use crate::state::FunctionState;
use crate::{Result, StackError, io_err};

const LAUNCHER: &str = include_str!("../deno/serve.ts");

/// A function found on disk, with the settings `supabase/config.toml` gives it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub name: String,
    pub entry: PathBuf,
    pub verify_jwt: bool,
}

/// Functions under `<supabase_dir>/functions`, enabled unless `[functions.<name>] enabled = false`.
pub fn discover(supabase_dir: &Path) -> Result<Vec<FunctionSpec>> {
    let config = read_config(&supabase_dir.join("config.toml"))?;
    let dir = supabase_dir.join("functions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut specs = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = entry.path().join("index.ts");
        if name.starts_with(['_', '.']) || !index.is_file() {
            continue;
        }
        let section = config.get("functions").and_then(|f| f.get(&name));
        let flag = |key: &str| {
            section
                .and_then(|s| s.get(key))
                .and_then(toml::Value::as_bool)
        };
        if flag("enabled") == Some(false) {
            continue;
        }
        specs.push(FunctionSpec {
            name,
            entry: index,
            verify_jwt: flag("verify_jwt").unwrap_or(true),
        });
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

fn read_config(path: &Path) -> Result<toml::Table> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map_err(|e| StackError::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
    }
}

/// `KEY=VALUE` lines of a dotenv file (comments and blank lines skipped, optional quotes removed).
pub fn read_dotenv(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// Starts one function and waits for it to announce its port.
pub fn start(
    paths: &StackPaths,
    tools: &Toolchain,
    spec: &FunctionSpec,
    env: &BTreeMap<String, String>,
) -> Result<FunctionState> {
    let launcher = paths.run().join("serve-function.ts");
    std::fs::write(&launcher, LAUNCHER).map_err(io_err("writing the Deno launcher"))?;
    let log = paths.logs().join(format!("function-{}.log", spec.name));
    // A fresh log, so the port we read is this start's.
    std::fs::write(&log, "").map_err(io_err(format!("truncating {}", log.display())))?;
    std::fs::create_dir_all(paths.deno_dir()).map_err(io_err("creating the Deno cache"))?;

    let mut net_hosts: Vec<String> = vec!["127.0.0.1".into(), "localhost".into()];
    net_hosts.extend(env.values().filter_map(|v| url_host(v)));
    net_hosts.dedup();

    let mut cmd = std::process::Command::new(&tools.deno);
    cmd.current_dir(&paths.instance)
        .stdin(std::process::Stdio::null())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DENO_DIR", paths.deno_dir())
        .env("DENO_NO_UPDATE_CHECK", "1")
        .env("DENO_NO_PROMPT", "1")
        .env("NO_COLOR", "1")
        .env("FLEETBENCH_FUNCTION_NAME", &spec.name)
        .env("FLEETBENCH_FUNCTION_PORT", "0")
        .envs(env)
        .args([
            "run",
            "--no-remote",
            "--no-npm",
            "--no-config",
            "--cached-only",
            "--allow-env",
        ])
        .arg(format!("--allow-net={}", net_hosts.join(",")))
        .arg(format!(
            "--allow-read={}",
            spec.entry.parent().unwrap_or(Path::new("/")).display()
        ))
        .arg(&launcher)
        .arg(&spec.entry);
    let service = format!("edge function {}", spec.name);
    let pid = spawn_detached(cmd, &log, &service)?;
    let fail = |reason: String| StackError::Start {
        service: service.clone(),
        reason,
        log: log.display().to_string(),
        tail: tail(&log, 20),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(port) = announced_port(&log) {
            return Ok(FunctionState {
                port,
                pid: Some(pid),
                verify_jwt: spec.verify_jwt,
            });
        }
        if !is_alive(pid) {
            return Err(fail("deno exited before listening".into()));
        }
        if Instant::now() >= deadline {
            return Err(fail("no `listening on` line within 30 s".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn announced_port(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .find_map(|l| l.split_once(" listening on 127.0.0.1:"))
        .and_then(|(_, port)| port.trim().parse().ok())
}

/// The host (with port) of an `http(s)://` URL, for Deno's `--allow-net`.
fn url_host(value: &str) -> Option<String> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| host.to_string())
}
