//! PgBouncer standing in for Supavisor: one instance in transaction mode (hosted port 6543) and one
//! in session mode (hosted port 5432), both passing SCRAM through to PostgreSQL, and with the
//! `hosted` profile requiring TLS of every client and taking Supavisor's tenant user
//! (`postgres.<ref>`) instead of a bare `postgres` ([`Front`]). PgBouncer 1.18 has
//! no prepared-statement support in transaction mode, like Supavisor's default: clients must use
//! unnamed statements there.

use std::path::PathBuf;
use std::time::Duration;

use crate::install::Toolchain;
use crate::paths::StackPaths;
use crate::postgres::write_private;
use crate::process::{ServiceUser, spawn_detached, tail, wait_for_port};
use crate::state::AUTHENTICATOR_DB;
use crate::tls::TlsFiles;
use crate::{Result, StackError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Transaction,
    Session,
}

impl PoolMode {
    fn name(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
    /// Server connections per user and database, as Supavisor's "Pool Size".
    pub fn pool_size(self) -> u32 {
        match self {
            PoolMode::Transaction => 20,
            PoolMode::Session => 60,
        }
    }
}

pub const MAX_CLIENT_CONN: u32 = 10_000;

/// What a client of the poolers meets, beyond PgBouncer's defaults.
#[derive(Clone, Copy, Default)]
pub struct Front<'a> {
    /// TLS required of every client, with this certificate.
    pub tls: Option<&'a TlsFiles>,
    /// Supavisor's tenant user (`postgres.<ref>`) and the `postgres` password it logs in with.
    pub tenant: Option<(&'a str, &'a str)>,
    /// Keep no prepared statement from one transaction to the next (`DEALLOCATE ALL` after each),
    /// as Supavisor's transaction mode: a named statement sent through it fails at once, every
    /// time, instead of now and then.
    pub forget_statements: bool,
    /// A compute size's limits: its pooler clients and a pool size to fit its connections.
    pub compute: Option<&'a crate::state::Compute>,
}

/// The `[databases]` section: under tenant users, `postgres` logs in as `postgres` whoever the
/// client is (only the tenant user, and `authenticator` through its own entry, are in the
/// userlist); otherwise every database as the client's own user.
fn databases(front: &Front, pg_port: u16) -> String {
    let any = format!("* = host=127.0.0.1 port={pg_port}\n");
    match front.tenant {
        None => any,
        Some((_, password)) => format!(
            "postgres = host=127.0.0.1 port={pg_port} dbname=postgres user=postgres password={password}\n\
             {AUTHENTICATOR_DB} = host=127.0.0.1 port={pg_port} dbname=postgres\n"
        ),
    }
}

fn ini(paths: &StackPaths, mode: PoolMode, port: u16, pg_port: u16, front: &Front) -> String {
    let reset = match (mode, front.forget_statements) {
        (PoolMode::Session, _) => "DISCARD ALL\n",
        (PoolMode::Transaction, true) => "DEALLOCATE ALL\nserver_reset_query_always = 1\n",
        (PoolMode::Transaction, false) => "\n",
    };
    // TLS required of every client, as a hosted project with "Enforce SSL"; PgBouncer to
    // PostgreSQL stays on the loopback in plaintext.
    let tls = front.tls.map_or(String::new(), |t| {
        format!(
            "client_tls_sslmode = require\n\
             client_tls_cert_file = {}\n\
             client_tls_key_file = {}\n",
            t.cert.display(),
            t.key.display()
        )
    });
    let admin = front.tenant.map_or("postgres", |(user, _)| user);
    format!(
        "[databases]\n\
         {databases}\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = {userlist}\n\
         admin_users = {admin}\n\
         stats_users = {admin}\n\
         pool_mode = {mode}\n\
         default_pool_size = {pool}\n\
         max_client_conn = {max}\n\
         listen_backlog = 4096\n\
         server_reset_query = {reset}\
         ignore_startup_parameters = extra_float_digits,options,search_path\n\
         {tls}",
        databases = databases(front, pg_port),
        userlist = paths.run().join("userlist.txt").display(),
        mode = mode.name(),
        pool = front.compute.map_or(mode.pool_size(), |c| c.pool_size()),
        max = front.compute.map_or(MAX_CLIENT_CONN, |c| c.pooler_clients),
    )
}

pub fn write_userlist(paths: &StackPaths, user: ServiceUser, userlist: &str) -> Result<()> {
    let path = paths.run().join("userlist.txt");
    write_private(&path, userlist)?;
    user.own(&path)
}

/// Starts PgBouncer in the foreground of a detached process group; returns its pid once it listens.
pub fn start(
    paths: &StackPaths,
    tools: &Toolchain,
    user: ServiceUser,
    mode: PoolMode,
    port: u16,
    pg_port: u16,
    front: &Front,
) -> Result<u32> {
    let conf: PathBuf = paths.run().join(format!("pgbouncer-{}.ini", mode.name()));
    write_private(&conf, &ini(paths, mode, port, pg_port, front))?;
    user.own(&conf)?;
    let log = paths.logs().join(format!("pgbouncer-{}.log", mode.name()));
    let mut cmd = user.command(&tools.pgbouncer, &paths.instance);
    cmd.arg(&conf);
    let service = format!("pgbouncer ({} mode)", mode.name());
    let pid = spawn_detached(cmd, &log, &service)?;
    wait_for_port(port, Some(pid), Duration::from_secs(15)).map_err(|reason| {
        StackError::Start {
            service,
            reason,
            log: log.display().to_string(),
            tail: tail(&log, 20),
        }
    })?;
    Ok(pid)
}
