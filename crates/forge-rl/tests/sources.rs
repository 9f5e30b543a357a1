//! `forge train rl` on the bundled tasks converted into each dataset's schema and image layout
//! (SWE-bench hub form, SWE-Gym, SWE-smith, R2E-Gym, SWE-rebench V2): rollouts start in each
//! source's containers, run the agent's shell in its environment, are graded by its rules, and no
//! rollout is an infrastructure failure. A user with an ambiguous source resolves the file once
//! (`forge tasks resolve --source ... --out`) and trains on the resolved records, as here.
//!
//! Under `CI=true` a missing engine or base image FAILS this test.

use std::collections::BTreeMap;

use forge_rl::{RlConfig, RlOptions};
use forge_sandbox::testing::{assert_no_containers_left, require_docker};
use forge_swe::resolve::Source;
use forge_swe::{bundled, layouts};
use forge_train::config::load_config;

mod common;
use common::{random_model, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rl_rolls_out_and_grades_in_every_sources_layout() {
    let test = "rl-sources";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    let tasks_dir = bundled::default_tasks_dir();
    let tasks = bundled::prepare(&rt, &tasks_dir).await.unwrap();
    let (built, _tmp) = bundled::build_all(&rt, &tasks_dir).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let specs = tmp.path().join("specs.json");
    std::fs::write(&specs, layouts::bundled_specs(&tasks).to_string()).unwrap();
    std::env::set_var("FORGE_SWEBENCH_SPECS", &specs);
    let model = random_model(tmp.path());
    let label = format!("{test}-{}", std::process::id());
    let labels = BTreeMap::from([("forge.test".to_string(), label.clone())]);
    let one = vec![tasks[0].clone()];
    for source in [Source::Swebench, Source::SweGym, Source::SweSmith, Source::R2eGym, Source::SweRebench] {
        let records = layouts::convert(&rt, &built, &one, source).await.unwrap();
        let raw = tmp.path().join(format!("{source}.jsonl"));
        std::fs::write(&raw, records.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
        let resolved = tmp.path().join(format!("{source}.resolved.jsonl"));
        let instances = forge_swe::load_instances_from(&raw, Some(source)).unwrap();
        forge_swe::save_instances_jsonl(&resolved, &instances).unwrap();
        let run_dir = tmp.path().join(format!("run-{source}"));
        let overrides = vec![
            format!("model.path={:?}", model.display().to_string()),
            format!("data.train={:?}", resolved.display().to_string()),
            format!("run.dir={:?}", run_dir.display().to_string()),
            "rollout.group_size=2".into(),
            "rollout.groups_per_step=1".into(),
            "rollout.workers=2".into(),
            "agent.max_turns=1".into(),
            "agent.max_new_tokens=8".into(),
            "train.steps=1".into(),
        ];
        let (cfg, plan) = load_config::<RlConfig>(&repo().join("configs/tiny/rl.toml"), &overrides).unwrap();
        let summary = forge_rl::run(&cfg, &plan, &RlOptions { resume: false, stop_after: None, labels: labels.clone(), distributed: None })
            .await
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(summary.trajectories, 2, "{source}");
        let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
        let m: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
        let rollouts = std::fs::read_to_string(run_dir.join("rollouts.jsonl")).unwrap_or_default();
        assert_eq!(m["infrastructure_failures"], 0.0, "{source}: {m}\n{rollouts}");
        // A random model calls no tool in its one turn: reward 0, graded (not an error).
        assert_eq!(m["reward_mean"], 0.0, "{source}: {m}");
    }
    assert_no_containers_left(&rt, &label).await;
}
