//! ZeRO: the training state of data-parallel workers sharded across them instead of replicated
//! (DeepSpeed's stages, PyTorch FSDP's sharding strategies).
//!
//! | stage | sharded across the N workers                     | replicated       |
//! |-------|--------------------------------------------------|------------------|
//! | 0     | nothing (DDP)                                    | everything       |
//! | 1     | AdamW moments, fp32 master weights               | weights, grads   |
//! | 2     | + reduced gradients (reduce-scatter)             | weights          |
//! | 3     | + weights (each layer gathered when it runs)     | nothing          |

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use forge_model::{Gradients, ParamStore, Qwen3ForCausalLM};
use serde::{Deserialize, Serialize};

use crate::{grad_norm, AdamW, AdamWConfig, GradAccumulator, ProcessGroup, Result, StepStats, TrainError};

/// `train.zero_stage`: 0 (default), 1, 2 or 3, DeepSpeed's meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum ZeroStage {
    /// Everything replicated; gradients all-reduced (PyTorch DDP).
    #[default]
    Replicated,
    /// Optimizer state sharded: each worker updates its shard, the updated weights are all-gathered.
    OptimizerState,
    /// Optimizer state and gradients sharded: gradients are reduce-scattered.
    Gradients,
    /// Optimizer state, gradients and weights sharded: a layer's weights are all-gathered just
    /// before its forward and backward and released after.
    Parameters,
}

impl ZeroStage {
    pub fn number(self) -> u8 {
        self.into()
    }

    pub fn shards_optimizer(self) -> bool {
        self >= Self::OptimizerState
    }

    pub fn shards_gradients(self) -> bool {
        self >= Self::Gradients
    }

    pub fn shards_parameters(self) -> bool {
        self >= Self::Parameters
    }
}

impl ZeroStage {
    /// What the rest of a training config must be for this stage: at 3, layer-wise recompute
    /// (only the block-wise backward lets a gathered layer go before the next is gathered) and
    /// full fine-tuning (under LoRA the frozen base is replicated and the adapters' state is
    /// small: stage 1 or 2 shards it).
    pub fn check(self, recompute: bool, lora: bool) -> std::result::Result<(), String> {
        if !self.shards_parameters() {
            return Ok(());
        }
        if lora {
            return Err("train.zero_stage = 3 with [lora]: a LoRA run's base weights are frozen and replicated, and its adapters' state is small; use zero_stage = 1 or 2".into());
        }
        if !recompute {
            return Err("train.zero_stage = 3 needs train.recompute = true: a gathered layer is released after its forward and gathered again for its backward, which the block-wise recompute backward does".into());
        }
        Ok(())
    }
}

impl TryFrom<u8> for ZeroStage {
    type Error = String;

    fn try_from(stage: u8) -> Result<Self, String> {
        Ok(match stage {
            0 => Self::Replicated,
            1 => Self::OptimizerState,
            2 => Self::Gradients,
            3 => Self::Parameters,
            n => return Err(format!("zero_stage = {n}: it is 0 (replicated), 1 (optimizer state sharded), 2 (+ gradients) or 3 (+ parameters)")),
        })
    }
}

impl From<ZeroStage> for u8 {
    fn from(stage: ZeroStage) -> u8 {
        match stage {
            ZeroStage::Replicated => 0,
            ZeroStage::OptimizerState => 1,
            ZeroStage::Gradients => 2,
            ZeroStage::Parameters => 3,
        }
    }
}

/// How the parameters are cut into the workers' shards: each along dim 0 into `world` chunks of
/// `chunk_rows` rows (FSDP2's layout), the last chunks padded with zero rows so that every
/// worker's piece has the same size (what reduce-scatter and all-gather exchange). A worker owns
/// the real rows of its chunk; where a parameter has fewer rows than workers, some own none.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardLayout {
    pub rank: usize,
    pub world_size: usize,
    pub params: Vec<ParamShard>,
}

/// One parameter's cut.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamShard {
    pub name: String,
    pub shape: Vec<usize>,
    /// Rows of every worker's chunk: `ceil(rows / world_size)`.
    pub chunk_rows: usize,
}

impl ParamShard {
    fn rows(&self) -> usize {
        self.shape[0]
    }

    /// Elements of one row (1 for a vector).
    fn row_elems(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// The rows of the full parameter that `rank` owns (empty when its chunk is all padding).
    pub fn owned_rows(&self, rank: usize) -> std::ops::Range<usize> {
        let start = (rank * self.chunk_rows).min(self.rows());
        start..((rank + 1) * self.chunk_rows).min(self.rows())
    }

    /// The shape of a chunk: `chunk_rows` rows.
    fn chunk_shape(&self) -> Vec<usize> {
        let mut shape = self.shape.clone();
        shape[0] = self.chunk_rows;
        shape
    }
}

impl ShardLayout {
    /// The layout of `params` (name, shape) over `world_size` workers, seen from `rank`.
    pub fn new<'a>(params: impl IntoIterator<Item = (&'a str, &'a [usize])>, rank: usize, world_size: usize) -> Self {
        let params = params
            .into_iter()
            .map(|(name, shape)| {
                let shape = if shape.is_empty() { vec![1] } else { shape.to_vec() };
                ParamShard { name: name.to_string(), chunk_rows: shape[0].div_ceil(world_size), shape }
            })
            .collect();
        Self { rank, world_size, params }
    }

    /// This worker's rows of `full` (a tensor of `param`'s shape); `None` when it owns none.
    pub fn own_rows(&self, param: &ParamShard, full: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let rows = param.owned_rows(self.rank);
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(full.reshape(param.shape.as_slice())?.narrow(0, rows.start, rows.len())?.contiguous()?))
    }

    /// `full` padded with zero rows to `world_size × chunk_rows`: the input of a reduce-scatter.
    pub fn padded(&self, param: &ParamShard, full: &Tensor) -> candle_core::Result<Tensor> {
        let full = full.reshape(param.shape.as_slice())?;
        let missing = param.chunk_rows * self.world_size - param.rows();
        if missing == 0 {
            return Ok(full);
        }
        let mut pad_shape = param.shape.clone();
        pad_shape[0] = missing;
        Tensor::cat(&[&full, &Tensor::zeros(pad_shape, full.dtype(), full.device())?], 0)
    }

    /// This worker's chunk from its owned rows (`None`: it owns none), padded with zero rows to
    /// `chunk_rows`: the input of an all-gather.
    pub fn chunk(&self, param: &ParamShard, owned: Option<&Tensor>, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let owned_rows = param.owned_rows(self.rank).len();
        let mut pad_shape = param.chunk_shape();
        pad_shape[0] -= owned_rows;
        let padding = Tensor::zeros(pad_shape, dtype, device)?;
        match owned {
            Some(rows) if owned_rows == param.chunk_rows => Ok(rows.clone()),
            Some(rows) => Tensor::cat(&[rows, &padding], 0),
            None => Ok(padding),
        }
    }

    /// The full parameter from the all-gathered chunks (`world_size × chunk_rows` rows).
    pub fn unpad(&self, param: &ParamShard, gathered: &Tensor) -> candle_core::Result<Tensor> {
        gathered.narrow(0, 0, param.rows())?.reshape(param.shape.as_slice())
    }

    /// Elements this worker owns, over all parameters.
    pub fn owned_elements(&self) -> usize {
        self.params.iter().map(|p| p.owned_rows(self.rank).len() * p.row_elems()).sum()
    }
}

/// Whether a step's gradient is the mean or the sum over every micro-batch of every worker
/// (SFT averages; GRPO's micro-batches already carry their share of the whole, so it sums).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    Mean,
    Sum,
}

/// A step's gradients after the reduction across the workers, and their global L2 norm.
/// Sharded stages keep only this worker's rows of each.
pub struct ReducedGradients {
    pub grads: Gradients,
    pub grad_norm: f32,
}

impl ReducedGradients {
    /// Bytes the reduced gradients occupy on this worker.
    pub fn bytes(&self) -> usize {
        self.grads.values().map(|g| g.elem_count() * g.dtype().size_in_bytes()).sum()
    }
}

/// This worker's part of a step's gradient as its micro-batches' gradients arrive: summed
/// locally in f32 and reduced at the step's end (stages 0–1), or reduce-scattered at once with
/// only this worker's rows kept (stages 2–3: no full-size sum outlives a micro-batch).
///
/// At stages 2–3 every micro-batch is a collective: a worker with fewer micro-batches than the
/// others in a step calls [`skip`](Self::skip) for each one it lacks (the recipes pad to
/// [`ProcessGroup::max_over_workers`]).
pub struct StepGradients {
    local: GradAccumulator,
    sharded: Option<ShardedSum>,
}

struct ShardedSum {
    layout: ShardLayout,
    device: Device,
    /// Per parameter (layout order): the f32 sum of this worker's rows over the micro-batches.
    rows: Vec<Option<Tensor>>,
    /// Per parameter: whether any of this worker's micro-batches had a gradient for it.
    present: Vec<bool>,
    micro_batches: usize,
}

impl StepGradients {
    /// Adds one micro-batch's gradients (full shapes, any float dtype).
    pub fn add(&mut self, group: &ProcessGroup, grads: Gradients) -> Result<()> {
        match &mut self.sharded {
            None => self.local.add(grads),
            Some(sum) => {
                sum.micro_batches += 1;
                sum.reduce_scatter(group, grads)
            }
        }
    }

    /// Takes part in a micro-batch's collectives without one (a worker with fewer micro-batches
    /// than the others in this step): nothing is added. A no-op where nothing is reduced per
    /// micro-batch (stages 0–1); at stage 3 the others gather every layer for their forward and
    /// backward, so `model` runs a two-token batch whose objective is zero with them.
    pub fn skip(&mut self, group: &ProcessGroup, model: &Qwen3ForCausalLM) -> Result<()> {
        let Some(sum) = &mut self.sharded else { return Ok(()) };
        if !model.is_sharded() {
            return sum.reduce_scatter(group, Gradients::new());
        }
        let input_ids = Tensor::zeros((1, 2), DType::U32, model.device())?;
        // one label, so that the objective reaches every layer (its gradients are zeros all the same)
        let labels = Tensor::new(&[[-100i64, 0]], model.device())?;
        let nothing = forge_model::Batch { input_ids, attention_mask: None, labels: Some(labels), position_ids: None };
        // × a zero tensor rather than the scalar 0: candle prunes the backward of `affine(0, _)`
        let zero = Tensor::new(0f32, model.device())?;
        let (_, zeros) = model.objective_and_gradients(&nothing, true, |nll, _| Ok(nll.sum_all()?.mul(&zero)?))?;
        let present = sum.present.clone();
        sum.reduce_scatter(group, zeros)?;
        // zeros added, and no gradient of this worker's
        sum.present = present;
        Ok(())
    }

    /// Micro-batches added on this worker.
    pub fn micro_batches(&self) -> usize {
        self.sharded.as_ref().map_or_else(|| self.local.micro_batches(), |s| s.micro_batches)
    }
}

impl ShardedSum {
    fn reduce_scatter(&mut self, group: &ProcessGroup, mut grads: Gradients) -> Result<()> {
        for (i, p) in self.layout.params.iter().enumerate() {
            let full = match grads.remove(&p.name) {
                Some(grad) => {
                    self.present[i] = true;
                    grad.to_dtype(DType::F32)?
                }
                None => Tensor::zeros(p.shape.as_slice(), DType::F32, &self.device)?,
            };
            let chunk = group.reduce_scatter(&self.layout.padded(p, &full)?)?;
            drop(full);
            let owned = p.owned_rows(self.layout.rank).len();
            if owned == 0 {
                continue;
            }
            let rows = chunk.narrow(0, 0, owned)?;
            self.rows[i] = Some(match self.rows[i].take() {
                Some(sum) => (sum + rows)?,
                None => rows.contiguous()?,
            });
        }
        match grads.into_keys().next() {
            Some(unknown) => Err(TrainError::UnknownGradient(unknown)),
            None => Ok(()),
        }
    }
}

/// AdamW across the data-parallel workers, with its state sharded as `train.zero_stage` says.
/// A step is `begin_step` (where the micro-batches' gradients go), `reduce` (all-reduce, or the
/// reduce-scattered rows from stage 2) then `step` (AdamW on what this worker owns, then the
/// updated weights all-gathered).
pub struct DistributedAdamW {
    stage: ZeroStage,
    adamw: AdamW,
    /// `None` with one worker or at stage 0: the state is replicated.
    sharding: Option<Sharding>,
    /// The trained parameters, in the model's order (they fix the reduction's order and shapes).
    params: ParamStore,
}

struct Sharding {
    layout: ShardLayout,
    /// This worker's rows of each parameter (`None`: it owns none): the optimizer's parameters.
    shards: Vec<Option<Var>>,
    device: Device,
    /// After each step, all-gather the updated rows into `DistributedAdamW::params` (stages
    /// 1–2: the model's weights; stage 3: a serving copy, when one is kept).
    gather_after_step: bool,
}

/// File of the optimizer state of worker `rank` of `world` in a checkpoint of sharded state.
pub fn optimizer_shard_file(rank: usize, world: usize) -> String {
    format!("optimizer.rank-{rank:05}-of-{world:05}.safetensors")
}

impl DistributedAdamW {
    /// The optimizer of `params` (the model's trainable parameters, replicated on every worker)
    /// on this worker of `group`. At stage 3 with several workers, the parameters themselves are
    /// sharded: build the model from `ShardedParams` and its optimizer with [`for_shards`](Self::for_shards).
    pub fn new(params: &ParamStore, config: AdamWConfig, stage: ZeroStage, group: &ProcessGroup) -> Result<Self> {
        if stage.shards_parameters() && group.world_size() > 1 {
            return Err(TrainError::Config("train.zero_stage = 3 shards the parameters: the model is built from ShardedParams and its optimizer with DistributedAdamW::for_shards".into()));
        }
        let params = ParamStore::from_entries(params.iter().map(|(n, v)| (n.to_string(), v.clone())).collect());
        if !stage.shards_optimizer() || group.world_size() == 1 {
            return Ok(Self { stage, adamw: AdamW::for_params(&params, config)?, sharding: None, params });
        }
        let layout = ShardLayout::new(params.iter().map(|(n, v)| (n, v.dims())), group.rank(), group.world_size());
        let shards = layout
            .params
            .iter()
            .map(|p| Ok(layout.own_rows(p, params.get(&p.name)?.as_tensor())?.map(|rows| Var::from_tensor(&rows.detach())).transpose()?))
            .collect::<Result<Vec<_>>>()?;
        let owned = layout.params.iter().zip(&shards).filter_map(|(p, v)| v.as_ref().map(|v| (p.name.clone(), v.clone())));
        let adamw = AdamW::new(owned, config)?;
        tracing::info!(stage = stage.number(), rank = group.rank(), owned_elements = layout.owned_elements(), "optimizer state sharded (ZeRO)");
        let device = params.iter().next().map_or(Device::Cpu, |(_, v)| v.device().clone());
        Ok(Self { stage, adamw, sharding: Some(Sharding { layout, shards, device, gather_after_step: true }), params })
    }

    /// ZeRO-3: the optimizer of a model whose parameters are sharded (`ShardedParams`): AdamW
    /// updates this worker's rows in place, where the model gathers them from.
    pub fn for_shards(shards: &ShardedParams, config: AdamWConfig) -> Result<Self> {
        let owned = shards.layout.params.iter().zip(&shards.shards).filter_map(|(p, v)| v.as_ref().map(|v| (p.name.clone(), v.clone())));
        let adamw = AdamW::new(owned, config)?;
        let sharding = Sharding { layout: shards.layout.clone(), shards: shards.shards.clone(), device: shards.device.clone(), gather_after_step: false };
        Ok(Self { stage: ZeroStage::Parameters, adamw, sharding: Some(sharding), params: ParamStore::from_entries(Vec::new()) })
    }

    /// ZeRO-3 with a replicated copy of the weights that something else serves (RL's rollout
    /// engine): every step all-gathers the updated rows into `serving` too. `serving` holds the
    /// same parameters, full size.
    pub fn with_serving_copy(mut self, serving: &ParamStore) -> Self {
        if let (Some(sharding), true) = (&mut self.sharding, self.stage.shards_parameters()) {
            self.params = ParamStore::from_entries(serving.iter().map(|(n, v)| (n.to_string(), v.clone())).collect());
            sharding.gather_after_step = true;
        }
        self
    }

    pub fn stage(&self) -> ZeroStage {
        self.stage
    }

    pub fn lr(&self) -> f64 {
        self.adamw.lr()
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.adamw.set_lr(lr);
    }

    pub fn steps(&self) -> u64 {
        self.adamw.steps()
    }

    /// The AdamW over what this worker owns (every parameter when nothing is sharded).
    pub fn local(&self) -> &AdamW {
        &self.adamw
    }

    /// Bytes of optimizer state on this worker (moments and master weights).
    pub fn state_bytes(&self) -> usize {
        self.adamw.state_bytes()
    }

    /// Where this worker's micro-batch gradients of the next step go.
    pub fn begin_step(&self) -> Result<StepGradients> {
        let sharded = match (&self.sharding, self.stage.shards_gradients()) {
            (Some(sharding), true) => {
                let n = sharding.layout.params.len();
                Some(ShardedSum { layout: sharding.layout.clone(), device: sharding.device.clone(), rows: vec![None; n], present: vec![false; n], micro_batches: 0 })
            }
            _ => None,
        };
        Ok(StepGradients { local: GradAccumulator::new(), sharded })
    }

    /// The step's gradient across the workers from this worker's micro-batches: all-reduced
    /// (stages 0–1; stage 1 then keeps its own rows) or the reduce-scattered rows (stages 2–3),
    /// with the global norm. A parameter no worker had a gradient for stays absent, as with one
    /// worker.
    pub fn reduce(&self, group: &ProcessGroup, step: StepGradients, reduction: Reduction) -> Result<ReducedGradients> {
        let mean = reduction == Reduction::Mean;
        let Some(sum) = step.sharded else {
            let (local_sum, micro_batches) = step.local.into_sum();
            let grads = group.reduce_gradients(local_sum, micro_batches, &self.params, mean)?;
            let grad_norm = grad_norm(&grads)?;
            let Some(Sharding { layout, .. }) = &self.sharding else { return Ok(ReducedGradients { grads, grad_norm }) };
            let mut own = Gradients::new();
            for p in &layout.params {
                if let Some(rows) = grads.get(&p.name).map(|g| layout.own_rows(p, g)).transpose()?.flatten() {
                    own.insert(p.name.clone(), rows);
                }
            }
            return Ok(ReducedGradients { grads: own, grad_norm });
        };
        // which parameters any worker had a gradient for; last: the step's micro-batches
        let mut counts: Vec<f64> = sum.present.iter().map(|&p| f64::from(u8::from(p))).collect();
        counts.push(sum.micro_batches as f64);
        group.all_reduce_f64(&mut counts)?;
        let total = counts.pop().unwrap_or_default();
        if total == 0.0 {
            return Err(TrainError::EmptyAccumulation);
        }
        let mut grads = Gradients::new();
        // per parameter: the sum of squares of this worker's rows; all-reduced, they sum to the norm
        let mut squares = vec![0f64; sum.layout.params.len()];
        for (i, (p, rows)) in sum.layout.params.iter().zip(sum.rows).enumerate() {
            let Some(rows) = rows.filter(|_| counts[i] > 0.0) else { continue };
            let rows = if mean && total != 1.0 { rows.affine(1.0 / total, 0.0)? } else { rows };
            squares[i] = crate::clip::squared_norms(&[(p.name.clone(), rows.clone())].into_iter().collect())?[0];
            grads.insert(p.name.clone(), rows);
        }
        group.all_reduce_f64(&mut squares)?;
        // summed in the gradients' (name) order, as the unsharded norm is
        let by_name: std::collections::BTreeMap<&str, f64> = sum.layout.params.iter().zip(&squares).map(|(p, s)| (p.name.as_str(), *s)).collect();
        let grad_norm = by_name.values().sum::<f64>().sqrt() as f32;
        if !grad_norm.is_finite() {
            let name = by_name.iter().find(|(_, s)| !s.is_finite()).map_or("(overflow of the sum)".to_string(), |(n, _)| n.to_string());
            return Err(TrainError::NonFiniteGradients { name, norm: grad_norm });
        }
        Ok(ReducedGradients { grads, grad_norm })
    }

    /// AdamW on this worker's part, then (sharded stages) every parameter all-gathered from the
    /// workers' updated rows, so each holds the new full weights.
    pub fn step(&mut self, group: &ProcessGroup, reduced: &ReducedGradients) -> Result<StepStats> {
        let stats = self.adamw.step_with_grad_norm(&reduced.grads, reduced.grad_norm)?;
        if let Some(Sharding { layout, shards, gather_after_step: true, .. }) = &self.sharding {
            for (p, shard) in layout.params.iter().zip(shards) {
                let full = self.params.get(&p.name)?;
                let chunk = layout.chunk(p, shard.as_ref().map(Var::as_tensor), full.dtype(), full.device())?;
                full.set(&layout.unpad(p, &group.all_gather(&chunk)?)?)?;
            }
        }
        Ok(stats)
    }

    /// Writes this worker's optimizer state into checkpoint directory `dir`: the whole state
    /// (`optimizer.safetensors`, rank 0 only) when replicated, else every worker its shard
    /// ([`optimizer_shard_file`]).
    pub fn save_state(&self, dir: &Path, group: &ProcessGroup) -> Result<()> {
        match &self.sharding {
            None if group.is_main() => self.adamw.save_state(&dir.join(REPLICATED_STATE)),
            None => Ok(()),
            Some(s) => self.adamw.save_state(&dir.join(optimizer_shard_file(s.layout.rank, s.layout.world_size))),
        }
    }

    /// Restores what [`save_state`](Self::save_state) wrote into checkpoint `dir`. A checkpoint
    /// of another ZeRO stage's layout is refused, naming the stage that resumes it.
    pub fn load_state(&mut self, dir: &Path, group: &ProcessGroup) -> Result<()> {
        let file = match &self.sharding {
            None => dir.join(REPLICATED_STATE),
            Some(s) => dir.join(optimizer_shard_file(s.layout.rank, s.layout.world_size)),
        };
        if !file.exists() {
            let sharded = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?.flatten().any(|e| e.file_name().to_string_lossy().starts_with("optimizer.rank-"));
            let saved = if sharded { "sharded (train.zero_stage 1 or 2)" } else { "replicated (train.zero_stage = 0)" };
            let now = match self.sharding {
                Some(_) => format!("train.zero_stage = {}, sharded over {} workers", self.stage.number(), group.world_size()),
                None => format!("train.zero_stage = {} with {} worker(s): replicated", self.stage.number(), group.world_size()),
            };
            return Err(TrainError::Config(format!(
                "--resume: {} holds the optimizer state {saved}, but this run ({now}) reads {}; resume with the zero_stage the run was trained with",
                dir.display(),
                file.file_name().unwrap_or_default().to_string_lossy()
            )));
        }
        // the shards are set to their master weights' rounding, which the full weights loaded
        // from the checkpoint's model already hold
        self.adamw.load_state(&file)
    }
}

const REPLICATED_STATE: &str = "optimizer.safetensors";

/// ZeRO-3's parameters: each worker holds its dim-0 rows of every parameter ([`ShardLayout`]);
/// the model gathers a unit (a decoder layer, the embedding, the head) from all workers just
/// before it runs and drops it after (`forge_model::ParamGather`). Every gather is a collective:
/// the workers' models run the same units in the same order.
pub struct ShardedParams {
    layout: ShardLayout,
    /// This worker's rows of each parameter, layout order (`None`: it owns none).
    shards: Vec<Option<Var>>,
    index: std::collections::HashMap<String, usize>,
    group: Arc<ProcessGroup>,
    dtype: DType,
    device: Device,
}

impl ShardedParams {
    /// Keeps this worker's rows of `params` (the full weights, the same on every worker: loaded
    /// or initialised identically) and lets the rest go.
    pub fn from_full(params: ParamStore, group: Arc<ProcessGroup>) -> Result<Self> {
        let layout = ShardLayout::new(params.iter().map(|(n, v)| (n, v.dims())), group.rank(), group.world_size());
        let (mut dtype, mut device) = (DType::F32, Device::Cpu);
        let mut shards = Vec::with_capacity(layout.params.len());
        for p in &layout.params {
            let full = params.get(&p.name)?;
            (dtype, device) = (full.dtype(), full.device().clone());
            shards.push(layout.own_rows(p, full.as_tensor())?.map(|rows| Var::from_tensor(&rows.detach())).transpose()?);
        }
        let index = layout.params.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
        Ok(Self { layout, shards, index, group, dtype, device })
    }

    /// Bytes of the rows this worker holds.
    pub fn owned_bytes(&self) -> usize {
        self.layout.owned_elements() * self.dtype.size_in_bytes()
    }

    fn gather_one(&self, i: usize) -> Result<Tensor> {
        let p = &self.layout.params[i];
        let chunk = self.layout.chunk(p, self.shards[i].as_ref().map(Var::as_tensor), self.dtype, &self.device)?;
        Ok(self.layout.unpad(p, &self.group.all_gather(&chunk)?)?)
    }

    /// Every parameter, full size (a collective): to save the model, or to serve it.
    pub fn gather_all(&self) -> Result<ParamStore> {
        let entries = (0..self.layout.params.len())
            .map(|i| Ok((self.layout.params[i].name.clone(), Var::from_tensor(&self.gather_one(i)?)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ParamStore::from_entries(entries))
    }
}

impl forge_model::ParamGather for ShardedParams {
    fn gather(&self, names: &[String]) -> forge_model::Result<Vec<Tensor>> {
        names
            .iter()
            .map(|name| {
                let &i = self.index.get(name).ok_or_else(|| forge_model::ModelError::Invalid(format!("`{name}` is not a sharded parameter")))?;
                self.gather_one(i).map_err(|e| forge_model::ModelError::Invalid(format!("gathering `{name}` from the workers: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_from_their_numbers_and_others_are_refused() {
        #[derive(Deserialize)]
        struct Train {
            zero_stage: ZeroStage,
        }
        let stage = |n: &str| toml::from_str::<Train>(&format!("zero_stage = {n}")).map(|t| t.zero_stage);
        assert_eq!(stage("0").unwrap(), ZeroStage::Replicated);
        assert_eq!(stage("2").unwrap(), ZeroStage::Gradients);
        assert!(stage("3").unwrap().shards_parameters() && !ZeroStage::Gradients.shards_parameters());
        let err = stage("4").unwrap_err().to_string();
        assert!(err.contains("zero_stage = 4") && err.contains("3 (+ parameters)"), "{err}");
    }

    #[test]
    fn dim_zero_chunks_cover_every_row_once_and_pad_to_equal_size() {
        // 5 rows over 2 workers: 3 + 2 (one padding row); 1 row over 4: three workers own none
        let shapes: [(&str, &[usize]); 2] = [("w", &[5, 2]), ("b", &[1])];
        let layouts: Vec<ShardLayout> = (0..4).map(|rank| ShardLayout::new(shapes.iter().copied(), rank, 4)).collect();
        assert_eq!(layouts[0].params[0].chunk_rows, 2);
        assert_eq!((0..4).map(|r| layouts[r].params[0].owned_rows(r)).collect::<Vec<_>>(), [0..2, 2..4, 4..5, 5..5]);
        assert_eq!((0..4).map(|r| layouts[r].owned_elements()).collect::<Vec<_>>(), [4 + 1, 4, 2, 0]);
        let full = Tensor::arange(0f32, 10.0, &Device::Cpu).unwrap().reshape((5, 2)).unwrap();
        let p = &layouts[2].params[0];
        let owned = layouts[2].own_rows(p, &full).unwrap().unwrap();
        assert_eq!(owned.to_vec2::<f32>().unwrap(), [[8.0, 9.0]]);
        let chunk = layouts[2].chunk(p, Some(&owned), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(chunk.to_vec2::<f32>().unwrap(), [[8.0, 9.0], [0.0, 0.0]]);
        assert!(layouts[3].own_rows(p, &full).unwrap().is_none());
        let padded = layouts[0].padded(p, &full).unwrap();
        assert_eq!(padded.dims(), [8, 2]);
        assert_eq!(layouts[0].unpad(p, &padded).unwrap().to_vec2::<f32>().unwrap(), full.to_vec2::<f32>().unwrap());
    }
}
