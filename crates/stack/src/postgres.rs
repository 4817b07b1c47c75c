//! The PostgreSQL cluster: initdb with SCRAM passwords, a configuration fit for logical decoding and
//! thousands of pooled clients, start/stop through `pg_ctl`, and the Supabase base schema
//! (`sql/bootstrap.sql`: roles, `auth`, `extensions`, publication `supabase_realtime`).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::install::Toolchain;
use crate::paths::StackPaths;
use crate::process::{ServiceUser, tail};
use crate::{Result, StackError, io_err};

const BOOTSTRAP_SQL: &str = include_str!("../sql/bootstrap.sql");

const CONF: &str = "
# --- fleetbench embedded stack ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
shared_buffers = 256MB
maintenance_work_mem = 256MB
wal_level = logical
max_wal_senders = 10
max_replication_slots = 32
shared_preload_libraries = 'pg_stat_statements'
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
";

/// Runs initdb once per instance. Returns true when the cluster was created now.
pub fn init_cluster(
    paths: &StackPaths,
    tools: &Toolchain,
    user: ServiceUser,
    postgres_password: &str,
) -> Result<bool> {
    let data = paths.data();
    if data.join("PG_VERSION").is_file() {
        return Ok(false);
    }
    std::fs::create_dir_all(&data).map_err(io_err(format!("creating {}", data.display())))?;
    user.own(&data)?;
    let pwfile = paths.run().join("pwfile");
    write_private(&pwfile, postgres_password)?;
    user.own(&pwfile)?;
    let log = paths.logs().join("initdb.log");
    let out = user
        .command(&tools.pg_bin.join("initdb"), &paths.instance)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .map_err(io_err("running initdb"));
    let _ = std::fs::remove_file(&pwfile);
    let out = out?;
    std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat())
        .map_err(io_err("writing initdb.log"))?;
    if !out.status.success() {
        return Err(StackError::Start {
            service: "initdb".into(),
            reason: format!("exited with {}", out.status),
            log: log.display().to_string(),
            tail: tail(&log, 20),
        });
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .map_err(io_err("opening postgresql.conf"))?;
    conf.write_all(CONF.as_bytes())
        .map_err(io_err("writing postgresql.conf"))?;
    Ok(true)
}

/// Starts the cluster on `port`, with `max_connections` when a compute size sets it (the
/// configuration's 300 otherwise).
pub fn start(
    paths: &StackPaths,
    tools: &Toolchain,
    user: ServiceUser,
    port: u16,
    max_connections: Option<u32>,
) -> Result<u32> {
    let settings = match max_connections {
        Some(n) => format!("-p {port} -c max_connections={n}"),
        None => format!("-p {port}"),
    };
    let log = paths.logs().join("postgres.log");
    let out = user
        .command(&tools.pg_bin.join("pg_ctl"), &paths.instance)
        .arg("-D")
        .arg(paths.data())
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "-o"])
        .arg(settings)
        .arg("start")
        .output()
        .map_err(io_err("running pg_ctl start"))?;
    if !out.status.success() {
        return Err(StackError::Start {
            service: "postgres".into(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            log: log.display().to_string(),
            tail: tail(&log, 20),
        });
    }
    postmaster_pid(&paths.data()).ok_or_else(|| StackError::Start {
        service: "postgres".into(),
        reason: "pg_ctl reported success but postmaster.pid is missing".into(),
        log: log.display().to_string(),
        tail: tail(&log, 20),
    })
}

/// Fast shutdown (disconnects clients, checkpoints). Returns false if it was not running.
pub fn stop(paths: &StackPaths, tools: &Toolchain, user: ServiceUser) -> Result<bool> {
    if !paths.data().join("postmaster.pid").is_file() {
        return Ok(false);
    }
    let out = user
        .command(&tools.pg_bin.join("pg_ctl"), &paths.instance)
        .arg("-D")
        .arg(paths.data())
        .args(["-m", "fast", "-w", "-t", "60", "stop"])
        .output()
        .map_err(io_err("running pg_ctl stop"))?;
    Ok(out.status.success())
}

pub fn postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

pub async fn connect(url: &str) -> Result<Client> {
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls))
            .await
            .map_err(|_| StackError::Db("connecting timed out after 10 s".into()))??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Creates what a hosted project has before its migrations run. Idempotent: skipped when the
/// `authenticator` role exists.
pub async fn bootstrap(admin: &Client, authenticator_password: &str) -> Result<bool> {
    let done = admin
        .simple_query("select 1 from pg_roles where rolname = 'authenticator'")
        .await?;
    if done
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    {
        return Ok(false);
    }
    let sql = BOOTSTRAP_SQL.replace("{{AUTHENTICATOR_PASSWORD}}", authenticator_password);
    admin
        .batch_execute(&format!("begin;\n{sql}\n{}\ncommit;", crate::pgnet::SQL))
        .await?;
    Ok(true)
}

/// `"role" "SCRAM-SHA-256$…"` lines for PgBouncer's auth_file, so it can pass SCRAM through.
pub async fn scram_userlist(admin: &Client, roles: &[&str]) -> Result<String> {
    let mut out = String::new();
    for role in roles {
        let rows = admin
            .query_typed(
                "select rolpassword from pg_authid where rolname = $1",
                &[(role, tokio_postgres::types::Type::TEXT)],
            )
            .await?;
        let secret: Option<String> = rows.first().and_then(|r| r.get(0));
        let secret =
            secret.ok_or_else(|| StackError::Db(format!("role {role} has no password")))?;
        out.push_str(&format!("\"{role}\" \"{secret}\"\n"));
    }
    Ok(out)
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}
