//! The run lifecycle that SFT and RL share, written once: opening a run directory (fresh or
//! `--resume`, with the worker-count check), the trained model (pretrained or random, full or
//! LoRA, restored from a checkpoint), the optimizer and its state, `trainer_state.json`,
//! checkpoints (atomic, keep-last), the run log and progress bar, and the final save (LoRA merged
//! into the base, as users load it in transformers).
//!
//! A recipe reads:
//! ```text
//! let session = Session::open(&config.model, &config.run, resume, distributed)?;   // device, workers, resume point
//! ... recipe checks (data, memory) ...
//! let _lock = session.begin(resolved_toml)?;                                      // the run directory is ours
//! let policy = session.load_policy(&config.model, config.lora.as_ref(), config.train.zero_stage)?;
//! let mut optimizer = session.optimizer(&policy, &config.optim, config.train.zero_stage)?;
//! let mut state = session.trainer_state(RecipeState::default())?;
//! loop { ...; if session.checkpoint_due(state.step, total) { session.save_checkpoint(&state, &policy, &optimizer)?; } }
//! let model_dir = session.finish(&policy, log.as_ref(), "loss")?;
//! ```
//! Checkpoint layout (`run.dir/checkpoints/step-N/`): `model/` (full fine-tuning, HF layout) or
//! `adapter/` (LoRA, PEFT layout), `optimizer.safetensors` (or with sharded state one
//! `optimizer.rank-R-of-W.safetensors` per worker), `trainer_state.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use forge_model::export::{save_model_dir, ExportOptions, DEFAULT_SHARD_SIZE};
use forge_model::lora::{init_adapters, load_adapters, merge, save_adapters};
use forge_model::{Config, LoraConfig, ParamStore, Qwen3ForCausalLM};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{ModelSection, OptimSection, RunSection};
use crate::run_lock::RunLock;
use crate::run_log::RunLog;
use crate::{Checkpoints, DistributedAdamW, ProcessGroup, Result, ShardedParams, Topology, TrainError, ZeroStage};

const TRAINER_STATE: &str = "trainer_state.json";

/// `trainer_state.json`: the step and worker count every run has, and the recipe's own fields
/// (`R`, flattened beside them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState<R> {
    pub step: u64,
    /// Data-parallel workers of the run: a resume with another count is refused.
    #[serde(default = "crate::distributed::one_worker")]
    pub workers: usize,
    #[serde(flatten)]
    pub recipe: R,
}

/// A run in its directory, on this worker's device, among its workers.
pub struct Session {
    pub device: Device,
    /// Shared: a ZeRO-3 model gathers its layers through it.
    pub group: Arc<ProcessGroup>,
    pub dtype: DType,
    run: RunSection,
    checkpoints: Checkpoints,
    resume_from: Option<(u64, PathBuf)>,
}

impl Session {
    /// Opens this worker's device and process group and decides where the run starts: with
    /// `resume`, the latest complete checkpoint (refused when there is none, or when another
    /// number of workers trained it); without, a run
    /// directory that already holds checkpoints is refused. Nothing is loaded yet.
    pub fn open(model: &ModelSection, run: &RunSection, resume: bool, distributed: Option<&Topology>) -> Result<Session> {
        let device = crate::distributed::worker_device(distributed, model.device)?.open()?;
        let group = Arc::new(ProcessGroup::for_topology(distributed, &device)?);
        let checkpoints = Checkpoints::new(run.dir.join("checkpoints"));
        let resume_from = match (resume, checkpoints.latest()?) {
            (true, Some(latest)) => Some(latest),
            (true, None) => return Err(TrainError::Config(format!("--resume: no complete checkpoint under {}", checkpoints.root().display()))),
            (false, Some(_)) => {
                return Err(TrainError::Config(format!(
                    "{} already holds checkpoints; pass --resume to continue that run, or choose another run.dir",
                    run.dir.display()
                )))
            }
            (false, None) => None,
        };
        if let Some((step, dir)) = &resume_from {
            // before anything is loaded: the optimizer shards and the data order belong to the count
            let world = distributed.map_or(1, |t| t.world_size);
            crate::distributed::check_resume_workers(*step, read_trainer_state::<serde_json::Value>(dir)?.workers, world)?;
        }
        Ok(Session { device, group, dtype: model.dtype.into(), run: run.clone(), checkpoints, resume_from })
    }

    /// Rank 0 writes the run directory.
    pub fn is_main(&self) -> bool {
        self.group.is_main()
    }

    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    pub fn run_dir(&self) -> &Path {
        &self.run.dir
    }

    /// The step of the checkpoint the run resumes from.
    pub fn resume_step(&self) -> Option<u64> {
        self.resume_from.as_ref().map(|(step, _)| *step)
    }

    /// Takes the run directory (rank 0): a lock held until the returned guard drops (a second
    /// run, or `--resume`, on the same directory refuses), and `config.toml` = `resolved_toml`.
    pub fn begin(&self, resolved_toml: &str) -> Result<Option<RunLock>> {
        if !self.is_main() {
            return Ok(None);
        }
        let lock = RunLock::acquire(&self.run.dir).map_err(|e| TrainError::Config(e.to_string()))?;
        let path = self.run.dir.join("config.toml");
        std::fs::write(&path, resolved_toml).map_err(|e| TrainError::io(&path, e))?;
        Ok(Some(lock))
    }

    /// The model to train: `model.path`'s weights or a random initialisation, with LoRA
    /// adapters when `lora` is set; a resumed run takes the checkpoint's weights (full
    /// fine-tuning) or adapters (LoRA). At `zero_stage` 3 with several workers, each keeps only
    /// its rows of the weights ([`ShardedParams`]) and the model gathers each layer when it runs.
    pub fn load_policy(&self, model: &ModelSection, lora: Option<&LoraConfig>, zero_stage: ZeroStage) -> Result<Policy> {
        let (dtype, device) = (self.dtype, &self.device);
        let (config, mut params) = match model.pretrained_dir()? {
            Some(dir) => {
                let (config, params) = forge_model::load_weights(&dir, dtype, device)?;
                (model.with_rope_scaling(config)?, params)
            }
            None => {
                let config = model.architecture()?;
                let params = ParamStore::random(&config, model.init_std, model.init_seed, dtype, device)?;
                (config, params)
            }
        };
        if let (Some((_, dir)), None) = (&self.resume_from, lora) {
            params = forge_model::weights::load_params(&dir.join("model"), &config, dtype, device)?;
        }
        let mut shards = None;
        let trained = match lora {
            None if zero_stage.shards_parameters() && self.world_size() > 1 => {
                let sharded = Arc::new(ShardedParams::from_full(params, self.group.clone())?);
                tracing::info!(bytes = sharded.owned_bytes(), "parameters sharded (ZeRO-3)");
                shards = Some(sharded.clone());
                Qwen3ForCausalLM::sharded(config.clone(), sharded, dtype, device)?
            }
            None => Qwen3ForCausalLM::new(config.clone(), params)?,
            Some(lora) => {
                let adapters = match &self.resume_from {
                    Some((_, dir)) => load_adapters(&dir.join("adapter"), &config, dtype, device)?.2,
                    None => init_adapters(&config, lora, dtype, device)?,
                };
                Qwen3ForCausalLM::with_lora(config.clone(), params, lora.clone(), adapters)?
            }
        };
        Ok(Policy { model: Arc::new(trained), shards, config, tokenizer_dir: model.tokenizer_dir()?, base: model.path.clone().unwrap_or_default(), dtype })
    }

    /// AdamW over the policy's trainable parameters, its state sharded across the workers as
    /// `zero_stage` says, with the checkpoint's state on resume.
    pub fn optimizer(&self, policy: &Policy, optim: &OptimSection, zero_stage: ZeroStage) -> Result<DistributedAdamW> {
        let mut optimizer = match &policy.shards {
            Some(shards) => DistributedAdamW::for_shards(shards, optim.adamw())?,
            None => DistributedAdamW::new(policy.model.trainable(), optim.adamw(), zero_stage, &self.group)?,
        };
        if let Some((_, dir)) = &self.resume_from {
            optimizer.load_state(dir, &self.group)?;
        }
        Ok(optimizer)
    }

    /// Step 0 with `fresh`, or the checkpoint's state on resume.
    pub fn trainer_state<R: DeserializeOwned>(&self, fresh: R) -> Result<TrainerState<R>> {
        let Some((step, dir)) = &self.resume_from else {
            return Ok(TrainerState { step: 0, workers: self.world_size(), recipe: fresh });
        };
        let state = read_trainer_state(dir)?;
        tracing::info!(step, "resumed");
        Ok(state)
    }

    /// `metrics.jsonl` (rank 0), truncated after the resumed step.
    pub fn run_log(&self) -> Result<Option<RunLog>> {
        self.is_main().then(|| RunLog::open(&self.run.dir, self.resume_step())).transpose()
    }

    /// The progress bar of `total` steps (hidden on workers other than rank 0).
    pub fn progress(&self, label: &str, total: u64, position: u64) -> indicatif::ProgressBar {
        let bar = match self.is_main() {
            true => indicatif::ProgressBar::new(total),
            false => indicatif::ProgressBar::hidden(),
        }
        .with_position(position);
        let template = format!("{label} {{bar:30}} {{pos}}/{{len}} steps  eta {{eta}}  {{msg}}");
        bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("valid template"));
        bar
    }

    /// Whether step `step` of `total` ends with a checkpoint (every `run.checkpoint_every`, and
    /// the last).
    pub fn checkpoint_due(&self, step: u64, total: u64) -> bool {
        step.is_multiple_of(self.run.checkpoint_every) || step == total
    }

    /// Writes checkpoint `state.step` and keeps the newest `run.keep_last`. Rank 0 writes the
    /// model and trainer state; the optimizer state is rank 0's (replicated) or every worker's
    /// own shard, staged beside the checkpoint and moved into it before it is made durable, so
    /// a checkpoint is complete with every shard or absent. Every worker returns once it is written.
    pub fn save_checkpoint<R: Serialize>(&self, state: &TrainerState<R>, policy: &Policy, optimizer: &DistributedAdamW) -> Result<()> {
        let staging = self.checkpoints.shard_staging_dir(state.step);
        let sharded = optimizer.stage().shards_optimizer() && self.world_size() > 1;
        let gathered = policy.gathered()?;
        if sharded {
            if self.is_main() {
                let _ = std::fs::remove_dir_all(&staging);
                std::fs::create_dir_all(&staging).map_err(|e| TrainError::io(&staging, e))?;
            }
            self.group.barrier()?;
            optimizer.save_state(&staging, &self.group)?;
            self.group.barrier()?;
        }
        if self.is_main() {
            self.checkpoints.save(state.step, |dir| {
                policy.save_trained(dir, gathered.as_ref())?;
                match sharded {
                    true => move_files(&staging, dir)?,
                    false => optimizer.save_state(dir, &self.group)?,
                }
                let path = dir.join(TRAINER_STATE);
                std::fs::write(&path, serde_json::to_string_pretty(state).expect("state serialises")).map_err(|e| TrainError::io(&path, e))
            })?;
            let _ = std::fs::remove_dir_all(&staging);
            self.checkpoints.prune(self.run.keep_last)?;
        }
        self.group.barrier()
    }

    /// The final model, `run.dir/model` in HF layout (LoRA merged into the base), and the
    /// `plot` series of the run log as an SVG; every worker returns once rank 0 has written it.
    /// Blocking (a barrier): async callers run it off their workers.
    pub fn finish(&self, policy: &Policy, log: Option<&RunLog>, plot: &str) -> Result<PathBuf> {
        let out = self.run.dir.join("model");
        let gathered = policy.gathered()?;
        if self.is_main() {
            policy.save_merged(&out, gathered.as_ref())?;
            if let Some(log) = log {
                log.plot(plot)?;
            }
        }
        self.group.barrier()?;
        Ok(out)
    }
}

/// The `trainer_state.json` of checkpoint `dir`.
fn read_trainer_state<R: DeserializeOwned>(dir: &Path) -> Result<TrainerState<R>> {
    let path = dir.join(TRAINER_STATE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
}

/// Moves every file of `from` into `to`.
fn move_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(|e| TrainError::io(from, e))? {
        let entry = entry.map_err(|e| TrainError::io(from, e))?;
        let dest = to.join(entry.file_name());
        std::fs::rename(entry.path(), &dest).map_err(|e| TrainError::io(&dest, e))?;
    }
    Ok(())
}

/// The model being trained, and what saving it needs.
pub struct Policy {
    pub model: Arc<Qwen3ForCausalLM>,
    /// ZeRO-3: this worker's rows of the weights, which `model` gathers from.
    pub shards: Option<Arc<ShardedParams>>,
    pub config: Config,
    /// The tokenizer and chat template copied beside every saved model.
    tokenizer_dir: PathBuf,
    /// The base model named in adapter configs (`model.path`).
    base: String,
    dtype: DType,
}

impl Policy {
    /// ZeRO-3: every weight gathered from the workers (a collective: every worker calls it);
    /// `None` when the weights are not sharded.
    pub fn gathered(&self) -> Result<Option<ParamStore>> {
        self.shards.as_ref().map(|s| s.gather_all()).transpose()
    }

    /// A replicated copy of the model to serve (RL's rollout engine): the model itself, or at
    /// ZeRO-3 its gathered weights (a collective); keep it current with
    /// `DistributedAdamW::with_serving_copy`.
    pub fn serving_model(&self) -> Result<Arc<Qwen3ForCausalLM>> {
        match self.gathered()? {
            Some(params) => Ok(Arc::new(Qwen3ForCausalLM::new(self.config.clone(), params)?)),
            None => Ok(self.model.clone()),
        }
    }

    /// What a checkpoint holds of the model: `adapter/` (LoRA) or `model/` (`gathered`: the
    /// weights of a sharded model).
    fn save_trained(&self, dir: &Path, gathered: Option<&ParamStore>) -> Result<()> {
        match self.model.lora() {
            Some((lora, adapters)) => save_adapters(&dir.join("adapter"), adapters, lora, &self.base)?,
            None => self.save_params(gathered.unwrap_or(self.model.params()), &dir.join("model"), false)?,
        }
        Ok(())
    }

    /// The model as users load it in transformers: LoRA merged into the base.
    fn save_merged(&self, out: &Path, gathered: Option<&ParamStore>) -> Result<()> {
        self.model.set_dropout_seed(None);
        match self.model.lora() {
            Some((lora, adapters)) => self.save_params(&merge(self.model.params(), adapters, lora)?, out, true),
            None => self.save_params(gathered.unwrap_or(self.model.params()), out, true),
        }
    }

    fn save_params(&self, params: &ParamStore, out: &Path, force: bool) -> Result<()> {
        let options = ExportOptions { shard_size: DEFAULT_SHARD_SIZE, dtype: self.dtype, force };
        save_model_dir(params, &self.config, Some(&self.tokenizer_dir), out, &options)?;
        Ok(())
    }
}
