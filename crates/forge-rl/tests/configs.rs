//! Every RL config in configs/ parses and validates; the defaults are the published recipe.

use std::path::PathBuf;

use forge_rl::{RlConfig, RolloutMode};
use forge_train::config::load_config;
use forge_rl::grpo::KlEstimator;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// configs/**/*.toml that configure `forge train rl` (they have a [rollout] or [objective] section).
fn rl_configs() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![repo().join("configs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("[rollout]") || text.contains("[objective]") {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_rl_config_parses_and_validates() {
    let configs = rl_configs();
    assert!(configs.len() >= 2, "expected the tiny and the published-recipe configs, found {configs:?}");
    for path in configs {
        let (config, resolved) = load_config::<RlConfig>(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        config.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(resolved.contains("[rollout]"), "{}", path.display());
    }
}

/// The resolved config (what a run directory records as config.toml and `--print-config`
/// shows) is the typed config written out: an objective the file omits is recorded with its
/// defaults, sampling knobs too, and loading the record gives it back unchanged.
#[test]
fn the_resolved_config_records_every_default() {
    for name in ["configs/tiny/rl.toml", "configs/demo/rl.toml"] {
        let path = repo().join(name);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("[objective]"), "{name} must omit [objective] for this test to mean anything");
        let (_, resolved) = load_config::<RlConfig>(&path, &[]).unwrap();
        let table: toml::Table = toml::from_str(&resolved).unwrap();
        let objective = table["objective"].as_table().unwrap_or_else(|| panic!("{name}: no [objective] in\n{resolved}"));
        assert_eq!((objective["kl_coef"].as_float(), objective["clip_low"].as_float(), objective["clip_high"].as_float()), (Some(0.001), Some(0.2), Some(0.28)), "{name}");
        for (section, key) in [("agent", "top_p"), ("agent", "top_k"), ("agent", "temperature"), ("rollout", "max_policy_lag"), ("train", "updates_per_step"), ("model", "dtype")] {
            assert!(table[section].as_table().unwrap().contains_key(key), "{name}: {section}.{key} missing from\n{resolved}");
        }
        let record = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(record.path(), &resolved).unwrap();
        assert_eq!(load_config::<RlConfig>(record.path(), &[]).unwrap().1, resolved, "{name}: loading the record changes it");
    }
}

#[test]
fn defaults_are_the_published_recipe() {
    let (config, _) = load_config::<RlConfig>(&repo().join("configs/tiny/rl.toml"), &["agent={}".into(), "rollout={}".into()]).unwrap();
    assert_eq!(config.agent.temperature, 0.5);
    assert_eq!(config.agent.max_turns, 35);
    assert_eq!(config.objective.kl_coef, 0.001);
    assert_eq!(config.objective.kl_estimator, KlEstimator::K3);
    assert_eq!((config.objective.clip_low, config.objective.clip_high), (0.2, 0.28));
    assert_eq!(config.rollout.mode, RolloutMode::Queue);
    assert_eq!(config.rollout.max_policy_lag, 1);
    assert_eq!(config.train.updates_per_step, 1, "one update per batch of rollouts, as published");
}

#[test]
fn bad_settings_are_named() {
    let path = repo().join("configs/tiny/rl.toml");
    let err = |set: &str| {
        let (config, _) = load_config::<RlConfig>(&path, &[set.into()]).unwrap();
        config.validate().unwrap_err().to_string()
    };
    assert!(err("rollout.group_size=1").contains("rollout.group_size = 1"));
    assert!(err("agent.temperature=0.0").contains("agent.temperature"));
    assert!(err("train.micro_batch_tokens=100").contains("train.micro_batch_tokens (100)"));
    assert!(err("objective.clip_low=1.5").contains("clip_low"));
    assert!(err("train.updates_per_step=0").contains("train.updates_per_step"));
    // settings under which every episode fails are refused, each naming its key
    for (set, key) in [
        ("agent.top_p=0.0", "agent.top_p = 0"),
        ("agent.top_p=1.5", "agent.top_p = 1.5"),
        ("agent.max_new_tokens=0", "agent.max_new_tokens = 0"),
        ("agent.temperature=-1.0", "agent.temperature = -1"),
        ("agent.max_turns=0", "agent.max_turns = 0"),
        ("agent.max_context_tokens=0", "agent.max_context_tokens = 0"),
        ("agent.max_observation_chars=0", "agent.max_observation_chars = 0"),
        ("agent.max_episode_s=0", "agent.max_episode_s = 0"),
        ("agent.max_call_timeout_s=0", "agent.max_call_timeout_s = 0"),
        ("agent.storage_limit_mb=0", "agent.storage_limit_mb = 0"),
        ("rollout.workers=0", "rollout.workers = 0"),
        ("agent.memory_mb=10", "agent.memory_mb"),
        ("agent.cpus=0.0", "agent.cpus"),
        ("agent.pids=2", "agent.pids"),
    ] {
        let e = err(set);
        assert!(e.contains(key), "{set}: {e}");
    }
    let typo = load_config::<RlConfig>(&path, &["rollout.groupsize=4".into()]).unwrap_err().to_string();
    assert!(typo.contains("unknown field `groupsize`"), "{typo}");
}

/// Container resources of task containers: unset keeps each source's defaults; set, they reach
/// the agent's and the grading's containers.
#[test]
fn container_resources_parse_and_reach_the_agent() {
    let path = repo().join("configs/tiny/rl.toml");
    let (config, _) = load_config::<RlConfig>(&path, &[]).unwrap();
    assert_eq!(config.agent.container(), forge_swe::ContainerOverrides::default());
    let sets = ["agent.memory_mb=8192", "agent.cpus=2.5", "agent.pids=2048", "agent.eval_network=false"].map(String::from);
    let (config, resolved) = load_config::<RlConfig>(&path, &sets).unwrap();
    config.validate().unwrap();
    let c = config.agent.agent_config(0).container;
    assert_eq!((c.memory_bytes, c.cpus, c.pids, c.eval_network), (Some(8 << 30), Some(2.5), Some(2048), Some(false)));
    assert!(resolved.contains("memory_mb = 8192") && resolved.contains("eval_network = false"), "{resolved}");
}

/// `rollout.pull`: when task images are pulled; the published recipe pulls missing ones, and a
/// policy that does not exist is refused with the ones that do.
#[test]
fn the_image_pull_policy_parses_and_is_checked() {
    let path = repo().join("configs/swe-rl/qwen3-8b-grpo.toml");
    let (config, _) = load_config::<RlConfig>(&path, &[]).unwrap();
    assert_eq!(config.rollout.pull, forge_sandbox::PullPolicy::Missing);
    for (value, policy) in [("never", forge_sandbox::PullPolicy::Never), ("always", forge_sandbox::PullPolicy::Always)] {
        let (config, resolved) = load_config::<RlConfig>(&path, &[format!("rollout.pull=\"{value}\"")]).unwrap();
        assert_eq!(config.rollout.pull, policy);
        assert!(resolved.contains(&format!("pull = \"{value}\"")), "{resolved}");
    }
    let bad = load_config::<RlConfig>(&path, &["rollout.pull=\"sometimes\"".into()]).unwrap_err().to_string();
    assert!(bad.contains("sometimes") && bad.contains("never") && bad.contains("always"), "{bad}");
}

/// The published recipe (full fine-tuning of Qwen3-8B in bf16, KL reference, 32 rollout workers at
/// 32k context) as this build would run it on a host: the estimate's parts, and a refusal.
#[test]
fn the_published_8b_recipe_needs_more_than_one_host_in_this_build() {
    let (config, _) = load_config::<RlConfig>(&repo().join("configs/swe-rl/qwen3-8b-grpo.toml"), &[]).unwrap();
    let qwen3_8b = forge_model::Config::qwen3_release("8b").unwrap();
    let e = config.memory_estimate(&qwen3_8b, &candle_core::Device::Cpu).unwrap();
    let p = 8_190_735_360u64;
    assert_eq!((e.weights, e.reference, e.gradients, e.optimizer), (2 * p, 2 * p, 2 * p, 12 * p), "{e}");
    // 32 workers × 32768 tokens × 36 layers × 2 × 8 heads × 128 × 4 bytes
    assert_eq!(e.kv_cache, 32 * 32768 * 36 * 2 * 8 * 128 * 4);
    // even a 512 GiB host is too small (mostly the host KV caches and, without flash attention on
    // the CPU, the 32k-wide attention scores of the update)
    let host = forge_train::memory::MemoryUse { memory: forge_train::memory::Memory::Host, needed: e.total(), available: Some(512 << 30) };
    let err = forge_train::memory::check_fits(&e, &[host], &["lower rollout.workers"]).unwrap_err().to_string();
    assert!(err.contains("KV cache 288.0 GiB"), "{err}");
    eprintln!("{err}");
}
