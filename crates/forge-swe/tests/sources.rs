//! The bundled tasks converted into each dataset's schema and image layout (SWE-bench as the hub
//! ships it, SWE-Gym, SWE-smith with bug branches, R2E-Gym, SWE-rebench V2), resolved as a user's
//! file would be, then graded in real containers: the gold patch resolves, an empty and a wrong
//! patch do not, from every source. Under `CI=true` a missing engine or base image FAILS.

use std::collections::BTreeMap;
use std::time::Duration;

use forge_sandbox::testing::{assert_no_containers_left, require_docker};
use forge_swe::harness::{run_instance, ExecOptions};
use forge_swe::resolve::Source;
use forge_swe::*;

const WRONG_PATCH: &str = "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES.md\n@@ -0,0 +1 @@\n+not a fix\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_resolves_and_grades_gold_empty_and_wrong_patches() {
    let test = "every_source_resolves_and_grades_gold_empty_and_wrong_patches";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tasks_dir = bundled::default_tasks_dir();
    let tasks = bundled::prepare(&rt, &tasks_dir).await.expect("bundled tasks");
    let (built, _tmp) = bundled::build_all(&rt, &tasks_dir).await.expect("bundled histories");
    // The first task of two projects: images shared by several tasks and per-instance ones.
    let mut picked: Vec<TaskInstance> = Vec::new();
    for t in &tasks {
        if !picked.iter().any(|p| p.repo == t.repo) && picked.len() < 2 {
            picked.push(t.clone());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    // SWE-bench's hub form has no eval script: forge writes the official one from the
    // specifications, which for repositories of one's own come from FORGE_SWEBENCH_SPECS.
    let specs = dir.path().join("specs.json");
    std::fs::write(&specs, serde_json::to_vec(&layouts::bundled_specs(&tasks)).unwrap()).unwrap();
    std::env::set_var("FORGE_SWEBENCH_SPECS", &specs);

    let label = format!("swe-sources-{}", std::process::id());
    let opts = ExecOptions {
        timeout: Duration::from_secs(180),
        labels: BTreeMap::from([("forge.test".to_string(), label.clone())]),
        ..ExecOptions::default()
    };
    let mut seconds = Vec::new();
    for source in [Source::Swebench, Source::SweGym, Source::SweSmith, Source::R2eGym, Source::SweRebench] {
        let records = layouts::convert(&rt, &built, &picked, source).await.unwrap_or_else(|e| panic!("{source}: {e}"));
        let path = dir.path().join(format!("{source}.jsonl"));
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&path, text).unwrap();
        // SWE-Gym's records are SWE-bench's schema: only its own repositories are told apart
        // automatically, so a user names the source.
        let choice = (source == Source::SweGym).then_some(source);
        let resolved = load_instances_from(&path, choice).unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(resolved.len(), picked.len());
        for inst in &resolved {
            assert_eq!(Source::of(inst), source, "{}", inst.instance_id);
            assert!(inst.image.is_some() && (inst.eval_script.is_some() || inst.test_cmd.is_some()), "{source}: {inst:?}");
            let t = std::time::Instant::now();
            let gold = run_instance(&rt, inst, Some(&inst.patch), &opts).await.unwrap();
            seconds.push(t.elapsed().as_secs_f64());
            assert!(
                matches!(&gold.outcome, harness::Outcome::Graded { report } if report.resolved),
                "{source} {}: the gold patch must resolve: {:?}\nscript:\n{}\nlog:\n{}",
                inst.instance_id, gold.outcome, gold.eval_script, gold.log
            );
            for (name, patch) in [("empty", None), ("wrong", Some(WRONG_PATCH))] {
                let run = run_instance(&rt, inst, patch, &opts).await.unwrap();
                let resolved = matches!(&run.outcome, harness::Outcome::Graded { report } if report.resolved);
                assert!(!resolved, "{source} {}: the {name} patch must not resolve:\n{}", inst.instance_id, run.log);
                // Graded, not an infrastructure error: the tests ran and failed.
                assert!(matches!(&run.outcome, harness::Outcome::Graded { .. }), "{source} {} {name}: {:?}\n{}", inst.instance_id, run.outcome, run.log);
            }
        }
    }
    eprintln!("gold runs: {} in {:.1} s mean", seconds.len(), seconds.iter().sum::<f64>() / seconds.len() as f64);
    assert_no_containers_left(&rt, &label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_records_without_eval_script_resolve_to_official_layout_runs() {
    // The official layout: an environment only `conda activate testbed` puts on PATH, a HEAD commit
    // on top of the base, a git-ignored build output. The generated script activates the
    // environment, and grading neither checks out nor cleans: the build output survives.
    let test = "hub_records_without_eval_script_resolve_to_official_layout_runs";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tasks_dir = bundled::default_tasks_dir();
    let tasks = bundled::prepare(&rt, &tasks_dir).await.expect("bundled tasks");
    let (built, _tmp) = bundled::build_all(&rt, &tasks_dir).await.expect("bundled histories");
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs.json");
    std::fs::write(&specs, serde_json::to_vec(&layouts::bundled_specs(&tasks)).unwrap()).unwrap();
    std::env::set_var("FORGE_SWEBENCH_SPECS", &specs);
    let one = vec![tasks[0].clone()];
    let records = layouts::convert(&rt, &built, &one, Source::Swebench).await.unwrap();
    assert!(records[0].get("eval_script").is_none() && records[0].get("image").is_none());
    let inst = resolve::resolve_record(records[0].clone(), None).unwrap();
    let script = inst.eval_script.as_deref().unwrap();
    assert!(script.contains("source /opt/miniconda3/bin/activate") && script.contains("conda activate testbed"), "{script}");
    let label = format!("swe-hub-{}", std::process::id());
    let opts = ExecOptions { labels: BTreeMap::from([("forge.test".to_string(), label.clone())]), ..ExecOptions::default() };
    // The eval script's environment is the image's testbed environment.
    let probe = format!("{script}\necho PROBE $(command -v python) $CONDA_DEFAULT_ENV; test -f {} && echo BUILD_OUTPUT_KEPT", layouts::BUILD_OUTPUT);
    let mut probed = inst.clone();
    probed.eval_script = Some(probe);
    let run = run_instance(&rt, &probed, Some(&inst.patch), &opts).await.unwrap();
    assert!(run.log.contains("PROBE /opt/miniconda3/envs/testbed/bin/python testbed"), "{}", run.log);
    assert!(run.log.contains("BUILD_OUTPUT_KEPT"), "{}", run.log);
    assert!(matches!(&run.outcome, harness::Outcome::Graded { report } if report.resolved), "{:?}\n{}", run.outcome, run.log);
    assert_no_containers_left(&rt, &label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swe_smith_agent_starts_without_the_history_that_holds_the_fix() {
    // The bug branch's ancestors are the code before the bug: the agent's repository must not
    // reach them, while its tree is the branch's.
    let test = "a_swe_smith_agent_starts_without_the_history_that_holds_the_fix";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tasks_dir = bundled::default_tasks_dir();
    let tasks = bundled::prepare(&rt, &tasks_dir).await.expect("bundled tasks");
    let (built, _tmp) = bundled::build_all(&rt, &tasks_dir).await.expect("bundled histories");
    let records = layouts::convert(&rt, &built, &tasks[..1], Source::SweSmith).await.unwrap();
    let inst = resolve::resolve_record(records[0].clone(), None).unwrap();
    let label = format!("swe-smith-setup-{}", std::process::id());
    let spec = forge_sandbox::SandboxSpec::new(inst.image.clone().unwrap()).workdir("/testbed").label("forge.test", &label);
    let mut sb = rt.create(&spec).await.unwrap();
    let id = &inst.instance_id;
    let before = sb.exec(&["bash", "-c", &format!("cd /testbed && git rev-parse '{id}^{{tree}}' '{id}~1'")], None).await.unwrap();
    let mut lines = before.output.lines();
    let (tree, parent) = (lines.next().unwrap().to_string(), lines.next().unwrap().to_string());
    let setup = sb.exec(&["bash", "-c", &harness::agent_setup_script(&inst)], Some(Duration::from_secs(120))).await.unwrap();
    assert_eq!(setup.exit_code, Some(0), "{}", setup.output);
    let after = sb
        .exec(&["bash", "-c", &format!("cd /testbed && git rev-parse 'HEAD^{{tree}}' && git rev-list --all --count && (git cat-file -e {parent} && echo LEAK || true)")], None)
        .await
        .unwrap();
    let mut lines = after.output.lines();
    assert_eq!(lines.next(), Some(tree.as_str()), "the agent's tree is the bug branch's: {}", after.output);
    assert_eq!(lines.next(), Some("1"), "one commit reachable: {}", after.output);
    assert!(!after.output.contains("LEAK"), "the commit before the test removal is still there: {}", after.output);
    sb.remove().await.unwrap();
    assert_no_containers_left(&rt, &label).await;
}
