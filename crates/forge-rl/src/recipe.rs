//! The RL recipe, top to bottom: setup → train (rollouts → groups → update) → save.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use forge_agent::ChatFormat;
use forge_engine::{EngineConfig, EngineHandle};
use forge_model::Qwen3ForCausalLM;
use forge_sandbox::{Fleet, FleetOptions};
use forge_swe::{ensure_bundled_images, load_instances, select_instances, ExecOptions, TaskInstance};
use forge_train::session::{Session, TrainerState};
use forge_train::{ProcessGroup, Topology};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{RlConfig, RolloutMode};
use crate::grpo::update::{reference_logprobs, to_samples, Trainer};
use crate::grpo::{select_samples, FinishedGroup, GroupBuffer, Rollout};
use crate::report::{step_scalars, EngineWork, Records, StepReport, Timing};
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

/// What an RL checkpoint records besides the step. Groups in flight when a run stops are not
/// replayed: a resumed run issues groups from `next_group` on.
///
/// With W workers, worker r issues global groups r, r + W, r + 2W, ...: `next_group` counts the
/// groups each worker has issued (the same on all), so the run's k-th group is the one a single
/// worker would issue k-th.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct RlState {
    /// Steps that applied an update — the policy version (steps whose groups all lacked
    /// signal apply none).
    updates: u64,
    /// AdamW updates applied (`train.updates_per_step` per updating step): the schedule's clock.
    #[serde(default)]
    optimizer_updates: u64,
    next_group: u64,
    trajectories: u64,
}

/// The rollout engine: a batch of `rollout.workers` sequences over a KV pool of
/// `engine.kv_cache_memory`; unset, on a GPU the pool the memory plan leaves it
/// (`engine.gpu_memory_utilization` of the device less everything else, `planned_pool`), and on the
/// host room for every worker's sequence at `max_context_tokens`: the most the rollouts can use,
/// never a share of host memory they would not.
fn rollout_engine_config(config: &RlConfig, max_context_tokens: usize, model: &Qwen3ForCausalLM, planned_pool: Option<u64>) -> EngineConfig {
    let block_size = config.engine.block_size;
    let full_context = || {
        let block = forge_model::memory::kv_block_bytes(model.config(), block_size, model.dtype(), model.device());
        config.rollout.workers as u64 * max_context_tokens.div_ceil(block_size) as u64 * block
    };
    let kv_cache_memory = match (config.engine.kv_cache_memory, planned_pool) {
        (Some(budget), _) => budget.0,
        (None, Some(pool)) if model.device().is_cuda() => pool,
        (None, _) => full_context(),
    };
    EngineConfig {
        max_batch_size: config.rollout.workers,
        prefix_caching: config.rollout.prefix_caching,
        kv_cache_memory: Some(kv_cache_memory),
        block_size,
        ..Default::default()
    }
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
    let session = tokio::task::block_in_place(|| Session::open(&config.model, &config.run, options.resume, options.distributed.as_ref()))?;
    let (group, world) = (&session.group, session.world_size());
    let model_config = config.model.architecture()?;
    let workers_on_host = options.distributed.as_ref().map_or(1, |t| t.local_world_size);
    let shape = config.run_shape(&model_config, forge_train::memory::DeviceKind::of(&session.device), world);
    let memory_plan = forge_train::plan::plan(&shape, forge_train::plan::available_memory(&session.device, workers_on_host));
    memory_plan.report_and_check(config.train.check_memory)?;
    let _lock = session.begin(resolved_toml)?;

    // Qwen3 templates: the non-thinking format the agent is trained in
    let chat = Arc::new(ChatFormat::from_model_dir(&config.model.tokenizer_dir()?, json!({"enable_thinking": false}))?.with_scaffold(config.agent.scaffold));
    let policy = session.load_policy(&config.model, config.lora.as_ref(), config.train.zero_stage)?;
    let model = policy.model.clone();
    // the KL reference: with LoRA the base (adapters off, no second copy); with full fine-tuning
    // a frozen copy of the starting weights, loaded apart so the updates do not reach it (at
    // ZeRO-3 sharded like the policy, each layer gathered when it scores)
    let needs_reference = config.objective.kl_coef > 0.0;
    let reference = match (needs_reference, &config.lora) {
        (true, None) => {
            let start = config.model.pretrained_dir()?.expect("validated: RL starts from model.path");
            let weights = forge_model::load_weights(&start, session.dtype, &session.device)?.1;
            Some(match &policy.shards {
                Some(_) => {
                    let shards = Arc::new(forge_train::ShardedParams::from_full(weights, session.group.clone())?);
                    Qwen3ForCausalLM::sharded(policy.config.clone(), shards, session.dtype, &session.device)?
                }
                None => Qwen3ForCausalLM::new(policy.config.clone(), weights)?,
            })
        }
        _ => None,
    };
    // what the rollout engine decodes with: the policy itself, or at ZeRO-3 a replicated copy
    // that every update refreshes (the engine cannot gather layers per token)
    let serving = tokio::task::block_in_place(|| policy.serving_model())?;
    let mut optimizer = session.optimizer(&policy, &config.optim, config.train.zero_stage)?.with_serving_copy(serving.params());
    let schedule = config.optim.schedule(config.optimizer_updates())?;
    let mut state = session.trainer_state(RlState::default())?;

    let instances = select_instances(load_instances(&config.data.train)?, &config.data.instance_ids)
        .map_err(|id| RlError::Config(format!("data.instance_ids: {id} is not in {}", config.data.train.display())))?;
    if instances.is_empty() {
        return Err(RlError::Config(format!("{} holds no instances to train on", config.data.train.display())));
    }
    let instances: Vec<Arc<TaskInstance>> = instances.into_iter().map(Arc::new).collect();
    let fleet = Fleet::connect(&worker_engines(&config.sandbox.hosts, options.distributed.as_ref()), FleetOptions::default()).await?;
    let owned: Vec<TaskInstance> = instances.iter().map(|i| (**i).clone()).collect();
    // one worker per machine builds missing task images while the others wait (other engines
    // get them by transfer when an episode is placed there)
    if options.distributed.as_ref().is_none_or(|t| t.local_rank == 0) {
        ensure_bundled_images(&fleet.any_runtime()?, &config.data.train, &owned).await;
    }
    tokio::task::block_in_place(|| group.barrier())?;

    let mut agent = config.agent.clone();
    // the model cannot attend beyond its positions, whatever budget was asked for
    agent.max_context_tokens = agent.max_context_tokens.min(model_config.max_context());
    let engine = Arc::new(EngineHandle::start(serving.clone(), rollout_engine_config(config, agent.max_context_tokens, &serving, memory_plan.kv.map(|kv| kv.bytes)))?);
    let policy_version = Arc::new(AtomicU64::new(state.recipe.updates));
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
    let env = Arc::new(RolloutEnv { fleet: fleet.clone(), policy: engine.clone(), chat, agent, grading, labels: options.labels.clone(), policy_version: policy_version.clone() });
    let mut workers = RolloutWorkers::start(env, config.rollout.workers);

    // rank 0 writes the run's records
    let mut log = session.run_log()?;
    let mut records = session.is_main().then(|| Records::open(session.run_dir(), session.resume_step())).transpose()?;
    let progress = session.progress("rl", config.train.steps, state.step);

    // ---- train
    let scheduler = GroupScheduler { config, instances: &instances, rank: group.rank(), workers: world };
    let trainer = Trainer { model: &model, engine: &engine, config, schedule: &schedule, group };
    let mut buffer = GroupBuffer::new(config.rollout.group_size);
    let mut finished: VecDeque<FinishedGroup> = VecDeque::new();
    let mut groups_in_flight = 0usize;
    let (mut first_reward, mut last_reward) = (f64::NAN, f64::NAN);
    let mut interval_start = Instant::now();
    let mut engine_at_start = EngineWork::total(&engine);
    let mut docker_at_start = fleet.metrics();
    while state.step < config.train.steps {
        if groups_in_flight == 0 || config.rollout.mode == RolloutMode::Queue {
            scheduler.refill(&workers, &mut state.recipe.next_group, &mut groups_in_flight);
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
            scheduler.refill(&workers, &mut state.recipe.next_group, &mut groups_in_flight);
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
            let reference = tokio::task::block_in_place(|| reference_logprobs(&model, reference.as_ref(), &samples, needs_reference, group))?;
            let batch = to_samples(&samples, reference);
            let parts = tokio::task::block_in_place(|| trainer.update(&mut optimizer, batch, samples_everywhere, config.train.seed ^ state.step, &mut state.recipe.optimizer_updates))?;
            state.recipe.updates += 1;
            policy_version.store(state.recipe.updates, Ordering::Release);
            Some(parts)
        };
        let training_seconds = training.elapsed().as_secs_f64();
        state.step += 1;
        state.recipe.trajectories += trajectories as u64;

        // 3. metrics: rank 0 gathers every worker's report and writes the step's records
        let (engine_now, docker_now) = (EngineWork::total(&engine), fleet.metrics());
        let report = StepReport::new(&groups, &arrived, counts, &samples, version, engine_now.since(engine_at_start), docker_now.since(&docker_at_start));
        let reports = tokio::task::block_in_place(|| gather_reports(group, &report))?;
        let timing = Timing { wall: interval_start.elapsed().as_secs_f64(), idle_seconds, training_seconds, engines: world };
        (interval_start, engine_at_start, docker_at_start) = (Instant::now(), engine_now, docker_now);
        if let (Some(report), Some(log), Some(records)) = (reports, log.as_mut(), records.as_mut()) {
            let lr = update.as_ref().map_or_else(|| schedule.lr(state.recipe.optimizer_updates), |parts| parts[0].lr);
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
        if session.checkpoint_due(state.step, config.train.steps) {
            tokio::task::block_in_place(|| session.save_checkpoint(&state, &policy, &optimizer))?;
        }
        if options.stop_after == Some(state.step) && state.step < config.train.steps {
            progress.abandon();
            workers.shutdown().await;
            engine.shutdown();
            return Ok(summary(&session, &state, (first_reward, last_reward), PathBuf::new()));
        }
    }
    progress.finish();
    workers.shutdown().await;
    engine.shutdown();

    // ---- save
    let model_dir = tokio::task::block_in_place(|| session.finish(&policy, log.as_ref(), "reward_mean"))?;
    Ok(summary(&session, &state, (first_reward, last_reward), model_dir))
}

fn summary(session: &Session, state: &TrainerState<RlState>, (first_reward, last_reward): (f64, f64), model_dir: PathBuf) -> RlSummary {
    RlSummary {
        run_dir: session.run_dir().to_path_buf(),
        steps: state.step,
        updates: state.recipe.optimizer_updates,
        trajectories: state.recipe.trajectories,
        first_reward,
        last_reward,
        model_dir,
    }
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

/// The engines as one worker sees them: each worker places its own containers, so it gets an
/// even share of every engine's bounds — of a local engine among this node's workers, of a
/// remote one among all workers.
fn worker_engines(hosts: &[forge_sandbox::EngineSpec], topology: Option<&Topology>) -> Vec<forge_sandbox::EngineSpec> {
    hosts
        .iter()
        .map(|h| match topology {
            None => h.clone(),
            Some(t) if h.is_local() => h.share(t.local_world_size),
            Some(t) => h.share(t.world_size),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_local_engines_per_node_and_remote_ones_across_the_world() {
        let hosts: Vec<forge_sandbox::EngineSpec> = vec!["unix:///var/run/docker.sock,max_containers=16".parse().unwrap(), "tcp://h:2376,max_containers=80,cpus=64".parse().unwrap()];
        let topology = Topology { rank: 9, world_size: 16, local_rank: 1, local_world_size: 8, master: "n0:29500".into() };
        let seen = worker_engines(&hosts, Some(&topology));
        assert_eq!((seen[0].max_containers, seen[1].max_containers, seen[1].cpus), (Some(2), Some(5), Some(4.0)));
        assert_eq!(worker_engines(&hosts, None), hosts, "one worker: the bounds as given");
    }
}
