//! ZeRO on the CPU: workers (threads over loopback TCP) shard the optimizer state (stage 1), the
//! reduced gradients (stage 2) and the weights (stage 3) and must train exactly as replicated
//! data parallelism (stage 0) does: the same loss curve, gradient norms and final weights, to
//! the bit — AdamW is elementwise, so a worker updating its rows computes what the replicated
//! update computes for them; the link sums in rank order whether it all-reduces or
//! reduce-scatters; a gathered layer holds the very weights. Two things are summed differently
//! and are checked to stay invisible here: the global gradient norm from stage 2 (per-shard f64
//! partial sums of squares instead of one pass per tensor: f64 rounding, below the f32 value's
//! resolution), and with several micro-batches per worker and step the gradient sum from stage 2
//! (micro-batch by micro-batch across the workers, instead of each worker's micro-batches first:
//! f32 rounding — these tests run one micro-batch per worker and step, where the order is the same).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use forge_model::{ParamStore, Qwen3ForCausalLM};
use forge_train::run_log::read_series;
use forge_train::sft::{self, SftOptions, SftSummary};
use std::sync::Arc;

use forge_model::ParamGather;
use forge_train::{AdamWConfig, DistributedAdamW, ProcessGroup, Reduction, ShardedParams, Topology, ZeroStage};

mod common;
use common::{same_bits, small_sft_config};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn topology(rank: usize, world: usize, master: &str) -> Topology {
    Topology { rank, world_size: world, local_rank: rank, local_world_size: world, master: master.to_string() }
}

/// The same SFT config run by each of `world` workers.
fn sft_workers(run_dir: &Path, world: usize, extra: &[&str], stop_after: Option<u64>, resume: bool) -> Vec<SftSummary> {
    let master = format!("127.0.0.1:{}", free_port());
    let config = small_sft_config(run_dir, 12, extra);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let (config, master) = (config.clone(), master.clone());
                scope.spawn(move || sft::run(&config, "# test\n", &SftOptions { resume, stop_after, distributed: Some(topology(rank, world, &master)) }))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let errors: Vec<String> = results.iter().enumerate().filter_map(|(rank, r)| r.as_ref().err().map(|e| format!("rank {rank}: {e}"))).collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
        results.into_iter().map(Result::unwrap).collect()
    })
}

fn assert_same_training(a: &Path, b: &Path, what: &str) {
    for metric in ["loss", "grad_norm", "lr", "tokens_seen"] {
        let (x, y) = (read_series(&a.join("metrics.jsonl"), metric).unwrap(), read_series(&b.join("metrics.jsonl"), metric).unwrap());
        assert!(!x.is_empty());
        assert_eq!(x, y, "{what}: {metric}");
    }
    let load = |dir: &Path| forge_model::load_model(&dir.join("model"), DType::F32, &Device::Cpu).unwrap();
    let (x, y) = (load(a), load(b));
    for (name, var) in x.params().iter() {
        assert!(same_bits(var.as_tensor(), &y.params().tensor(name).unwrap()), "{what}: {name} differs");
    }
}

#[test]
fn zero_stages_1_and_2_train_sft_bit_identically_to_replicated_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let short = ["train.max_steps=5"];
    for world in [2, 4] {
        let replicated = tmp.path().join(format!("w{world}-zero0"));
        sft_workers(&replicated, world, &short, None, false);
        for stage in [1, 2] {
            let sharded = tmp.path().join(format!("w{world}-zero{stage}"));
            let set = format!("train.zero_stage={stage}");
            let summaries = sft_workers(&sharded, world, &[short[0], &set], None, false);
            assert!(summaries.iter().all(|s| s.steps == 5 && s.last_loss < s.first_loss), "{summaries:?}");
            assert_same_training(&replicated, &sharded, &format!("{world} workers, zero_stage {stage}"));
            // every worker wrote its own shard of the optimizer state, and no replicated file
            let last = sharded.join("checkpoints/step-5");
            for rank in 0..world {
                assert!(last.join(format!("optimizer.rank-{rank:05}-of-{world:05}.safetensors")).is_file(), "rank {rank}'s shard in {}", last.display());
            }
            assert!(!last.join("optimizer.safetensors").exists());
        }
    }
}

#[test]
fn zero_stage_3_trains_sft_bit_identically_to_replicated_workers() {
    // stage 3 gathers each layer for its forward and again for its block-wise backward: the
    // recompute path, which stage 0 runs too for the comparison
    let tmp = tempfile::tempdir().unwrap();
    let short = ["train.max_steps=5", "train.recompute=true"];
    for world in [2, 4] {
        let replicated = tmp.path().join(format!("w{world}-zero0"));
        sft_workers(&replicated, world, &short, None, false);
        let sharded = tmp.path().join(format!("w{world}-zero3"));
        let summaries = sft_workers(&sharded, world, &[short[0], short[1], "train.zero_stage=3"], None, false);
        assert!(summaries.iter().all(|s| s.steps == 5 && s.last_loss < s.first_loss), "{summaries:?}");
        assert_same_training(&replicated, &sharded, &format!("{world} workers, zero_stage 3"));
    }
    // the last checkpoint's model is the gathered weights, as `forge export` reads them
    let checkpoint = forge_model::load_model(&tmp.path().join("w2-zero3/checkpoints/step-5/model"), DType::F32, &Device::Cpu).unwrap();
    let last = forge_model::load_model(&tmp.path().join("w2-zero3/model"), DType::F32, &Device::Cpu).unwrap();
    for (name, var) in last.params().iter() {
        assert!(same_bits(var.as_tensor(), &checkpoint.params().tensor(name).unwrap()), "{name}");
    }
}

#[test]
fn an_interrupted_zero_3_run_resumes_onto_the_same_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = ["train.max_steps=6", "train.zero_stage=3", "train.recompute=true"];
    sft_workers(&tmp.path().join("straight"), 2, &extra, None, false);
    sft_workers(&tmp.path().join("interrupted"), 2, &extra, Some(3), false);
    sft_workers(&tmp.path().join("interrupted"), 2, &extra, None, true);
    assert_same_training(&tmp.path().join("straight"), &tmp.path().join("interrupted"), "resumed zero_stage 3");
}

#[test]
fn an_interrupted_zero_2_run_resumes_from_its_shards_onto_the_same_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = ["train.max_steps=6", "train.zero_stage=2"];
    sft_workers(&tmp.path().join("straight"), 2, &extra, None, false);
    sft_workers(&tmp.path().join("interrupted"), 2, &extra, Some(3), false);
    // the shards are per worker: another count, or another stage, is refused with the fix named
    let err = sft::run(&small_sft_config(&tmp.path().join("interrupted"), 12, &extra), "", &SftOptions { resume: true, ..Default::default() }).err().unwrap().to_string();
    assert!(err.contains("--nproc-per-node 2"), "{err}");
    let master = format!("127.0.0.1:{}", free_port());
    let replicated = small_sft_config(&tmp.path().join("interrupted"), 12, &["train.max_steps=6"]);
    let errors: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let (config, master) = (replicated.clone(), master.clone());
                scope.spawn(move || sft::run(&config, "", &SftOptions { resume: true, stop_after: None, distributed: Some(topology(rank, 2, &master)) }).err().unwrap().to_string())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(errors[0].contains("holds the optimizer state sharded") && errors[0].contains("resume with the zero_stage the run was trained with"), "{}", errors[0]);
    sft_workers(&tmp.path().join("interrupted"), 2, &extra, None, true);
    assert_same_training(&tmp.path().join("straight"), &tmp.path().join("interrupted"), "resumed zero_stage 2");
    assert_eq!(read_series(&tmp.path().join("interrupted/metrics.jsonl"), "loss").unwrap().len(), 6);
}

/// A ~0.4M-parameter Qwen3 (bf16, so AdamW keeps f32 master weights) with deterministic gradients.
fn bf16_model() -> (Qwen3ForCausalLM, forge_model::Config) {
    let config: forge_model::Config = serde_json::from_value(serde_json::json!({
        "model_type": "qwen3", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 192,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 128, "tie_word_embeddings": false
    }))
    .unwrap();
    let params = ParamStore::random(&config, 0.02, 7, DType::BF16, &Device::Cpu).unwrap();
    (Qwen3ForCausalLM::new(config.clone(), params).unwrap(), config)
}

/// Per worker: bytes of optimizer state, of reduced gradients and of weights it holds, and its
/// final weights (bf16 bits, gathered at stage 3).
type WorkerState = (usize, usize, usize, Vec<Vec<u16>>);

/// Two AdamW steps of a bf16 model on `world` workers at `stage` (block-wise recompute, as
/// stage 3 needs).
fn bf16_steps(world: usize, stage: ZeroStage) -> Vec<WorkerState> {
    let master = format!("127.0.0.1:{}", free_port());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let master = master.clone();
                scope.spawn(move || {
                    let group = Arc::new(match world {
                        1 => ProcessGroup::single(),
                        _ => ProcessGroup::join(&topology(rank, world, &master), &Device::Cpu).unwrap(),
                    });
                    let (model, config) = bf16_model();
                    let adamw = AdamWConfig { lr: 1e-2, max_grad_norm: Some(0.5), ..Default::default() };
                    let params = model.params().clone();
                    let weight_bytes = |p: &ParamStore| p.iter().map(|(_, v)| v.elem_count() * 2).sum::<usize>();
                    let (model, shards, mut optimizer, weights_held) = match stage {
                        ZeroStage::Parameters => {
                            let shards = Arc::new(ShardedParams::from_full(params, group.clone()).unwrap());
                            let optimizer = DistributedAdamW::for_shards(&shards, adamw).unwrap();
                            let held = shards.owned_bytes();
                            (Qwen3ForCausalLM::sharded(config.clone(), shards.clone(), DType::BF16, &Device::Cpu).unwrap(), Some(shards), optimizer, held)
                        }
                        _ => {
                            let optimizer = DistributedAdamW::new(model.trainable(), adamw, stage, &group).unwrap();
                            let held = weight_bytes(&params);
                            (model, None, optimizer, held)
                        }
                    };
                    let mut gradient_bytes = 0;
                    for step in 0..2u32 {
                        let ids: Vec<u32> = (0..32u32).map(|i| (i * 37 + rank as u32 * 11 + step * 5) % config.vocab_size as u32).collect();
                        let input_ids = Tensor::from_vec(ids, (2, 16), &Device::Cpu).unwrap();
                        let batch = forge_model::Batch { labels: Some(input_ids.to_dtype(DType::I64).unwrap()), input_ids, attention_mask: None, position_ids: None };
                        let mut gradients = optimizer.begin_step().unwrap();
                        gradients.add(&group, model.loss_and_gradients(&batch, true).unwrap().1).unwrap();
                        let grads = optimizer.reduce(&group, gradients, Reduction::Mean).unwrap();
                        gradient_bytes = grads.bytes();
                        optimizer.step(&group, &grads).unwrap();
                    }
                    let final_weights = match &shards {
                        Some(shards) => shards.gather_all().unwrap(),
                        None => model.params().clone(),
                    };
                    let weights = final_weights.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<half::bf16>().unwrap().iter().map(|x| x.to_bits()).collect()).collect();
                    (optimizer.state_bytes(), gradient_bytes, weights_held, weights)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn sharded_state_per_worker_falls_as_one_over_the_workers_and_bf16_weights_stay_identical() {
    let params = bf16_model().1.num_parameters();
    let replicated = bf16_steps(2, ZeroStage::Replicated);
    // f32 moments and master weights: 12 bytes per parameter; reduced f32 gradients: 4; bf16 weights: 2
    assert_eq!((replicated[0].0, replicated[0].1, replicated[0].2), (12 * params, 4 * params, 2 * params));
    for world in [2, 4] {
        let zero0 = bf16_steps(world, ZeroStage::Replicated);
        for stage in [ZeroStage::OptimizerState, ZeroStage::Gradients, ZeroStage::Parameters] {
            let sharded = bf16_steps(world, stage);
            let state: usize = sharded.iter().map(|w| w.0).sum();
            assert_eq!(state, 12 * params, "the shards partition the state: {world} workers, {stage:?}");
            for (rank, worker) in sharded.iter().enumerate() {
                // dim-0 chunks of ceil(rows / world): a worker holds at most a few rows above 1/N
                let share = worker.0 as f64 / (12 * params) as f64;
                assert!((share - 1.0 / world as f64).abs() < 0.02, "rank {rank} of {world} holds {share:.3} of the optimizer state");
                // stage 2 receives only its rows; stage 1 receives all and keeps its rows
                let gradient_share = worker.1 as f64 / (4 * params) as f64;
                assert!((gradient_share - 1.0 / world as f64).abs() < 0.02, "rank {rank}: reduced gradients {gradient_share:.3} of the whole");
                let weight_share = worker.2 as f64 / (2 * params) as f64;
                let expected = if stage == ZeroStage::Parameters { 1.0 / world as f64 } else { 1.0 };
                assert!((weight_share - expected).abs() < 0.02, "rank {rank}: holds {weight_share:.3} of the weights at {stage:?}");
                assert_eq!(worker.3, zero0[rank].3, "rank {rank} of {world}, {stage:?}: bf16 weights differ from replicated");
            }
        }
    }
}

#[test]
fn stage_3_without_recompute_or_with_lora_is_refused_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_sft_config(&tmp.path().join("run"), 4, &["train.zero_stage=3", "train.recompute=false"]);
    let err = sft::run(&config, "", &SftOptions::default()).err().unwrap().to_string();
    assert!(err.contains("zero_stage = 3 needs train.recompute = true"), "{err}");
    assert!(ZeroStage::Parameters.check(true, true).unwrap_err().contains("use zero_stage = 1 or 2"));
    assert!(ZeroStage::Gradients.check(false, true).is_ok());
}

/// The gathers of a ZeRO-3 step: each decoder layer twice (forward, backward), never the whole model at once.
#[test]
fn a_zero_3_worker_gathers_one_unit_at_a_time() {
    struct Counting(ShardedParams, std::sync::Mutex<Vec<usize>>);
    impl ParamGather for Counting {
        fn gather(&self, names: &[String]) -> forge_model::Result<Vec<Tensor>> {
            let tensors = self.0.gather(names)?;
            self.1.lock().unwrap().push(tensors.iter().map(|t| t.elem_count()).sum());
            Ok(tensors)
        }
    }
    let (model, config) = bf16_model();
    let group = Arc::new(ProcessGroup::single());
    let counting = Arc::new(Counting(ShardedParams::from_full(model.params().clone(), group).unwrap(), Default::default()));
    let sharded = Qwen3ForCausalLM::sharded(config.clone(), counting.clone(), DType::BF16, &Device::Cpu).unwrap();
    let input_ids = Tensor::from_vec((0..32u32).collect::<Vec<_>>(), (2, 16), &Device::Cpu).unwrap();
    let batch = forge_model::Batch { labels: Some(input_ids.to_dtype(DType::I64).unwrap()), input_ids, attention_mask: None, position_ids: None };
    let (_, grads) = sharded.loss_and_gradients(&batch, true).unwrap();
    let gathers = counting.1.lock().unwrap().clone();
    // embedding, 2 layers, head; then the 2 layers again for the backward
    assert_eq!(gathers.len(), 1 + 2 + 1 + 2, "{gathers:?}");
    assert!(gathers.iter().all(|&n| n < config.num_parameters() / 2), "{gathers:?}");
    let (_, replicated) = model.loss_and_gradients(&batch, true).unwrap();
    for (name, grad) in &replicated {
        assert!(same_bits(grad, &grads[name]), "{name}");
    }
}
