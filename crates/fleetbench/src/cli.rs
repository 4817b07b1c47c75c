//! The command line (clap derive), kept apart from what the commands do. INTERFACE.md is the
//! contract for names, flags and exit codes.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `--version`: the crate's version and the commit it was built from (`+dirty` with local changes).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FLEETBENCH_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "fleetbench", version = VERSION, about = "Load tests for the Supabase backend of System Health AI", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Target a remote project that no allowlist names (`[target] allow_hosts`, FLEETBENCH_ALLOW_HOSTS).
    #[arg(long, global = true)]
    pub i_accept_this_target_is_not_on_the_allowlist: bool,
    /// Say only errors and the result (no progress line, no tables).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print the run's summary.json on stdout instead of the report's path (run, probe, merge).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install, start, stop and report the embedded local stack.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Apply migrations/ in order, recording versions as the Supabase CLI does.
    Migrate {
        /// Database to migrate [default: SUPABASE_DB_SESSION_URL, SUPABASE_DB_URL, or the local stack].
        #[arg(long, value_name = "URL")]
        db_url: Option<String>,
        /// Folder of <YYYYMMDDHHMMSS>_<name>.sql files.
        #[arg(long, value_name = "DIR", default_value = "migrations")]
        dir: PathBuf,
    },
    /// Run a scenario: provision the fleet, apply the load, write the run directory.
    Run {
        scenario: PathBuf,
        /// The run directory [default: reports/<UTC timestamp>-<scenario name>/].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Override a scenario key (`--set fleet.agents=5000`, `--set load.stages.0.agents=100`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Run slice I of N: agents and arrivals k with k mod N = I (N shards together are the run).
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<(u32, u32)>,
        /// The run id every shard of one run shares (users and rows are tagged with it): a UUID,
        /// or 8 to 64 letters, digits and dashes.
        #[arg(long, value_name = "ID", value_parser = parse_run_id)]
        run_id: Option<String>,
        /// When the load phase starts (RFC 3339), the same for every shard so that windows line up.
        #[arg(long, value_name = "TIME")]
        start_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Print the Auth preflight (provisioning time and refreshes the project's /token limit
        /// allows) and exit without sending anything: 2 when the run would be refused, else 0.
        #[arg(long)]
        dry_run: bool,
        /// Run even when provisioning from one address takes longer than allowed
        /// (FLEETBENCH_MAX_PROVISIONING, default 10m): sign-ins go at the limit's pace.
        #[arg(long)]
        accept_slow_provisioning: bool,
        /// Send the run's live series to this Prometheus remote-write URL
        /// (`[output] prometheus_remote_write`).
        #[arg(long, value_name = "URL")]
        prometheus_remote_write: Option<String>,
    },
    /// Run the scenario's agents as goose 0.19 users (goose's flags after `--`); --cross-check
    /// runs the same closed workload with fleetbench's engine first and compares the two.
    Goose {
        scenario: PathBuf,
        /// Where goose's reports go [default: reports/<UTC timestamp>-<scenario name>-goose/].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Override a scenario key, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Also run fleetbench's engine and compare counts (exactly) and p50/p99 (exit 3 if apart).
        #[arg(long)]
        cross_check: bool,
        /// How far apart a median or p99 may be, as a share of the larger.
        #[arg(long, value_name = "PCT", default_value = "10%", value_parser = percent)]
        tolerance: f64,
        /// Latencies closer than this always agree (timer and scheduling jitter).
        #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = humantime::parse_duration)]
        min_delta: std::time::Duration,
        /// goose's own flags (`-- --help` lists them).
        #[arg(last = true, value_name = "GOOSE FLAGS")]
        goose: Vec<String>,
    },
    /// Regressions of RUN against BASELINE, per operation and percentile (exit 3 if any).
    Compare {
        baseline: PathBuf,
        run: PathBuf,
        /// How much worse a latency percentile (or lower a rate) may be before it is a regression.
        #[arg(long, value_name = "PCT", default_value = "10%", value_parser = percent)]
        tolerance: f64,
        /// Latency changes smaller than this are never regressions (jitter).
        #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = humantime::parse_duration)]
        min_delta: std::time::Duration,
        /// How many percentage points the error rate may rise.
        #[arg(long, value_name = "PCT", default_value = "0.1%", value_parser = percent)]
        error_tolerance: f64,
    },
    /// Merge shard runs that ran side by side into one run directory, exactly.
    Merge {
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Re-render a finished run's index.html from its saved data.
    Report { run_dir: PathBuf },
    /// Check scenario files without running them.
    Scenarios {
        #[command(subcommand)]
        action: ScenariosAction,
    },
    /// A minimal HTTP target with a known latency model, for calibrating the generator.
    Sink {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Service time: `5ms`, or `uniform:1ms..9ms`.
        #[arg(long, value_name = "SPEC", default_value = "0ms")]
        latency: fleetbench_sink::Latency,
        /// Periodic stalls: `200ms/1s` stalls the first 200 ms of every second.
        #[arg(long, value_name = "SPEC")]
        stall: Option<fleetbench_sink::Stall>,
        /// Inserts served per second at most, one at a time (`400/s`): past it the queue grows.
        #[arg(long, value_name = "RATE", value_parser = per_second)]
        capacity: Option<f64>,
        /// Misbehave for a while, on the sink's clock (repeatable): `status:503@2s..4s`,
        /// `throttle:1s@2s..3s` (429 with Retry-After; `throttle@…` without), `slow:5s@2s..3s`,
        /// `reset@2s..3s` (answers broken off), `refresh_reuse@0s..1m` (400 on refresh grants),
        /// `signin_refused:10@0s..1m` (400 on the password grants of agents 0, 10, 20, …).
        #[arg(long = "fault", value_name = "SPEC")]
        faults: Vec<fleetbench_sink::Fault>,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) on stdout.
    Completions { shell: clap_complete::Shell },
    /// Print fleetbench's man page (roff, section 1) on stdout: `fleetbench man > fleetbench.1`.
    Man,
    /// Run one end-to-end probe alone: realtime, rag, partitions, pooler, webhook, rls.
    Probe {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(fleetbench_scenario::probes::PROBES))]
        name: String,
        /// The run directory [default: reports/<UTC timestamp>-probe-<name>/].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// A probe setting (`--set subscribers=50`; the keys of `[probes.<name>]` in a scenario).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Keep the probe's users and rows on the target (removed by default).
        #[arg(long)]
        keep: bool,
    },
    /// The real collector (sysinfo): record this machine to a trace file, or push it live to the target.
    Collect {
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Record to this trace file (JSON lines).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Stream to the target as an agent does, signed in as a user of its own.
        #[arg(long)]
        push: bool,
        /// With --push: how often a batch is uploaded.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        upload_interval: std::time::Duration,
    },
    /// Fit the synthetic model to a trace: writes a device profile and a page comparing the two.
    Calibrate {
        trace: PathBuf,
        /// The profile's name [default: calibrated-<hostname>].
        #[arg(long)]
        name: Option<String>,
        /// The profile file [default: <trace>.profile.toml]; the comparison goes beside it (.html).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Search for the largest load that holds the SLO: steps up, then bisects; a plan per compute size.
    Capacity {
        scenario: PathBuf,
        /// `operation: expression, expression` (repeatable; `;` separates operations) [default: the scenario's thresholds].
        #[arg(long, value_name = "EXPR")]
        slo: Vec<String>,
        /// First level: agents, or uploads per second for an `arrival_rate` scenario [default: max / 16].
        #[arg(long)]
        start: Option<f64>,
        /// Highest level tried [default: fleet.agents, or the scenario's highest rate].
        #[arg(long)]
        max: Option<f64>,
        /// Each step up multiplies the level by this.
        #[arg(long, default_value_t = 2.0)]
        growth: f64,
        /// Bisect until the bracket is narrower than this.
        #[arg(long, value_name = "PCT", default_value = "5%", value_parser = percent)]
        resolution: f64,
        /// Left out of each step's figures (the ramp to the level and its settling).
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
        warmup: std::time::Duration,
        /// How long each level is held and measured.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        hold: std::time::Duration,
        /// The whole search stops, keeping what it found, after this.
        #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
        time_limit: std::time::Duration,
        /// The target's compute size (Micro, Small, …; default: the Management API's with
        /// SUPABASE_ACCESS_TOKEN): the model per size starts from it; unknown, there is no model.
        #[arg(long)]
        compute_size: Option<String>,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Remove everything a run wrote to the target (its users and their rows).
    Cleanup {
        /// The run whose users and rows to remove (as `summary.json`'s `run_id` says).
        #[arg(long, value_name = "ID", value_parser = parse_run_id)]
        run_id: String,
    },
}

/// `400/s` or `400` → 400.0 per second.
fn per_second(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches("/s")
        .parse()
        .map_err(|_| format!("{s:?} is not a rate like 400/s"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s:?}: a rate must be above 0"))
    }
}

/// `10%` or `10` → 10.0 (percent).
fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 10% or 0.5%"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{s:?}: a percentage must be 0 or more"))
    }
}

#[derive(Debug, Subcommand)]
pub enum ScenariosAction {
    /// Validate each file; every problem is printed with file:line:column.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StackAction {
    /// Install what is missing and start the stack (idempotent).
    Up {
        /// `hosted` (the staging rehearsal) serves TLS only, signed by the stack's own CA (HTTPS, WSS, poolers
        /// refusing plaintext), and applies GoTrue's per-IP Auth rate limits; `unlimited` is plain and unlimited.
        #[arg(long, env = "FLEETBENCH_STACK_PROFILE", default_value = "unlimited")]
        profile: fleetbench_stack::Profile,
        /// The project's "IP address forwarding": a request with the secret key is rate-limited by
        /// its `Sb-Forwarded-For` address (off by default, as on hosted projects).
        #[arg(long, env = "FLEETBENCH_STACK_IP_FORWARDING")]
        ip_forwarding: bool,
        /// A hosted compute size (nano, micro, small, medium, large, xl, 2xl, 4xl, 8xl, 12xl, 16xl):
        /// its direct connections become Postgres's max_connections and its pooler clients each
        /// pooler's limit, from Supabase's published table [hosted default: micro, a Pro
        /// project's included compute].
        #[arg(long, env = "FLEETBENCH_STACK_COMPUTE", value_name = "SIZE", value_parser = parse_compute)]
        compute: Option<fleetbench_stack::state::Compute>,
        /// The plan whose Realtime limits apply (free, pro, team; Pro without its spend cap has
        /// Team's limits) [hosted default: pro].
        #[arg(long, env = "FLEETBENCH_STACK_PLAN", value_name = "PLAN")]
        plan: Option<fleetbench_stack::state::Plan>,
    },
    /// Stop every process of the stack.
    Down,
    /// Show what runs and where.
    Status,
    /// Print `export SUPABASE_…=…` lines for the running stack.
    Env,
    /// The stack daemon (started by `stack up`; not for direct use).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        instance: PathBuf,
    },
}

/// A compute size by its name, any case, from the capacity model's table.
pub fn parse_compute(s: &str) -> Result<fleetbench_stack::state::Compute, String> {
    fleetbench_capacity::compute_size(s)
        .map(|c| fleetbench_stack::state::Compute {
            name: c.name.into(),
            max_connections: c.max_connections,
            pooler_clients: c.pooler_clients,
            pool_size: c.pool_size,
        })
        .ok_or_else(|| {
            let names: Vec<String> = fleetbench_capacity::SIZES
                .iter()
                .map(|c| c.name.to_lowercase())
                .collect();
            format!("{s:?} is not a compute size: {}", names.join(", "))
        })
}

pub fn parse_run_id(s: &str) -> Result<String, String> {
    let ok =
        (8..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        return Ok(s.to_string());
    }
    Err(format!(
        "{s:?} is not a run id: use 8 to 64 letters, digits and dashes, e.g. $(cat /proc/sys/kernel/random/uuid)"
    ))
}

pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: write the shard as I/N, e.g. 0/4"))?;
    let (i, n): (u32, u32) = (
        i.trim()
            .parse()
            .map_err(|_| format!("{s:?}: {i:?} is not a shard index"))?,
        n.trim()
            .parse()
            .map_err(|_| format!("{s:?}: {n:?} is not a shard count"))?,
    );
    if n == 0 || i >= n {
        return Err(format!(
            "{s:?}: the index must be below the count (0/{n} … {}/{n})",
            n.saturating_sub(1)
        ));
    }
    Ok((i, n))
}
