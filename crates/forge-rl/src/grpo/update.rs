//! One GRPO step's update: the chosen rollouts become training sequences, which are split into
//! `train.updates_per_step` mini-batches (one AdamW update each) and each mini-batch into
//! micro-batches of at most `train.micro_batch_tokens`; gradients are summed across micro-batches
//! and data-parallel workers so that the update is the one a single worker would make on the
//! union of every worker's samples.

use candle_core::Tensor;
use forge_agent::{TokenRecord, Trajectory};
use forge_engine::EngineHandle;
use forge_model::{Qwen3ForCausalLM, Weights};
use forge_train::{DistributedAdamW, LrSchedule, ProcessGroup, Reduction, StepGradients};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::gradient::{policy_gradient, trained_tokens, Sample, UpdateStats};
use super::groups::TrainSample;
use super::objective::ObjectiveConfig;
use crate::config::RlConfig;
use crate::report::MiniBatchUpdate;
use crate::{Result, RlError};

/// Per token record of each sample (in [`to_samples`]' order), the frozen reference's log-prob of
/// every token (0 for the first), when the objective has a KL term: the `frozen` copy of the
/// starting weights (full fine-tuning), or the policy's base weights without its LoRA adapters
/// (asked for by [`Weights::Base`]; generation goes on meanwhile, nothing is switched).
pub(crate) fn reference_logprobs(model: &Qwen3ForCausalLM, frozen: Option<&Qwen3ForCausalLM>, samples: &[TrainSample], needed: bool, group: &ProcessGroup) -> Result<Option<Vec<Vec<f32>>>> {
    if !needed {
        return Ok(None);
    }
    let (reference, weights) = match frozen {
        Some(frozen) => (frozen, Weights::Trained),
        None => (model, Weights::Base),
    };
    let records: Vec<&TokenRecord> = samples.iter().flat_map(|s| trained_records(&s.rollout.trajectory)).collect();
    let score = |ids: &[u32]| -> Result<Vec<f32>> {
        let input = Tensor::new(ids, reference.device())?.unsqueeze(0)?;
        Ok(reference.token_logprobs_with(&input, &[ids.len()], weights)?.remove(0))
    };
    // a ZeRO-3 reference gathers every layer for each forward, a collective: a worker with fewer
    // records scores a two-token stand-in for each it lacks (the count agreed on first)
    let most = if reference.is_sharded() { group.max_over_workers(records.len())? } else { records.len() };
    let rows = records.iter().map(|record| Ok([vec![0.0], score(&record.input_ids)?].concat())).collect::<Result<Vec<_>>>()?;
    for _ in records.len()..most {
        score(&[0, 0])?;
    }
    Ok(Some(rows))
}

/// The token records with generated tokens (a record that a rewritten prompt started just before
/// the turn limit holds only its prompt).
pub(crate) fn trained_records(trajectory: &Trajectory) -> impl Iterator<Item = &TokenRecord> {
    trajectory.token_records().filter(|record| record.loss_mask.contains(&1))
}

/// One training sequence per token record: a trajectory whose template rewrote the conversation
/// has several (see `Trajectory::earlier_tokens`), each with the trajectory's advantage and its
/// generated tokens in the context they were sampled in.
pub(crate) fn to_samples(chosen: &[TrainSample], reference: Option<Vec<Vec<f32>>>) -> Vec<Sample> {
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

/// How an update is cut into micro-batches and computed (the `train` settings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MicroBatching {
    /// At most this many tokens per micro-batch (padded, or back to back with `packing`).
    pub tokens: usize,
    pub recompute: bool,
    pub packing: bool,
}

/// This worker's share of the update's gradient, over micro-batches cut as `batching` says, as if the batch of every
/// worker of `group` were one: each micro-batch's loss is divided by the whole update's
/// normaliser, so summing the accumulated gradients over every worker (`Reduction::Sum`) gives
/// the update's. A worker may have no samples: it contributes nothing but takes part.
pub(crate) fn policy_gradients(
    model: &Qwen3ForCausalLM,
    samples: &[Sample],
    objective: &ObjectiveConfig,
    batching: MicroBatching,
    group: &ProcessGroup,
    optimizer: &DistributedAdamW,
) -> Result<(UpdateStats, StepGradients)> {
    let MicroBatching { tokens: micro_batch_tokens, recompute, packing } = batching;
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
    let mut totals = [trained_tokens(samples) as f64, micro_batches.len() as f64];
    group.all_reduce_f64(&mut totals)?;
    let [trained_everywhere, micro_batches_everywhere] = totals;
    if micro_batches_everywhere == 0.0 {
        return Err(RlError::Config("an update without samples on any worker".into()));
    }
    let normaliser = objective.aggregation.normaliser(trained_everywhere as usize);
    let mut gradients = optimizer.begin_step()?;
    // a worker with fewer micro-batches takes part in the others' reductions all the same
    // (agreed on before any of them starts)
    let most = group.max_over_workers(micro_batches.len())?;
    // the micro-batches' losses (they sum to the update's); token-weighted clip fraction, KL and ratio
    let mut sums = [0.0f64; 4];
    for batch in &micro_batches {
        let (stats, grads) = policy_gradient(model, batch, objective, normaliser, recompute, packing)?;
        gradients.add(group, grads)?;
        let tokens = stats.trained_tokens as f64;
        sums[0] += f64::from(stats.loss);
        sums[1] += f64::from(stats.clip_fraction) * tokens;
        sums[2] += f64::from(stats.kl) * tokens;
        sums[3] += f64::from(stats.ratio_mean) * tokens;
    }
    for _ in micro_batches.len()..most {
        gradients.skip(group, model)?;
    }
    group.all_reduce_f64(&mut sums)?;
    let per_token = |sum: f64| (sum / trained_everywhere.max(1.0)) as f32;
    let stats = UpdateStats {
        loss: sums[0] as f32,
        trained_tokens: trained_everywhere as usize,
        clip_fraction: per_token(sums[1]),
        kl: per_token(sums[2]),
        ratio_mean: per_token(sums[3]),
    };
    Ok((stats, gradients))
}

/// What a step's update needs besides the optimizer.
pub(crate) struct Trainer<'a> {
    pub model: &'a Qwen3ForCausalLM,
    pub engine: &'a EngineHandle,
    pub config: &'a RlConfig,
    pub schedule: &'a LrSchedule,
    pub group: &'a ProcessGroup,
}

impl Trainer<'_> {
    /// The step's `train.updates_per_step` AdamW updates (fewer when the workers have fewer
    /// samples, `samples_everywhere`, than that), one per mini-batch of `batch`; the engine is
    /// paused only while the weights change. `optimizer_updates` is the schedule's clock.
    /// Blocking: run it off the async workers.
    pub fn update(&self, optimizer: &mut DistributedAdamW, batch: Vec<Sample>, samples_everywhere: usize, seed: u64, optimizer_updates: &mut u64) -> Result<Vec<MiniBatchUpdate>> {
        let train = &self.config.train;
        let mut parts = Vec::new();
        let batching = MicroBatching { tokens: train.micro_batch_tokens, recompute: train.recompute, packing: train.packing };
        for mini_batch in mini_batches(batch, train.updates_per_step.min(samples_everywhere), seed) {
            let (stats, gradients) = policy_gradients(self.model, &mini_batch, &self.config.objective, batching, self.group, optimizer)?;
            let grads = optimizer.reduce(self.group, gradients, Reduction::Sum)?;
            let lr = self.schedule.lr(*optimizer_updates);
            optimizer.set_lr(lr);
            let step_stats = self.engine.update_weights(|| optimizer.step(self.group, &grads))?;
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
    use std::path::PathBuf;
    use std::sync::Arc;

    use candle_core::Device;
    use forge_agent::Trajectory;
    use forge_engine::EngineConfig;
    use forge_model::lora::init_adapters;
    use forge_model::{Config, LoraConfig, ParamStore};
    use forge_train::Topology;
    use serde_json::json;

    use super::*;
    use crate::grpo::{Aggregation, Reward, Rollout};

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

    fn max_relative_difference(a: &forge_model::Gradients, b: &forge_model::Gradients) -> f32 {
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
            let group = ProcessGroup::single();
            let optimizer = DistributedAdamW::new(model.trainable(), Default::default(), Default::default(), &group).unwrap();
            let sum = |(stats, gradients)| (stats, optimizer.reduce(&group, gradients, Reduction::Sum).unwrap().grads);
            let (whole_stats, whole) = sum(policy_gradients(&model, &samples, &objective, MicroBatching { tokens: 1 << 20, recompute: false, packing: false }, &group, &optimizer).unwrap());
            let (split_stats, split) = sum(policy_gradients(&model, &samples, &objective, MicroBatching { tokens: 10, recompute: false, packing }, &group, &optimizer).unwrap());
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
        let group = ProcessGroup::single();
        let mut optimizer = DistributedAdamW::new(model.trainable(), config.optim.adamw(), config.train.zero_stage, &group).unwrap();
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
        update_as_workers_at(shares, updates_per_step, 0)
    }

    /// [`update_as_workers`] with `train.zero_stage = zero_stage`.
    fn update_as_workers_at(shares: Vec<Vec<Sample>>, updates_per_step: usize, zero_stage: u8) -> Vec<WorkerUpdates> {
        let world = shares.len();
        let everywhere: usize = shares.iter().map(Vec::len).sum();
        let master = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let threads: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(rank, share)| {
                let master = master.clone();
                std::thread::spawn(move || {
                    let group = Arc::new(match world {
                        1 => ProcessGroup::single(),
                        _ => ProcessGroup::join(&Topology { rank, world_size: world, local_rank: rank, local_world_size: world, master }, &Device::Cpu).unwrap(),
                    });
                    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny/rl.toml");
                    // stage 3 gathers layers in the block-wise (recompute) backward: the others run it too
                    let overrides = [format!("train.updates_per_step={updates_per_step}"), "optim.lr=1e-2".into(), "train.micro_batch_tokens=10".into(), format!("train.zero_stage={zero_stage}"), "train.recompute=true".into()];
                    let (config, _) = forge_train::config::load_config::<RlConfig>(&path, &overrides).unwrap();
                    let schedule = config.optim.schedule(config.optimizer_updates()).unwrap();
                    // as the recipe builds them: at ZeRO-3 a sharded policy, and a replicated copy the engine serves
                    let (model, shards) = match zero_stage {
                        3 => {
                            let shards = Arc::new(forge_train::ShardedParams::from_full(tiny_model().params().clone(), group.clone()).unwrap());
                            (Arc::new(Qwen3ForCausalLM::sharded(tiny_config(), shards.clone(), candle_core::DType::F32, &Device::Cpu).unwrap()), Some(shards))
                        }
                        _ => (Arc::new(tiny_model()), None),
                    };
                    let serving = match &shards {
                        Some(shards) => Arc::new(Qwen3ForCausalLM::new(tiny_config(), shards.gather_all().unwrap()).unwrap()),
                        None => model.clone(),
                    };
                    let engine = EngineHandle::start(serving.clone(), EngineConfig { max_batch_size: 1, ..Default::default() }).unwrap();
                    let mut optimizer = match &shards {
                        Some(shards) => DistributedAdamW::for_shards(shards, config.optim.adamw()).unwrap().with_serving_copy(serving.params()),
                        None => DistributedAdamW::new(model.trainable(), config.optim.adamw(), config.train.zero_stage, &group).unwrap(),
                    };
                    let trainer = Trainer { model: &model, engine: &engine, config: &config, schedule: &schedule, group: &group };
                    let parts = trainer.update(&mut optimizer, share, everywhere, 3, &mut 0).unwrap();
                    engine.shutdown();
                    let flat = |params: &ParamStore| -> Vec<Vec<f32>> { params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect() };
                    let weights = match &shards {
                        Some(shards) => flat(&shards.gather_all().unwrap()),
                        None => flat(model.params()),
                    };
                    assert!(flat(serving.params()) == weights, "the engine serves the updated weights");
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

    /// ZeRO: workers that shard the optimizer state (1), the reduced gradients (2) and the
    /// weights (3, the engine serving a replicated copy each update refreshes) apply the very
    /// updates replicated workers apply, to the bit — two updates, one worker with no sample in
    /// the second (it takes part in the others' gathers and reductions all the same).
    #[test]
    fn zero_stages_update_exactly_as_replicated_workers() {
        let model = tiny_model();
        let samples: Vec<Sample> = (0..3u32).map(|i| sample(&model, vec![3, 9 + i, 17, 4 + i, 22, 41], vec![0, 0, 1, 1, 1, 1], if i % 2 == 0 { 1.0 } else { -1.0 })).collect();
        let shares = || vec![samples[..2].to_vec(), samples[2..].to_vec()];
        let replicated = update_as_workers_at(shares(), 2, 0);
        for stage in [1, 2, 3] {
            let sharded = update_as_workers_at(shares(), 2, stage);
            for rank in 0..2 {
                assert_eq!(sharded[rank].0, replicated[rank].0, "zero_stage {stage}, rank {rank}: update stats");
                assert!(sharded[rank].1 == replicated[rank].1, "zero_stage {stage}, rank {rank}: the weights differ from replicated workers'");
            }
        }
    }

    /// A ZeRO-3 reference gathers its layers for every scored record: a worker with fewer records
    /// (here none) scores stand-ins with the others, and the records' rows equal the replicated
    /// reference's.
    #[test]
    fn a_sharded_reference_scores_with_workers_that_have_fewer_records() {
        let ids = vec![1u32, 5, 9, 2, 33, 7];
        let mut trajectory = Trajectory::start("t", Vec::new(), Vec::new());
        trajectory.tokens.input_ids = ids.clone();
        trajectory.tokens.loss_mask = vec![0, 0, 0, 1, 1, 1];
        let rollout = Rollout { group: 0, sample: 0, instance_id: "t".into(), policy_version: 0, trajectory, reward: Reward::Scored(1.0), grading_note: None, grading_seconds: 0.0, wall_seconds: 0.0 };
        let replicated = tiny_model();
        let expected = reference_logprobs(&replicated, Some(&replicated), &[TrainSample { rollout: &rollout, advantage: 1.0 }], true, &ProcessGroup::single()).unwrap().unwrap();
        let master = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let rows: Vec<Vec<Vec<f32>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|rank| {
                    let (master, rollout) = (master.clone(), &rollout);
                    scope.spawn(move || {
                        let group = Arc::new(ProcessGroup::join(&Topology { rank, world_size: 2, local_rank: rank, local_world_size: 2, master }, &Device::Cpu).unwrap());
                        let shards = Arc::new(forge_train::ShardedParams::from_full(tiny_model().params().clone(), group.clone()).unwrap());
                        let reference = Qwen3ForCausalLM::sharded(tiny_config(), shards, candle_core::DType::F32, &Device::Cpu).unwrap();
                        let chosen: Vec<TrainSample> = match rank {
                            0 => vec![TrainSample { rollout, advantage: 1.0 }, TrainSample { rollout, advantage: -1.0 }],
                            _ => Vec::new(),
                        };
                        reference_logprobs(&reference, Some(&reference), &chosen, true, &group).unwrap().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(rows[0], vec![expected[0].clone(), expected[0].clone()]);
        assert!(rows[1].is_empty());
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

    /// With LoRA the reference is the policy's base weights, asked for explicitly: equal to the
    /// base model's log-probs, different from the adapted model's, and generation from the same
    /// shared model goes on meanwhile with the adapters (nothing is switched on it).
    #[test]
    fn the_lora_reference_is_the_base_model_while_generation_goes_on_adapted() {
        let config = tiny_config();
        let base = || ParamStore::random(&config, 0.2, 7, candle_core::DType::F32, &Device::Cpu).unwrap();
        let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, target_modules: vec!["q_proj".into(), "down_proj".into()], seed: 1 };
        let adapters = init_adapters(&config, &lora, candle_core::DType::F32, &Device::Cpu).unwrap();
        // B starts at zero; give it values so that the adapted model differs from the base
        for (_, var) in adapters.iter() {
            var.set(&(var.as_tensor().ones_like().unwrap() * 0.05).unwrap()).unwrap();
        }
        let adapted = Arc::new(Qwen3ForCausalLM::with_lora(config.clone(), base(), lora, adapters).unwrap());
        let plain = Arc::new(Qwen3ForCausalLM::new(config.clone(), base()).unwrap());
        let engine = EngineHandle::start(adapted.clone(), EngineConfig { max_batch_size: 1, ..Default::default() }).unwrap();
        let base_engine = EngineHandle::start(plain.clone(), EngineConfig { max_batch_size: 1, ..Default::default() }).unwrap();
        let greedy = forge_engine::SamplingParams { max_new_tokens: 40, ..Default::default() };
        let adapted_alone = engine.generate_blocking(vec![3, 4, 5], greedy.clone()).unwrap().tokens;
        let base_alone = base_engine.generate_blocking(vec![3, 4, 5], greedy.clone()).unwrap().tokens;
        base_engine.shutdown();
        assert_ne!(adapted_alone, base_alone, "the adapters must change generation for this test to mean anything");

        let ids = vec![1u32, 5, 9, 2, 33, 7];
        let mut trajectory = Trajectory::start("t", Vec::new(), Vec::new());
        trajectory.tokens.input_ids = ids.clone();
        trajectory.tokens.loss_mask = vec![0, 0, 0, 1, 1, 1];
        let rollout = Rollout { group: 0, sample: 0, instance_id: "t".into(), policy_version: 0, trajectory, reward: Reward::Scored(1.0), grading_note: None, grading_seconds: 0.0, wall_seconds: 0.0 };
        let chosen = [TrainSample { rollout: &rollout, advantage: 1.0 }];
        let logprobs = |m: &Qwen3ForCausalLM| [vec![0.0], m.token_logprobs(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(), &[ids.len()]).unwrap().remove(0)].concat();
        let adapted_logprobs = logprobs(&adapted);
        // reference passes while the engine generates from the same model
        let generating = {
            let engine = engine.clone();
            let greedy = greedy.clone();
            std::thread::spawn(move || (0..5).map(|_| engine.generate_blocking(vec![3, 4, 5], greedy.clone()).unwrap().tokens).collect::<Vec<_>>())
        };
        let mut references = Vec::new();
        while !generating.is_finished() || references.is_empty() {
            references.push(reference_logprobs(&adapted, None, &chosen, true, &ProcessGroup::single()).unwrap().unwrap().remove(0));
        }
        let generated = generating.join().unwrap();
        engine.shutdown();
        let base_logprobs = logprobs(&plain);
        for reference in &references {
            assert!(reference.iter().zip(&base_logprobs).all(|(a, b)| (a - b).abs() < 1e-6), "{reference:?} vs {base_logprobs:?}");
        }
        assert!(adapted_logprobs.iter().zip(&base_logprobs).any(|(a, b)| (a - b).abs() > 1e-3), "the adapters must change the model for this test to mean anything");
        assert!(generated.iter().all(|tokens| tokens == &adapted_alone), "generation during reference passes used other weights");
        assert_eq!(logprobs(&adapted), adapted_logprobs, "the policy is unchanged");
        assert!(reference_logprobs(&adapted, None, &chosen, false, &ProcessGroup::single()).unwrap().is_none());
    }
}
