//! `fleetbench`: command line plus glue. Each command turns its arguments into plain values once and
//! calls into the library crates; exit codes mean something to CI (0 pass, 99 thresholds crossed,
//! 2 invalid input, 1 could not run, 3 regressions found by `compare`).
//!
//! # Layout
//! - `cli`: the clap definitions. `target`: which Supabase a command targets; `local`: `stack …`.
//! - One module per command: `run` (run, validate, cleanup; the run itself is
//!   `fleetbench_runner`), `probe`, `capacity`, `collect` (collect, calibrate), `migrate`, `reports`
//!   (report, merge, compare), `sink`, `daemon` (`stack serve`: `fleetbench_gateway::daemon` with the
//!   webhook receiver), `goose` (feature `goose`; the users are `fleetbench_goose`).
//! - Shared by commands: `signals` (stop on SIGINT/SIGTERM), `out_dir` (run directories),
//!   `machine` (the build and the machine, for the summary), `progress` (the live line),
//!   `terminal` (the end-of-run tables, `--quiet`, `--json`, colour).

mod capacity;
mod cli;
mod collect;
mod daemon;
#[cfg(feature = "goose")]
mod goose;
mod local;
mod machine;
mod migrate;
mod out_dir;
mod probe;
mod progress;
mod reports;
mod run;
mod signals;
mod sink;
mod target;
mod terminal;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ScenariosAction, StackAction};

/// Invalid input: nothing was sent.
pub const EXIT_INVALID: u8 = 2;
/// The run could not be carried out.
pub const EXIT_FAILED: u8 = 1;
/// The run finished and crossed a threshold (k6's code).
pub const EXIT_THRESHOLDS: u8 = 99;
/// `compare` found regressions.
pub const EXIT_REGRESSIONS: u8 = 3;

/// A command that failed, with the exit code that says how (invalid input, could not run, thresholds
/// crossed, regressions).
#[derive(Debug)]
pub struct CommandError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CommandError {
    pub fn invalid(error: impl Into<anyhow::Error>) -> CommandError {
        CommandError {
            code: EXIT_INVALID,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CommandError {
    fn from(e: E) -> Self {
        CommandError {
            code: EXIT_FAILED,
            error: e.into(),
        }
    }
}

/// `fleetbench goose`'s arguments (kept outside the feature: a build without it still parses them).
pub struct GooseArgs {
    pub scenario: std::path::PathBuf,
    pub out: Option<std::path::PathBuf>,
    pub overrides: Vec<String>,
    pub cross_check: bool,
    /// A share (0.1 = 10 %).
    pub tolerance: f64,
    pub min_delta: std::time::Duration,
    /// Everything after `--`, for goose.
    pub goose: Vec<String>,
}

/// `fleetbench goose`, or why this build cannot run it.
fn goose_front_end(args: GooseArgs) -> Result<(), CommandError> {
    #[cfg(feature = "goose")]
    return goose::goose(args);
    #[cfg(not(feature = "goose"))]
    {
        let _ = args;
        Err(CommandError::invalid(anyhow::anyhow!(
            "this fleetbench was built without the goose feature: cargo build --release --features goose"
        )))
    }
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEETBENCH_LOG")
                .unwrap_or_else(|_| "info,tokio_postgres=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    terminal::set(terminal::Output {
        quiet: cli.quiet,
        json: cli.json,
    });
    target::FORCE_UNLISTED.store(
        cli.i_accept_this_target_is_not_on_the_allowlist,
        std::sync::atomic::Ordering::Relaxed,
    );
    let result = dispatch(cli.command);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

/// `s` as a TOML string literal (for an override built from a flag).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Each command to the module that carries it out, its arguments turned into plain values.
fn dispatch(command: Command) -> Result<(), CommandError> {
    match command {
        Command::Stack { action } => match action {
            StackAction::Up {
                profile,
                ip_forwarding,
                compute,
                plan,
            } => local::up(local::Settings::for_up(
                profile,
                ip_forwarding,
                compute,
                plan,
            )),
            StackAction::Down => local::down(),
            StackAction::Status => local::status(),
            StackAction::Env => local::env(),
            StackAction::Serve { instance } => daemon::serve(instance),
        },
        Command::Migrate { db_url, dir } => migrate::run(db_url, &dir),
        Command::Run {
            scenario,
            out,
            overrides,
            shard,
            run_id,
            start_at,
            dry_run,
            accept_slow_provisioning,
            prometheus_remote_write,
        } => run::run(
            &scenario,
            out,
            &overrides
                .into_iter()
                .chain(
                    prometheus_remote_write
                        .map(|u| format!("output.prometheus_remote_write={}", toml_string(&u))),
                )
                .collect::<Vec<_>>(),
            run::Sharding {
                shard,
                run_id,
                start_at,
            },
            run::Checks {
                dry_run,
                accept_slow_provisioning,
            },
        ),
        Command::Scenarios {
            action: ScenariosAction::Validate { files, overrides },
        } => run::validate(&files, &overrides),
        Command::Cleanup { run_id } => run::cleanup(&run_id),
        Command::Capacity {
            scenario,
            slo,
            start,
            max,
            growth,
            resolution,
            warmup,
            hold,
            time_limit,
            compute_size,
            out,
            overrides,
        } => capacity::capacity(capacity::Args {
            scenario,
            slo,
            start,
            max,
            growth,
            resolution: resolution / 100.0,
            warmup,
            hold,
            time_limit,
            out,
            overrides,
            compute_size,
        }),
        Command::Collect {
            interval,
            duration,
            out,
            push,
            upload_interval,
        } => collect::collect(collect::Collect {
            interval,
            duration,
            out,
            push,
            upload_interval,
        }),
        Command::Calibrate { trace, name, out } => collect::calibrate(&trace, name, out),
        Command::Probe {
            name,
            out,
            overrides,
            keep,
        } => probe::probe(&name, out, &overrides, keep),
        Command::Compare {
            baseline,
            run,
            tolerance,
            min_delta,
            error_tolerance,
        } => reports::compare(&baseline, &run, tolerance, min_delta, error_tolerance),
        Command::Goose {
            scenario,
            out,
            overrides,
            cross_check,
            tolerance,
            min_delta,
            goose,
        } => goose_front_end(GooseArgs {
            scenario,
            out,
            overrides,
            cross_check,
            tolerance: tolerance / 100.0,
            min_delta,
            goose,
        }),
        Command::Merge { shards, out } => reports::merge(&shards, &out),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "fleetbench", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Report { run_dir } => reports::report(&run_dir),
        Command::Sink {
            listen,
            latency,
            stall,
            capacity,
            faults,
        } => sink::sink(listen, latency, stall, capacity, faults),
    }
}
