//! The sharding manifests and workflow.

use super::*;

fn yaml(path: &str) -> Vec<yaml_rust2::Yaml> {
    let text = std::fs::read_to_string(workspace_root().join(path)).unwrap();
    yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_kubernetes_manifests_and_the_workflow_have_what_sharding_needs() {
    // The shards: an Indexed Job, as many at once as it completes, each `--shard k/N` of one run
    // id and start, the keys from the Secret, results on the shared volume.
    let job = &yaml("deploy/k8s/shards-job.yaml")[0];
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let n = spec["completions"].as_i64().unwrap();
    assert_eq!(spec["parallelism"].as_i64(), Some(n));
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    let command = c["args"][0].as_str().unwrap();
    assert!(
        command.contains(&format!("--shard \"${{JOB_COMPLETION_INDEX}}/{n}\"")),
        "{command}"
    );
    for flag in ["--run-id", "--start-at", "--out \"/results/shard-"] {
        assert!(command.contains(flag), "{flag} missing from {command}");
    }
    assert_eq!(
        c["envFrom"][0]["secretRef"]["name"].as_str(),
        Some("fleetbench-staging")
    );
    assert_eq!(c["volumeMounts"][0]["mountPath"].as_str(), Some("/results"));
    let claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap();
    assert_eq!(
        yaml("deploy/k8s/results-pvc.yaml")[0]["metadata"]["name"].as_str(),
        Some(claim)
    );
    let secret = &yaml("deploy/k8s/secret.example.yaml")[0];
    assert_eq!(
        secret["metadata"]["name"].as_str(),
        Some("fleetbench-staging")
    );
    for key in [
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_DB_URL",
    ] {
        assert!(!secret["stringData"][key].is_badvalue(), "{key}");
    }
    let merge = &yaml("deploy/k8s/merge-job.yaml")[0];
    let command = merge["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    assert!(
        command.contains("fleetbench merge /results/shard-*")
            && command.contains("cleanup --run-id"),
        "{command}"
    );

    // The workflow: on a schedule and by hand, a matrix of shards sharing run id and start, the
    // shards uploaded, merged (its exit code fails the job), the report uploaded, secrets from the
    // repository.
    let wf = &yaml(".github/workflows/staging-load.yml")[0];
    let on = &wf["on"];
    assert!(!on["schedule"][0]["cron"].is_badvalue() && !on["workflow_dispatch"].is_badvalue());
    let jobs = &wf["jobs"];
    let shard = &jobs["shard"];
    let matrix = shard["strategy"]["matrix"]["index"].as_vec().unwrap();
    let steps = shard["steps"].as_vec().unwrap();
    let run = steps
        .iter()
        .find_map(|s| s["run"].as_str().filter(|r| r.contains("--shard")))
        .unwrap();
    assert!(
        run.contains(&format!("--shard ${{{{ matrix.index }}}}/{}", matrix.len())),
        "{run}"
    );
    assert!(
        run.contains("needs.prepare.outputs.run_id")
            && run.contains("needs.prepare.outputs.start_at")
    );
    let env = &steps
        .iter()
        .find(|s| s["run"].as_str() == Some(run))
        .unwrap()["env"];
    assert_eq!(
        env["SUPABASE_SERVICE_ROLE_KEY"].as_str(),
        Some("${{ secrets.SUPABASE_SERVICE_ROLE_KEY }}")
    );
    assert!(steps.iter().any(|s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/upload-artifact"))
    }));
    let merge = &jobs["merge"];
    assert!(
        merge["needs"]
            .as_vec()
            .unwrap()
            .iter()
            .any(|n| n.as_str() == Some("shard"))
    );
    let msteps = merge["steps"].as_vec().unwrap();
    assert!(msteps.iter().any(|s| {
        s["run"]
            .as_str()
            .is_some_and(|r| r.contains("fleetbench merge shard-* --out merged"))
    }));
    assert!(
        msteps
            .iter()
            .any(|s| s["with"]["name"].as_str() == Some("report"))
    );
}

/// The image and the apply commands as documented: the runtime stage runs unprivileged, the build
/// context leaves out the local stack's secrets and the build output, and the envsubst that
/// docs/sharding.md names (run here, the real GNU gettext one) fills in RUN_ID and START_AT while
/// the pods' own `${JOB_COMPLETION_INDEX}` and `$code` survive.
#[test]
fn the_image_and_the_apply_commands_keep_what_they_must() {
    let dockerfile = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = runtime
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage names its user");
    assert!(!matches!(user.trim(), "root" | "0"), "{user}");
    let ignored = std::fs::read_to_string(workspace_root().join(".dockerignore")).unwrap();
    for dir in ["target/", ".fleetbench/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == dir),
            "{dir} not in .dockerignore"
        );
    }
    let docs = std::fs::read_to_string(workspace_root().join("docs/sharding.md")).unwrap();
    for (manifest, vars, kept) in [
        (
            "deploy/k8s/shards-job.yaml",
            "'$RUN_ID $START_AT'",
            "${JOB_COMPLETION_INDEX}",
        ),
        ("deploy/k8s/merge-job.yaml", "'$RUN_ID'", "exit $code"),
    ] {
        assert!(
            docs.contains(&format!("envsubst {vars}")),
            "docs/sharding.md lacks envsubst {vars}"
        );
        // A start three minutes ahead on the test's clock, as the documented command picks it.
        let start_at = (chrono::Utc::now() + chrono::Duration::minutes(3)).to_rfc3339();
        let out = Command::new("envsubst")
            .arg(vars.trim_matches('\''))
            .env("RUN_ID", "run-1234")
            .env("START_AT", &start_at)
            .stdin(std::fs::File::open(workspace_root().join(manifest)).unwrap())
            .output()
            .expect("envsubst (gettext-base) runs");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("run-1234") && text.contains(kept),
            "{manifest}:\n{text}"
        );
        yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{manifest}: {e}"));
    }
}
