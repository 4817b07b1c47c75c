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

/// What the "restricted" Pod Security Standard (kubernetes.io/docs/concepts/security/
/// pod-security-standards, v1.30 rules) refuses in a pod template, plus the two rules of this
/// project's own (no service-account token, a read-only root file system): one line per breach.
fn restricted_breaches(pod: &yaml_rust2::Yaml) -> Vec<String> {
    let mut out = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            out.push(what.to_string());
        }
    };
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        need(pod[key].as_bool() != Some(true), key);
    }
    need(
        pod["automountServiceAccountToken"].as_bool() == Some(false),
        "automountServiceAccountToken",
    );
    let allowed = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in pod["volumes"].as_vec().into_iter().flatten() {
        let kinds: Vec<&str> = v
            .as_hash()
            .unwrap()
            .keys()
            .filter_map(|k| k.as_str())
            .filter(|k| *k != "name")
            .collect();
        need(
            kinds.iter().all(|k| allowed.contains(k)),
            &format!("volume type {kinds:?}"),
        );
    }
    let pod_sc = &pod["securityContext"];
    let seccomp = |sc: &yaml_rust2::Yaml| sc["seccompProfile"]["type"].as_str().map(str::to_string);
    for c in pod["containers"].as_vec().into_iter().flatten() {
        let sc = &c["securityContext"];
        need(sc["privileged"].as_bool() != Some(true), "privileged");
        need(
            sc["allowPrivilegeEscalation"].as_bool() == Some(false),
            "allowPrivilegeEscalation",
        );
        need(
            sc["readOnlyRootFilesystem"].as_bool() == Some(true),
            "readOnlyRootFilesystem",
        );
        let drops: Vec<&str> = sc["capabilities"]["drop"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str())
            .collect();
        need(drops.contains(&"ALL"), "capabilities.drop ALL");
        let adds = sc["capabilities"]["add"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str());
        need(
            adds.into_iter().all(|a| a == "NET_BIND_SERVICE"),
            "capabilities.add",
        );
        let non_root = sc["runAsNonRoot"]
            .as_bool()
            .or(pod_sc["runAsNonRoot"].as_bool());
        need(non_root == Some(true), "runAsNonRoot");
        need(
            sc["runAsUser"].as_i64().or(pod_sc["runAsUser"].as_i64()) != Some(0),
            "runAsUser 0",
        );
        let profile = seccomp(sc).or_else(|| seccomp(pod_sc));
        need(
            matches!(profile.as_deref(), Some("RuntimeDefault" | "Localhost")),
            "seccompProfile",
        );
        for port in c["ports"].as_vec().into_iter().flatten() {
            need(port["hostPort"].is_badvalue(), "hostPort");
        }
    }
    out
}

#[test]
fn the_pods_pass_the_restricted_pod_security_standard() {
    let dir = tempfile::tempdir().unwrap();
    let pod_of = |text: &str| {
        let doc = yaml_rust2::YamlLoader::load_from_str(text)
            .unwrap()
            .remove(0);
        doc["spec"]["template"]["spec"].clone()
    };
    for manifest in ["deploy/k8s/shards-job.yaml", "deploy/k8s/merge-job.yaml"] {
        let text = std::fs::read_to_string(filled(dir.path(), manifest)).unwrap();
        let breaches = restricted_breaches(&pod_of(&text));
        assert!(breaches.is_empty(), "{manifest}: {breaches:?}");
        // The check can fail: the same pod with its hardening taken out breaks it, rule by rule.
        let loose = text
            .replace(
                "allowPrivilegeEscalation: false",
                "allowPrivilegeEscalation: true",
            )
            .replace("type: RuntimeDefault", "type: Unconfined")
            .replace("drop: [\"ALL\"]", "drop: []")
            .replace(
                "automountServiceAccountToken: false",
                "automountServiceAccountToken: true",
            );
        let breaches = restricted_breaches(&pod_of(&loose));
        for rule in [
            "allowPrivilegeEscalation",
            "seccompProfile",
            "capabilities.drop ALL",
            "automountServiceAccountToken",
        ] {
            assert!(
                breaches.iter().any(|b| b == rule),
                "{manifest}: {rule} not caught: {breaches:?}"
            );
        }
    }
}

/// Every action a workflow uses is pinned by a full commit (a tag can be moved under it).
#[test]
fn the_workflows_pin_every_action_by_commit() {
    let dir = workspace_root().join(".github/workflows");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let Some((_, used)) = line.split_once("uses: ") else {
                continue;
            };
            let reference = used.split_whitespace().next().unwrap();
            let pin = reference.rsplit_once('@').map_or("", |(_, p)| p);
            assert!(
                pin.len() == 40 && pin.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: {reference} is not pinned by commit",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 15, "{seen} actions found");
}

/// cargo deny on the whole dependency graph (`deny.toml`): licences that may ship, crates.io
/// alone, no wildcard versions. Shown to fail first: a configuration that allows no licence
/// refuses the workspace.
#[test]
fn cargo_deny_passes_on_licences_sources_and_bans() {
    let l = linters();
    let dir = tempfile::tempdir().unwrap();
    let strict = dir.path().join("deny.toml");
    std::fs::write(&strict, "[licenses]\nallow = []\n").unwrap();
    let (ok, said) = lint({
        let mut c = Command::new(&l.cargo_deny);
        c.arg("--config").arg(&strict).args(["check", "licenses"]);
        c
    });
    assert!(!ok && said.contains("rejected"), "{said}");
    let (ok, said) = lint({
        let mut c = Command::new(&l.cargo_deny);
        c.args(["check", "bans", "licenses", "sources"]);
        c
    });
    assert!(
        ok && said.contains("bans ok, licenses ok, sources ok"),
        "{said}"
    );
}
