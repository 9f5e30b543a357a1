//! `forge train rl` end to end: a tiny Qwen3, real containers of the bundled tasks, real grading.
//!
//! Under `CI=true` a missing engine or base image FAILS these tests; elsewhere they are skipped
//! loudly. Every container carries this test's `forge.test` label; none may be left at the end.

use std::collections::BTreeMap;
use std::path::Path;

use forge_rl::{RlConfig, RlOptions};
use forge_sandbox::testing::{assert_no_containers_left, require_docker};
use forge_swe::bundled;
use forge_train::config::load_config;

mod common;
use common::{random_model, repo};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn config(model: &Path, run_dir: &Path, extra: &[&str]) -> (RlConfig, String) {
    let instances: Vec<String> = bundled_ids().into_iter().take(2).collect();
    let mut overrides = vec![
        format!("model.path={:?}", model.display().to_string()),
        format!("data.train={:?}", bundled::dataset_path(&bundled::default_tasks_dir()).display().to_string()),
        format!("data.instance_ids={instances:?}"),
        format!("run.dir={:?}", run_dir.display().to_string()),
        "rollout.group_size=2".into(),
        "rollout.groups_per_step=2".into(),
        "rollout.workers=2".into(),
        "agent.max_turns=1".into(),
        "agent.max_new_tokens=12".into(),
        "train.steps=2".into(),
        "run.checkpoint_every=1".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    load_config::<RlConfig>(&repo().join("configs/tiny/rl.toml"), &overrides).unwrap()
}

fn bundled_ids() -> Vec<String> {
    forge_swe::load_instances(&bundled::dataset_path(&bundled::default_tasks_dir())).unwrap().into_iter().map(|i| i.instance_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tiny_model_rolls_out_in_containers_is_graded_and_logs_sane_metrics_and_resumes() {
    let test = "rl-e2e";
    let Some(rt) = require_docker(test, &bundled::base_image()).await else { return };
    bundled::prepare(&rt, &bundled::default_tasks_dir()).await.unwrap();
    let label = format!("{test}-{}", std::process::id());
    let labels = BTreeMap::from([("forge.test".to_string(), label.clone())]);
    let tmp = tempfile::tempdir().unwrap();
    let model = random_model(tmp.path());
    let run_dir = tmp.path().join("run");

    // interrupted after one step, then resumed: one run of two steps
    let (cfg, resolved) = config(&model, &run_dir, &[]);
    let first = forge_rl::run(&cfg, &resolved, &RlOptions { resume: false, stop_after: Some(1), labels: labels.clone(), distributed: None }).await.unwrap();
    assert_eq!((first.steps, first.trajectories), (1, 4));
    let again = forge_rl::run(&cfg, &resolved, &RlOptions { resume: false, stop_after: None, labels: labels.clone(), distributed: None }).await;
    assert!(again.unwrap_err().to_string().contains("--resume"), "a second run must not overwrite the first");
    // the run directory records the typed, resolved config: every default, the objective's too
    // (configs/tiny/rl.toml has no [objective]); the resumed run starts from that record
    let recorded = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(!std::fs::read_to_string(repo().join("configs/tiny/rl.toml")).unwrap().contains("[objective]"));
    let objective: toml::Table = toml::from_str::<toml::Table>(&recorded).unwrap()["objective"].as_table().unwrap().clone();
    assert_eq!((objective["kl_coef"].as_float(), objective["clip_low"].as_float(), objective["clip_high"].as_float()), (Some(0.001), Some(0.2), Some(0.28)), "{recorded}");
    assert!(recorded.contains("top_p = ") && recorded.contains("kl_estimator = \"k3\""), "{recorded}");
    let (cfg, resolved) = load_config::<RlConfig>(&run_dir.join("config.toml"), &[]).unwrap();
    assert_eq!(resolved, recorded, "the record is a fixed point of loading");
    let summary = forge_rl::run(&cfg, &resolved, &RlOptions { resume: true, stop_after: None, labels: labels.clone(), distributed: None }).await.unwrap();
    assert_eq!((summary.steps, summary.trajectories), (2, 8));
    assert!(summary.model_dir.join("config.json").is_file() && summary.model_dir.join("tokenizer.json").is_file());

    let metrics = lines(&run_dir.join("metrics.jsonl"));
    assert_eq!(metrics.iter().map(|m| m["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "the resumed run continues the same metrics");
    for m in &metrics {
        assert_eq!(m["groups"], 2.0);
        // a random model calls no tool in its one turn: every episode hits the turn limit with no
        // patch, every reward is 0, every group lacks signal and no update is made
        assert_eq!(m["reward_mean"], 0.0, "{m}");
        assert_eq!(m["stuck_ratio"], 1.0, "{m}");
        assert_eq!(m["finish_ratio"], 0.0, "{m}");
        assert_eq!(m["groups_skipped_zero_variance"], 2.0, "{m}");
        assert_eq!(m["infrastructure_failures"], 0.0, "{m}");
        assert_eq!(m["updated"], 0.0, "{m}");
        assert_eq!(m["mean_turns"], 1.0, "{m}");
        assert!(m["mean_generated_tokens"].as_f64().unwrap() > 0.0 && m["mean_generated_tokens"].as_f64().unwrap() <= 12.0, "{m}");
        assert!(m["generation_s"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["step_s"].as_f64().unwrap() >= m["idle_s"].as_f64().unwrap(), "{m}");
        let idle = m["engine_idle_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&idle), "{m}");
        // one turn per episode: only a group's later samples can find their prompt already cached
        assert!(m["prompt_tokens"].as_f64().unwrap() > 0.0, "{m}");
        assert!((0.0..1.0).contains(&m["prefix_reused_fraction"].as_f64().unwrap()), "{m}");
        assert!(m["trajectories_per_min"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["entropy_estimate"].as_f64().unwrap() > 0.0, "{m}");
    }
    let rollouts = lines(&run_dir.join("rollouts.jsonl"));
    assert!(rollouts.len() >= 8, "{} rollouts logged", rollouts.len());
    assert!(rollouts.iter().all(|r| r["reward"] == 0.0 && r["status"] == "turn_limit"));
    let rates = lines(&run_dir.join("solve_rates.jsonl"));
    assert_eq!(rates.len(), 2);
    assert!(rates.iter().all(|r| r["tasks"].as_object().unwrap().values().all(|v| v == 0.0)));
    assert_no_containers_left(&rt, &label).await;
}
