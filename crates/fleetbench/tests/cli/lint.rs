//! The CI and deployment files pass real linters, installed by the project's own files
//! (`fleetbench_stack::install::ensure_linters`): actionlint on the workflows, hadolint on the
//! Dockerfile, kubernetes-validate (strict, the Kubernetes API's schemas) on the manifests as the
//! documented `envsubst` fills them in. Each linter is first shown to fail on a broken input.

use super::*;

fn linters() -> fleetbench_stack::install::Linters {
    let paths = StackPaths {
        home: workspace_root().join(".fleetbench"),
        instance: tempfile::tempdir().unwrap().keep(),
    };
    fleetbench_stack::install::ensure_linters(&paths, &mut |l| eprintln!("[linters] {l}"))
        .expect("installing the linters")
}

/// `cmd`'s exit status and output together.
fn lint(mut cmd: Command) -> (bool, String) {
    let out = cmd.current_dir(workspace_root()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn actionlint(l: &fleetbench_stack::install::Linters, files: &[PathBuf]) -> (bool, String) {
    let mut cmd = Command::new("node");
    cmd.arg("scripts/actionlint.cjs")
        .args(files)
        .env("NODE_PATH", &l.actionlint_modules);
    lint(cmd)
}

fn kubernetes_validate(
    l: &fleetbench_stack::install::Linters,
    files: &[PathBuf],
) -> (bool, String) {
    let mut cmd = Command::new(&l.kubernetes_validate);
    cmd.arg("--strict").args(files);
    lint(cmd)
}

/// A manifest as `envsubst` fills it in for a run, written to `dir`.
fn filled(dir: &Path, manifest: &str) -> PathBuf {
    let out = Command::new("envsubst")
        .arg("$RUN_ID $START_AT $SHARDS $SCENARIO $IMAGE")
        .env("RUN_ID", "0b9d6f4e-1c2a-4e8b-9f00-5a1b2c3d4e5f")
        .env("START_AT", "2030-01-01T00:00:00Z")
        .env("SHARDS", "4")
        .env("SCENARIO", "scenarios/steady.toml")
        .env("IMAGE", "ghcr.io/example/fleetbench:1.0.0")
        .stdin(std::fs::File::open(workspace_root().join(manifest)).unwrap())
        .output()
        .unwrap();
    let path = dir.join(Path::new(manifest).file_name().unwrap());
    std::fs::write(&path, out.stdout).unwrap();
    path
}

#[test]
fn the_workflows_dockerfile_and_manifests_pass_real_linters() {
    let l = linters();
    let dir = tempfile::tempdir().unwrap();

    let broken = dir.path().join("broken.yml");
    let workflow = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n";
    std::fs::write(&broken, workflow).unwrap();
    let (ok, said) = actionlint(&l, &[broken]);
    assert!(!ok && said.contains("nope"), "{said}");
    let workflows: Vec<PathBuf> = std::fs::read_dir(workspace_root().join(".github/workflows"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(workflows.len() >= 2, "{workflows:?}");
    let (ok, said) = actionlint(&l, &workflows);
    assert!(ok, "{said}");

    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian\nRUN apt-get install curl\n").unwrap();
    let (ok, said) = lint({
        let mut c = Command::new(&l.hadolint);
        c.arg(&bad);
        c
    });
    assert!(!ok && said.contains("DL3"), "{said}");
    let (ok, said) = lint({
        let mut c = Command::new(&l.hadolint);
        c.arg("deploy/Dockerfile");
        c
    });
    assert!(ok, "{said}");

    let wrong = dir.path().join("wrong.yaml");
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: x\nspec:\n  completionz: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: a\n          image: b\n";
    std::fs::write(&wrong, job).unwrap();
    let (ok, said) = kubernetes_validate(&l, &[wrong]);
    assert!(!ok, "{said}");
    let manifests = vec![
        filled(dir.path(), "deploy/k8s/shards-job.yaml"),
        filled(dir.path(), "deploy/k8s/merge-job.yaml"),
        workspace_root().join("deploy/k8s/results-pvc.yaml"),
        workspace_root().join("deploy/k8s/secret.example.yaml"),
    ];
    let (ok, said) = kubernetes_validate(&l, &manifests);
    assert!(ok, "{said}");
    assert_eq!(said.matches("passed for resource").count(), 4, "{said}");
}
