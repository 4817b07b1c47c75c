//! The image and the documented apply commands (the workflow and the manifests are executed in
//! `workflow.rs` and linted in `lint.rs`).

use super::*;

/// The image and the apply commands as documented: the runtime stage runs unprivileged, the build
/// context leaves out the local stack's secrets and the build output, and the envsubst that
/// docs/sharding.md names (run here, the real GNU gettext one) fills in the run's variables while
/// what Kubernetes itself expands (`$(JOB_COMPLETION_INDEX)`) survives.
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
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    for (manifest, vars, kept) in [
        (
            "deploy/k8s/shards-job.yaml",
            "'$RUN_ID $START_AT $SHARDS $SCENARIO $IMAGE'",
            "$(JOB_COMPLETION_INDEX)",
        ),
        (
            "deploy/k8s/merge-job.yaml",
            "'$RUN_ID $IMAGE'",
            "/fleetbench/deploy/ci/finish",
        ),
    ] {
        for (page, text) in [("docs/sharding.md", &docs), ("README.md", &readme)] {
            assert!(
                text.contains(&format!("envsubst {vars} < {manifest}")),
                "{page} lacks envsubst {vars} < {manifest}"
            );
        }
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

/// `deploy/ci/k8s-wait`, the documented wait for the shards' Job, returns on whichever of
/// complete or failed comes first, with its own exit code; never waits out the timeout for a Job
/// that failed. No Kubernetes runs here: `kubectl` is a stand-in whose `wait` for one condition
/// answers after a moment and for the other never within the test.
#[test]
fn the_documented_wait_returns_on_complete_or_failed() {
    let docs = std::fs::read_to_string(workspace_root().join("docs/sharding.md")).unwrap();
    assert!(docs.contains("deploy/ci/k8s-wait fleetbench-shards-$RUN_ID"));
    assert!(
        !docs
            .lines()
            .any(|l| l.trim_start().starts_with("kubectl wait")),
        "a documented command waits on one condition only"
    );
    for (seen, code) in [("complete", 0), ("failed", 1), ("neither", 2)] {
        let dir = tempfile::tempdir().unwrap();
        let kubectl = dir.path().join("kubectl");
        std::fs::write(
            &kubectl,
            format!(
                "#!/usr/bin/env bash\n[ \"$1 $3 $4\" = 'wait --timeout=5h job/fleetbench-shards-r' ] || exit 3\n\
                 case \"$2\" in --for=condition={seen}) exit 0 ;; esac\n\
                 [ {seen} = neither ] && exit 1\nexec sleep 600\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &kubectl,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let out = Command::new(workspace_root().join("deploy/ci/k8s-wait"))
            .args(["fleetbench-shards-r", "5h"])
            .env("KUBECTL", &kubectl)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{seen}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
