//! The RL recipe's config: TOML → typed struct (unknown keys rejected) → validated. Defaults are
//! the published recipe: GRPO with k3 KL at β = 0.001, clip-higher, temperature 0.5, at most 35
//! turns, reward 1 iff the instance's tests pass.

use std::path::PathBuf;

use forge_agent::{AgentConfig, Scaffold};
use forge_model::LoraConfig;
use crate::grpo::ObjectiveConfig;
use forge_train::config::{ModelSection, OptimSection, RunSection};
use forge_train::memory::{DeviceKind, KvPoolSize, Rollouts, RunShape};
use serde::{Deserialize, Serialize};

use crate::{Result, RlError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlConfig {
    /// The policy to start from (`model.path`): usually the SFT run's `model/` directory.
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub rollout: RolloutSection,
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub objective: ObjectiveConfig,
    #[serde(default)]
    pub sandbox: SandboxSection,
    pub optim: OptimSection,
    pub train: TrainSection,
    /// The rollout engine's KV cache (a pool of fixed-size blocks under a memory budget).
    #[serde(default)]
    pub engine: EngineSection,
    pub run: RunSection,
    /// Train LoRA adapters on the frozen model; the KL reference is then the base weights alone
    /// (`Weights::Base`, no second copy in memory).
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Training instances (SWE-bench schema: parquet, JSONL or JSON).
    pub train: PathBuf,
    /// Only these instances (all when empty).
    #[serde(default)]
    pub instance_ids: Vec<String>,
}

/// Where the task containers run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// The Docker engines (empty: `$DOCKER_HOST` or the local socket): endpoints, or tables
    /// `{ endpoint, tls, max_containers, cpus, memory }`. Episodes go to an engine with room
    /// that has the task's image; others get it by `docker save` → `docker load` from a peer.
    #[serde(default)]
    pub hosts: Vec<forge_sandbox::EngineSpec>,
}

/// How rollouts are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// Producer-consumer: workers keep generating the next groups while the trainer updates;
    /// a step trains on the first groups to finish.
    #[default]
    Queue,
    /// Each step issues its groups, waits for all of them, trains, and only then samples again.
    Barrier,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// Trajectories per instance (the GRPO group).
    pub group_size: usize,
    /// Finished groups consumed by one step.
    pub groups_per_step: usize,
    /// Concurrent episodes; each holds at most one container at a time (its own, then the
    /// grading one), so this also bounds the sandboxes.
    pub workers: usize,
    pub mode: RolloutMode,
    /// A sample generated with weights older than this many steps' updates is left out (and
    /// counted). The queue issues at most this many steps of groups ahead of the trainer.
    pub max_policy_lag: u64,
    /// Test timeout of the grading container, seconds.
    pub test_timeout_s: u64,
    /// When the task images (agent and grading containers) are pulled from their registries:
    /// "missing" (default), "always" (once per run) or "never" (images loaded or built
    /// beforehand; a missing one is an infrastructure failure of its episodes).
    pub pull: forge_sandbox::PullPolicy,
    /// The engine keeps each finished turn's KV cache, so an episode's next turn prefills only
    /// the tool's observation (emptied at every weight update).
    pub prefix_caching: bool,
}

impl Default for RolloutSection {
    fn default() -> Self {
        Self {
            group_size: 8,
            groups_per_step: 4,
            workers: 4,
            mode: RolloutMode::Queue,
            max_policy_lag: 1,
            test_timeout_s: 1800,
            pull: forge_sandbox::PullPolicy::Missing,
            prefix_caching: true,
        }
    }
}

/// The agent's limits and sampling during rollouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Prompts and tools: "standard" or "minimal" (the scaffold of the SFT warm start's data).
    pub scaffold: Scaffold,
    pub max_turns: usize,
    pub max_context_tokens: usize,
    pub max_new_tokens: usize,
    pub max_observation_chars: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    /// Wall-clock bound of one episode in seconds (generation and tools); past it the episode
    /// ends as a policy failure (`wall_clock`, reward 0).
    pub max_episode_s: u64,
    /// The longest timeout one tool call may ask for, in seconds (a larger one is lowered).
    pub max_call_timeout_s: u64,
    /// MiB the task's container may write; checked after every tool call (and a hard quota
    /// where the storage driver has one): past it the episode ends as a policy failure
    /// (`disk_quota_exceeded`, reward 0).
    pub storage_limit_mb: u64,
    /// Memory (MiB), CPUs and pids of task containers over their source's defaults (forge's own
    /// tasks: 2048, 1, 512; dataset tasks: 16384, 4 at most the host's, 4096). Unset: default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Network for the grading's eval scripts (default: on for dataset tasks, as the official
    /// harnesses run them; off for forge's own). The agent never has network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_network: Option<bool>,
}

impl Default for AgentSection {
    fn default() -> Self {
        let agent = AgentConfig::default();
        Self {
            scaffold: Scaffold::Standard,
            max_turns: agent.max_turns,
            max_context_tokens: agent.max_context_tokens,
            max_new_tokens: agent.max_new_tokens,
            max_observation_chars: agent.max_observation_chars,
            temperature: 0.5,
            top_p: agent.top_p,
            top_k: agent.top_k,
            max_episode_s: agent.max_episode_time.as_secs(),
            max_call_timeout_s: agent.max_call_timeout.as_secs(),
            storage_limit_mb: agent.storage_bytes.map_or(0, |b| b >> 20),
            memory_mb: None,
            cpus: None,
            pids: None,
            eval_network: None,
        }
    }
}

impl AgentSection {
    /// The container resources and eval network these settings ask for.
    pub fn container(&self) -> forge_swe::ContainerOverrides {
        forge_swe::ContainerOverrides {
            memory_bytes: self.memory_mb.map(|m| (m << 20) as i64),
            cpus: self.cpus,
            pids: self.pids,
            eval_network: self.eval_network,
        }
    }

    /// The episode settings of one sample (`seed`: its sampling seed).
    pub fn agent_config(&self, seed: u64) -> AgentConfig {
        AgentConfig {
            max_turns: self.max_turns,
            max_context_tokens: self.max_context_tokens,
            max_new_tokens: self.max_new_tokens,
            max_observation_chars: self.max_observation_chars,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed,
            max_episode_time: std::time::Duration::from_secs(self.max_episode_s),
            max_call_timeout: std::time::Duration::from_secs(self.max_call_timeout_s),
            storage_bytes: Some(self.storage_limit_mb << 20),
            // the rollout's setting (`rollout.pull`), applied where the episode starts
            pull: forge_sandbox::PullPolicy::default(),
            container: self.container(),
        }
    }
}

/// `[engine]`: the rollout engine's paged KV cache, vLLM's knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// The KV cache pool, e.g. "40GiB"; unset: `gpu_memory_utilization` of the device's memory
    /// less what the weights and training state take (vLLM's rule).
    pub kv_cache_memory: Option<forge_model::memory::ByteSize>,
    /// Fraction of the device's memory this worker may use in all (weights, training state,
    /// activations, KV pool), when `kv_cache_memory` is unset.
    pub gpu_memory_utilization: f64,
    /// Tokens per KV cache block (vLLM's default 16).
    pub block_size: usize,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self { kv_cache_memory: None, gpu_memory_utilization: 0.9, block_size: 16 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Steps: each trains on `rollout.groups_per_step` finished groups.
    pub steps: u64,
    pub seed: u64,
    /// Optimizer updates per step (PPO's mini-batches; TRL's `steps_per_generation`, verl's
    /// `ppo_mini_batch_size`): the step's samples, shuffled, are split into this many
    /// mini-batches with one AdamW update each. Later mini-batches are trained slightly
    /// off-policy; the clipped importance ratio to the sampling policy bounds how far they move.
    #[serde(default = "one_update")]
    pub updates_per_step: usize,
    /// Layer-wise activation recomputation (same gradients, less memory).
    #[serde(default)]
    pub recompute: bool,
    /// Tokens per micro-batch of the update, padded or with `packing` back to back (the longest
    /// trajectory must fit).
    pub micro_batch_tokens: usize,
    /// Pack the update's trajectories back to back into one row per micro-batch instead of
    /// right-padded rows: the same loss and gradients without the padding's compute (agent
    /// trajectories differ widely in length).
    #[serde(default)]
    pub packing: bool,
    /// How the training state is sharded across data-parallel workers (0–3, DeepSpeed ZeRO's
    /// stages; see `forge_train::distributed::zero`). Has no effect with one worker.
    #[serde(default)]
    pub zero_stage: forge_train::distributed::ZeroStage,
    /// Refuse to start when the memory plan (`forge plan`) does not fit the device.
    #[serde(default = "forge_train::config::default_true")]
    pub check_memory: bool,
}

fn one_update() -> usize {
    1
}

impl RlConfig {
    /// What the run holds in memory (for `forge_train::plan::plan`): the policy, the KL reference,
    /// the optimizer, the update's largest micro-batch (rows of `agent.max_context_tokens`
    /// filling `train.micro_batch_tokens`: trajectories are not known in advance) and the rollout
    /// engine's KV pool, with `workers` data-parallel workers on `device`.
    pub fn run_shape<'a>(&'a self, model_config: &'a forge_model::Config, device: DeviceKind, workers: usize) -> RunShape<'a> {
        let dtype = self.model.dtype.into();
        let step = forge_model::memory::StepShape {
            tokens: self.train.micro_batch_tokens,
            seq_len: self.agent.max_context_tokens,
            recompute: self.train.recompute,
            fused_attention: device.fused_attention(dtype, model_config.head_dim),
            dtype,
        };
        let pool = match self.engine.kv_cache_memory {
            Some(size) => KvPoolSize::Fixed(size.0),
            None => KvPoolSize::Utilization(self.engine.gpu_memory_utilization),
        };
        RunShape {
            model: model_config,
            dtype,
            lora: self.lora.as_ref(),
            master_weights: self.optim.adamw().keeps_master(dtype),
            reference_model: self.objective.kl_coef > 0.0,
            zero_stage: self.train.zero_stage,
            workers,
            step,
            rollouts: Some(Rollouts { sequences: self.rollout.workers, context: self.agent.max_context_tokens, block_size: self.engine.block_size, pool }),
            device,
        }
    }

    /// Optimizer updates of the whole run: what the learning-rate schedule spans.
    pub fn optimizer_updates(&self) -> u64 {
        self.train.steps * self.train.updates_per_step as u64
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RlError::Config(m));
        if self.model.path.is_none() || self.model.init_config.is_some() {
            return bad("RL starts from a trained policy: set model.path (an SFT run's model/ directory or a hub id), not model.init_config".into());
        }
        let r = &self.rollout;
        if r.group_size < 2 {
            return bad(format!("rollout.group_size = {}: GRPO compares samples within a group, so it needs at least 2", r.group_size));
        }
        for (key, value) in [("rollout.groups_per_step", r.groups_per_step as u64), ("rollout.workers", r.workers as u64), ("rollout.test_timeout_s", r.test_timeout_s)] {
            if value == 0 {
                return bad(format!("{key} = 0: it must be positive"));
            }
        }
        // settings under which every episode fails or teaches nothing
        let a = &self.agent;
        for (key, value, why) in [
            ("agent.max_turns", a.max_turns as u64, "no turn would be taken"),
            ("agent.max_new_tokens", a.max_new_tokens as u64, "no turn could generate a token"),
            ("agent.max_context_tokens", a.max_context_tokens as u64, "no prompt would fit"),
            ("agent.max_observation_chars", a.max_observation_chars as u64, "the model would never see a tool's output"),
            ("agent.max_episode_s", a.max_episode_s, "every episode would end at once on the wall clock"),
            ("agent.max_call_timeout_s", a.max_call_timeout_s, "every command would time out at once"),
            ("agent.storage_limit_mb", a.storage_limit_mb, "every write would exceed the storage limit"),
        ] {
            if value == 0 {
                return bad(format!("{key} = 0: {why}; it must be positive"));
            }
        }
        if a.memory_mb.is_some_and(|m| m < 64) {
            return bad(format!("agent.memory_mb = {:?}: a task container needs at least 64 MiB (unset: the source's default)", a.memory_mb));
        }
        if a.cpus.is_some_and(|c| !(c >= 0.01) || !c.is_finite()) {
            return bad(format!("agent.cpus = {:?}: it must be at least 0.01 (unset: the source's default)", a.cpus));
        }
        if a.pids.is_some_and(|p| p < 16) {
            return bad(format!("agent.pids = {:?}: a shell and its tests need at least 16 processes (unset: the source's default)", a.pids));
        }
        if !(a.temperature > 0.0) || !a.temperature.is_finite() {
            return bad(format!("agent.temperature = {}: RL needs sampling (> 0); groups of identical greedy samples teach nothing", a.temperature));
        }
        if !(a.top_p > 0.0 && a.top_p <= 1.0) {
            return bad(format!("agent.top_p = {}: it must be in (0, 1] (1 = off); at 0 no token could be sampled", a.top_p));
        }
        self.objective.validate()?;
        self.optim.adamw().validate()?;
        let e = &self.engine;
        if !(e.gpu_memory_utilization > 0.0 && e.gpu_memory_utilization <= 1.0) {
            return bad(format!("engine.gpu_memory_utilization = {}: it is a fraction in (0, 1]", e.gpu_memory_utilization));
        }
        if e.block_size == 0 || !e.block_size.is_power_of_two() {
            return bad(format!("engine.block_size = {}: it is a power of two (vLLM uses 16)", e.block_size));
        }
        if self.train.steps == 0 || self.train.updates_per_step == 0 {
            return bad("train.steps and train.updates_per_step must be positive".into());
        }
        self.run.validate()?;
        if self.train.micro_batch_tokens < a.max_context_tokens {
            return bad(format!(
                "train.micro_batch_tokens ({}) is smaller than agent.max_context_tokens ({}): the longest trajectory would not fit one micro-batch",
                self.train.micro_batch_tokens, a.max_context_tokens
            ));
        }
        if let Some(lora) = &self.lora {
            lora.validate()?;
        }
        self.train.zero_stage.check(self.train.recompute, self.lora.is_some()).map_err(RlError::Config)
    }
}
