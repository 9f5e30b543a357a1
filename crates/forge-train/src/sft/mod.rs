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

use forge_model::chat_template::ChatTemplate;
use forge_model::memory::{activation_bytes, StepShape};
use forge_model::tokenizer::Tokenizer;
use forge_model::{Config, LoraConfig};
use serde::{Deserialize, Serialize};

use crate::config::{ModelSection, OptimSection, RunSection};
use crate::memory::{DeviceKind, RunShape};
use crate::plan::available_memory;
use crate::session::Session;
use crate::{Reduction, Result, Topology, TrainError};

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
    /// How the training state is sharded across data-parallel workers (0–3, DeepSpeed ZeRO's
    /// stages; see `distributed::zero`). Has no effect with one worker.
    #[serde(default)]
    pub zero_stage: crate::distributed::ZeroStage,
    /// Refuse to start when the memory plan (`forge plan`) does not fit the device.
    #[serde(default = "crate::config::default_true")]
    pub check_memory: bool,
}

/// What an SFT checkpoint records besides the step (a step's micro-batches are `grad_accum` ×
/// the workers).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct SftState {
    /// Micro-batches consumed so far (the data position).
    micro_batches: u64,
    tokens_seen: u64,
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
        self.model.validate()?;
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
        if self.train.grad_accum == 0 || self.train.epochs == 0 {
            return bad("train.grad_accum and train.epochs must be positive".into());
        }
        self.run.validate()?;
        self.optim.adamw().validate()?;
        self.train.zero_stage.check(self.train.recompute, self.lora.is_some()).map_err(TrainError::Config)
    }
}

/// What the run holds in memory (for `plan::plan`), from the model's config alone (nothing
/// loaded yet), with `workers` data-parallel workers on `device`. `micro_batches` are the planned
/// `(rows, padded width)` shapes: the one with the largest activations counts. Without them, the
/// worst the config allows: rows of `data.max_seq_len` filling `train.micro_batch_tokens`.
pub fn run_shape<'a>(config: &'a SftConfig, model: &'a Config, device: DeviceKind, workers: usize, micro_batches: Option<&[(usize, usize)]>) -> RunShape<'a> {
    let dtype = config.model.dtype.into();
    let width = config.data.max_seq_len;
    let worst = [((config.train.micro_batch_tokens / width).max(1), width)];
    let step = |&(rows, width): &(usize, usize)| StepShape {
        tokens: rows * width,
        seq_len: width,
        recompute: config.train.recompute,
        fused_attention: device.fused_attention(dtype, model.head_dim),
        dtype,
    };
    let step = micro_batches
        .unwrap_or(&worst)
        .iter()
        .map(step)
        .max_by_key(|shape| activation_bytes(model, shape))
        .unwrap_or_else(|| step(&worst[0]));
    RunShape {
        model,
        dtype,
        lora: config.lora.as_ref(),
        master_weights: config.optim.adamw().keeps_master(dtype),
        reference_model: false,
        zero_stage: config.train.zero_stage,
        workers,
        step,
        rollouts: None,
        device,
    }
}

/// Runs the recipe. `resolved_toml` is written to the run directory as `config.toml`.
pub fn run(config: &SftConfig, resolved_toml: &str, options: &SftOptions) -> Result<SftSummary> {
    // ---- setup
    config.validate()?;
    let session = Session::open(&config.model, &config.run, options.resume, options.distributed.as_ref())?;
    let (group, world) = (&session.group, session.world_size());
    let tok_dir = config.model.tokenizer_dir()?;
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
    let workers_on_host = options.distributed.as_ref().map_or(1, |t| t.local_world_size);
    let architecture = config.model.architecture()?;
    let shape = run_shape(config, &architecture, DeviceKind::of(&session.device), world, Some(&shapes));
    crate::plan::plan(&shape, available_memory(&session.device, workers_on_host)).report_and_check(config.train.check_memory)?;
    let _lock = session.begin(resolved_toml)?;
    let policy = session.load_policy(&config.model, config.lora.as_ref(), config.train.zero_stage)?;
    let model = &policy.model;
    if (pad_id as usize) >= policy.config.vocab_size {
        return Err(TrainError::Config(format!("the tokenizer's pad id {pad_id} is outside the model's vocabulary")));
    }
    let mut optimizer = session.optimizer(&policy, &config.optim, config.train.zero_stage)?;
    let schedule = config.optim.schedule(total_steps)?;
    let mut state = session.trainer_state(SftState::default())?;
    let mut log = session.run_log()?;
    let progress = session.progress("sft", total_steps, state.step);

    // ---- train
    let (mut first_loss, mut last_loss) = (f32::NAN, f32::NAN);
    let started = Instant::now();
    let tokens_at_start = state.recipe.tokens_seen;
    while state.step < total_steps {
        let step_started = Instant::now();
        let start = state.recipe.micro_batches as usize;
        let end = (start + per_step).min(micro_batches.len());
        let mine = (start + group.rank() * config.train.grad_accum).min(end)..(start + (group.rank() + 1) * config.train.grad_accum).min(end);
        let mut gradients = optimizer.begin_step()?;
        // the last step may leave a worker fewer micro-batches: it takes part in the others'
        // reductions all the same (agreed on before any of them starts)
        let most = group.max_over_workers(mine.len())?;
        // LoRA dropout masks: a pure function of (seed, step), so a resumed run draws the same
        model.set_dropout_seed(Some(config.train.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ state.step));
        // tokens of the examples; tokens the model computes (with the padding of padded rows)
        let (mut loss_sum, mut step_tokens, mut computed_tokens, mut trained_tokens) = (0f64, 0usize, 0usize, 0usize);
        for indices in &micro_batches[mine.clone()] {
            let batch_examples: Vec<&Example> = indices.iter().map(|&i| &examples[i]).collect();
            step_tokens += batch_examples.iter().map(|e| e.input_ids.len()).sum::<usize>();
            trained_tokens += batch_examples.iter().map(|e| e.trained_tokens()).sum::<usize>();
            let batch = match config.train.packing {
                true => collate_packed(&batch_examples, &session.device)?,
                false => collate(&batch_examples, pad_id, &session.device)?,
            };
            computed_tokens += batch.input_ids.elem_count();
            let (loss, grads) = model.loss_and_gradients(&batch, config.train.recompute)?;
            loss_sum += f64::from(loss);
            gradients.add(group, grads)?;
        }
        for _ in mine.len()..most {
            gradients.skip(group, model)?;
        }
        let mut totals = [loss_sum, step_tokens as f64, computed_tokens as f64, trained_tokens as f64];
        group.all_reduce_f64(&mut totals)?;
        let [loss_sum, step_tokens, computed_tokens, trained_tokens] = totals;
        let (step_tokens, trained_tokens) = (step_tokens as usize, trained_tokens as usize);
        let lr = schedule.lr(state.step);
        optimizer.set_lr(lr);
        let grads = optimizer.reduce(group, gradients, Reduction::Mean)?;
        let stats = optimizer.step(group, &grads)?;
        let loss = (loss_sum / (end - start) as f64) as f32;
        state.step += 1;
        state.recipe.micro_batches = end as u64;
        state.recipe.tokens_seen += step_tokens as u64;
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
                    ("tokens_seen", state.recipe.tokens_seen as f64),
                    ("tokens_per_s", step_tokens as f64 / seconds),
                ],
            )?;
        }
        progress.set_message(format!("loss {loss:.4}  lr {lr:.2e}"));
        progress.inc(1);
        if session.checkpoint_due(state.step, total_steps) {
            session.save_checkpoint(&state, &policy, &optimizer)?;
        }
        if options.stop_after == Some(state.step) && state.step < total_steps {
            progress.abandon();
            let run_dir = session.run_dir().to_path_buf();
            return Ok(SftSummary { run_dir, steps: state.step, first_loss, last_loss, tokens_per_s: f64::NAN, data: data_stats, model_dir: PathBuf::new() });
        }
    }
    progress.finish();

    // ---- save
    let model_dir = session.finish(&policy, log.as_ref(), "loss")?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(SftSummary {
        run_dir: session.run_dir().to_path_buf(),
        steps: state.step,
        first_loss,
        last_loss,
        tokens_per_s: (state.recipe.tokens_seen - tokens_at_start) as f64 / seconds.max(1e-9),
        data: data_stats,
        model_dir,
    })
}
