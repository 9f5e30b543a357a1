//! Every RL config in configs/ parses, validates and is planned; the defaults are the published
//! recipe; the Qwen3-8B recipes fit one node of 8 GPUs of 80 GiB.

use std::path::{Path, PathBuf};

use forge_rl::{RlConfig, RolloutMode};
use forge_train::config::load_config;
use forge_train::memory::DeviceKind;
use forge_train::plan::{plan, Plan};
use forge_train::sft::{self, SftConfig};
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

/// `--set model.path=…` for a config whose `model.path` is an earlier run's output that does not
/// exist yet: the architecture it starts from (a random-init `qwen3-*.json` beside it, written
/// into `scratch` as a model directory, else Qwen3-8B).
fn starting_architecture(path: &Path, scratch: &Path) -> Vec<String> {
    let (config, _) = load_config::<RlConfig>(path, &[]).unwrap();
    if config.model.path.as_deref().is_some_and(|p| Path::new(p).is_dir()) {
        return Vec::new();
    }
    let beside = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "json"));
    match beside {
        Some(json) => {
            let dir = scratch.join(path.parent().unwrap().file_name().unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(json, dir.join("config.json")).unwrap();
            vec![format!("model.path=\"{}\"", dir.display())]
        }
        None => vec!["model.path=\"Qwen/Qwen3-8B\"".into()],
    }
}

#[test]
fn every_rl_config_parses_validates_and_is_planned() {
    let configs = rl_configs();
    assert!(configs.len() >= 4, "expected the tiny, demo and Qwen3-8B configs, found {configs:?}");
    let scratch = tempfile::tempdir().unwrap();
    for path in configs {
        let (config, resolved) = load_config::<RlConfig>(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        config.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(resolved.contains("[rollout]"), "{}", path.display());
        let (config, _) = load_config::<RlConfig>(&path, &starting_architecture(&path, scratch.path())).unwrap();
        let model = config.model.architecture().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (device, workers, memory) = match config.model.device {
            forge_model::device::DeviceSpec::Cpu => (DeviceKind::Cpu, 1, 16 << 30),
            forge_model::device::DeviceSpec::Cuda(_) => (DeviceKind::Cuda, 8, 80 << 30),
        };
        let planned = plan(&config.run_shape(&model, device, workers), Some(memory));
        assert!(planned.fits(), "{}:\n{planned}", path.display());
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
    let path = repo().join("configs/qwen3-8b/grpo.toml");
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

const P: u64 = 8_190_735_360;
const GIB: u64 = 1 << 30;

fn plan_8b(name: &str, sets: &[&str], gpu_memory: u64) -> Plan {
    let path = repo().join("configs/qwen3-8b").join(name);
    let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    if name.starts_with("grpo") {
        // the SFT run's model/ does not exist yet: the architecture it starts from
        sets.push("model.path=\"Qwen/Qwen3-8B\"".into());
        let (config, _) = load_config::<RlConfig>(&path, &sets).unwrap();
        config.validate().unwrap();
        let model = config.model.architecture().unwrap();
        return plan(&config.run_shape(&model, DeviceKind::Cuda, 8), Some(gpu_memory));
    }
    let (config, _) = load_config::<SftConfig>(&path, &sets).unwrap();
    config.validate().unwrap();
    let model = config.model.architecture().unwrap();
    plan(&sft::run_shape(&config, &model, DeviceKind::Cuda, 8, None), Some(gpu_memory))
}

/// The four Qwen3-8B recipes on 8 GPUs of 80 GiB, term by term (P = 8,190,735,360 parameters,
/// bf16, AdamW with f32 moments and master weights, 1 GiB of CUDA workspace).
#[test]
fn the_qwen3_8b_recipes_fit_eight_80gib_gpus() {
    let qwen3_8b = forge_model::Config::qwen3_release("8b").unwrap();
    // one 32K (64K) micro-batch with layer recompute and flash attention: 2 saved block inputs per
    // layer and one MLP block's activations and gradients, per token, bf16
    let per_token = (2 * 36 * 4096 + 2 * (3 * 4096 + 3 * 12288)) * 2;
    let step = forge_model::memory::StepShape { tokens: 32768, seq_len: 32768, recompute: true, fused_attention: true, dtype: candle_core::DType::BF16 };
    assert_eq!(forge_model::memory::activation_bytes(&qwen3_8b, &step), 32768 * per_token);

    // full fine-tuning, stage 2: weights and bf16 gradients whole, the f32 gradient buffer and
    // AdamW's 12 B per parameter in eighths
    let sft = plan_8b("sft.toml", &[], 80 * GIB);
    let e = sft.estimate;
    assert_eq!((e.weights, e.reference, e.gradients, e.optimizer), (2 * P, 0, 2 * P + 4 * P / 8, 12 * P / 8));
    assert_eq!(e.optimizer, 12_286_103_040);
    assert_eq!((e.activations, e.workspace), (32768 * per_token, GIB));
    assert!(sft.fits() && sft.total() < 71 * GIB, "{sft}");
    assert_eq!(sft.largest_micro_batch_tokens, Some(32768));

    // zero_stage 0 (DDP) needs 177.6 GiB a GPU and is refused, naming the stage that fits
    let replicated = plan_8b("sft.toml", &["train.zero_stage=0"], 80 * GIB);
    assert_eq!(replicated.total(), 20 * P + 32768 * per_token + GIB);
    let short = replicated.shortfall.clone().expect("zero_stage 0 cannot fit 80 GiB");
    assert_eq!(short.change, "set train.zero_stage = 2 (shards the optimizer state and gradients across the 8 workers)");
    assert!(plan_8b("sft.toml", &["train.zero_stage=1"], 80 * GIB).shortfall.unwrap().change.contains("train.zero_stage = 2"));

    // LoRA rank 64 on all 7 linear layers: 36 × 64 × (3·(4096 + 4096) + 2·(4096 + 1024) + 3·(4096 + 12288))
    let adapters = 36 * 64 * (2 * 8192 + 2 * 5120 + 3 * 16384);
    let lora = plan_8b("sft-lora.toml", &[], 80 * GIB);
    let e = lora.estimate;
    assert_eq!((e.weights, e.gradients, e.optimizer), (2 * (P + adapters), 6 * adapters, 12 * adapters));
    assert!(lora.fits(), "{lora}");

    // GRPO on 80 GiB: LoRA (rank 64) with its state at stage 2, the reference the base with the
    // adapters off; the KV pool 0.9 × 80 GiB less the rest
    let grpo = plan_8b("grpo.toml", &[], 80 * GIB);
    let e = grpo.estimate;
    assert_eq!((e.weights, e.reference, e.gradients, e.optimizer), (2 * (P + adapters), 0, 2 * adapters + 4 * adapters / 8, 12 * adapters / 8));
    assert_eq!(e.activations, 32768 * per_token);
    let kv = grpo.kv.unwrap();
    let block = 2 * 36 * 8 * 128 * 16 * 2;
    assert_eq!(kv.bytes, (((80 * GIB) as f64 * 0.9) as u64 - e.total()) / block * block);
    assert_eq!((kv.sequences, kv.context), (4, 32768));
    assert!(kv.sequences_at_context >= 4, "{grpo}");
    assert!(grpo.fits(), "{grpo}");

    // full fine-tuning of the same recipe needs stage 3: the weights and the frozen reference in
    // eighths, two gathered 622.3M-parameter LM heads in flight, and the replicated copy the
    // rollout engine decodes with; on 80 GiB that leaves no KV pool, on 141 GiB it fits
    let head = 4096 + 151_936 * 4096;
    let full = |gpu_memory: u64| {
        let (mut config, _) = load_config::<RlConfig>(&repo().join("configs/qwen3-8b/grpo.toml"), &["model.path=\"Qwen/Qwen3-8B\"".into(), "train.zero_stage=3".into()]).unwrap();
        config.lora = None;
        config.validate().unwrap();
        let model = config.model.architecture().unwrap();
        plan(&config.run_shape(&model, DeviceKind::Cuda, 8), Some(gpu_memory))
    };
    let e = full(80 * GIB).estimate;
    assert_eq!((e.weights, e.reference), (2 * P / 8 + 2 * 2 * head + 2 * P, 2 * P / 8));
    assert_eq!((e.gradients, e.optimizer), (2 * P + 4 * P / 8, 12 * P / 8));
    assert!(!full(80 * GIB).fits() && full(141 * GIB).fits(), "{}\n{}", full(80 * GIB), full(141 * GIB));
    // no block of KV pool is left: the change named is not a shorter context but LoRA
    assert_eq!(full(80 * GIB).shortfall.unwrap().change, "train LoRA adapters ([lora])");

    // 64K with YaRN: LoRA (its state sharded at stage 2, the base replicated), 48 GiB of
    // activations; at 0.95 of the GPU the pool holds one sequence of 64K (9 GiB)
    let long = plan_8b("grpo-64k.toml", &[], 80 * GIB);
    let e = long.estimate;
    assert_eq!((e.weights, e.reference, e.gradients, e.optimizer), (2 * (P + adapters), 0, 2 * adapters + 4 * adapters / 8, 12 * adapters / 8));
    assert_eq!(e.activations, 65536 * per_token);
    assert_eq!(long.kv.unwrap().sequences_at_context, 1);
    assert!(long.fits(), "{long}");
    // at 0.9 the pool would hold no 64K sequence: 0.9 × 80 GiB − 70,042,347,520 B of the rest
    // leaves 3,080 blocks of 2.25 MiB, 49,280 tokens; refused, naming what to change
    assert_eq!(e.total(), 2 * (P + adapters) + 2 * adapters + 4 * adapters / 8 + 12 * adapters / 8 + 65536 * per_token + GIB);
    assert_eq!(e.total(), 70_042_347_520);
    let tight = plan_8b("grpo-64k.toml", &["engine.gpu_memory_utilization=0.9"], 80 * GIB);
    assert_eq!(tight.shortfall.unwrap().change, "lower agent.max_context_tokens to 49280 (or less), or raise engine.gpu_memory_utilization");
    let (config, _) = load_config::<RlConfig>(&repo().join("configs/qwen3-8b/grpo-64k.toml"), &["model.path=\"Qwen/Qwen3-8B\"".into()]).unwrap();
    assert_eq!(config.model.architecture().unwrap().max_context(), 65536, "YaRN factor 2 over 32,768");
}
