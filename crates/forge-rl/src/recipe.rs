//! The RL recipe, top to bottom: setup → train (rollouts → groups → update) → save.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use forge_agent::{ChatFormat, TokenRecord, Trajectory};
use forge_engine::{EngineConfig, EngineHandle};
use forge_model::export::{save_model_dir, ExportOptions, DEFAULT_SHARD_SIZE};
use forge_model::lora::{init_adapters, load_adapters, merge, save_adapters};
use forge_model::{Gradients, Qwen3ForCausalLM};
use forge_sandbox::Runtime;
use forge_swe::{ensure_bundled_images, load_instances, select_instances, ExecOptions, TaskInstance};
use forge_train::rl::{policy_gradient, Aggregation, ObjectiveConfig, Sample, UpdateStats};
use forge_train::run_log::RunLog;
use forge_train::{AdamW, Checkpoints, GradAccumulator, LrSchedule, ProcessGroup, Topology};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{RlConfig, RolloutMode};
use crate::groups::{select_samples, FinishedGroup, GroupBuffer, Rollout, TrainSample};
use crate::report::{step_scalars, EngineWork, MiniBatchUpdate, Records, StepReport, Timing};
use crate::rollout::{RolloutEnv, RolloutJob, RolloutWorkers};
use crate::{Result, RlError};

#[derive(Debug, Clone, Default)]
pub struct RlOptions {
    /// Continue the run in `run.dir` from its latest checkpoint.
    pub resume: bool,
    /// Stop after this many steps as if interrupted (no final save): for resume tests.
    pub stop_after: Option<u64>,
    /// Extra labels on every container (agent and grading).
    pub labels: BTreeMap<String, String>,
    /// This worker's place in a data-parallel run (`None`: the only worker).
    pub distributed: Option<Topology>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RlSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    /// AdamW updates applied.
    pub updates: u64,
    pub trajectories: u64,
    /// Mean reward of the first and the last step of this invocation (rank 0; NaN on the others).
    pub first_reward: f64,
    pub last_reward: f64,
    /// `run_dir/model` (HF layout) after the last step; empty when stopped early.
    pub model_dir: PathBuf,
}

/// What a checkpoint records besides weights and optimizer state. Groups in flight when a run
/// stops are not replayed: a resumed run issues groups from `next_group` on.
///
/// With W workers, worker r issues global groups r, r + W, r + 2W, ...: `next_group` counts the
/// groups each worker has issued (the same on all), so the run's k-th group is the one a single
/// worker would issue k-th.
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
    /// Data-parallel workers of the run (a step trains `rollout.groups_per_step` × this groups).
    #[serde(default = "forge_train::distributed::one_worker")]
    workers: usize,
}

/// Runs the recipe. Needs a multi-threaded tokio runtime: updates run on the calling task
/// (`block_in_place`) while rollouts continue on the others.
///
/// Data-parallel (`options.distributed`): every worker rolls out its own groups with its own
/// engine and containers, the workers train on the union of their groups as one batch
/// (gradients and token counts summed across them) and apply the same update; rank 0 writes the
/// run directory.
pub async fn run(config: &RlConfig, resolved_toml: &str, options: &RlOptions) -> Result<RlSummary> {
    // ---- setup
    config.validate()?;
    let device = forge_train::distributed::worker_device(options.distributed.as_ref(), config.model.device)?.open()?;
    let group = tokio::task::block_in_place(|| ProcessGroup::for_topology(options.distributed.as_ref(), &device))?;
    let (main, world) = (group.is_main(), group.world_size());
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
    let workers_on_host = options.distributed.as_ref().map_or(1, |t| t.local_world_size);
    forge_train::memory::report_and_check(&config.memory_estimate(&model_config, &device)?, &device, workers_on_host, config.train.check_memory, &remedies)?;
    // held for the whole run: a second run (or --resume) on this directory refuses
    let _lock = match main {
        true => Some(forge_train::run_lock::RunLock::acquire(&run_dir).map_err(|e| RlError::Config(e.to_string()))?),
        false => None,
    };
    if main {
        std::fs::write(run_dir.join("config.toml"), resolved_toml).map_err(|e| RlError::io(&run_dir, e))?;
    }

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
    let mut state = TrainerState { workers: world, ..TrainerState::default() };
    if let Some((step, dir)) = &resume_from {
        optimizer.load_state(&dir.join("optimizer.safetensors"))?;
        let path = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| RlError::io(&path, e))?;
        state = serde_json::from_str(&text).map_err(|e| RlError::Config(format!("{}: {e}", path.display())))?;
        forge_train::distributed::check_resume_workers(*step, state.workers, world)?;
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
    // one worker per machine builds missing task images while the others wait
    if options.distributed.as_ref().is_none_or(|t| t.local_rank == 0) {
        ensure_bundled_images(&runtime, &config.data.train, &owned).await;
    }
    tokio::task::block_in_place(|| group.barrier())?;

    let mut agent = config.agent.clone();
    // the model cannot attend beyond its positions, whatever budget was asked for
    agent.max_context_tokens = agent.max_context_tokens.min(model_config.max_context());
    let engine = Arc::new(EngineHandle::start(model.clone(), EngineConfig { max_batch_size: config.rollout.workers, prefix_caching: config.rollout.prefix_caching, ..Default::default() })?);
    let policy_version = Arc::new(AtomicU64::new(state.updates));
    // v5 semantics for rewards: a non-zero test exit code without any failure in the log, or a
    // log without any test result, is no pass (the 4.1.0 semantics of `forge eval` would read
    // whatever PASSED lines the code under test printed).
    let grading = ExecOptions {
        pull: config.rollout.pull,
        timeout: std::time::Duration::from_secs(config.rollout.test_timeout_s),
        version: forge_swe::GradingVersion::V5,
        container: agent.container(),
        ..ExecOptions::default()
    };
    let env = Arc::new(RolloutEnv { runtime, policy: engine.clone(), chat, agent, grading, labels: options.labels.clone(), policy_version: policy_version.clone() });
    let mut workers = RolloutWorkers::start(env, config.rollout.workers);

    let resume_step = resume_from.as_ref().map(|(s, _)| *s);
    // rank 0 writes the run's records
    let mut log = main.then(|| RunLog::open(&run_dir, resume_step)).transpose()?;
    let mut records = main.then(|| Records::open(&run_dir, resume_step)).transpose()?;
    let progress = match main {
        true => indicatif::ProgressBar::new(config.train.steps),
        false => indicatif::ProgressBar::hidden(),
    }
    .with_position(state.step);
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
    let scheduler = GroupScheduler { config, instances: &instances, rank: group.rank(), workers: world };
    let trainer = Trainer { model: &model, engine: &engine, config, schedule: &schedule, group: &group };
    let mut buffer = GroupBuffer::new(config.rollout.group_size);
    let mut finished: VecDeque<FinishedGroup> = VecDeque::new();
    let mut groups_in_flight = 0usize;
    let (mut first_reward, mut last_reward) = (f64::NAN, f64::NAN);
    let mut interval_start = Instant::now();
    let mut engine_at_start = EngineWork::total(&engine);
    while state.step < config.train.steps {
        if groups_in_flight == 0 || config.rollout.mode == RolloutMode::Queue {
            scheduler.refill(&workers, &mut state.next_group, &mut groups_in_flight);
        }
        // 1. wait for the step's groups (this worker's share)
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

        // 2. update, on every worker's samples (none anywhere: no update anywhere)
        let version = policy_version.load(Ordering::Acquire);
        let (samples, counts) =
            select_samples(&groups, version, config.rollout.max_policy_lag, config.objective.advantage_norm, config.objective.advantage_eps);
        let training = Instant::now();
        let mut totals = [samples.len() as f64, groups.iter().map(|g| g.rollouts.len()).sum::<usize>() as f64];
        tokio::task::block_in_place(|| group.all_reduce_f64(&mut totals))?;
        let [samples_everywhere, trajectories] = totals.map(|t| t as usize);
        let update = if samples_everywhere == 0 {
            None
        } else {
            let reference = tokio::task::block_in_place(|| reference_logprobs(&model, reference.as_ref(), &engine, &samples, needs_reference))?;
            let batch = to_samples(&samples, reference);
            let parts = tokio::task::block_in_place(|| trainer.update(&mut optimizer, batch, samples_everywhere, config.train.seed ^ state.step, &mut state.optimizer_updates))?;
            state.updates += 1;
            policy_version.store(state.updates, Ordering::Release);
            Some(parts)
        };
        let training_seconds = training.elapsed().as_secs_f64();
        state.step += 1;
        state.trajectories += trajectories as u64;

        // 3. metrics: rank 0 gathers every worker's report and writes the step's records
        let engine_now = EngineWork::total(&engine);
        let report = StepReport::new(&groups, &arrived, counts, &samples, version, engine_now.since(engine_at_start));
        let reports = tokio::task::block_in_place(|| gather_reports(&group, &report))?;
        let timing = Timing { wall: interval_start.elapsed().as_secs_f64(), idle_seconds, training_seconds, engines: world };
        (interval_start, engine_at_start) = (Instant::now(), engine_now);
        if let (Some(report), Some(log), Some(records)) = (reports, log.as_mut(), records.as_mut()) {
            let lr = update.as_ref().map_or_else(|| schedule.lr(state.optimizer_updates), |parts| parts[0].lr);
            let scalars = step_scalars(&report, update.as_deref(), lr, &timing);
            let reward = scalars.iter().find(|(k, _)| *k == "reward_mean").map_or(f64::NAN, |(_, v)| *v);
            if first_reward.is_nan() {
                first_reward = reward;
            }
            last_reward = reward;
            log.log(state.step, &scalars)?;
            records.write(state.step, &report)?;
            progress.set_message(format!("reward {reward:.3}  groups used {}/{}", report.counts.used, report.counts.groups));
        }
        progress.inc(1);
        if main && (state.step.is_multiple_of(config.run.checkpoint_every) || state.step == config.train.steps) {
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

    // ---- save (LoRA: merged into the base, as users load it in transformers); the others
    // return once rank 0 has written it
    let out = run_dir.join("model");
    if main {
        let final_params = match model.lora() {
            Some((lora, adapters)) => merge(model.params(), adapters, lora)?,
            None => model.params().clone(),
        };
        save_model_dir(&final_params, &model_config, Some(&model_dir), &out, &ExportOptions { shard_size: DEFAULT_SHARD_SIZE, dtype, force: true })?;
        if let Some(log) = &log {
            log.plot("reward_mean")?;
        }
    }
    tokio::task::block_in_place(|| group.barrier())?;
    Ok(RlSummary { run_dir, steps: state.step, updates: state.optimizer_updates, trajectories: state.trajectories, first_reward, last_reward, model_dir: out })
}

/// Every worker's report, merged, at rank 0 (`None` on the others).
fn gather_reports(group: &ProcessGroup, report: &StepReport) -> Result<Option<StepReport>> {
    let bytes = serde_json::to_vec(report).expect("a report serialises");
    let Some(all) = group.gather_bytes(bytes)? else { return Ok(None) };
    let reports = all
        .iter()
        .enumerate()
        .map(|(rank, bytes)| serde_json::from_slice(bytes).map_err(|e| RlError::Config(format!("rank {rank} sent an unreadable step report: {e}"))))
        .collect::<Result<Vec<StepReport>>>()?;
    Ok(Some(StepReport::merge(reports)))
}

/// Which instance each group samples, and how far ahead groups are issued.
struct GroupScheduler<'a> {
    config: &'a RlConfig,
    instances: &'a [Arc<TaskInstance>],
    /// This worker's rank among `workers`: it issues every `workers`-th group from `rank` on.
    rank: usize,
    workers: usize,
}

impl GroupScheduler<'_> {
    /// Issues this worker's groups until `groups_per_step × (1 + max_policy_lag)` are in flight
    /// (queue) or one step's worth (barrier); `next_group` counts the groups it has issued.
    fn refill(&self, workers: &RolloutWorkers, next_group: &mut u64, in_flight: &mut usize) {
        let r = &self.config.rollout;
        let ahead = match r.mode {
            RolloutMode::Queue => r.groups_per_step * (1 + r.max_policy_lag as usize),
            RolloutMode::Barrier => r.groups_per_step,
        };
        while *in_flight < ahead {
            let group = *next_group * self.workers as u64 + self.rank as u64;
            let instance = self.instance_of(group);
            for sample in 0..r.group_size {
                workers.submit(RolloutJob { group, sample, instance: instance.clone(), seed: self.sample_seed(group, sample) });
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

/// Per token record of each sample (in [`to_samples`]' order), the frozen reference's log-prob of
/// every token (0 for the first), when the objective has a KL term.
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
            .flat_map(|s| trained_records(&s.rollout.trajectory))
            .map(|record| {
                let ids = &record.input_ids;
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

/// The token records with generated tokens (a record that a rewritten prompt started just before
/// the turn limit holds only its prompt).
fn trained_records(trajectory: &Trajectory) -> impl Iterator<Item = &TokenRecord> {
    trajectory.token_records().filter(|record| record.loss_mask.contains(&1))
}

/// One training sequence per token record: a trajectory whose template rewrote the conversation
/// has several (see `Trajectory::earlier_tokens`), each with the trajectory's advantage and its
/// generated tokens in the context they were sampled in.
fn to_samples(chosen: &[TrainSample], reference: Option<Vec<Vec<f32>>>) -> Vec<Sample> {
    let mut reference = reference.map(|r| r.into_iter());
    chosen
        .iter()
        .flat_map(|s| trained_records(&s.rollout.trajectory).map(move |tokens| (s.advantage, tokens)))
        .map(|(advantage, tokens)| Sample {
            input_ids: tokens.input_ids.clone(),
            loss_mask: tokens.loss_mask.clone(),
            sampling_logprobs: tokens.logprobs.clone(),
            reference_logprobs: reference.as_mut().and_then(Iterator::next),
            advantage,
        })
        .collect()
}

/// The update's gradient over micro-batches of at most `micro_batch_tokens` tokens (padded, or
/// back to back with `packing`),
/// aggregated as if the batch of every worker of `group` were one (token-mean over all their
/// assistant tokens). A worker may have no samples: it contributes nothing but takes part.
fn policy_gradients(
    model: &Qwen3ForCausalLM,
    samples: &[Sample],
    objective: &ObjectiveConfig,
    micro_batch_tokens: usize,
    recompute: bool,
    packing: bool,
    group: &ProcessGroup,
) -> Result<(UpdateStats, Gradients)> {
    let mut micro_batches: Vec<Vec<Sample>> = Vec::new();
    let mut current: Vec<Sample> = Vec::new();
    for sample in samples {
        let tokens = match packing {
            true => current.iter().map(|s| s.input_ids.len()).sum::<usize>() + sample.input_ids.len(),
            false => (current.len() + 1) * current.iter().map(|s| s.input_ids.len()).max().unwrap_or(0).max(sample.input_ids.len()),
        };
        if !current.is_empty() && tokens > micro_batch_tokens {
            micro_batches.push(std::mem::take(&mut current));
        }
        current.push(sample.clone());
    }
    if !current.is_empty() {
        micro_batches.push(current);
    }
    let trained: usize = samples.iter().map(|s| s.loss_mask.iter().filter(|&&m| m != 0).count()).sum();
    let mut totals = [trained as f64, micro_batches.len() as f64];
    group.all_reduce_f64(&mut totals)?;
    let [trained_everywhere, micro_batches_everywhere] = totals;
    if micro_batches_everywhere == 0.0 {
        return Err(RlError::Config("an update without samples on any worker".into()));
    }
    // the accumulator averages over every worker's micro-batches: a per-micro-batch normaliser
    // of (whole-batch normaliser / micro-batches) makes that average the whole batch's loss
    let whole = match objective.aggregation {
        Aggregation::TokenMean => trained_everywhere,
        Aggregation::TokenSumOverConstant { constant } => constant,
    };
    let per_micro = ObjectiveConfig { aggregation: Aggregation::TokenSumOverConstant { constant: whole / micro_batches_everywhere }, ..objective.clone() };
    let mut accumulator = GradAccumulator::new();
    // per micro-batch loss; token-weighted clip fraction, KL and ratio
    let mut sums = [0.0f64; 4];
    for batch in &micro_batches {
        let (stats, grads) = policy_gradient(model, batch, &per_micro, recompute, packing)?;
        accumulator.add(grads)?;
        let tokens = stats.trained_tokens as f64;
        sums[0] += f64::from(stats.loss);
        sums[1] += f64::from(stats.clip_fraction) * tokens;
        sums[2] += f64::from(stats.kl) * tokens;
        sums[3] += f64::from(stats.ratio_mean) * tokens;
    }
    let grads = accumulator.finish_across(group, model.trainable())?;
    group.all_reduce_f64(&mut sums)?;
    let per_token = |sum: f64| (sum / trained_everywhere.max(1.0)) as f32;
    let stats = UpdateStats {
        loss: (sums[0] / micro_batches_everywhere) as f32,
        trained_tokens: trained_everywhere as usize,
        clip_fraction: per_token(sums[1]),
        kl: per_token(sums[2]),
        ratio_mean: per_token(sums[3]),
    };
    Ok((stats, grads))
}

/// What a step's update needs besides the optimizer.
struct Trainer<'a> {
    model: &'a Qwen3ForCausalLM,
    engine: &'a EngineHandle,
    config: &'a RlConfig,
    schedule: &'a LrSchedule,
    group: &'a ProcessGroup,
}

impl Trainer<'_> {
    /// The step's `train.updates_per_step` AdamW updates (fewer when the workers have fewer
    /// samples, `samples_everywhere`, than that), one per mini-batch of `batch`; the engine is
    /// paused only while the weights change. `optimizer_updates` is the schedule's clock.
    /// Blocking: run it off the async workers.
    fn update(&self, optimizer: &mut AdamW, batch: Vec<Sample>, samples_everywhere: usize, seed: u64, optimizer_updates: &mut u64) -> Result<Vec<MiniBatchUpdate>> {
        let train = &self.config.train;
        let mut parts = Vec::new();
        for mini_batch in mini_batches(batch, train.updates_per_step.min(samples_everywhere), seed) {
            let (stats, grads) = policy_gradients(self.model, &mini_batch, &self.config.objective, train.micro_batch_tokens, train.recompute, train.packing, self.group)?;
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

/// The step's samples in `count` mini-batches of near-equal size, shuffled by `seed` so that a
/// mini-batch mixes groups. A worker with fewer samples than `count` gets empty ones (the
/// others' samples fill those updates).
fn mini_batches(mut samples: Vec<Sample>, count: usize, seed: u64) -> Vec<Vec<Sample>> {
    if count <= 1 {
        return vec![samples];
    }
    samples.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let (base, larger) = (samples.len() / count, samples.len() % count);
    let mut rest = samples.into_iter();
    (0..count).map(|i| rest.by_ref().take(base + usize::from(i < larger)).collect()).collect()
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

    /// Three trajectories of different lengths, advantages and generated spans.
    fn three_samples(model: &Qwen3ForCausalLM) -> Vec<Sample> {
        vec![
            sample(model, vec![3, 9, 17, 4, 22, 41, 8, 13, 2, 60], vec![0, 0, 0, 1, 1, 0, 0, 1, 1, 1], 1.2),
            sample(model, vec![5, 6, 7, 8, 9], vec![0, 1, 1, 0, 1], -0.4),
            sample(model, vec![12, 30, 31, 40, 50, 51, 52], vec![0, 0, 1, 1, 1, 1, 1], -0.8),
        ]
    }

    /// Splitting the update into micro-batches, padded or packed, changes nothing: the loss is the
    /// token mean over the whole batch either way (and likewise for a constant normaliser).
    #[test]
    fn micro_batches_give_the_whole_batch_gradient() {
        let model = tiny_model();
        let samples = three_samples(&model);
        let aggregations = [Aggregation::TokenMean, Aggregation::TokenSumOverConstant { constant: 40.0 }];
        for (aggregation, packing) in aggregations.into_iter().flat_map(|a| [(a, false), (a, true)]) {
            let objective = ObjectiveConfig { aggregation, ..ObjectiveConfig::default() };
            // the whole batch padded; 10 tokens per micro-batch: one trajectory each
            let (whole_stats, whole) = policy_gradients(&model, &samples, &objective, 1 << 20, false, false, &ProcessGroup::single()).unwrap();
            let (split_stats, split) = policy_gradients(&model, &samples, &objective, 10, false, packing, &ProcessGroup::single()).unwrap();
            assert!(max_relative_difference(&split, &whole) < 1e-5, "{aggregation:?} packing {packing}: {}", max_relative_difference(&split, &whole));
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
        let sizes: Vec<usize> = mini_batches(samples, 12, 5).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], "a worker with fewer samples than updates takes part in every one");
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
        let group = ProcessGroup::single();
        let trainer = Trainer { model: &model, engine: &engine, config: &config, schedule: &schedule, group: &group };
        let mut clock = 7;
        let parts = trainer.update(&mut optimizer, batch, 6, 0, &mut clock).unwrap();
        engine.shutdown();
        assert_eq!(clock, 9, "two AdamW updates");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.iter().map(|p| p.stats.trained_tokens).sum::<usize>(), 6 * 4, "every assistant token once");
        assert!((parts[0].stats.ratio_mean - 1.0).abs() < 1e-6 && parts[0].stats.clip_fraction == 0.0, "{:?}", parts[0].stats);
        assert!((parts[1].stats.ratio_mean - 1.0).abs() > 1e-4, "the second update sees the first one's weights: {:?}", parts[1].stats);
        assert!(parts.iter().all(|p| p.grad_norm > 0.0 && p.lr == 1e-2), "{:?}", parts.iter().map(|p| (p.grad_norm, p.lr)).collect::<Vec<_>>());
    }

    /// One AdamW update per worker, each on its own `shares[rank]` (threads over loopback; one
    /// share: no process group): every worker's update stats and final weights.
    /// Per worker: (stats and learning rate of each update, final weights).
    type WorkerUpdates = (Vec<(UpdateStats, f32)>, Vec<Vec<f32>>);

    /// A trajectory whose template rewrote the conversation trains one sequence per record that
    /// holds generated tokens, each with the trajectory's advantage and its own reference row.
    #[test]
    fn every_record_with_generated_tokens_is_a_sample() {
        let record = |ids: &[u32], mask: &[u8]| TokenRecord { input_ids: ids.to_vec(), loss_mask: mask.to_vec(), logprobs: mask.iter().map(|&m| -f32::from(m)).collect() };
        let mut trajectory = Trajectory::start("t", Vec::new(), Vec::new());
        trajectory.earlier_tokens = vec![record(&[1, 2, 3], &[0, 1, 1]), record(&[1, 4], &[0, 0]), record(&[1, 5, 6, 7], &[0, 0, 1, 0])];
        trajectory.tokens = record(&[1, 5, 8, 9], &[0, 0, 0, 1]);
        let rollout = Rollout { group: 0, sample: 0, instance_id: "t".into(), policy_version: 0, trajectory, reward: Reward::Scored(1.0), grading_note: None, grading_seconds: 0.0, wall_seconds: 0.0 };
        let chosen = [TrainSample { rollout: &rollout, advantage: 0.5 }];
        let reference: Vec<Vec<f32>> = trained_records(&rollout.trajectory).map(|r| r.input_ids.iter().map(|&t| t as f32).collect()).collect();
        assert_eq!(reference.len(), 3, "the prompt-only record is left out");
        let samples = to_samples(&chosen, Some(reference));
        let ids: Vec<&[u32]> = samples.iter().map(|s| s.input_ids.as_slice()).collect();
        assert_eq!(ids, [&[1, 2, 3][..], &[1, 5, 6, 7], &[1, 5, 8, 9]]);
        for s in &samples {
            assert_eq!(s.advantage, 0.5);
            let expected: Vec<f32> = s.input_ids.iter().map(|&t| t as f32).collect();
            assert_eq!(s.reference_logprobs.as_deref(), Some(&expected[..]), "reference rows stay with their records");
        }
        let trained: usize = samples.iter().map(|s| s.loss_mask.iter().filter(|&&m| m == 1).count()).sum();
        assert_eq!(trained, 4, "every generated token once");
    }

    fn update_as_workers(shares: Vec<Vec<Sample>>, updates_per_step: usize) -> Vec<WorkerUpdates> {
        let world = shares.len();
        let everywhere: usize = shares.iter().map(Vec::len).sum();
        let master = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let threads: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(rank, share)| {
                let master = master.clone();
                std::thread::spawn(move || {
                    let group = match world {
                        1 => ProcessGroup::single(),
                        _ => ProcessGroup::join(&Topology { rank, world_size: world, local_rank: rank, local_world_size: world, master }, &Device::Cpu).unwrap(),
                    };
                    let model = Arc::new(tiny_model());
                    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny/rl.toml");
                    let overrides = [format!("train.updates_per_step={updates_per_step}"), "optim.lr=1e-2".into(), "train.micro_batch_tokens=10".into()];
                    let (config, _) = forge_train::config::load_config::<RlConfig>(&path, &overrides).unwrap();
                    let schedule = config.optim.schedule(config.optimizer_updates()).unwrap();
                    let engine = EngineHandle::start(model.clone(), EngineConfig { max_batch_size: 1, ..Default::default() }).unwrap();
                    let mut optimizer = AdamW::for_params(model.trainable(), config.optim.adamw()).unwrap();
                    let trainer = Trainer { model: &model, engine: &engine, config: &config, schedule: &schedule, group: &group };
                    let parts = trainer.update(&mut optimizer, share, everywhere, 3, &mut 0).unwrap();
                    engine.shutdown();
                    let weights = model.params().iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
                    (parts.into_iter().map(|p| (p.stats, p.grad_norm)).collect(), weights)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    /// Data parallelism changes nothing but who computes: two workers with one sample each, and
    /// two workers of which one has no sample, update to the very weights (bit for bit) and
    /// stats one worker reaches on all the samples.
    #[test]
    fn workers_update_as_one_worker_on_the_union_of_their_samples() {
        let model = tiny_model();
        let samples = three_samples(&model);
        for shares in [vec![samples[..1].to_vec(), samples[1..2].to_vec()], vec![samples.clone(), Vec::new()]] {
            let union: Vec<Sample> = shares.concat();
            let alone = update_as_workers(vec![union], 1).remove(0);
            let workers = update_as_workers(shares.clone(), 1);
            for (rank, (parts, weights)) in workers.iter().enumerate() {
                assert_eq!(parts, &alone.0, "rank {rank} of shares {:?}: stats", shares.iter().map(Vec::len).collect::<Vec<_>>());
                assert!(weights == &alone.1, "rank {rank} of shares {:?}: the weights differ", shares.iter().map(Vec::len).collect::<Vec<_>>());
            }
            assert!(alone.1 != update_as_workers(vec![samples[..1].to_vec()], 1).remove(0).1, "the samples must matter for this test to mean anything");
        }
    }

    /// A worker with fewer samples than the step's mini-batches takes part in every update with
    /// an empty one: the workers apply the same updates and keep the same weights.
    #[test]
    fn workers_with_unequal_shares_apply_the_same_updates() {
        let model = tiny_model();
        let samples: Vec<Sample> = (0..4u32).map(|i| sample(&model, vec![3, 9 + i, 17, 4 + i, 22, 41], vec![0, 0, 1, 1, 1, 1], if i % 2 == 0 { 1.0 } else { -1.0 })).collect();
        let workers = update_as_workers(vec![samples[..3].to_vec(), samples[3..].to_vec()], 2);
        let (parts, weights) = &workers[0];
        assert_eq!(parts.len(), 2, "two updates");
        assert_eq!(parts.iter().map(|(s, _)| s.trained_tokens).sum::<usize>(), 4 * 4, "every assistant token of both workers once");
        assert_eq!(&workers[1].0, parts, "the same updates on both workers");
        assert!(&workers[1].1 == weights, "the replicas' weights diverged");
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
        trajectory.tokens.loss_mask = vec![0, 0, 0, 1, 1, 1];
        let rollout = Rollout { group: 0, sample: 0, instance_id: "t".into(), policy_version: 0, trajectory, reward: Reward::Scored(1.0), grading_note: None, grading_seconds: 0.0, wall_seconds: 0.0 };
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
