//! Running the stack's services: as the `postgres` system user when we are root (initdb, postgres
//! and PgBouncer refuse root), detached in their own process group so a Ctrl-C in the terminal that
//! started them does not reach them, with the open-files limit raised to the hard limit first
//! (PgBouncer needs one descriptor per client). Stopping waits until every process is really gone.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};

use crate::{Result, StackError, io_err};

/// The user services run as: `postgres` when we are root, ourselves otherwise.
#[derive(Debug, Clone, Copy)]
pub struct ServiceUser {
    ids: Option<(u32, u32)>,
}

impl ServiceUser {
    pub fn detect() -> Result<ServiceUser> {
        if !geteuid().is_root() {
            return Ok(ServiceUser { ids: None });
        }
        let user = User::from_name("postgres")
            .map_err(|e| StackError::Install(format!("looking up the postgres user: {e}")))?
            .ok_or_else(|| {
                StackError::Install(
                    "there is no `postgres` system user (apt's postgresql-common creates it: `apt-get install pgbouncer`)"
                        .into(),
                )
            })?;
        Ok(ServiceUser {
            ids: Some((user.uid.as_raw(), user.gid.as_raw())),
        })
    }

    /// Makes `path` owned by the service user (no-op when we are not root).
    pub fn own(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.ids {
            chown(path, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// A command that will run as the service user, in `cwd`, with no inherited stdin.
    pub fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).env("HOME", cwd).stdin(Stdio::null());
        if let Some((uid, gid)) = self.ids {
            // std drops supplementary groups when switching away from root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

/// Raises this process's soft open-files limit to its hard limit; children inherit it.
pub fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// Starts `cmd` in its own process group with stdout and stderr appended to `log`. The child is
/// reaped by a background thread, so it never lingers as a zombie of a long-lived parent.
pub fn spawn_detached(mut cmd: Command, log: &Path, service: &str) -> Result<u32> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("opening {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io_err("duplicating the log handle"))?;
    cmd.stdout(out).stderr(err).process_group(0);
    let child: Child = cmd.spawn().map_err(io_err(format!("starting {service}")))?;
    let pid = child.id();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(pid)
}

/// Alive and not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Sends `signal` to each live pid, waits up to `grace` for all to exit, then kills the rest.
/// Returns the pids that had to be killed.
pub fn stop_all(pids: &[u32], signal: Signal, grace: Duration) -> Vec<u32> {
    for &pid in pids {
        if is_alive(pid) {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| is_alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stubborn: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    for &pid in &stubborn {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && stubborn.iter().any(|&p| is_alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stubborn
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`, failing early if `pid` dies.
pub fn wait_for_port(
    port: u16,
    pid: Option<u32>,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(pid) = pid
            && !is_alive(pid)
        {
            return Err(format!("the process (pid {pid}) exited"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing listened on 127.0.0.1:{port} within {timeout:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1, or `preferred` when it is still free.
pub fn free_port(preferred: Option<u16>) -> Result<u16> {
    if let Some(p) = preferred
        && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
    {
        return Ok(p);
    }
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io_err("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Pids of every live process whose command line mentions `dir` or whose working directory is
/// inside it (PostgreSQL backends rename themselves but keep the data directory as cwd). Used to
/// prove that a stopped stack left nothing behind.
pub fn pids_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && is_alive(pid))
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false);
            cmdline
                || std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .collect()
}
