//! SWE-bench as the hub ships it (no `eval_script`, no `image`), on images in the official layout
//! built offline from the bundled tasks: `forge tasks resolve` shows what will run, `forge eval
//! swebench` grades gold, empty and wrong predictions, and the agent (`--oracle`) works in the
//! image's environment and resolves. Under `CI=true` a missing engine or base image FAILS.

mod common;

use std::path::Path;

use common::{docker_with_base_image, forge, repo, stderr};
use forge_swe::resolve::Source;

fn forge_with_specs(args: &[&str], specs: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_forge"))
        .args(args)
        .env("FORGE_SWEBENCH_SPECS", specs)
        .output()
        .expect("forge runs")
}

fn summary(dir: &Path, run_id: &str) -> serde_json::Value {
    let path = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&format!(".{run_id}.json"))))
        .unwrap_or_else(|| panic!("no summary of run {run_id} in {}", dir.display()));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn hub_form_swebench_resolves_evaluates_and_runs_the_agent_in_the_official_layout() {
    if !docker_with_base_image("hub_form_swebench_resolves_evaluates_and_runs_the_agent_in_the_official_layout") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (records, tasks) = rt.block_on(async {
        let docker = forge_sandbox::Runtime::connect().await.unwrap();
        let dir = forge_swe::bundled::default_tasks_dir();
        let tasks = forge_swe::bundled::prepare(&docker, &dir).await.unwrap();
        let (built, _tmp) = forge_swe::bundled::build_all(&docker, &dir).await.unwrap();
        let mut picked: Vec<forge_swe::TaskInstance> = Vec::new();
        for t in &tasks {
            if !picked.iter().any(|p| p.repo == t.repo) && picked.len() < 2 {
                picked.push(t.clone());
            }
        }
        (forge_swe::layouts::convert(&docker, &built, &picked, Source::Swebench).await.unwrap(), tasks)
    });
    let hub = tmp.path().join("hub.jsonl");
    std::fs::write(&hub, records.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let specs = tmp.path().join("specs.json");
    std::fs::write(&specs, forge_swe::layouts::bundled_specs(&tasks).to_string()).unwrap();
    let hub_s = hub.display().to_string();

    // Without the specifications of these repositories, the errors say what to do: the source
    // cannot be told from the record, and as SWE-bench it has no official eval script.
    let unknown = forge(&["tasks", "resolve", "--dataset", &hub_s]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("forge/calutil") && stderr(&unknown).contains("--source"), "{}", stderr(&unknown));
    let unknown = forge(&["tasks", "resolve", "--dataset", &hub_s, "--source", "swebench"]);
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("FORGE_SWEBENCH_SPECS"), "{}", stderr(&unknown));

    let resolved_path = tmp.path().join("resolved.jsonl");
    let out = forge_with_specs(&["tasks", "resolve", "--dataset", &hub_s, "--out", &resolved_path.display().to_string()], &specs);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("swebench: 2"), "{}", String::from_utf8_lossy(&out.stdout));
    let resolved = forge_swe::load_instances(&resolved_path).unwrap();
    for inst in &resolved {
        assert!(inst.image.as_deref().unwrap().starts_with("swebench/sweb.eval.x86_64.forge_1776_"), "{:?}", inst.image);
        assert!(inst.eval_script.as_deref().unwrap().contains("conda activate testbed"));
        assert_eq!(inst.shell_init.as_deref(), Some(forge_swe::resolve::CONDA_TESTBED));
    }

    let eval = |run_id: &str, extra: &[&str]| {
        let out_dir = tmp.path().join(run_id);
        let mut args = vec!["eval", "swebench", "--dataset", &hub_s, "--run-id", run_id, "--workers", "2", "--timeout", "300"];
        let out_s = out_dir.display().to_string();
        args.extend(["--output-dir", &out_s]);
        args.extend(extra);
        let o = forge_with_specs(&args, &specs);
        assert!(o.status.success(), "{run_id}: {}", stderr(&o));
        (summary(&out_dir, run_id), out_dir)
    };
    let (gold, _) = eval("gold", &["--predictions", "gold"]);
    assert_eq!(gold["resolved_instances"], 2, "{gold}");
    let write_preds = |name: &str, patch: &str| {
        let path = tmp.path().join(format!("{name}.jsonl"));
        let lines: String = resolved
            .iter()
            .map(|i| format!("{}\n", serde_json::json!({"instance_id": i.instance_id, "model_name_or_path": name, "model_patch": patch})))
            .collect();
        std::fs::write(&path, lines).unwrap();
        path.display().to_string()
    };
    let empty = write_preds("empty", "");
    let (s, _) = eval("empty", &["--predictions", &empty]);
    assert_eq!(s["resolved_instances"], 0, "{s}");
    let wrong = write_preds("wrong", "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES.md\n@@ -0,0 +1 @@\n+not a fix\n");
    let (s, _) = eval("wrong", &["--predictions", &wrong]);
    assert_eq!(s["resolved_instances"], 0, "{s}");
    assert_eq!(s["completed_instances"], 2, "the wrong patch is graded, not an error: {s}");

    // The agent: the oracle's shell runs the project's tests in the image's environment.
    let tokenizer = repo().join("assets/tiny-tokenizer").display().to_string();
    let (s, out_dir) = eval("oracle", &["--oracle", "--tokenizer", &tokenizer]);
    assert_eq!(s["resolved_instances"], 2, "{s}");
    let trajectories = out_dir.join("runs/oracle/trajectories");
    let mut seen = 0;
    for entry in std::fs::read_dir(&trajectories).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        assert!(text.contains("Python environment is already active"), "the prompt names the environment: {}", entry.path().display());
        assert!(!text.contains("No module named"), "{text}");
        if text.contains("2>&1 | tail -n 5; test ${PIPESTATUS[0]} -eq 0") {
            // the `git apply` oracle runs the project's tests and shows their summary
            assert!(text.contains(" passed"), "{text}");
        }
        seen += 1;
    }
    assert_eq!(seen, 2);

    // The agent's shell: the environment's python and pytest, the install's build output kept.
    let observation = rt.block_on(async {
        use forge_agent::Workspace;
        let docker = forge_sandbox::Runtime::connect().await.unwrap();
        let mut workspace = forge_agent::TaskWorkspace::create(&docker, &resolved[0], &Default::default()).await.unwrap();
        let call = forge_sandbox::ToolCall {
            name: forge_sandbox::EXECUTE_BASH.into(),
            arguments: serde_json::json!({"command": format!("command -v python pytest; echo env=$CONDA_DEFAULT_ENV; cat {}; git status --porcelain | wc -l", forge_swe::layouts::BUILD_OUTPUT)}),
        };
        let observation = workspace.call(&call).await.unwrap();
        workspace.remove().await.unwrap();
        observation
    });
    let out = &observation.output;
    assert!(out.contains("/opt/miniconda3/envs/testbed/bin/python\n/opt/miniconda3/envs/testbed/bin/pytest"), "{out}");
    assert!(out.contains("env=testbed") && out.contains("built by the install"), "{out}");
    assert!(out.trim_end().ends_with('0'), "a clean checkout for the agent: {out}");
}
