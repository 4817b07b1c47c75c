//! `fleetbench stack …`: the embedded local stack from the command line.

use std::path::PathBuf;

use anyhow::Context;
use fleetbench_stack::{Profile, Stack, StackOptions, StackPaths, StackState};

use crate::CommandError;

/// The stack's settings beyond its paths: profile, IP forwarding, compute size.
pub type Settings = (Profile, bool, Option<fleetbench_stack::state::Compute>);

pub fn options(settings: Settings) -> anyhow::Result<StackOptions> {
    let (profile, ip_forwarding, compute) = settings;
    Ok(StackOptions {
        paths: StackPaths::from_env(),
        supabase_dir: PathBuf::from("supabase")
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from("supabase")),
        function_env: Default::default(),
        daemon_exe: Some(std::env::current_exe().context("locating the fleetbench executable")?),
        profile,
        ip_forwarding,
        compute,
    })
}

/// Brings the stack up (installing what is missing), reporting each step on stderr. Without
/// settings (profile, IP forwarding), a running stack keeps the ones it has.
pub fn ensure_up(settings: Option<Settings>) -> anyhow::Result<StackState> {
    let settings = settings.unwrap_or_else(|| {
        StackState::load(&StackPaths::from_env().state_file())
            .map(|s| (s.profile, s.ip_forwarding, s.compute))
            .unwrap_or_default()
    });
    let opts = options(settings)?;
    Ok(Stack::up(&opts, &mut |line| eprintln!("stack: {line}"))?)
}

pub fn up(
    profile: Profile,
    ip_forwarding: bool,
    compute: Option<fleetbench_stack::state::Compute>,
) -> Result<(), CommandError> {
    let state = ensure_up(Some((profile, ip_forwarding, compute)))?;
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
