//! `fleetbench stack …`: the embedded local stack from the command line.

use std::path::PathBuf;

use anyhow::Context;
use fleetbench_stack::{Profile, Stack, StackOptions, StackPaths, StackState};

use crate::CommandError;

/// The stack's settings beyond its paths.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub profile: Profile,
    pub ip_forwarding: bool,
    pub compute: Option<fleetbench_stack::state::Compute>,
    pub plan: Option<fleetbench_stack::state::Plan>,
}

impl Settings {
    /// `stack up`'s settings: the `hosted` profile is a Pro project on Micro unless told otherwise
    /// (the size and plan a staging project most often has); `unlimited` has neither.
    pub fn for_up(
        profile: Profile,
        ip_forwarding: bool,
        compute: Option<fleetbench_stack::state::Compute>,
        plan: Option<fleetbench_stack::state::Plan>,
    ) -> Settings {
        let hosted = profile == Profile::Hosted;
        Settings {
            profile,
            ip_forwarding,
            compute: compute.or_else(|| {
                hosted.then(|| crate::cli::parse_compute("micro").expect("Micro is in the table"))
            }),
            plan: plan.or(hosted.then_some(fleetbench_stack::state::Plan::Pro)),
        }
    }

    /// The settings a stack was brought up with.
    fn of(state: &StackState) -> Settings {
        Settings {
            profile: state.profile,
            ip_forwarding: state.ip_forwarding,
            compute: state.compute.clone(),
            plan: state.plan,
        }
    }
}

pub fn options(settings: Settings) -> anyhow::Result<StackOptions> {
    Ok(StackOptions {
        paths: StackPaths::from_env(),
        supabase_dir: PathBuf::from("supabase")
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from("supabase")),
        function_env: Default::default(),
        daemon_exe: Some(std::env::current_exe().context("locating the fleetbench executable")?),
        profile: settings.profile,
        ip_forwarding: settings.ip_forwarding,
        compute: settings.compute,
        plan: settings.plan,
    })
}

/// Brings the stack up (installing what is missing), reporting each step on stderr. Without
/// settings, a running stack keeps the ones it has.
pub fn ensure_up(settings: Option<Settings>) -> anyhow::Result<StackState> {
    let settings = settings.unwrap_or_else(|| {
        StackState::load(&StackPaths::from_env().state_file())
            .map(|s| Settings::of(&s))
            .unwrap_or_default()
    });
    let opts = options(settings)?;
    Ok(Stack::up(&opts, &mut |line| eprintln!("stack: {line}"))?)
}

pub fn up(settings: Settings) -> Result<(), CommandError> {
    let state = ensure_up(Some(settings))?;
    print_services(&state)?;
    eprintln!("stack: up; `fleetbench stack env` prints the connection settings");
    Ok(())
}

pub fn down() -> Result<(), CommandError> {
    let paths = StackPaths::from_env();
    let report = Stack::down(&paths)?;
    for s in &report.stopped {
        println!("stopped {s}");
    }
    if !report.killed.is_empty() {
        println!(
            "killed {} process(es) that did not stop on request: {:?}",
            report.killed.len(),
            report.killed
        );
    }
    Ok(())
}

pub fn status() -> Result<(), CommandError> {
    let paths = StackPaths::from_env();
    let state = StackState::load(&paths.state_file())?;
    print_services(&state)?;
    Ok(())
}

pub fn env() -> Result<(), CommandError> {
    let paths = StackPaths::from_env();
    let state = StackState::load(&paths.state_file())?;
    for (key, value) in state.env_exports() {
        println!("export {key}='{value}'");
    }
    Ok(())
}

fn print_services(state: &StackState) -> anyhow::Result<()> {
    let status = Stack::status(&StackPaths {
        home: PathBuf::new(),
        instance: state.instance.clone(),
    })?;
    println!("stack instance {}", status.instance.display());
    let mut profile = format!("profile {}", state.profile);
    if let Some(c) = &state.compute {
        profile += &format!(
            ", compute {} ({} connections, {} pooler clients)",
            c.name, c.max_connections, c.pooler_clients
        );
    }
    if let Some(p) = state.plan {
        let (conns, msgs, joins) = p.realtime_limits();
        profile += &format!(
            ", plan {p} (Realtime: {conns} connections, {msgs} messages/s, {joins} joins/s)"
        );
    }
    if state.ip_forwarding {
        profile += ", IP address forwarding on";
    }
    println!("{profile}");
    for s in &status.services {
        let pid = s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let run = if s.running { "running" } else { "stopped" };
        println!(
            "  {:<34} 127.0.0.1:{:<6} pid {:<8} {run}",
            s.name, s.port, pid
        );
    }
    Ok(())
}
