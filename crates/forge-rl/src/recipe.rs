//! The RL recipe, top to bottom: setup → train (rollouts → groups → update) → save.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use forge_agent::{ChatFormat, Status};
use forge_engine::{EngineConfig, EngineHandle};
use forge_model::export::{save_model_dir, ExportOptions, DEFAULT_SHARD_SIZE};
use forge_model::lora::{init_adapters, load_adapters, merge, save_adapters};
use forge_model::{Gradients, Qwen3ForCausalLM};
use forge_sandbox::Runtime;
use forge_swe::{ensure_bundled_images, load_instances, select_instances, ExecOptions, TaskInstance};
use forge_train::rl::{policy_gradient, Aggregation, ObjectiveConfig, Sample, UpdateStats};
use forge_train::run_log::{truncate_after, RunLog};
use forge_train::{AdamW, Checkpoints, GradAccumulator, LrSchedule};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{RlConfig, RolloutMode};
use crate::groups::{select_samples, FinishedGroup, GroupBuffer, GroupCounts, Rollout, TrainSample};
use crate::rollout::{RolloutEnv, RolloutJob, RolloutWorkers};
use crate::{Result, RlError};

pub struct RlOptions {
    /// Continue the run in `run.dir` from its latest checkpoint.
    pub resume: bool,
    /// Stop after this many steps as if interrupted (no final save): for resume tests.
    pub stop_after: Option<u64>,
    /// Extra labels on every container (agent and grading).
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RlSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    /// AdamW updates applied.
    pub updates: u64,
    pub trajectories: u64,
    /// Mean reward of the first and the last step of this invocation.
    pub first_reward: f64,
    pub last_reward: f64,
    /// `run_dir/model` (HF layout) after the last step; empty when stopped early.
    pub model_dir: PathBuf,
}

/// What a checkpoint records besides weights and optimizer state. Groups in flight when a run
/// stops are not replayed: a resumed run issues groups from `next_group` on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct TrainerState {
    step: u64,
    /// Steps that applied an update — the policy version (steps whose groups all lacked
    /// signal apply none).
    updates: u64,
    /// AdamW updates applied (`train.updates_per_step` per updating step): the schedule's clock.
    #[serde(default)]
    optimizer_updates: u64,
    next_group: u64,
    trajectories: u64,
}

/// Runs the recipe. Needs a multi-threaded tokio runtime: updates run on the calling task
/// (`block_in_place`) while rollouts continue on the others.
pub async fn run(config: &RlConfig, resolved_toml: &str, options: &RlOptions) -> Result<RlSummary> {
    // ---- setup
    config.validate()?;
    let device = config.model.device.open()?;
    let dtype = forge_train::sft::model_dtype(&config.model.dtype)?;
    let run_dir = config.run.dir.clone();
    let checkpoints = Checkpoints::new(run_dir.join("checkpoints"));
    let resume_from = match (options.resume, checkpoints.latest()?) {
        (true, Some(latest)) => Some(latest),
        (true, None) => return Err(RlError::Config(format!("--resume: no complete checkpoint under {}", checkpoints.root().display()))),
        (false, Some(_)) => {
            return Err(RlError::Config(format!(
                "{} already holds checkpoints; pass --resume to continue that run, or choose another run.dir",
                run_dir.display()
            )))
        }
        (false, None) => None,
    };
    let model_dir = forge_model::weights::resolve_model_dir(&config.model.path)?;
    let model_config = forge_model::Config::from_file(&model_dir.join("config.json"))?;
    let remedies = forge_train::memory::remedies(
        &["lower rollout.workers or agent.max_context_tokens (KV caches)", "lower train.micro_batch_tokens"],
        config.lora.is_some(),
        config.train.recompute,
    );
    forge_train::memory::report_and_check(&config.memory_estimate(&model_config, &device)?, &device, 1, config.train.check_memory, &remedies)?;
    std::fs::create_dir_all(&run_dir).map_err(|e| RlError::io(&run_dir, e))?;
    std::fs::write(run_dir.join("config.toml"), resolved_toml).map_err(|e| RlError::io(&run_dir, e))?;

    // Qwen3 templates: the non-thinking format the agent is trained in
    let chat = Arc::new(ChatFormat::from_model_dir(&model_dir, json!({"enable_thinking": false}))?.with_scaffold(config.agent.scaffold));
    let (model_config, base) = forge_model::load_weights(&model_dir, dtype, &device)?;
    let needs_reference = config.objective.kl_coef > 0.0;
    let (model, reference) = match &config.lora {
        None => {
            // full fine-tuning: the reference is a frozen copy of the starting weights (loaded
            // again, so the optimizer's in-place updates do not reach it)
            let reference = match needs_reference {
                true => Some(Qwen3ForCausalLM::new(model_config.clone(), forge_model::load_weights(&model_dir, dtype, &device)?.1)?),
                false => None,
            };
            let params = match &resume_from {
                Some((_, dir)) => forge_model::weights::load_params(&dir.join("model"), &model_config, dtype, &device)?,
                None => base,
            };
            (Qwen3ForCausalLM::new(model_config.clone(), params)?, reference)
        }
        Some(lora) => {
            let adapters = match &resume_from {
                Some((_, dir)) => load_adapters(&dir.join("adapter"), &model_config, dtype, &device)?.2,
                None => init_adapters(&model_config, lora, dtype, &device)?,
            };
            // LoRA: the reference is the same model with its adapters off
            (Qwen3ForCausalLM::with_lora(model_config.clone(), base, lora.clone(), adapters)?, None)
        }
    };
    let model = Arc::new(model);
    let mut optimizer = AdamW::for_params(model.trainable(), config.optim.adamw())?;
    let schedule = config.optim.schedule(config.optimizer_updates())?;
    let mut state = TrainerState::default();
    if let Some((step, dir)) = &resume_from {
        optimizer.load_state(&dir.join("optimizer.safetensors"))?;
        let path = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| RlError::io(&path, e))?;
        state = serde_json::from_str(&text).map_err(|e| RlError::Config(format!("{}: {e}", path.display())))?;
        tracing::info!(step, "resumed");
    }

    let instances = select_instances(load_instances(&config.data.train)?, &config.data.instance_ids)
        .map_err(|id| RlError::Config(format!("data.instance_ids: {id} is not in {}", config.data.train.display())))?;
    if instances.is_empty() {
        return Err(RlError::Config(format!("{} holds no instances to train on", config.data.train.display())));
    }
    let instances: Vec<Arc<TaskInstance>> = instances.into_iter().map(Arc::new).collect();
    let runtime = Runtime::connect().await?;
    let owned: Vec<TaskInstance> = instances.iter().map(|i| (**i).clone()).collect();
    ensure_bundled_images(&runtime, &config.data.train, &owned).await;

    let mut agent = config.agent.clone();
    // the model cannot attend beyond its positions, whatever budget was asked for
    agent.max_context_tokens = agent.max_context_tokens.min(model_config.max_position_embeddings);
    let engine = Arc::new(EngineHandle::start(model.clone(), EngineConfig { max_batch_size: config.rollout.workers, ..Default::default() })?);
    let policy_version = Arc::new(AtomicU64::new(state.updates));
    let grading = ExecOptions { timeout: std::time::Duration::from_secs(config.rollout.test_timeout_s), ..ExecOptions::default() };
    let env = Arc::new(RolloutEnv { runtime, policy: engine.clone(), chat, agent, grading, labels: options.labels.clone(), policy_version: policy_version.clone() });
    let mut workers = RolloutWorkers::start(env, config.rollout.workers);

    let resume_step = resume_from.as_ref().map(|(s, _)| *s);
    let mut log = RunLog::open(&run_dir, resume_step)?;
    let mut records = Records::open(&run_dir, resume_step)?;
    let progress = indicatif::ProgressBar::new(config.train.steps).with_position(state.step);
    progress.set_style(indicatif::ProgressStyle::with_template("rl {bar:30} {pos}/{len} steps  eta {eta}  {msg}").expect("valid template"));
    let save = |state: &TrainerState, optimizer: &AdamW| -> Result<()> {
        checkpoints.save(state.step, |dir| {
            match model.lora() {
                Some((lora, adapters)) => save_adapters(&dir.join("adapter"), adapters, lora, &config.model.path)?,
                None => save_model_dir(model.params(), &model_config, Some(&model_dir), &dir.join("model"), &ExportOptions { shard_size: DEFAULT_SHARD_SIZE, dtype, force: false })?,
            }
            optimizer.save_state(&dir.join("optimizer.safetensors"))?;
            let path = dir.join("trainer_state.json");
            std::fs::write(&path, serde_json::to_string_pretty(state).expect("state serialises")).map_err(|e| forge_train::TrainError::Io { path: path.clone(), source: e })
        })?;
        checkpoints.prune(config.run.keep_last)?;
        Ok(())
    };

    // ---- train
    let scheduler = GroupScheduler { config, instances: &instances };
    let trainer = Trainer { model: &model, engine: &engine, config, schedule: &schedule };
    let mut buffer = GroupBuffer::new(config.rollout.group_size);
    let mut finished: VecDeque<FinishedGroup> = VecDeque::new();
    let mut groups_in_flight = 0usize;
    let (mut first_reward, mut last_reward) = (f64::NAN, f64::NAN);
    let mut interval_start = Instant::now();
    let mut engine_busy_at_start = engine.busy_seconds();
    while state.step < config.train.steps {
        if groups_in_flight == 0 || config.rollout.mode == RolloutMode::Queue {
            scheduler.refill(&workers, &mut state.next_group, &mut groups_in_flight);
        }
        // 1. wait for the step's groups
        let waiting = Instant::now();
        let mut arrived: Vec<Rollout> = Vec::new();
        while finished.len() < config.rollout.groups_per_step {
            let rollout = workers.next().await.ok_or_else(|| RlError::Config("the rollout workers stopped".into()))?;
            arrived.push(rollout.clone());
            if let Some(group) = buffer.add(rollout) {
                finished.push_back(group);
            }
        }
        let idle_seconds = waiting.elapsed().as_secs_f64();
        let groups: Vec<FinishedGroup> = finished.drain(..config.rollout.groups_per_step).collect();
        groups_in_flight -= groups.len();
        if config.rollout.mode == RolloutMode::Queue {
            // the next groups generate while this step trains
            scheduler.refill(&workers, &mut state.next_group, &mut groups_in_flight);
        }

        // 2. update
        let version = policy_version.load(Ordering::Acquire);
        let (samples, counts) =
            select_samples(&groups, version, config.rollout.max_policy_lag, config.objective.advantage_norm, config.objective.advantage_eps);
        let training = Instant::now();
        let update = if samples.is_empty() {
            None
        } else {
            let reference = tokio::task::block_in_place(|| reference_logprobs(&model, reference.as_ref(), &engine, &samples, needs_reference))?;
            let batch = to_samples(&samples, reference);
            let parts = tokio::task::block_in_place(|| trainer.update(&mut optimizer, batch, config.train.seed ^ state.step, &mut state.optimizer_updates))?;
            state.updates += 1;
            policy_version.store(state.updates, Ordering::Release);
            Some(StepUpdate { parts, lag: lag_stats(&samples, version) })
        };
        let training_seconds = training.elapsed().as_secs_f64();
        state.step += 1;
        state.trajectories += groups.iter().map(|g| g.rollouts.len() as u64).sum::<u64>();

        // 3. metrics
        let wall = interval_start.elapsed().as_secs_f64();
        let busy = engine.busy_seconds();
        let timing = Timing { wall, idle_seconds, training_seconds, engine_busy: busy - engine_busy_at_start, arrived: arrived.len() };
        (interval_start, engine_busy_at_start) = (Instant::now(), busy);
        let lr = update.as_ref().map_or_else(|| schedule.lr(state.optimizer_updates), |u| u.parts[0].lr);
        let scalars = step_scalars(&groups, &counts, update.as_ref(), lr, &timing);
        let reward = scalars.iter().find(|(k, _)| *k == "reward_mean").map_or(f64::NAN, |(_, v)| *v);
        if first_reward.is_nan() {
            first_reward = reward;
        }
        last_reward = reward;
        log.log(state.step, &scalars)?;
        records.write(state.step, &groups, &arrived)?;
        progress.set_message(format!("reward {reward:.3}  groups used {}/{}", counts.used, counts.groups));
        progress.inc(1);
        if state.step % config.run.checkpoint_every == 0 || state.step == config.train.steps {
            save(&state, &optimizer)?;
        }
        if options.stop_after == Some(state.step) && state.step < config.train.steps {
            progress.abandon();
            workers.shutdown().await;
            engine.shutdown();
            return Ok(RlSummary { run_dir, steps: state.step, updates: state.optimizer_updates, trajectories: state.trajectories, first_reward, last_reward, model_dir: PathBuf::new() });
        }
    }
    progress.finish();
    workers.shutdown().await;
    engine.shutdown();

    // ---- save (LoRA: merged into the base, as users load it in transformers)
    let final_params = match model.lora() {
        Some((lora, adapters)) => merge(model.params(), adapters, lora)?,
        None => model.params().clone(),
    };
    let out = run_dir.join("model");
    save_model_dir(&final_params, &model_config, Some(&model_dir), &out, &ExportOptions { shard_size: DEFAULT_SHARD_SIZE, dtype, force: true })?;
    log.plot("reward_mean")?;
    Ok(RlSummary { run_dir, steps: state.step, updates: state.optimizer_updates, trajectories: state.trajectories, first_reward, last_reward, model_dir: out })
}

/// Which instance each group samples, and how far ahead groups are issued.
struct GroupScheduler<'a> {
    config: &'a RlConfig,
    instances: &'a [Arc<TaskInstance>],
}

impl GroupScheduler<'_> {
    /// Issues groups until `groups_per_step × (1 + max_policy_lag)` are in flight (queue) or
    /// one step's worth (barrier).
    fn refill(&self, workers: &RolloutWorkers, next_group: &mut u64, in_flight: &mut usize) {
        let r = &self.config.rollout;
        let ahead = match r.mode {
            RolloutMode::Queue => r.groups_per_step * (1 + r.max_policy_lag as usize),
            RolloutMode::Barrier => r.groups_per_step,
        };
        while *in_flight < ahead {
            let instance = self.instance_of(*next_group);
            for sample in 0..r.group_size {
                workers.submit(RolloutJob { group: *next_group, sample, instance: instance.clone(), seed: self.sample_seed(*next_group, sample) });
            }
            *next_group += 1;
            *in_flight += 1;
        }
    }

    /// Group g samples instance `order_e[g mod n]`, with a fresh shuffle for every pass e.
    fn instance_of(&self, group: u64) -> Arc<TaskInstance> {
        let n = self.instances.len() as u64;
        let mut order: Vec<usize> = (0..self.instances.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(self.config.train.seed ^ (group / n).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        self.instances[order[(group % n) as usize]].clone()
    }

    /// Distinct for every (group, sample), with room for the per-turn offsets of the episode.
    fn sample_seed(&self, group: u64, sample: usize) -> u64 {
        self.config.train.seed.wrapping_mul(1_000_003).wrapping_add(group * 1_000_000 + sample as u64 * 1_000)
    }
}

/// Per sample, the frozen reference's log-prob of every token (0 for the first), when the
/// objective has a KL term.
fn reference_logprobs(
    model: &Qwen3ForCausalLM,
    frozen: Option<&Qwen3ForCausalLM>,
    engine: &EngineHandle,
    samples: &[TrainSample],
    needed: bool,
) -> Result<Option<Vec<Vec<f32>>>> {
    if !needed {
        return Ok(None);
    }
    let score = |reference: &Qwen3ForCausalLM| -> Result<Vec<Vec<f32>>> {
        samples
            .iter()
            .map(|s| {
                let ids = &s.rollout.trajectory.tokens.input_ids;
                let input = Tensor::new(ids.as_slice(), reference.device())?.unsqueeze(0)?;
                let row = reference.token_logprobs(&input, &[ids.len()])?.remove(0);
                Ok([vec![0.0], row].concat())
            })
            .collect()
    };
    match frozen {
        Some(reference) => score(reference).map(Some),
        None => {
            // LoRA: the adapters switched off give the base model; the engine must not decode
            // meanwhile, or it would sample from the base too
            let _paused = engine.pause();
            model.set_adapters_enabled(false);
            let scored = score(model);
            model.set_adapters_enabled(true);
            scored.map(Some)
        }
    }
}

fn to_samples(chosen: &[TrainSample], reference: Option<Vec<Vec<f32>>>) -> Vec<Sample> {
    let mut reference = reference.map(|r| r.into_iter());
    chosen
        .iter()
        .map(|s| {
            let tokens = &s.rollout.trajectory.tokens;
            Sample {
                input_ids: tokens.input_ids.clone(),
                loss_mask: tokens.loss_mask.clone(),
                sampling_logprobs: tokens.logprobs.clone(),
                reference_logprobs: reference.as_mut().and_then(Iterator::next),
                advantage: s.advantage,
            }
        })
        .collect()
}

/// The update's gradient over micro-batches of at most `micro_batch_tokens` padded tokens,
/// aggregated as if the whole batch were one (token-mean over all its assistant tokens).
fn policy_gradients(model: &Qwen3ForCausalLM, samples: &[Sample], objective: &ObjectiveConfig, micro_batch_tokens: usize, recompute: bool) -> Result<(UpdateStats, Gradients)> {
    let mut micro_batches: Vec<Vec<Sample>> = Vec::new();
    let mut current: Vec<Sample> = Vec::new();
    for sample in samples {
        let longest = current.iter().map(|s| s.input_ids.len()).max().unwrap_or(0).max(sample.input_ids.len());
        if !current.is_empty() && (current.len() + 1) * longest > micro_batch_tokens {
            micro_batches.push(std::mem::take(&mut current));
        }
        current.push(sample.clone());
    }
    micro_batches.push(current);
    let trained: usize = samples.iter().map(|s| s.loss_mask.iter().filter(|&&m| m != 0).count()).sum();
    // the accumulator averages over micro-batches: a per-micro-batch normaliser of
    // (whole-batch normaliser / micro-batches) makes that average the whole batch's loss
    let whole = match objective.aggregation {
        Aggregation::TokenMean => trained as f64,
        Aggregation::TokenSumOverConstant { constant } => constant,
    };
    let per_micro = ObjectiveConfig { aggregation: Aggregation::TokenSumOverConstant { constant: whole / micro_batches.len() as f64 }, ..objective.clone() };
    let mut accumulator = GradAccumulator::new();
    let mut parts = Vec::with_capacity(micro_batches.len());
    for batch in &micro_batches {
        let (stats, grads) = policy_gradient(model, batch, &per_micro, recompute)?;
        accumulator.add(grads)?;
        parts.push(stats);
    }
    Ok((UpdateStats::combine(&parts), accumulator.finish()?))
}

/// What a step's update needs besides the optimizer.
struct Trainer<'a> {
    model: &'a Qwen3ForCausalLM,
    engine: &'a EngineHandle,
    config: &'a RlConfig,
    schedule: &'a LrSchedule,
}

impl Trainer<'_> {
    /// The step's `train.updates_per_step` AdamW updates, one per mini-batch of `batch`; the
    /// engine is paused only while the weights change. `optimizer_updates` is the schedule's
    /// clock. Blocking: run it off the async workers.
    fn update(&self, optimizer: &mut AdamW, batch: Vec<Sample>, seed: u64, optimizer_updates: &mut u64) -> Result<Vec<MiniBatchUpdate>> {
        let train = &self.config.train;
        let mut parts = Vec::new();
        for mini_batch in mini_batches(batch, train.updates_per_step, seed) {
            let (stats, grads) = policy_gradients(self.model, &mini_batch, &self.config.objective, train.micro_batch_tokens, train.recompute)?;
            let lr = self.schedule.lr(*optimizer_updates);
            optimizer.set_lr(lr);
            let step_stats = {
                let _paused = self.engine.pause();
                optimizer.step(&grads)?
            };
            *optimizer_updates += 1;
            parts.push(MiniBatchUpdate { stats, grad_norm: step_stats.grad_norm, lr });
        }
        Ok(parts)
    }
}

/// One AdamW update of a step.
struct MiniBatchUpdate {
    stats: UpdateStats,
    grad_norm: f32,
    lr: f64,
}

/// A step's updates, and the mean and largest policy lag of the samples they trained on.
struct StepUpdate {
    parts: Vec<MiniBatchUpdate>,
    lag: (f64, f64),
}

/// The step's samples in `count` mini-batches of near-equal size (fewer when there are fewer
/// samples), shuffled by `seed` so that a mini-batch mixes groups.
fn mini_batches(mut samples: Vec<Sample>, count: usize, seed: u64) -> Vec<Vec<Sample>> {
    if count <= 1 {
        return vec![samples];
    }
    samples.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let count = count.min(samples.len());
    let (base, larger) = (samples.len() / count, samples.len() % count);
    let mut rest = samples.into_iter();
    (0..count).map(|i| rest.by_ref().take(base + usize::from(i < larger)).collect()).collect()
}

/// Mean and largest policy lag (steps' updates between sampling and training) of the trained samples.
fn lag_stats(samples: &[TrainSample], version: u64) -> (f64, f64) {
    let lags: Vec<u64> = samples.iter().map(|s| version.saturating_sub(s.rollout.policy_version)).collect();
    (lags.iter().sum::<u64>() as f64 / lags.len().max(1) as f64, lags.iter().copied().max().unwrap_or(0) as f64)
}

struct Timing {
    /// Seconds since the previous step ended.
    wall: f64,
    /// Of which the trainer waited for groups.
    idle_seconds: f64,
    training_seconds: f64,
    /// Of which the engine was decoding.
    engine_busy: f64,
    /// Rollouts that finished in the interval.
    arrived: usize,
}

/// The step's scalars for metrics.jsonl and TensorBoard.
fn step_scalars(groups: &[FinishedGroup], counts: &GroupCounts, update: Option<&StepUpdate>, lr: f64, timing: &Timing) -> Vec<(&'static str, f64)> {
    let rollouts: Vec<&Rollout> = groups.iter().flat_map(|g| &g.rollouts).collect();
    let outcomes: Vec<&Rollout> = rollouts.iter().copied().filter(|r| r.trajectory.status.is_model_outcome()).collect();
    let scores: Vec<f64> = rollouts.iter().filter_map(|r| r.score()).map(f64::from).collect();
    let mean = |values: &mut dyn Iterator<Item = f64>, n: usize| values.sum::<f64>() / n.max(1) as f64;
    let share = |status: Status| outcomes.iter().filter(|r| r.trajectory.status == status).count() as f64 / outcomes.len().max(1) as f64;
    let generated = |r: &&Rollout| r.trajectory.tokens.loss_mask.iter().filter(|&&m| m != 0).count() as f64;
    let behaviour_nll = {
        let (sum, n) = outcomes.iter().flat_map(|r| r.trajectory.tokens.loss_mask.iter().zip(&r.trajectory.tokens.logprobs)).filter(|(m, _)| **m != 0).fold((0.0, 0usize), |(s, n), (_, lp)| (s - f64::from(*lp), n + 1));
        sum / n.max(1) as f64
    };
    let solved_tasks = groups.iter().filter(|g| g.rollouts.iter().any(|r| r.score() == Some(1.0))).count();
    let mut scalars = vec![
        ("reward_mean", mean(&mut scores.iter().copied(), scores.len())),
        ("solved_task_fraction", solved_tasks as f64 / groups.len().max(1) as f64),
        ("finish_ratio", share(Status::Finished)),
        ("stuck_ratio", share(Status::TurnLimit)),
        ("context_exhausted_ratio", share(Status::ContextExhausted)),
        ("mean_turns", mean(&mut outcomes.iter().map(|r| r.trajectory.turns.len() as f64), outcomes.len())),
        ("mean_generated_tokens", mean(&mut outcomes.iter().map(generated), outcomes.len())),
        ("mean_trajectory_tokens", mean(&mut outcomes.iter().map(|r| r.trajectory.tokens.len() as f64), outcomes.len())),
        ("entropy_estimate", behaviour_nll),
        ("groups", counts.groups as f64),
        ("groups_used", counts.used as f64),
        ("groups_skipped_zero_variance", counts.skipped_zero_variance as f64),
        ("groups_skipped_too_few", counts.skipped_too_few as f64),
        ("infrastructure_failures", counts.infrastructure_failures as f64),
        ("stale_samples", counts.stale_samples as f64),
        ("lr", lr),
        ("generation_s", rollouts.iter().map(|r| r.trajectory.generation_seconds).sum()),
        ("tools_s", rollouts.iter().map(|r| r.trajectory.tool_seconds).sum()),
        ("grading_s", rollouts.iter().map(|r| r.grading_seconds).sum()),
        ("training_s", timing.training_seconds),
        ("idle_s", timing.idle_seconds),
        ("step_s", timing.wall),
        ("engine_idle_fraction", (1.0 - timing.engine_busy / timing.wall.max(1e-9)).clamp(0.0, 1.0)),
        ("trajectories_per_min", timing.arrived as f64 * 60.0 / timing.wall.max(1e-9)),
        ("updated", f64::from(u8::from(update.is_some()))),
    ];
    if let Some(update) = update {
        let stats = UpdateStats::combine(&update.parts.iter().map(|p| p.stats.clone()).collect::<Vec<_>>());
        let grad_norm = update.parts.iter().map(|p| f64::from(p.grad_norm)).sum::<f64>() / update.parts.len() as f64;
        let (lag_mean, lag_max) = update.lag;
        scalars.extend([
            ("optimizer_updates", update.parts.len() as f64),
            ("loss", f64::from(stats.loss)),
            ("kl", f64::from(stats.kl)),
            ("clip_fraction", f64::from(stats.clip_fraction)),
            ("ratio_mean", f64::from(stats.ratio_mean)),
            ("trained_tokens", stats.trained_tokens as f64),
            ("grad_norm", grad_norm),
            ("policy_lag_mean", lag_mean),
            ("policy_lag_max", lag_max),
        ]);
    }
    scalars
}

/// `rollouts.jsonl` (every finished rollout, under the step during which it arrived) and
/// `solve_rates.jsonl` (per step: each task's solve rate among its group's scored samples).
struct Records {
    rollouts: std::fs::File,
    solve_rates: std::fs::File,
    dir: PathBuf,
}

impl Records {
    fn open(dir: &std::path::Path, resume_step: Option<u64>) -> Result<Self> {
        let open = |name: &str| -> Result<std::fs::File> {
            let path = dir.join(name);
            match resume_step {
                Some(step) if path.exists() => truncate_after(&path, step)?,
                None if path.exists() => std::fs::remove_file(&path).map_err(|e| RlError::io(&path, e))?,
                _ => {}
            }
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| RlError::io(&path, e))
        };
        Ok(Self { rollouts: open("rollouts.jsonl")?, solve_rates: open("solve_rates.jsonl")?, dir: dir.to_path_buf() })
    }

    fn write(&mut self, step: u64, groups: &[FinishedGroup], arrived: &[Rollout]) -> Result<()> {
        let mut text = String::new();
        for r in arrived {
            let record = json!({
                "step": step,
                "group": r.group,
                "sample": r.sample,
                "instance_id": r.instance_id,
                "reward": r.score(),
                "infrastructure_failure": match &r.reward { crate::Reward::InfrastructureFailure(why) => Some(why.as_str()), _ => None },
                "status": r.trajectory.status,
                "turns": r.trajectory.turns.len(),
                "tokens": r.trajectory.tokens.len(),
                "policy_version": r.policy_version,
                "wall_s": r.wall_seconds,
            });
            text.push_str(&record.to_string());
            text.push('\n');
        }
        let path = self.dir.join("rollouts.jsonl");
        self.rollouts.write_all(text.as_bytes()).map_err(|e| RlError::io(&path, e))?;
        let rates: BTreeMap<&str, f64> = groups
            .iter()
            .map(|g| {
                let scores: Vec<f32> = g.rollouts.iter().filter_map(Rollout::score).collect();
                (g.instance_id.as_str(), scores.iter().map(|&s| f64::from(s)).sum::<f64>() / scores.len().max(1) as f64)
            })
            .collect();
        let path = self.dir.join("solve_rates.jsonl");
        writeln!(self.solve_rates, "{}", json!({"step": step, "tasks": rates})).map_err(|e| RlError::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use forge_agent::Trajectory;
    use forge_model::{Config, LoraConfig, ParamStore};

    use super::*;
    use crate::groups::Reward;

    fn tiny_config() -> Config {
        serde_json::from_value(json!({
            "model_type": "qwen3", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 64,
            "tie_word_embeddings": false
        }))
        .unwrap()
    }

    fn tiny_model() -> Qwen3ForCausalLM {
        let config = tiny_config();
        let params = ParamStore::random(&config, 0.2, 7, candle_core::DType::F32, &Device::Cpu).unwrap();
        Qwen3ForCausalLM::new(config, params).unwrap()
    }

    fn sample(model: &Qwen3ForCausalLM, ids: Vec<u32>, mask: Vec<u8>, advantage: f32) -> Sample {
        let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let current = [vec![0.0], model.token_logprobs(&input, &[ids.len()]).unwrap().remove(0)].concat();
        // a little off-policy, so that ratios differ from 1 and some clip
        let sampling_logprobs = current.iter().enumerate().map(|(i, lp)| lp + 0.3 * ((i % 3) as f32 - 1.0)).collect();
        Sample { input_ids: ids, loss_mask: mask, sampling_logprobs, reference_logprobs: Some(current), advantage }
    }

    fn max_relative_difference(a: &Gradients, b: &Gradients) -> f32 {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        a.iter()
            .map(|(name, ga)| {
                let diff = (ga - &b[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                diff / b[name].abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6)
            })
            .fold(0.0, f32::max)
    }

    /// Splitting the update into micro-batches changes nothing: the loss is the token mean over
    /// the whole batch either way (and likewise for a constant normaliser).
    #[test]
    fn micro_batches_give_the_whole_batch_gradient() {
        let model = tiny_model();
        let samples = vec![
            sample(&model, vec![3, 9, 17, 4, 22, 41, 8, 13, 2, 60], vec![0, 0, 0, 1, 1, 0, 0, 1, 1, 1], 1.2),
            sample(&model, vec![5, 6, 7, 8, 9], vec![0, 1, 1, 0, 1], -0.4),
            sample(&model, vec![12, 30, 31, 40, 50, 51, 52], vec![0, 0, 1, 1, 1, 1, 1], -0.8),
        ];
        for aggregation in [Aggregation::TokenMean, Aggregation::TokenSumOverConstant { constant: 40.0 }] {
            let objective = ObjectiveConfig { aggregation, ..ObjectiveConfig::default() };
            let (whole_stats, whole) = policy_gradients(&model, &samples, &objective, 1 << 20, false).unwrap();
            // 10 tokens per micro-batch: one trajectory each
            let (split_stats, split) = policy_gradients(&model, &samples, &objective, 10, false).unwrap();
            assert!(max_relative_difference(&split, &whole) < 1e-5, "{aggregation:?}: {}", max_relative_difference(&split, &whole));
            assert!((split_stats.loss - whole_stats.loss).abs() < 1e-5, "{split_stats:?} vs {whole_stats:?}");
            assert_eq!(split_stats.trained_tokens, 13);
            assert!((split_stats.clip_fraction - whole_stats.clip_fraction).abs() < 1e-6);
            assert!((split_stats.kl - whole_stats.kl).abs() < 1e-6);
        }
    }

    #[test]
    fn mini_batches_split_the_samples_evenly_and_keep_every_one_once() {
        let model = tiny_model();
        let samples: Vec<Sample> = (0..10u32).map(|i| sample(&model, vec![1, 2 + i, 3], vec![0, 1, 1], i as f32)).collect();
        let tag = |batch: &[Sample]| batch.iter().map(|s| s.advantage as u32).collect::<Vec<_>>();
        assert_eq!(mini_batches(samples.clone(), 1, 5).iter().map(|b| tag(b)).collect::<Vec<_>>(), [(0..10).collect::<Vec<_>>()], "one update: the batch as it is");
        let split = mini_batches(samples.clone(), 4, 5);
        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 2, 2]);
        let mut all: Vec<u32> = split.iter().flat_map(|b| tag(b)).collect();
        assert_ne!(all, (0..10).collect::<Vec<_>>(), "shuffled, so that a mini-batch mixes groups");
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(mini_batches(samples, 20, 5).len(), 10, "never an empty mini-batch");
    }

    /// `train.updates_per_step = 2`: two AdamW updates on disjoint halves of the batch; the first
    /// trains on-policy (ratio exactly 1), the second on weights the first has already moved.
    #[test]
    fn a_step_applies_one_update_per_mini_batch_and_later_ones_are_off_policy() {
        let model = Arc::new(tiny_model());
        let on_policy = |s: Sample| Sample { sampling_logprobs: s.reference_logprobs.clone().unwrap(), ..s };
        let batch: Vec<Sample> = (0..6u32)
            .map(|i| on_policy(sample(&model, vec![3, 9 + i, 17, 4 + i, 22, 41], vec![0, 0, 1, 1, 1, 1], if i % 2 == 0 { 1.0 } else { -1.0 })))
            .collect();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny/rl.toml");
        let (config, _) = forge_train::config::load_config::<RlConfig>(&path, &["train.updates_per_step=2".into(), "optim.lr=1e-2".into()]).unwrap();
        let schedule = config.optim.schedule(config.optimizer_updates()).unwrap();
        let engine = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 1, ..Default::default() }).unwrap();
        let mut optimizer = AdamW::for_params(model.trainable(), config.optim.adamw()).unwrap();
        let trainer = Trainer { model: &model, engine: &engine, config: &config, schedule: &schedule };
        let mut clock = 7;
        let parts = trainer.update(&mut optimizer, batch, 0, &mut clock).unwrap();
        engine.shutdown();
        assert_eq!(clock, 9, "two AdamW updates");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.iter().map(|p| p.stats.trained_tokens).sum::<usize>(), 6 * 4, "every assistant token once");
        assert!((parts[0].stats.ratio_mean - 1.0).abs() < 1e-6 && parts[0].stats.clip_fraction == 0.0, "{:?}", parts[0].stats);
        assert!((parts[1].stats.ratio_mean - 1.0).abs() > 1e-4, "the second update sees the first one's weights: {:?}", parts[1].stats);
        assert!(parts.iter().all(|p| p.grad_norm > 0.0 && p.lr == 1e-2), "{:?}", parts.iter().map(|p| (p.grad_norm, p.lr)).collect::<Vec<_>>());
    }

    /// With LoRA the reference is the model with its adapters off: equal to the base model's
    /// log-probs, different from the adapted model's, and the adapters are back on afterwards.
    #[test]
    fn the_lora_reference_is_the_base_model_and_the_adapters_come_back() {
        let config = tiny_config();
        let base = || ParamStore::random(&config, 0.2, 7, candle_core::DType::F32, &Device::Cpu).unwrap();
        let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, target_modules: vec!["q_proj".into(), "down_proj".into()], seed: 1 };
        let adapters = init_adapters(&config, &lora, candle_core::DType::F32, &Device::Cpu).unwrap();
        // B starts at zero; give it values so that the adapted model differs from the base
        for (_, var) in adapters.iter() {
            var.set(&(var.as_tensor().ones_like().unwrap() * 0.05).unwrap()).unwrap();
        }
        let adapted = Arc::new(Qwen3ForCausalLM::with_lora(config.clone(), base(), lora, adapters).unwrap());
        let plain = Qwen3ForCausalLM::new(config.clone(), base()).unwrap();
        let engine = EngineHandle::start(adapted.clone(), EngineConfig { max_batch_size: 1, ..Default::default() }).unwrap();
        let ids = vec![1u32, 5, 9, 2, 33, 7];
        let mut trajectory = Trajectory::start("t", Vec::new(), Vec::new());
        trajectory.tokens.input_ids = ids.clone();
        let rollout = Rollout { group: 0, sample: 0, instance_id: "t".into(), policy_version: 0, trajectory, reward: Reward::Scored(1.0), grading_seconds: 0.0, wall_seconds: 0.0 };
        let chosen = [TrainSample { rollout: &rollout, advantage: 1.0 }];
        let logprobs = |m: &Qwen3ForCausalLM| [vec![0.0], m.token_logprobs(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(), &[ids.len()]).unwrap().remove(0)].concat();
        let before = logprobs(&adapted);
        let reference = reference_logprobs(&adapted, None, &engine, &chosen, true).unwrap().unwrap().remove(0);
        let base_logprobs = logprobs(&plain);
        assert!(reference.iter().zip(&base_logprobs).all(|(a, b)| (a - b).abs() < 1e-6), "{reference:?} vs {base_logprobs:?}");
        assert!(before.iter().zip(&base_logprobs).any(|(a, b)| (a - b).abs() > 1e-3), "the adapters must change the model for this test to mean anything");
        assert_eq!(logprobs(&adapted), before, "adapters are back on");
        assert!(reference_logprobs(&adapted, None, &engine, &chosen, false).unwrap().is_none());
        engine.shutdown();
    }
}
