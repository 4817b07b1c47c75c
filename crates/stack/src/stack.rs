//! The supervisor: `up` installs what is missing, creates the cluster once, and starts PostgreSQL,
//! the two poolers, the edge functions and the daemon, each on a free 127.0.0.1 port (the previous
//! one when it is still free); `down` stops them and proves nothing is left; `status` reports.
//! A failed `up` stops whatever it had started.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::install::{self, Toolchain};
use crate::keys::{api_key, random_secret};
use crate::paths::{StackPaths, untraversable_ancestor};
use crate::pooler::{self, PoolMode};
use crate::process::{self, ServiceUser, is_alive, pids_using, raise_fd_limit, stop_all};
use crate::project::Profile;
use crate::state::{Secrets, ServiceState, StackState};
use crate::{Result, StackError, functions, io_err, postgres};

/// What to bring up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub paths: StackPaths,
    /// The project's `supabase/` folder (config.toml, functions/).
    pub supabase_dir: PathBuf,
    /// Extra environment for the edge functions (after `supabase/functions/.env`).
    pub function_env: BTreeMap<String, String>,
    /// The `fleetbench` executable to run as the stack daemon (`<exe> stack serve --instance DIR`),
    /// or none for a stack without scheduler and gateway.
    pub daemon_exe: Option<PathBuf>,
    /// `hosted` serves TLS only (its own CA) and applies GoTrue's per-IP rate limits in the Auth
    /// stand-in; `unlimited` does neither.
    pub profile: Profile,
    /// The project's "IP address forwarding" (GoTrue's `GOTRUE_SECURITY_SB_FORWARDED_FOR_ENABLED`):
    /// with it, a request carrying the secret key is rate-limited by its `Sb-Forwarded-For` address.
    pub ip_forwarding: bool,
    /// A hosted compute size's connection limits (`--compute`); none: generous local limits.
    pub compute: Option<crate::state::Compute>,
    /// The plan whose Realtime limits apply (`--plan`, the `hosted` profile).
    pub plan: Option<crate::state::Plan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub port: u16,
    pub pid: Option<u32>,
    pub running: bool,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub instance: PathBuf,
    pub services: Vec<ServiceStatus>,
}

impl Status {
    pub fn all_running(&self) -> bool {
        self.services.iter().all(|s| s.running)
    }
}

#[derive(Debug, Clone, Default)]
pub struct DownReport {
    pub stopped: Vec<String>,
    /// Processes that did not stop on request and were killed.
    pub killed: Vec<u32>,
}

pub struct Stack;

impl Stack {
    /// Brings the stack up (idempotent: a running stack is returned as it is).
    pub fn up(opts: &StackOptions, progress: &mut dyn FnMut(&str)) -> Result<StackState> {
        let paths = &opts.paths;
        for dir in [&paths.instance, &paths.logs(), &paths.run()] {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let _lock = lock(paths)?;
        let user = ServiceUser::detect()?;
        std::fs::set_permissions(&paths.instance, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("making the instance directory readable"))?;
        user.own(&paths.logs())?;
        user.own(&paths.run())?;

        let previous = StackState::load(&paths.state_file()).ok();
        if let Some(prev) = &previous {
            let same_settings = prev.profile == opts.profile
                && prev.ip_forwarding == opts.ip_forwarding
                && prev.compute == opts.compute
                && prev.plan == opts.plan
                && prev.supabase_dir.as_deref() == Some(opts.supabase_dir.as_path());
            if same_settings && status_of(prev).all_running() {
                return Ok(prev.clone());
            }
            // Partly up (a crash, a killed service) or asked for other settings: stop the rest and
            // start cleanly.
            stop(paths, prev, user);
        }

        let tools = install::ensure(paths, progress)?;
        for path in [&paths.instance, &tools.pg_bin] {
            if let Some(blocked) = untraversable_ancestor(path) {
                return Err(StackError::Config(format!(
                    "the service user cannot reach {}: {} is not world-searchable; \
                     set FLEETBENCH_HOME to a directory outside it (for example /var/tmp/fleetbench)",
                    path.display(),
                    blocked.display()
                )));
            }
        }
        raise_fd_limit();

        let mut secrets = match &previous {
            Some(p) => p.secrets.clone(),
            None => new_secrets()?,
        };
        // Stacks made before the new keys existed get them now.
        if secrets.opaque.is_none() {
            secrets.opaque = Some(crate::keys::opaque_keys());
        }
        if secrets.signing.is_none() {
            secrets.signing = Some(crate::keys::signing_key()?);
        }
        if secrets.access_token.is_none() {
            secrets.access_token = Some(crate::keys::access_token());
        }
        // Written before anything starts, so a failed start can still be taken down.
        let mut state = StackState {
            instance: paths.instance.clone(),
            pg_bin: tools.pg_bin.clone(),
            postgres: ServiceState { port: 0, pid: None },
            pooler_transaction: ServiceState { port: 0, pid: None },
            pooler_session: ServiceState { port: 0, pid: None },
            daemon: None,
            functions: BTreeMap::new(),
            secrets,
            started_at: chrono::Utc::now().to_rfc3339(),
            supabase_dir: Some(opts.supabase_dir.clone()),
            profile: opts.profile,
            tls: None,
            ip_forwarding: opts.ip_forwarding,
            compute: opts.compute.clone(),
            plan: opts.plan,
            project_ref: previous
                .as_ref()
                .and_then(|p| p.project_ref.clone())
                .or_else(|| Some(crate::keys::project_ref())),
        };
        match start_all(opts, &tools, user, previous.as_ref(), &mut state, progress) {
            Ok(()) => {
                state.save(&paths.state_file())?;
                Ok(state)
            }
            Err(e) => {
                stop(paths, &state, user);
                let _ = state.save(&paths.state_file());
                Err(e)
            }
        }
    }

    /// Stops everything the instance runs and checks that no process of it remains.
    pub fn down(paths: &StackPaths) -> Result<DownReport> {
        let _lock = lock(paths)?;
        let mut state = StackState::load(&paths.state_file())?;
        let user = ServiceUser::detect()?;
        let report = stop(paths, &state, user);
        for s in [
            &mut state.postgres,
            &mut state.pooler_transaction,
            &mut state.pooler_session,
        ] {
            s.pid = None;
        }
        state.daemon = None;
        state.functions.clear();
        state.save(&paths.state_file())?;
        Ok(report)
    }

    pub fn status(paths: &StackPaths) -> Result<Status> {
        Ok(status_of(&StackState::load(&paths.state_file())?))
    }
}

fn lock(paths: &StackPaths) -> Result<File> {
    let f = File::create(paths.lock_file()).map_err(io_err("opening the stack lock"))?;
    f.lock().map_err(io_err("taking the stack lock"))?;
    Ok(f)
}

fn new_secrets() -> Result<Secrets> {
    let jwt_secret = random_secret(48);
    let now = chrono::Utc::now().timestamp();
    Ok(Secrets {
        postgres_password: random_secret(32),
        authenticator_password: random_secret(32),
        anon_key: api_key(&jwt_secret, "anon", now)?,
        service_role_key: api_key(&jwt_secret, "service_role", now)?,
        jwt_secret,
        opaque: None,
        signing: None,
        access_token: None,
    })
}

fn start_all(
    opts: &StackOptions,
    tools: &Toolchain,
    user: ServiceUser,
    previous: Option<&StackState>,
    state: &mut StackState,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let paths = &opts.paths;
    state.save(&paths.state_file())?;
    if postgres::init_cluster(paths, tools, user, &state.secrets.postgres_password)? {
        progress(&format!(
            "created the PostgreSQL cluster in {}",
            paths.data().display()
        ));
    }
    let port = process::free_port(previous.map(|p| p.postgres.port))?;
    state.postgres = ServiceState {
        port,
        pid: Some(postgres::start(
            paths,
            tools,
            user,
            port,
            state.compute.as_ref().map(|c| c.max_connections),
        )?),
    };
    state.save(&paths.state_file())?;
    progress(&format!("postgres listening on 127.0.0.1:{port}"));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("starting a runtime"))?;
    let userlist = runtime.block_on(async {
        let admin = postgres::connect(&state.direct_db_url()).await?;
        if postgres::bootstrap(&admin, &state.secrets.authenticator_password).await? {
            progress(
                "created the Supabase base schema (roles, auth, extensions, supabase_realtime)",
            );
        }
        // pg_net's stand-in is idempotent: applied on every start, a cluster created before it
        // existed gets it before any migration needs it.
        admin.batch_execute(crate::pgnet::SQL).await?;
        postgres::scram_userlist(&admin, &["postgres", "authenticator"]).await
    })?;
    // Under tenant users the poolers know `postgres` only as `postgres.<ref>`.
    let userlist = match state.pooler_user().as_str() {
        "postgres" => userlist,
        tenant => userlist.replace("\"postgres\" ", &format!("\"{tenant}\" ")),
    };
    pooler::write_userlist(paths, user, &userlist)?;
    if opts.profile == Profile::Hosted {
        state.tls = Some(crate::tls::ensure(paths, user)?);
        progress("serving TLS with the stack's CA (FLEETBENCH_CA_FILE in `stack env`)");
    }

    start_poolers(paths, tools, user, previous, state, progress)?;

    // The daemon's port is chosen first: the functions get it as SUPABASE_URL, and the daemon, started
    // after them, reads their ports from the state file to serve /functions/v1.
    if opts.daemon_exe.is_some() {
        let port = process::free_port(previous.and_then(|p| p.daemon.as_ref()).map(|d| d.port))?;
        state.daemon = Some(ServiceState { port, pid: None });
        state.save(&paths.state_file())?;
    }

    let env = function_env(opts, state);
    for spec in functions::discover(&opts.supabase_dir)? {
        let f = functions::start(paths, tools, &spec, &env)?;
        progress(&format!(
            "edge function {} listening on 127.0.0.1:{}",
            spec.name, f.port
        ));
        state.functions.insert(spec.name.clone(), f);
        state.save(&paths.state_file())?;
    }
    if let Some(exe) = &opts.daemon_exe {
        start_daemon(exe, paths, state, progress)?;
    }
    Ok(())
}

/// The two PgBouncer instances (transaction mode for `SUPABASE_DB_URL`, session mode), on their
/// previous ports when free.
fn start_poolers(
    paths: &StackPaths,
    tools: &Toolchain,
    user: ServiceUser,
    previous: Option<&StackState>,
    state: &mut StackState,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let prev = previous.map(|p| {
            if mode == PoolMode::Transaction {
                &p.pooler_transaction
            } else {
                &p.pooler_session
            }
        });
        let port = process::free_port(prev.map(|s| s.port))?;
        let tenant = state.pooler_user();
        let hosted = tenant != "postgres";
        let front = pooler::Front {
            tls: state.tls.as_ref(),
            tenant: hosted.then_some((&tenant, &state.secrets.postgres_password)),
            forget_statements: hosted && mode == PoolMode::Transaction,
            compute: state.compute.as_ref(),
        };
        let pid = pooler::start(paths, tools, user, mode, port, state.postgres.port, &front)?;
        let slot = if mode == PoolMode::Transaction {
            &mut state.pooler_transaction
        } else {
            &mut state.pooler_session
        };
        *slot = ServiceState {
            port,
            pid: Some(pid),
        };
        state.save(&paths.state_file())?;
        progress(
            &format!("pgbouncer ({mode:?} mode) listening on 127.0.0.1:{port}").to_lowercase(),
        );
    }
    Ok(())
}

/// The edge functions' environment: `functions/.env`, then the project's URL, keys and database,
/// the alert webhook's default receiver, and the options' own.
fn function_env(opts: &StackOptions, state: &StackState) -> BTreeMap<String, String> {
    let mut env = functions::read_dotenv(&opts.supabase_dir.join("functions/.env"));
    if let Some(url) = state.api_url() {
        env.insert("SUPABASE_URL".into(), url);
    }
    env.insert("SUPABASE_ANON_KEY".into(), state.secrets.anon_key.clone());
    env.insert(
        "SUPABASE_SERVICE_ROLE_KEY".into(),
        state.secrets.service_role_key.clone(),
    );
    env.insert("SUPABASE_DB_URL".into(), state.pooler_db_url());
    if let Some(t) = &state.tls {
        // Deno's own way to trust an extra CA, for the function's calls back to the gateway.
        env.insert("DENO_CERT".into(), t.ca.display().to_string());
    }
    // Alerts forwarded by anomaly-webhook land in the daemon's receiver unless the project says
    // otherwise (functions/.env or the options).
    if let Some(url) = state.api_url() {
        env.entry("ANOMALY_WEBHOOK_URL".into())
            .or_insert(format!("{url}/fleetbench/v1/webhook-receiver"));
    }
    env.extend(opts.function_env.clone());
    env
}

/// The stack daemon (`stack serve`: scheduler, pg_net worker, API gateway), detached, and waited
/// for until it listens.
fn start_daemon(
    exe: &std::path::Path,
    paths: &StackPaths,
    state: &mut StackState,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let port = state.daemon.as_ref().map(|d| d.port).unwrap_or_default();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["stack", "serve", "--instance"])
        .arg(&paths.instance)
        .stdin(std::process::Stdio::null());
    let log = paths.logs().join("daemon.log");
    let pid = process::spawn_detached(cmd, &log, "stack daemon")?;
    state.daemon = Some(ServiceState {
        port,
        pid: Some(pid),
    });
    state.save(&paths.state_file())?;
    process::wait_for_port(port, Some(pid), Duration::from_secs(15)).map_err(|reason| {
        StackError::Start {
            service: "stack daemon".into(),
            reason,
            log: log.display().to_string(),
            tail: process::tail(&log, 20),
        }
    })?;
    progress(&format!(
        "stack daemon (scheduler, API gateway) listening on 127.0.0.1:{port}"
    ));
    Ok(())
}

/// Stops in dependency order: daemon and functions, poolers, then PostgreSQL; then sweeps any
/// process still running from the instance directory.
fn stop(paths: &StackPaths, state: &StackState, user: ServiceUser) -> DownReport {
    let mut report = DownReport::default();
    let mut front: Vec<u32> = state.daemon.iter().filter_map(|d| d.pid).collect();
    front.extend(state.functions.values().filter_map(|f| f.pid));
    if !front.is_empty() {
        report
            .killed
            .extend(stop_all(&front, Signal::SIGTERM, Duration::from_secs(5)));
        report
            .stopped
            .extend(state.daemon.iter().map(|_| "stack daemon".to_string()));
        report
            .stopped
            .extend(state.functions.keys().map(|n| format!("edge function {n}")));
    }
    let poolers: Vec<u32> = [&state.pooler_transaction, &state.pooler_session]
        .iter()
        .filter_map(|s| s.pid)
        .collect();
    if !poolers.is_empty() {
        report
            .killed
            .extend(stop_all(&poolers, Signal::SIGTERM, Duration::from_secs(5)));
        report.stopped.push("pgbouncer".into());
    }
    let tools = Toolchain {
        pg_bin: state.pg_bin.clone(),
        pgbouncer: PathBuf::new(),
        deno: PathBuf::new(),
    };
    let postmaster = postgres::postmaster_pid(&paths.data());
    if matches!(postgres::stop(paths, &tools, user), Ok(true)) {
        report.stopped.push("postgres".into());
    }
    if let Some(pid) = postmaster {
        report
            .killed
            .extend(stop_all(&[pid], Signal::SIGINT, Duration::from_secs(30)));
    }
    let leftovers = pids_using(&paths.instance);
    report.killed.extend(stop_all(
        &leftovers,
        Signal::SIGTERM,
        Duration::from_secs(5),
    ));
    report
}

fn status_of(state: &StackState) -> Status {
    let mut services = Vec::new();
    let mut add = |name: String, s: &ServiceState| {
        let running = s.pid.is_some_and(is_alive)
            && std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], s.port)),
                Duration::from_millis(500),
            )
            .is_ok();
        services.push(ServiceStatus {
            name,
            port: s.port,
            pid: s.pid,
            running,
        });
    };
    add("postgres".into(), &state.postgres);
    add(
        "pgbouncer (transaction mode)".into(),
        &state.pooler_transaction,
    );
    add("pgbouncer (session mode)".into(), &state.pooler_session);
    if let Some(d) = &state.daemon {
        add("stack daemon".into(), d);
    }
    for (name, f) in &state.functions {
        add(
            format!("edge function {name}"),
            &ServiceState {
                port: f.port,
                pid: f.pid,
            },
        );
    }
    Status {
        instance: state.instance.clone(),
        services,
    }
}
