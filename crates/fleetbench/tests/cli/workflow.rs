//! The CI workflow and the Kubernetes manifests, executed against the hosted double as GitHub's
//! runner and Kubernetes would run them, 2 shards each.
//!
//! The workflow (`.github/workflows/staging-load.yml`) is read and its jobs run in `needs` order:
//! each `run:` step with bash (`-eo pipefail`, as the runner), its `${{ … }}` expressions evaluated
//! from the dispatch inputs, repository variables, secrets (the double's `stack env`), the matrix,
//! job and step outputs; `if:` conditions honoured; the matrix's jobs side by side. Actions are
//! stood in for: checkout is the workspace (the repository's `deploy/` and `scenarios/`),
//! the toolchain and cache actions do nothing, artifacts are copied through a directory, the JUnit
//! action parses its file. The one step not run literally is `cargo build --release`: the binary
//! this test suite built is put where that step puts its own (the step's text is checked).
//!
//! The manifests (`deploy/k8s/`) are filled in with the documented `envsubst` and their pods'
//! commands run as Kubernetes would run them: `$(VAR)` expanded from the container's environment,
//! the Secret's keys as environment, `JOB_COMPLETION_INDEX` per index, all indices at once, the
//! results volume a directory; the image's `/fleetbench` is the repository (the Dockerfile copies
//! `scenarios/` and `deploy/ci/` there), its `fleetbench` the built binary.

use std::collections::BTreeMap;

use serde_json::Value;
use yaml_rust2::Yaml;

use super::hosted::hosted;
use super::*;

/// Names to values for `${{ … }}`: `inputs.*`, `vars.*`, `secrets.*`, `matrix.*`,
/// `needs.<job>.outputs.*`, `needs.<job>.result`, `steps.<id>.outputs.*`.
type Context = BTreeMap<String, String>;

/// One `${{ … }}` expression of the forms the workflow uses; any other fails the test.
fn eval(expr: &str, ctx: &Context) -> String {
    let expr = expr.trim();
    if let Some((a, b)) = expr.split_once("||") {
        let v = eval(a, ctx);
        return if v.is_empty() { eval(b, ctx) } else { v };
    }
    if let Some(lit) = expr.strip_prefix('\'').and_then(|e| e.strip_suffix('\'')) {
        return lit.to_string();
    }
    if let Some(inner) = expr
        .strip_prefix("fromJSON(")
        .and_then(|e| e.strip_suffix(')'))
    {
        return eval(inner, ctx);
    }
    let known = [
        "inputs.", "vars.", "secrets.", "matrix.", "needs.", "steps.", "env.",
    ];
    assert!(
        known.iter().any(|k| expr.starts_with(k)),
        "an expression this test cannot evaluate: {expr}"
    );
    ctx.get(expr).cloned().unwrap_or_default()
}

/// `text` with each `${{ … }}` evaluated.
fn interpolate(text: &str, ctx: &Context) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("a closed expression") + start;
        out.push_str(&eval(&rest[start + 3..end], ctx));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// An `if:`: `always()`, `success()`, `needs.X.result == 'success'`, `hashFiles('p') != ''`,
/// joined by `&&`; none means `success()`.
fn condition(cond: Option<&str>, ctx: &Context, ok_so_far: bool, dir: &Path) -> bool {
    let Some(cond) = cond else { return ok_so_far };
    let mut always = false;
    let all = cond.split("&&").all(|term| {
        let term = term.trim();
        if term == "always()" {
            always = true;
            return true;
        }
        if term == "success()" {
            return ok_so_far;
        }
        if let Some((l, r)) = term.split_once("==") {
            return eval(l, ctx) == eval(r, ctx);
        }
        if let Some(path) = term
            .strip_prefix("hashFiles('")
            .and_then(|t| t.strip_suffix("') != ''"))
        {
            return dir.join(path).exists();
        }
        panic!("a condition this test cannot evaluate: {term}")
    });
    all && (always || ok_so_far)
}

fn map(y: &Yaml) -> Vec<(String, String)> {
    y.as_hash().map_or_else(Vec::new, |h| {
        h.iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(String::from)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
                    .unwrap_or_default();
                (k.as_str().unwrap().to_string(), v)
            })
            .collect()
    })
}

/// A workflow run: the workspace, the artifacts, the bin the build step's stand-in fills.
struct Workflow {
    doc: Yaml,
    workspace: PathBuf,
    artifacts: PathBuf,
    base: Context,
    /// A shard artifact to lose before the merge job (its upload failed).
    lose: Option<String>,
    /// A shard whose run fails at once: its job names a scenario file that is not there.
    fail_shard: Option<u64>,
    /// The runner machine's own environment (a self-hosted runner trusting the double's CA).
    machine: Vec<(String, String)>,
}

/// What a job left: its result, outputs and job summary.
#[derive(Default, Clone)]
struct JobResult {
    ok: bool,
    outputs: Context,
    summary: String,
}

impl Workflow {
    fn new(work: &Path, base: Context) -> Workflow {
        let text =
            std::fs::read_to_string(workspace_root().join(".github/workflows/staging-load.yml"))
                .unwrap();
        let doc = yaml_rust2::YamlLoader::load_from_str(&text)
            .unwrap()
            .remove(0);
        let workspace = work.join("workspace");
        std::fs::create_dir_all(&workspace).unwrap();
        // Checkout: the scripts and the scenarios (copied, so a test may add one).
        std::os::unix::fs::symlink(workspace_root().join("deploy"), workspace.join("deploy"))
            .unwrap();
        copy(
            &workspace_root().join("scenarios"),
            &workspace.join("scenarios"),
        );
        Workflow {
            doc,
            workspace,
            artifacts: work.join("artifacts"),
            base,
            lose: None,
            fail_shard: None,
            machine: Vec::new(),
        }
    }

    /// Every job in order: their results by name.
    fn run(&self) -> BTreeMap<String, JobResult> {
        let mut done: BTreeMap<String, JobResult> = BTreeMap::new();
        for name in ["build", "prepare", "shard", "merge"] {
            let job = &self.doc["jobs"][name];
            assert!(!job.is_badvalue(), "no job {name}");
            let mut ctx = self.base.clone();
            for (j, r) in &done {
                ctx.insert(
                    format!("needs.{j}.result"),
                    if r.ok { "success" } else { "failure" }.into(),
                );
                for (k, v) in &r.outputs {
                    ctx.insert(format!("needs.{j}.outputs.{k}"), v.clone());
                }
            }
            let needs_ok = job["needs"]
                .as_vec()
                .is_none_or(|n| n.iter().all(|j| done[j.as_str().unwrap()].ok));
            if !condition(job["if"].as_str(), &ctx, needs_ok, &self.workspace) {
                done.insert(name.into(), JobResult::default());
                continue;
            }
            if name == "merge"
                && let Some(lost) = &self.lose
            {
                std::fs::remove_dir_all(self.artifacts.join(lost)).unwrap();
            }
            let result = match job["strategy"]["matrix"]["index"].as_str() {
                Some(m) => self.matrix(
                    job,
                    &ctx,
                    &eval(m.trim_start_matches("${{").trim_end_matches("}}"), &ctx),
                ),
                None => self.job(job, &ctx),
            };
            done.insert(name.into(), result);
        }
        done
    }

    /// The matrix's jobs side by side; the result is theirs together.
    fn matrix(&self, job: &Yaml, ctx: &Context, indices: &str) -> JobResult {
        let indices: Vec<u64> = serde_json::from_str(indices).expect("the matrix's JSON");
        let results: Vec<JobResult> = std::thread::scope(|s| {
            let handles: Vec<_> = indices
                .iter()
                .map(|i| {
                    let mut ctx = ctx.clone();
                    ctx.insert("matrix.index".into(), i.to_string());
                    if self.fail_shard == Some(*i) {
                        ctx.insert(
                            "inputs.scenario".into(),
                            "scenarios/not-on-this-runner.toml".into(),
                        );
                    }
                    s.spawn(move || self.job(job, &ctx))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        JobResult {
            ok: results.iter().all(|r| r.ok),
            ..Default::default()
        }
    }

    /// One job's steps, in a workspace of its own (a fresh runner), with its job summary.
    fn job(&self, job: &Yaml, ctx: &Context) -> JobResult {
        let dir = tempfile::tempdir_in(self.workspace.parent().unwrap())
            .unwrap()
            .keep();
        for entry in ["deploy", "scenarios"] {
            std::os::unix::fs::symlink(self.workspace.join(entry), dir.join(entry)).unwrap();
        }
        let summary = dir.join("step-summary.md");
        let mut env: Vec<(String, String)> = Vec::new();
        for scope in [&self.doc["env"], &job["env"]] {
            env.extend(
                map(scope)
                    .into_iter()
                    .map(|(k, v)| (k, interpolate(&v, ctx))),
            );
        }
        let (mut ctx, mut ok) = (ctx.clone(), true);
        for step in job["steps"].as_vec().unwrap() {
            if !condition(step["if"].as_str(), &ctx, ok, &dir) {
                continue;
            }
            let mut step_env = env.clone();
            step_env.extend(
                map(&step["env"])
                    .into_iter()
                    .map(|(k, v)| (k, interpolate(&v, &ctx))),
            );
            let outputs = match (step["uses"].as_str(), step["run"].as_str()) {
                (Some(uses), _) => self.action(uses, &step["with"], &ctx, &dir),
                (None, Some(run)) => {
                    let mut all = self.machine.clone();
                    all.extend(step_env);
                    run_step(&interpolate(run, &ctx), &all, &dir, &summary)
                }
                _ => panic!("a step with neither uses nor run"),
            };
            match outputs {
                Some(outputs) => {
                    if let Some(id) = step["id"].as_str() {
                        for (k, v) in outputs {
                            ctx.insert(format!("steps.{id}.outputs.{k}"), v);
                        }
                    }
                }
                None => ok = false,
            }
        }
        let mut outputs = Context::new();
        for (k, v) in map(&job["outputs"]) {
            outputs.insert(k, interpolate(&v, &ctx));
        }
        JobResult {
            ok,
            outputs,
            summary: std::fs::read_to_string(&summary).unwrap_or_default(),
        }
    }

    /// An action's stand-in: its outputs, or `None` when it failed.
    fn action(&self, uses: &str, with: &Yaml, ctx: &Context, dir: &Path) -> Option<Context> {
        let arg = |k: &str| with[k].as_str().map(|v| interpolate(v, ctx));
        let name = uses.split('@').next().unwrap();
        match name {
            "actions/checkout" | "dtolnay/rust-toolchain" | "Swatinem/rust-cache" => {
                Some(Context::new())
            }
            "actions/upload-artifact" => {
                // A file is stored by its name; a directory's contents as they are.
                let (name, path) = (arg("name").unwrap(), dir.join(arg("path").unwrap()));
                let artifact = self.artifacts.join(&name);
                if path.is_file() {
                    copy(&path, &artifact.join(path.file_name().unwrap()));
                } else if path.is_dir() {
                    copy(&path, &artifact);
                }
                let url = format!("https://github.example/artifacts/{name}");
                Some([("artifact-url".to_string(), url)].into())
            }
            "actions/download-artifact" => {
                let into = dir.join(arg("path").unwrap_or_default());
                let found = std::fs::read_dir(&self.artifacts).into_iter().flatten();
                for a in found.flatten() {
                    let name = a.file_name().to_string_lossy().into_owned();
                    match (arg("name"), arg("pattern")) {
                        (Some(n), _) if n == name => copy(&a.path(), &into),
                        (None, Some(p)) if name.starts_with(p.trim_end_matches('*')) => {
                            copy(&a.path(), &into.join(&name))
                        }
                        _ => {}
                    }
                }
                Some(Context::new())
            }
            "mikepenz/action-junit-report" => {
                let xml = std::fs::read_to_string(dir.join(arg("report_paths").unwrap())).ok()?;
                assert!(
                    xml.contains("<testsuite") && xml.contains("<testcase"),
                    "{xml}"
                );
                Some(Context::new())
            }
            other => panic!("an action this test has no stand-in for: {other}"),
        }
    }
}

/// Copies a file or a directory tree.
fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // Linked, not copied: artifacts are never written to after upload (a binary is large).
        if std::fs::hard_link(from, to).is_err() {
            std::fs::copy(from, to).unwrap();
        }
    }
}

/// A `run:` step as the runner runs it: its outputs, or `None` when it failed. The build step's
/// stand-in puts the suite's binary where `cargo build --release` and `cp` would.
fn run_step(script: &str, env: &[(String, String)], dir: &Path, summary: &Path) -> Option<Context> {
    if script.starts_with("cargo build --release") {
        assert_eq!(
            script,
            "cargo build --release --locked -p fleetbench && mkdir -p bin && cp target/release/fleetbench bin/"
        );
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        copy(
            Path::new(env!("CARGO_BIN_EXE_fleetbench")),
            &dir.join("bin/fleetbench"),
        );
        return Some(Context::new());
    }
    let output = dir.join("github-output");
    std::fs::write(&output, "").unwrap();
    let status = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("FLEETBENCH_HOME", workspace_root().join(".fleetbench"))
        .envs(env.iter().cloned())
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", summary)
        .status()
        .unwrap();
    let outputs = std::fs::read_to_string(&output).unwrap();
    status.success().then(|| {
        outputs
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// The merged run's summary.
fn merged(run: &BTreeMap<String, JobResult>, work: &Path) -> Value {
    assert!(
        run["merge"].summary.contains("## fleetbench"),
        "{}",
        run["merge"].summary
    );
    let artifact = work.join("artifacts/report/summary.json");
    serde_json::from_slice(&std::fs::read(artifact).expect("the report artifact")).unwrap()
}

fn counts(summary: &Value) -> Vec<(String, Value, Value)> {
    let ops = summary["operations"].as_object().unwrap();
    [
        "auth.password",
        "rest.insert_metrics",
        "pooler.insert_metrics",
    ]
    .iter()
    .map(|op| {
        (
            op.to_string(),
            ops[*op]["count"].clone(),
            ops[*op]["rows"].clone(),
        )
    })
    .collect()
}

/// The workflow on the hosted double with 2 shards: the merge equals the one-process run in
/// counts, cleanup leaves nothing of the run, the job summary and JUnit are produced; a crossed
/// threshold fails the merge job (cleanup still runs); a lost shard makes the merge refuse.
#[tokio::test]
async fn the_workflow_and_the_manifests_run_against_the_hosted_double() {
    let (instance, env) = hosted("fleetbench-test-workflow-", &[]);
    let dir = instance.0.clone();
    let db = fleetbench_tls::pg::connect(&env["SUPABASE_DB_SESSION_URL"])
        .await
        .unwrap();
    let mut base = Context::new();
    for (k, v) in &env {
        base.insert(format!("secrets.{k}"), v.clone());
    }
    base.insert("inputs.scenario".into(), "scenarios/smoke.toml".into());
    base.insert("inputs.shards".into(), "2".into());
    base.insert("vars.FLEETBENCH_ALLOW_HOSTS".into(), "127.0.0.1".into());
    base.insert("vars.FLEETBENCH_IP_FORWARDING".into(), "on".into());
    base.insert("vars.FLEETBENCH_START_LEAD".into(), "25".into());
    // The double is not <ref>.supabase.co behind api.supabase.com: say where both are.
    base.insert(
        "vars.SUPABASE_PROJECT_REF".into(),
        env["SUPABASE_PROJECT_REF"].clone(),
    );
    base.insert(
        "vars.FLEETBENCH_MANAGEMENT_API".into(),
        env["FLEETBENCH_MANAGEMENT_API"].clone(),
    );

    // The one-process run the shards must add up to.
    let one_dir = dir.join("one-process");
    let mut remote = env.clone();
    remote.insert("FLEETBENCH_IP_FORWARDING".into(), "on".into());
    let args = [
        "run",
        "scenarios/smoke.toml",
        "--out",
        one_dir.to_str().unwrap(),
    ];
    ok(super::hosted::fleetbench_with(&dir, &remote, &args));
    let one: Value =
        serde_json::from_slice(&std::fs::read(one_dir.join("summary.json")).unwrap()).unwrap();

    let machine = vec![(
        "FLEETBENCH_CA_FILE".to_string(),
        env["FLEETBENCH_CA_FILE"].clone(),
    )];
    let work = tempfile::tempdir().unwrap();
    let mut wf = Workflow::new(work.path(), base.clone());
    wf.machine = machine.clone();
    let run = wf.run();
    for job in ["prepare", "build", "shard", "merge"] {
        assert!(run[job].ok, "job {job} failed: {}", run[job].summary);
    }
    let summary = merged(&run, work.path());
    assert_eq!(
        counts(&summary),
        counts(&one),
        "merged {summary}\none process {one}"
    );
    let run_id = run["prepare"].outputs["run_id"].clone();
    assert_eq!(summary["run_id"], run_id.as_str());
    assert_eq!(
        run_owns(&db, run_id).await,
        (0, 0),
        "cleanup left the run's data"
    );
    assert!(run["merge"].summary.contains("| `rest.insert_metrics` |"));

    // A shard's upload lost: the merge refuses, naming it; cleanup still runs.
    let lost = tempfile::tempdir().unwrap();
    let mut wf = Workflow::new(lost.path(), base.clone());
    wf.machine = machine.clone();
    wf.lose = Some("shard-1".into());
    let run = wf.run();
    assert!(run["shard"].ok && !run["merge"].ok);
    assert!(
        run["merge"].summary.contains("no merged run"),
        "{}",
        run["merge"].summary
    );
    assert_eq!(
        run_owns(&db, run["prepare"].outputs["run_id"].clone()).await,
        (0, 0)
    );

    // A shard whose run fails (its scenario file is missing: exit 2, nothing sent): the shard job
    // fails, the merge refuses the run with that shard missing, cleanup runs.
    let failed = tempfile::tempdir().unwrap();
    let mut wf = Workflow::new(failed.path(), base.clone());
    wf.machine = machine.clone();
    wf.fail_shard = Some(1);
    let run = wf.run();
    assert!(
        !run["shard"].ok && !run["merge"].ok,
        "{}",
        run["merge"].summary
    );
    assert!(
        run["merge"].summary.contains("no merged run"),
        "{}",
        run["merge"].summary
    );
    let artifact = |k: u32| {
        failed
            .path()
            .join(format!("artifacts/shard-{k}/summary.json"))
    };
    assert!(artifact(0).exists() && !artifact(1).exists());
    assert_eq!(
        run_owns(&db, run["prepare"].outputs["run_id"].clone()).await,
        (0, 0)
    );

    // A scenario whose threshold no run meets: the merge job fails with it, cleanup still runs.
    let failing = tempfile::tempdir().unwrap();
    let wf = Workflow::new(failing.path(), base.clone());
    let smoke = std::fs::read_to_string(workspace_root().join("scenarios/smoke.toml")).unwrap();
    let strict = smoke.replace("p(99) < 2s", "p(99) < 1us");
    std::fs::write(wf.workspace.join("scenarios/strict.toml"), strict).unwrap();
    let mut wf = wf;
    wf.machine = machine.clone();
    wf.base
        .insert("inputs.scenario".into(), "scenarios/strict.toml".into());
    let run = wf.run();
    assert!(
        run["shard"].ok && !run["merge"].ok,
        "{}",
        run["merge"].summary
    );
    assert!(
        run["merge"].summary.contains("FAIL"),
        "{}",
        run["merge"].summary
    );
    assert_eq!(
        run_owns(&db, run["prepare"].outputs["run_id"].clone()).await,
        (0, 0)
    );

    failed_probe_on_one_shard(&base, &machine, &smoke, &db).await;
    kubernetes(&dir, &env, &db).await;
    drop(db);
    ok(fleetbench(&dir, &["stack", "down"]));
}

/// `envsubst VARS < manifest`, parsed.
/// RLS switched off on `system_metrics` and the RLS probe in the scenario: the probe runs on shard
/// 0 alone (no two shards create its users), fails there, and that shard exits 0 as its 99 is
/// judged on the merge; the merge fails naming shard 0, in summary.json, the job summary and
/// JUnit, though every threshold holds; cleanup still runs.
async fn failed_probe_on_one_shard(
    base: &Context,
    machine: &[(String, String)],
    smoke: &str,
    db: &tokio_postgres::Client,
) {
    let leaky = tempfile::tempdir().unwrap();
    let mut wf = Workflow::new(leaky.path(), base.clone());
    let scenario = format!("{smoke}\n[probes.rls]\n");
    std::fs::write(wf.workspace.join("scenarios/leaky.toml"), scenario).unwrap();
    wf.machine = machine.to_vec();
    wf.base
        .insert("inputs.scenario".into(), "scenarios/leaky.toml".into());
    let rls = |on: &str| format!("alter table public.system_metrics {on} row level security");
    db.batch_execute(&rls("disable")).await.unwrap();
    let run = wf.run();
    db.batch_execute(&rls("enable")).await.unwrap();
    assert!(
        run["shard"].ok && !run["merge"].ok,
        "{}",
        run["merge"].summary
    );
    let summary = merged(&run, leaky.path());
    assert_eq!(summary["verdict"], "fail");
    assert!(
        summary["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["pass"] == true),
        "{summary}"
    );
    let failed: Vec<&str> = summary["shards_failed"]
        .as_array()
        .expect("shards_failed")
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("shard 0/2") && failed[0].contains("probe rls failed"),
        "{failed:?}"
    );
    let probes: Vec<&String> = summary["probes"].as_object().unwrap().keys().collect();
    assert_eq!(probes, ["rls"], "the probe ran on one shard only");
    assert!(run["merge"].summary.contains("**Shard failed:** shard 0/2"));
    let junit = std::fs::read_to_string(leaky.path().join("artifacts/report/junit.xml")).unwrap();
    assert!(junit.contains("every shard ran whole") && junit.contains("type=\"shard\""));
    assert_eq!(
        run_owns(db, run["prepare"].outputs["run_id"].clone()).await,
        (0, 0)
    );
}

fn manifest(path: &str, vars: &str, values: &[(&str, &str)]) -> Yaml {
    let out = Command::new("envsubst")
        .arg(vars)
        .envs(values.iter().copied())
        .stdin(std::fs::File::open(workspace_root().join(path)).unwrap())
        .output()
        .expect("envsubst (gettext-base) runs");
    let text = String::from_utf8(out.stdout).unwrap();
    yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}\n{text}"))
        .remove(0)
}

/// A pod's container run as Kubernetes runs it: its environment (values, the Secret's keys, the
/// volume's mount path mapped to `results`), `$(VAR)` expanded in command and args; the image's
/// `/fleetbench` is the repository. Its exit code and stdout.
fn pod(
    spec: &Yaml,
    extra: &[(String, String)],
    secret: &BTreeMap<String, String>,
    results: &Path,
) -> (i32, String) {
    let c = &spec["containers"][0];
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let mut env: BTreeMap<String, String> = secret.clone();
    for e in c["env"].as_vec().unwrap() {
        let v = e["value"]
            .as_str()
            .unwrap()
            .replace(mount, results.to_str().unwrap());
        env.insert(e["name"].as_str().unwrap().into(), v);
    }
    env.extend(extra.iter().cloned());
    let expand = |s: &str| {
        env.iter()
            .fold(s.to_string(), |s, (k, v)| s.replace(&format!("$({k})"), v))
            .replace("/fleetbench/", &format!("{}/", workspace_root().display()))
    };
    let mut argv: Vec<String> = c["command"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| expand(a.as_str().unwrap()))
        .collect();
    argv.extend(
        c["args"]
            .as_vec()
            .into_iter()
            .flatten()
            .map(|a| expand(a.as_str().unwrap())),
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_fleetbench"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(workspace_root())
        .env("FLEETBENCH_HOME", workspace_root().join(".fleetbench"))
        .envs(&env)
        .env("PATH", path)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("[pod] {}", String::from_utf8_lossy(&out.stderr));
    }
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The Indexed Job's pods at once, then the merge Job's.
async fn kubernetes(dir: &Path, env: &BTreeMap<String, String>, db: &tokio_postgres::Client) {
    let run_id = uuid::Uuid::new_v4().to_string();
    let start_at = (chrono::Utc::now() + chrono::Duration::seconds(25)).to_rfc3339();
    let image = "ghcr.io/example/fleetbench:test";
    let values = [
        ("RUN_ID", run_id.as_str()),
        ("START_AT", start_at.as_str()),
        ("SHARDS", "2"),
        ("SCENARIO", "scenarios/smoke.toml"),
        ("IMAGE", image),
    ];
    let job = manifest(
        "deploy/k8s/shards-job.yaml",
        "$RUN_ID $START_AT $SHARDS $SCENARIO $IMAGE",
        &values,
    );
    assert_eq!(
        job["metadata"]["name"].as_str(),
        Some(format!("fleetbench-shards-{run_id}").as_str())
    );
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimitPerIndex"].as_i64(), Some(0));
    let pod_spec = &spec["template"]["spec"];
    assert_eq!(pod_spec["containers"][0]["image"].as_str(), Some(image));
    assert!(!pod_spec["topologySpreadConstraints"][0]["topologyKey"].is_badvalue());
    // The Secret carries what the pods read; filled from the double's settings.
    let example = &yaml_rust2::YamlLoader::load_from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/k8s/secret.example.yaml")).unwrap(),
    )
    .unwrap()[0];
    let mut secret = BTreeMap::new();
    for (k, _) in map(&example["stringData"]) {
        let v = match k.as_str() {
            "FLEETBENCH_ALLOW_HOSTS" => "127.0.0.1".to_string(),
            "FLEETBENCH_IP_FORWARDING" => "on".to_string(),
            key => env
                .get(key)
                .cloned()
                .unwrap_or_else(|| panic!("the double has no {key}")),
        };
        secret.insert(k, v);
    }
    // What staging's pods would not need: the double's CA, and where its Management API is
    // (hosted's is api.supabase.com, and its project ref is in its host name).
    for key in [
        "FLEETBENCH_CA_FILE",
        "FLEETBENCH_MANAGEMENT_API",
        "SUPABASE_PROJECT_REF",
    ] {
        secret.insert(key.into(), env[key].clone());
    }
    let results = dir.join("k8s-results");
    std::fs::create_dir_all(&results).unwrap();
    let n = spec["completions"].as_i64().unwrap();
    assert_eq!(n, 2);
    let codes: Vec<(i32, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let extra = vec![("JOB_COMPLETION_INDEX".to_string(), i.to_string())];
                let (secret, results) = (&secret, &results);
                s.spawn(move || pod(pod_spec, &extra, secret, results))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(codes.iter().all(|(c, _)| *c == 0), "{codes:?}");
    let merge = manifest("deploy/k8s/merge-job.yaml", "$RUN_ID $IMAGE", &values);
    assert_eq!(
        merge["metadata"]["name"].as_str(),
        Some(format!("fleetbench-merge-{run_id}").as_str())
    );
    let (code, stdout) = pod(&merge["spec"]["template"]["spec"], &[], &secret, &results);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("## fleetbench `smoke`: PASS"), "{stdout}");
    // The run's files are in its own directory on the volume.
    for shard in ["shard-0", "shard-1", "merged"] {
        let summary = results.join(&run_id).join(shard).join("summary.json");
        assert!(summary.exists(), "{}", summary.display());
    }
    assert_eq!(run_owns(db, run_id).await, (0, 0));
}
