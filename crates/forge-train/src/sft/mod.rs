//! `forge train sft`: supervised fine-tuning on multi-turn tool-call conversations with an
//! assistant-only loss. The recipe reads top to bottom: setup → train → save.

mod batching;
mod data;
mod inspect;
#[cfg(test)]
mod template_kwargs_tests;

pub use batching::{collate, collate_packed, plan_epoch};
pub use data::{load_examples, load_examples_with_kwargs, parse_conversation, BadExamples, DataStats, Example, OverLength};
pub use inspect::inspect;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use forge_model::chat_template::ChatTemplate;
use forge_model::device::DeviceSpec;
use forge_model::export::{save_model_dir, ExportOptions, DEFAULT_SHARD_SIZE};
use forge_model::tokenizer::Tokenizer;
use forge_model::lora::{init_adapters, load_adapters, merge, save_adapters};
use forge_model::memory::{activation_bytes, StepShape};
use forge_model::{Config, LoraConfig, ParamStore, Qwen3ForCausalLM};
use serde::{Deserialize, Serialize};

use crate::memory::{estimate, remedies, report_and_check, MemoryEstimate, RunShape};
use crate::run_log::RunLog;
use crate::{AdamW, AdamWConfig, Checkpoints, GradAccumulator, LrSchedule, ProcessGroup, Result, Topology, TrainError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub train: TrainSection,
    pub optim: OptimSection,
    pub run: RunSection,
    /// Train LoRA adapters on a frozen base instead of every parameter.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

/// Either `path` (an HF model directory or hub id to fine-tune) or `init_config` + `tokenizer`
/// (a random initialisation, for tests and demos).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub path: Option<String>,
    pub init_config: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    #[serde(default)]
    pub init_seed: u64,
    /// "f32" or "bf16" (bf16 keeps f32 master weights in the optimizer).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Where the model trains: "cpu", "cuda" or "cuda:N".
    #[serde(default)]
    pub device: DeviceSpec,
}

fn default_init_std() -> f64 {
    0.02
}
fn default_dtype() -> String {
    "f32".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub train: PathBuf,
    pub max_seq_len: usize,
    pub over_length: OverLength,
    pub bad_examples: BadExamples,
    /// Template variables for rendering every example, as TRL's `SFTConfig.chat_template_kwargs`
    /// (veRL: `apply_chat_template_kwargs`), e.g. `[data.chat_template_kwargs]`
    /// `enable_thinking = false`. Default: none, i.e. `apply_chat_template` without kwargs.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
}

impl DataSection {
    /// `chat_template_kwargs` as the JSON object the chat template takes.
    pub fn chat_template_kwargs(&self) -> serde_json::Value {
        serde_json::Value::Object(self.chat_template_kwargs.clone())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    pub epochs: u64,
    /// Stop after this many optimizer steps (before the epochs are done).
    pub max_steps: Option<u64>,
    /// Tokens per micro-batch: padded tokens, or with `packing` tokens back to back.
    pub micro_batch_tokens: usize,
    /// Pack examples back to back into one row per micro-batch instead of padding rows (TRL's
    /// `packing` with `padding_free`, HF's `DataCollatorWithFlattening`): no compute is spent on
    /// padding; attention and labels stay inside each example, so the loss is that of the same
    /// examples padded.
    #[serde(default)]
    pub packing: bool,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub seed: u64,
    /// Layer-wise activation recomputation (same gradients, less memory).
    pub recompute: bool,
    /// Refuse to start when the memory estimate exceeds what the machine has available.
    #[serde(default = "crate::config::default_true")]
    pub check_memory: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    pub max_grad_norm: Option<f64>,
    /// "cosine", "linear" or "constant" (after linear warmup).
    pub schedule: String,
    pub warmup_steps: u64,
    #[serde(default)]
    pub min_lr_ratio: f64,
    #[serde(default)]
    pub pure_bf16: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub dir: PathBuf,
    pub checkpoint_every: u64,
    pub keep_last: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct TrainerState {
    step: u64,
    /// Micro-batches consumed so far (the data position).
    micro_batches: u64,
    tokens_seen: u64,
    /// Data-parallel workers of the run (a step's micro-batches are `grad_accum` × this).
    #[serde(default = "crate::distributed::one_worker")]
    workers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SftSummary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub first_loss: f32,
    pub last_loss: f32,
    pub tokens_per_s: f64,
    pub data: DataStats,
    pub model_dir: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct SftOptions {
    /// Continue from the latest checkpoint of the run directory.
    pub resume: bool,
    /// Stop after this many steps as if interrupted (no final save): for resume tests.
    pub stop_after: Option<u64>,
    /// This worker's place in a data-parallel run (`None`: the only worker). Each optimizer step
    /// then takes `train.grad_accum` micro-batches per worker, and rank 0 writes the run directory.
    pub distributed: Option<Topology>,
}

impl SftConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        match (&self.model.path, &self.model.init_config) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return bad("set exactly one of model.path (fine-tune a model) and model.init_config (random init)".into()),
        }
        if self.model.init_config.is_some() && self.model.tokenizer.is_none() {
            return bad("model.init_config needs model.tokenizer (a directory with tokenizer.json and a chat template)".into());
        }
        model_dtype(&self.model.dtype)?;
        if let Some(lora) = &self.lora {
            lora.validate()?;
            if self.model.path.is_none() {
                return bad("[lora] needs model.path: adapters train on a pretrained base, which a random init is not".into());
            }
        }
        if self.train.micro_batch_tokens < self.data.max_seq_len {
            return bad(format!(
                "train.micro_batch_tokens ({}) must be at least data.max_seq_len ({}) so every example fits a micro-batch",
                self.train.micro_batch_tokens, self.data.max_seq_len
            ));
        }
        if self.train.grad_accum == 0 || self.train.epochs == 0 || self.run.checkpoint_every == 0 || self.run.keep_last == 0 {
            return bad("train.grad_accum, train.epochs, run.checkpoint_every and run.keep_last must be positive".into());
        }
        self.optim.adamw().validate()?;
        Ok(())
    }

}

impl OptimSection {
    /// The optimizer these settings describe.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.betas[0],
            beta2: self.betas[1],
            eps: self.eps,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            pure_bf16: self.pure_bf16,
        }
    }

    /// The learning-rate schedule over `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: u64) -> Result<LrSchedule> {
        let (lr, warmup) = (self.lr, self.warmup_steps);
        let schedule = match self.schedule.as_str() {
            "cosine" => LrSchedule::cosine(lr, warmup, total_steps),
            "linear" => LrSchedule::linear(lr, warmup, total_steps),
            "constant" => LrSchedule::constant(lr, warmup),
            other => return Err(TrainError::Config(format!("optim.schedule \"{other}\": use cosine, linear or constant"))),
        }
        .with_min_lr_ratio(self.min_lr_ratio);
        schedule.validate()?;
        Ok(schedule)
    }
}

pub fn model_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        other => Err(TrainError::Config(format!("model.dtype \"{other}\": use f32 or bf16"))),
    }
}

/// Where the tokenizer and chat template come from.
fn tokenizer_dir(config: &SftConfig) -> Result<PathBuf> {
    match (&config.model.tokenizer, &config.model.path) {
        (Some(dir), _) => Ok(dir.clone()),
        (None, Some(path)) => Ok(forge_model::weights::resolve_model_dir(path)?),
        (None, None) => Err(TrainError::Config("no tokenizer: set model.tokenizer".into())),
    }
}

/// The base model's config: `model.path`'s config.json or `model.init_config`.
pub fn model_config(config: &SftConfig) -> Result<Config> {
    match (&config.model.path, &config.model.init_config) {
        (Some(path), _) => Ok(Config::from_file(&forge_model::weights::resolve_model_dir(path)?.join("config.json"))?),
        (None, Some(init)) => Ok(Config::from_file(init)?),
        (None, None) => Err(TrainError::Config("no model: set model.path or model.init_config".into())),
    }
}

/// The memory the run will need, from the model's config alone (nothing loaded yet).
/// `micro_batches` are the planned `(rows, padded width)` shapes: the one with the largest
/// activations counts. Without them, the worst the config allows: rows of `data.max_seq_len`
/// filling `train.micro_batch_tokens`.
pub fn memory_estimate(config: &SftConfig, model: &Config, device: &Device, micro_batches: Option<&[(usize, usize)]>) -> Result<MemoryEstimate> {
    let dtype = model_dtype(&config.model.dtype)?;
    let width = config.data.max_seq_len;
    let worst = [((config.train.micro_batch_tokens / width).max(1), width)];
    let step = |&(rows, width): &(usize, usize)| StepShape {
        tokens: rows * width,
        seq_len: width,
        recompute: config.train.recompute,
        fused_attention: forge_kernels::flash_attn::supported(device, dtype, model.head_dim),
        dtype,
    };
    let step = micro_batches
        .unwrap_or(&worst)
        .iter()
        .map(step)
        .max_by_key(|shape| activation_bytes(model, shape))
        .unwrap_or_else(|| step(&worst[0]));
    Ok(estimate(&RunShape {
        model,
        dtype,
        lora: config.lora.as_ref(),
        master_weights: config.optim.adamw().keeps_master(dtype),
        grad_accum: config.train.grad_accum,
        reference_model: false,
        step,
        rollouts: (0, 0),
        device,
    }))
}

/// Runs the recipe. `resolved_toml` is written to the run directory as `config.toml`.
pub fn run(config: &SftConfig, resolved_toml: &str, options: &SftOptions) -> Result<SftSummary> {
    // ---- setup
    config.validate()?;
    let device = crate::distributed::worker_device(options.distributed.as_ref(), config.model.device)?.open()?;
    let group = ProcessGroup::for_topology(options.distributed.as_ref(), &device)?;
    let (main, world) = (group.is_main(), group.world_size());
    let dtype = model_dtype(&config.model.dtype)?;
    let run_dir = config.run.dir.clone();
    let checkpoints = Checkpoints::new(run_dir.join("checkpoints"));
    let resume_from = if options.resume {
        let latest = checkpoints.latest()?;
        Some(latest.ok_or_else(|| TrainError::Config(format!("--resume: no complete checkpoint under {}", checkpoints.root().display())))?)
    } else {
        if checkpoints.latest()?.is_some() {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints; pass --resume to continue that run, or choose another run.dir",
                run_dir.display()
            )));
        }
        None
    };
    let tok_dir = tokenizer_dir(config)?;
    let tokenizer = Tokenizer::from_model_dir(&tok_dir)?;
    let template = ChatTemplate::from_model_dir(&tok_dir)?;
    let (examples, data_stats) =
        load_examples_with_kwargs(&config.data.train, &template, &tokenizer, &config.data.chat_template_kwargs(), config.data.max_seq_len, config.data.over_length, config.data.bad_examples)?;
    tracing::info!(?data_stats, "data loaded");
    let pad_id = tokenizer.token_to_id("<|endoftext|>").unwrap_or(0);
    let mut micro_batches: Vec<Vec<usize>> = Vec::new();
    for epoch in 0..config.train.epochs {
        micro_batches.extend(plan_epoch(&examples, config.train.micro_batch_tokens, config.train.packing, config.train.seed, epoch));
    }

    // a step: grad_accum micro-batches on each worker, consecutive ones on the same worker (so
    // one worker with grad_accum × world reproduces the run, up to the order of the sums)
    let per_step = config.train.grad_accum * world;
    let steps_in_data = micro_batches.len().div_ceil(per_step) as u64;
    let total_steps = config.train.max_steps.map_or(steps_in_data, |m| m.min(steps_in_data));

    // what the largest micro-batch of the run and the model's state need, before anything is loaded
    let used = micro_batches.len().min(total_steps as usize * per_step);
    let shapes: Vec<(usize, usize)> = micro_batches[..used]
        .iter()
        .map(|b| {
            let longest = b.iter().map(|&i| examples[i].input_ids.len()).max().unwrap_or(1);
            // a packed row of Σ len tokens attends per example: counted as rows of the longest
            let rows = if config.train.packing { b.iter().map(|&i| examples[i].input_ids.len()).sum::<usize>().div_ceil(longest) } else { b.len() };
            (rows, longest)
        })
        .collect();
    let fixes = remedies(&["lower train.micro_batch_tokens or data.max_seq_len"], config.lora.is_some(), config.train.recompute);
    let base_config = model_config(config)?;
    let workers_on_host = options.distributed.as_ref().map_or(1, |t| t.local_world_size);
    report_and_check(&memory_estimate(config, &base_config, &device, Some(&shapes))?, &device, workers_on_host, config.train.check_memory, &fixes)?;
    // held for the whole run: a second run (or --resume) on this directory refuses
    let _lock = match main {
        true => Some(crate::run_lock::RunLock::acquire(&run_dir).map_err(|e| TrainError::Config(e.to_string()))?),
        false => None,
    };
    if main {
        std::fs::write(run_dir.join("config.toml"), resolved_toml).map_err(|e| TrainError::io(&run_dir, e))?;
    }

    // the base model: pretrained or random; with full fine-tuning a checkpoint replaces it
    let (model_config, mut params) = match (&config.model.path, &config.model.init_config) {
        (Some(path), _) => forge_model::load_weights(&forge_model::weights::resolve_model_dir(path)?, dtype, &device)?,
        (None, Some(_)) => {
            let params = ParamStore::random(&base_config, config.model.init_std, config.model.init_seed, dtype, &device)?;
            (base_config, params)
        }
        (None, None) => unreachable!("validated: a model source is set"),
    };
    if let (Some((_, dir)), None) = (&resume_from, &config.lora) {
        params = forge_model::weights::load_params(&dir.join("model"), &model_config, dtype, &device)?;
    }
    if (pad_id as usize) >= model_config.vocab_size {
        return Err(TrainError::Config(format!("the tokenizer's pad id {pad_id} is outside the model's vocabulary")));
    }
    let model = match &config.lora {
        None => Qwen3ForCausalLM::new(model_config.clone(), params)?,
        Some(lora) => {
            let adapters = match &resume_from {
                Some((_, dir)) => load_adapters(&dir.join("adapter"), &model_config, dtype, &device)?.2,
                None => init_adapters(&model_config, lora, dtype, &device)?,
            };
            Qwen3ForCausalLM::with_lora(model_config.clone(), params, lora.clone(), adapters)?
        }
    };
    let mut optimizer = AdamW::for_params(model.trainable(), config.optim.adamw())?;

    let schedule = config.optim.schedule(total_steps)?;

    let mut state = TrainerState { step: 0, micro_batches: 0, tokens_seen: 0, workers: world };
    if let Some((step, dir)) = &resume_from {
        optimizer.load_state(&dir.join("optimizer.safetensors"))?;
        let path = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        state = serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        crate::distributed::check_resume_workers(*step, state.workers, world)?;
        tracing::info!(step, "resumed");
    }
    let mut log = match main {
        true => Some(RunLog::open(&run_dir, resume_from.as_ref().map(|(s, _)| *s))?),
        false => None,
    };
    let progress = match main {
        true => indicatif::ProgressBar::new(total_steps).with_position(state.step),
        false => indicatif::ProgressBar::hidden(),
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("sft {bar:30} {pos}/{len} steps  eta {eta}  {msg}").expect("valid template"),
    );

    // ---- train
    let (mut first_loss, mut last_loss) = (f32::NAN, f32::NAN);
    let started = Instant::now();
    let tokens_at_start = state.tokens_seen;
    let save = |state: &TrainerState, optimizer: &AdamW| -> Result<()> {
        checkpoints.save(state.step, |dir| {
            match model.lora() {
                Some((lora, adapters)) => save_adapters(&dir.join("adapter"), adapters, lora, config.model.path.as_deref().unwrap_or_default())?,
                None => save_model_dir(
                    model.params(),
                    &model_config,
                    Some(&tok_dir),
                    &dir.join("model"),
                    &ExportOptions { shard_size: DEFAULT_SHARD_SIZE, dtype, force: false },
                )?,
            }
            optimizer.save_state(&dir.join("optimizer.safetensors"))?;
            let path = dir.join("trainer_state.json");
            std::fs::write(&path, serde_json::to_string_pretty(state).expect("state serialises")).map_err(|e| TrainError::io(&path, e))
        })?;
        checkpoints.prune(config.run.keep_last)?;
        Ok(())
    };
    while state.step < total_steps {
        let step_started = Instant::now();
        let start = state.micro_batches as usize;
        let end = (start + per_step).min(micro_batches.len());
        let mine = (start + group.rank() * config.train.grad_accum).min(end)..(start + (group.rank() + 1) * config.train.grad_accum).min(end);
        let mut accumulator = GradAccumulator::new();
        // LoRA dropout masks: a pure function of (seed, step), so a resumed run draws the same
        model.set_dropout_seed(Some(config.train.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ state.step));
        // tokens of the examples; tokens the model computes (with the padding of padded rows)
        let (mut loss_sum, mut step_tokens, mut computed_tokens, mut trained_tokens) = (0f64, 0usize, 0usize, 0usize);
        for indices in &micro_batches[mine] {
            let batch_examples: Vec<&Example> = indices.iter().map(|&i| &examples[i]).collect();
            step_tokens += batch_examples.iter().map(|e| e.input_ids.len()).sum::<usize>();
            trained_tokens += batch_examples.iter().map(|e| e.trained_tokens()).sum::<usize>();
            let batch = match config.train.packing {
                true => collate_packed(&batch_examples, &device)?,
                false => collate(&batch_examples, pad_id, &device)?,
            };
            computed_tokens += batch.input_ids.elem_count();
            let (loss, grads) = model.loss_and_gradients(&batch, config.train.recompute)?;
            loss_sum += f64::from(loss);
            accumulator.add(grads)?;
        }
        let mut totals = [loss_sum, step_tokens as f64, computed_tokens as f64, trained_tokens as f64];
        group.all_reduce_f64(&mut totals)?;
        let [loss_sum, step_tokens, computed_tokens, trained_tokens] = totals;
        let (step_tokens, trained_tokens) = (step_tokens as usize, trained_tokens as usize);
        let lr = schedule.lr(state.step);
        optimizer.set_lr(lr);
        let stats = optimizer.step(&accumulator.finish_across(&group, model.trainable())?)?;
        let loss = (loss_sum / (end - start) as f64) as f32;
        state.step += 1;
        state.micro_batches = end as u64;
        state.tokens_seen += step_tokens as u64;
        if first_loss.is_nan() {
            first_loss = loss;
        }
        last_loss = loss;
        let seconds = step_started.elapsed().as_secs_f64();
        if let Some(log) = &mut log {
            log.log(
                state.step,
                &[
                    ("loss", f64::from(loss)),
                    ("lr", lr),
                    ("grad_norm", f64::from(stats.grad_norm)),
                    ("tokens", step_tokens as f64),
                    ("padding_fraction", 1.0 - step_tokens as f64 / computed_tokens),
                    ("trained_tokens", trained_tokens as f64),
                    ("tokens_seen", state.tokens_seen as f64),
                    ("tokens_per_s", step_tokens as f64 / seconds),
                ],
            )?;
        }
        progress.set_message(format!("loss {loss:.4}  lr {lr:.2e}"));
        progress.inc(1);
        if main && (state.step.is_multiple_of(config.run.checkpoint_every) || state.step == total_steps) {
            save(&state, &optimizer)?;
        }
        if options.stop_after == Some(state.step) && state.step < total_steps {
            progress.abandon();
            return Ok(SftSummary {
                run_dir,
                steps: state.step,
                first_loss,
                last_loss,
                tokens_per_s: f64::NAN,
                data: data_stats,
                model_dir: PathBuf::new(),
            });
        }
    }
    progress.finish();

    // ---- save (LoRA: merged into the base, as users load it in transformers)
    model.set_dropout_seed(None);
    let model_dir = run_dir.join("model");
    let final_params = match model.lora() {
        Some((lora, adapters)) => merge(model.params(), adapters, lora)?,
        None => model.params().clone(),
    };
    if let Some(log) = &log {
        save_model_dir(&final_params, &model_config, Some(&tok_dir), &model_dir, &ExportOptions { shard_size: DEFAULT_SHARD_SIZE, dtype, force: true })?;
        log.plot("loss")?;
    }
    // every worker returns once the model is written
    group.barrier()?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(SftSummary {
        run_dir,
        steps: state.step,
        first_loss,
        last_loss,
        tokens_per_s: (state.tokens_seen - tokens_at_start) as f64 / seconds.max(1e-9),
        data: data_stats,
        model_dir,
    })
}
