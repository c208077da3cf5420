//! The manifests in deploy/kubernetes, validated offline against Kubernetes 1.33's schemas
//! with `kubernetes-validate --strict` (unknown fields are errors; scripts/test.sh installs it
//! into `target/k8s-venv`), a deliberately broken copy refused by the same check, and the
//! load Jobs' arguments ending with the shard suffix scripts/shard-local.sh appends.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests are held to.
const KUBERNETES: &str = "1.33.0";

fn venv() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join("k8s-venv");
    assert!(
        venv.join("bin/kubernetes-validate").exists(),
        "{} is missing: scripts/test.sh installs kubernetes-validate there",
        venv.display()
    );
    venv
}

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Runs the validator on `files`: its success and what it said.
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(venv().join("bin/kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .args(files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Every document of a YAML file, as JSON (PyYAML, which the validator brings).
fn documents(file: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_manifests_validate_strictly() {
    let files = manifests();
    let (ok, said) = validate(&files);
    assert!(ok, "{said}");
    // Every resource was checked: a StatefulSet, its Services, the Jobs.
    for resource in [
        "configmap/ringtorrent-config",
        "statefulset/ringtorrent",
        "service/ringtorrent-peers",
        "service/ringtorrent-api",
        "job/swarm-load",
        "job/tracker-load",
        "job/swarm-load-merge",
        "job/tracker-load-merge",
        "persistentvolumeclaim/load-reports",
    ] {
        assert!(
            said.contains(&format!("passed for resource {resource} ")),
            "{resource}: {said}"
        );
    }
    assert!(!said.contains("WARN"), "{said}");
}

#[test]
fn a_broken_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/serve.yaml");
    let text = std::fs::read_to_string(serve).unwrap();
    for (what, from, to) in [
        (
            "a misspelt field",
            "  serviceName: ringtorrent",
            "  serviceNme: ringtorrent",
        ),
        ("a wrong type", "  replicas: 1", "  replicas: one"),
        ("a nested wrong type", "runAsUser: 10001", "runAsUser: root"),
    ] {
        assert!(text.contains(from), "{from}");
        let broken = dir.path().join("serve.yaml");
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let (ok, said) = validate(&[broken]);
        assert!(!ok, "{what} passed: {said}");
    }
}

/// The Jobs run what scripts/shard-local.sh runs: the tool's arguments, then
/// `--shard $(JOB_COMPLETION_INDEX)/N --output /reports/TOOL-shard-$(JOB_COMPLETION_INDEX).json`
/// with N the Job's completions; the merge Job reads exactly those N reports.
#[test]
fn the_load_jobs_shard_as_the_local_rehearsal_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    for tool in ["swarm-load", "tracker-load"] {
        let job = &documents(&dir.join(format!("{tool}.yaml")))[0];
        assert_eq!(job["spec"]["completionMode"], "Indexed", "{tool}");
        let n = job["spec"]["completions"].as_u64().unwrap();
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], tool);
        let suffix = [
            "--shard".to_string(),
            format!("$(JOB_COMPLETION_INDEX)/{n}"),
            "--output".to_string(),
            format!("/reports/{tool}-shard-$(JOB_COMPLETION_INDEX).json"),
        ];
        assert_eq!(&args[args.len() - 4..], &suffix, "{tool}");
        let merge = &documents(&dir.join(format!("{tool}-merge.yaml")))[0];
        let merge_args = &merge["spec"]["template"]["spec"]["containers"][0]["args"];
        let mut want = vec![serde_json::json!("report"), serde_json::json!("merge")];
        want.extend((0..n).map(|i| serde_json::json!(format!("/reports/{tool}-shard-{i}.json"))));
        want.extend([
            serde_json::json!("--output"),
            serde_json::json!(format!("/reports/{tool}.json")),
        ]);
        assert_eq!(merge_args, &serde_json::json!(want), "{tool}");
    }
    // The script appends the same words.
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/shard-local.sh"),
    )
    .unwrap();
    assert!(script.contains(r#"--shard "\$(JOB_COMPLETION_INDEX)/$n""#));
    assert!(script.contains(r#"--output "$reports/$tool-shard-\$(JOB_COMPLETION_INDEX).json""#));
}
