//! The `fleetbench` binary end to end, as a user types it.
//!
//! Contents:
//! - stack: `stack up` → the gateway answers Auth → `migrate` (twice) → the daemon's scheduler runs
//!   the partition maintenance → the Data API serves the new tables → Edge Functions answer behind
//!   `verify_jwt` → a smoke fleet run with the webhook and rls probes beside it, and `probe rls`
//!   alone (report path, exit 0; a crossed threshold exits 99; a broken
//!   scenario exits 2 with its location; no secret in any output) → `stack up --profile hosted`
//!   → `stack down` leaves nothing behind.
//! - [`hosted`]: `stack up --profile hosted` serves TLS only (HTTPS, WSS, poolers refusing plaintext);
//!   a fleet with a Realtime probe runs from `stack env` alone, every row accounted for; the
//!   `/token` burst of 30 then 429.
//! - input errors: a migrations folder with a misnamed file exits 2 before connecting.
//! - [`calendar`]: `stack up` on a cluster last up months ago takes today's rows as soon as it returns.
//! - [`collect`]: record a trace, calibrate a profile, use both in a scenario.
//! - [`capacity`]: the knee of a saturating sink; `compare` of capacity runs.
//! - [`safety`]: remote targets need an allowlist; hard caps; an unwritable run directory.
//! - [`goose`]: the goose front end's cross-check against a sink, and goose users on the local
//!   stack (called by the stack test).
//! - [`faults`]: fault survival against a misbehaving sink (5xx, 429 with and without Retry-After,
//!   answers past the timeout, answers broken off, refused refresh tokens); a run short of its
//!   agents (refused sign-ins) fails unless `[delivery]` accepts it.
//! - [`stack_faults`]: the gateway, PgBouncer and Postgres killed under a running fleet and probe.
//! - [`signals`]: SIGINT/SIGTERM write the whole run directory; a second signal exits at once.
//! - [`export`]: the live series through Prometheus remote-write into a real Prometheus, equal to
//!   the summary at the end; the Grafana dashboard's queries against it.
//! - [`proxy`]: an HTTP CONNECT proxy of the tests' own (the hosted run goes through it).
//! - [`formats`]: junit.xml (junitparser), histograms.hlog (HdrHistogram's Python decoder), the
//!   man page (groff), bash completions, the terminal table, `--json`, `--quiet`, `NO_COLOR`.
//! - [`deploy`]: the Kubernetes manifests and the staging workflow, parsed.

mod calendar;
mod capacity;
mod collect;
mod deploy;
mod export;
mod faults;
mod formats;
#[cfg(feature = "goose")]
mod goose;
mod hosted;
mod lint;
mod platform;
mod proxy;
mod safety;
mod signals;
mod stack;
mod stack_faults;
mod staging;
mod workflow;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fleetbench_stack::testing::workspace_root;
use fleetbench_stack::{StackPaths, process};

fn fleetbench(instance: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetbench"))
        .args(args)
        .current_dir(workspace_root())
        .env("FLEETBENCH_HOME", workspace_root().join(".fleetbench"))
        .env("FLEETBENCH_STACK_DIR", instance)
        .env_remove("SUPABASE_URL")
        .output()
        .expect("running fleetbench")
}

/// Figure `name` of probe `probe` in a run's summary.
fn probe_figure(summary: &serde_json::Value, probe: &str, name: &str) -> f64 {
    summary["probes"][probe]["figures"]
        .as_array()
        .unwrap_or_else(|| panic!("no probe {probe:?} in {summary}"))
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no figure {name:?} of {probe:?} in {summary}"))["value"]
        .as_f64()
        .unwrap()
}

/// The users and the `system_metrics` rows tagged with run `run`.
async fn run_owns(db: &tokio_postgres::Client, run: String) -> (i64, i64) {
    let r = db
        .query_one(
            "select (select count(*) from auth.users where raw_app_meta_data ->> 'fleetbench_run_id' = $1), \
                    (select count(*) from public.system_metrics m join auth.users u on u.id = m.user_id \
                     where u.raw_app_meta_data ->> 'fleetbench_run_id' = $1)",
            &[&run],
        )
        .await
        .unwrap();
    (r.get::<_, i64>(0), r.get::<_, i64>(1))
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `fleetbench sink` on a free port of `host`, served on the test's runtime, answering after
/// `latency` (a sink spec: `2ms`, `uniform:4ms..12ms`), at most `capacity` inserts a second,
/// with `faults` (`status:503@3s..5s`): its URL and the sink (its counters are the truth).
async fn sink_on(
    host: &str,
    latency: &str,
    capacity: Option<f64>,
    faults: &[String],
) -> (String, std::sync::Arc<fleetbench_sink::Sink>) {
    let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sink = fleetbench_sink::Sink::faulty(
        fleetbench_sink::Model {
            latency: latency.parse().unwrap(),
            stall: None,
            capacity,
        },
        faults.iter().map(|f| f.parse().unwrap()).collect(),
    );
    tokio::spawn(fleetbench_sink::serve(listener, sink.clone()));
    (url, sink)
}

/// `fleetbench run SCENARIO --out OUT EXTRA…` against the remote project at `url` (dummy keys, no
/// pooler), off the test's runtime: its exit code and stderr.
async fn run_remote(
    scenario: &Path,
    out: &Path,
    extra: &[&str],
    url: &str,
) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetbench"));
    cmd.arg("run")
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("SUPABASE_URL", url)
        .env("SUPABASE_ANON_KEY", "anon")
        .env("SUPABASE_SERVICE_ROLE_KEY", "service")
        .env_remove("SUPABASE_DB_URL")
        .env_remove("FLEETBENCH_MAX_PROVISIONING");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`sink_on`] 127.0.0.1, well behaved.
async fn sink(latency: &str) -> (String, std::sync::Arc<fleetbench_sink::Sink>) {
    sink_on("127.0.0.1", latency, None, &[]).await
}

/// The run's account of its rows on stderr: (sampled, written, unsent, dropped, abandoned).
fn rows_account(stderr: &str) -> (i64, i64, i64, i64, i64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("rows sampled"))
        .unwrap_or_else(|| panic!("no account of the rows in:\n{stderr}"));
    let figure = |name: &str| -> i64 {
        let at = line.find(name).unwrap() + name.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        figure("rows sampled"),
        figure("written"),
        figure("unsent"),
        figure(", dropped"),
        figure(", abandoned"),
    )
}

/// The run directory holds its report, summary and interval log, none empty; the summary.
fn complete_run_dir(dir: &Path, what: &str) -> serde_json::Value {
    for file in [
        "index.html",
        "summary.json",
        "histograms.hlog",
        "scenario.toml",
    ] {
        let len = std::fs::metadata(dir.join(file)).map_or(0, |m| m.len());
        assert!(
            len > 0,
            "{what}: {file} missing or empty in {}",
            dir.display()
        );
    }
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// The run scraped its target's Metrics API through the run (`server.json`, at least a scrape
/// at the start and one at the end) and its report has the Server section; the transactions the
/// database counted over the run cover at least the inserts the run saw succeed (each insert is a
/// transaction of its own, through the Data API or the pooler).
fn server_section(dir: &Path, summary: &serde_json::Value) {
    let server: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("server.json")).unwrap()).unwrap();
    let scrapes = server["scrapes"].as_array().unwrap();
    assert!(scrapes.len() >= 2, "{server}");
    let commits = |s: &serde_json::Value| {
        s["values"]["pg_stat_database_xact_commit_total"]
            .as_f64()
            .unwrap()
    };
    let committed = commits(scrapes.last().unwrap()) - commits(&scrapes[0]);
    let inserted: u64 = ["rest.insert_metrics", "pooler.insert_metrics"]
        .iter()
        .map(|op| {
            let o = &summary["operations"][op];
            o["count"].as_u64().unwrap_or(0) - o["errors"].as_u64().unwrap_or(0)
        })
        .sum();
    assert!(
        inserted > 0 && committed >= inserted as f64,
        "{committed} commits over the run, {inserted} inserts"
    );
    let page = std::fs::read_to_string(dir.join("index.html")).unwrap();
    for panel in [
        "<h2>Server</h2>",
        "Database connections",
        "Transactions",
        "Pooler clients",
    ] {
        assert!(page.contains(panel), "{panel}");
    }
}

/// This machine's CPUs as `/proc/stat` lists them (one `cpuN` line each): what node_exporter, and
/// so the double's Metrics API, counts.
fn proc_stat_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count()
}

/// The commit this checkout is at, as fleetbench's build names it (12 hex digits).
fn head_commit() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the instance even when the test fails half-way.
struct Instance(PathBuf);

impl Instance {
    /// A stack instance directory of this test's own (`prefix` names it), owned by this process
    /// (the testing harness removes those whose owner is gone).
    fn new(prefix: &str) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .unwrap()
            .keep();
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).unwrap();
        Instance(dir)
    }
}
impl Drop for Instance {
    fn drop(&mut self) {
        fleetbench_stack::testing::remove_instance(&StackPaths {
            home: PathBuf::new(),
            instance: self.0.clone(),
        });
    }
}

#[test]
fn misnamed_migration_is_invalid_input() {
    let migrations = tempfile::tempdir().unwrap();
    std::fs::write(migrations.path().join("001_init.sql"), "select 1").unwrap();
    let out = fleetbench(
        Path::new("/nonexistent"),
        &[
            "migrate",
            "--dir",
            migrations.path().to_str().unwrap(),
            "--db-url",
            "postgres://nobody@127.0.0.1:1/x",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("001_init.sql") && stderr.contains("14 digits"),
        "{stderr}"
    );
}
