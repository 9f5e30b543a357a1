//! AdamW with the semantics of `torch.optim.AdamW` (decoupled weight decay, bias correction,
//! eps added after the square root), f32 moments always, f32 master weights for bf16/f16
//! parameters, no weight decay on 1-D parameters, and global gradient-norm clipping folded into
//! the update.
//!
//! Per parameter and step (t = that parameter's step count, g = gradient × clip coefficient):
//! ```text
//! w  ← w · (1 − lr·wd)                 (wd = 0 for norms and biases)
//! m  ← m + (1 − β1)(g − m)
//! v  ← β2·v + (1 − β2)·g²
//! w  ← w − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//! On CPU that is one fused pass per tensor (`fused.rs`), on CUDA one fused launch per dtype over
//! all the tensors (forge-kernels' multi-tensor `adamw`, bit-identical to the CPU pass); on other
//! devices it is composed from candle tensor ops (the same arithmetic in the same order).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor, Var};
use forge_model::{Gradients, ParamStore};
use serde::{Deserialize, Serialize};

use crate::clip::{clip_coefficient, grad_norm};
use crate::fused::{to_f32_vec, FusedAdamW, HostMoments, StepScalars};
use crate::{Result, TrainError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Base learning rate; a schedule overrides it each step through `AdamW::set_lr`.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay of matrices; 1-D parameters (norm weights, biases) never decay.
    pub weight_decay: f64,
    /// Clip the global gradient L2 norm to this value before the update (torch's
    /// `clip_grad_norm_`); `None` disables clipping (the norm is still measured and reported).
    pub max_grad_norm: Option<f64>,
    /// Update bf16/f16 parameters directly, without an f32 master copy (saves 4 bytes per
    /// parameter, but updates smaller than half a bf16 ulp are lost). Moments stay f32 either way.
    pub pure_bf16: bool,
}

impl Default for AdamWConfig {
    /// torch.optim.AdamW's defaults.
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2, max_grad_norm: None, pure_bf16: false }
    }
}

impl AdamWConfig {
    /// Whether a parameter of `dtype` gets an f32 master copy: 16-bit parameters, unless `pure_bf16`.
    pub fn keeps_master(&self, dtype: DType) -> bool {
        !self.pure_bf16 && matches!(dtype, DType::BF16 | DType::F16)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(TrainError::InvalidConfig(msg));
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("lr must be a finite number >= 0, got {}", self.lr));
        }
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(format!("{name} must lie in [0, 1), got {beta}"));
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad(format!("eps must be >= 0, got {}", self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay must be >= 0, got {}", self.weight_decay));
        }
        if let Some(max) = self.max_grad_norm {
            if !(max.is_finite() && max > 0.0) {
                return bad(format!("max_grad_norm must be > 0 (leave it unset to disable clipping), got {max}"));
            }
        }
        Ok(())
    }
}

/// Whether a parameter gets weight decay: matrices do; 1-D parameters (RMSNorm/LayerNorm
/// weights, biases) and anything named like a norm or bias do not — the split of HF Trainer's
/// `get_decay_parameter_names`.
pub fn applies_weight_decay(name: &str, rank: usize) -> bool {
    let lower = name.to_ascii_lowercase();
    rank >= 2 && !lower.ends_with("bias") && !lower.contains("norm")
}

/// Which parameters decay and which do not, for logging and checking.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamGroups {
    pub decay: Vec<String>,
    pub no_decay: Vec<String>,
}

/// What one step did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Optimizer steps taken so far, this one included.
    pub step: u64,
    pub lr: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f32,
    /// Factor applied to the gradients (1 = not clipped).
    pub clip_coef: f32,
}

/// The moments (and master weights) of one parameter: Rust vectors on CPU, where the fused
/// kernel reads and writes them directly; candle tensors on other devices.
enum SlotState {
    Host { exp_avg: Vec<f32>, exp_avg_sq: Vec<f32>, master: Option<Vec<f32>> },
    Device { exp_avg: Tensor, exp_avg_sq: Tensor, master: Option<Tensor> },
}

struct Slot {
    name: String,
    var: Var,
    weight_decay: f64,
    /// Steps this parameter has taken (torch keeps one count per parameter: a parameter without
    /// gradient in a step is skipped and its bias correction does not advance).
    step: u64,
    /// Allocated on the first gradient, as torch does, so never-updated parameters cost nothing.
    state: Option<SlotState>,
}

pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    steps: u64,
    lr: f64,
    /// The fused kernels for CPU and CUDA parameters (off only to test or bench the composite path).
    fused: bool,
}

const STATE_FORMAT: &str = "forge-adamw/1";

impl AdamW {
    /// An optimizer over named parameters (state is allocated on each parameter's first gradient).
    pub fn new(params: impl IntoIterator<Item = (String, Var)>, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let mut slots = Vec::new();
        let mut index = HashMap::new();
        for (name, var) in params {
            if !matches!(var.dtype(), DType::F32 | DType::BF16 | DType::F16) {
                return Err(TrainError::InvalidConfig(format!(
                    "parameter `{name}` is {:?}; AdamW trains f32, bf16 and f16 parameters",
                    var.dtype()
                )));
            }
            if index.insert(name.clone(), slots.len()).is_some() {
                return Err(TrainError::InvalidConfig(format!("parameter `{name}` is listed twice")));
            }
            let weight_decay = if applies_weight_decay(&name, var.rank()) { config.weight_decay } else { 0.0 };
            slots.push(Slot { name, var, weight_decay, step: 0, state: None });
        }
        let lr = config.lr;
        let optimizer = Self { config, slots, index, steps: 0, lr, fused: true };
        let groups = optimizer.param_groups();
        tracing::info!(
            decay = groups.decay.len(),
            no_decay = groups.no_decay.len(),
            weight_decay = optimizer.config.weight_decay,
            "AdamW parameter groups (no decay on 1-D parameters: norms, biases)"
        );
        Ok(optimizer)
    }

    /// An optimizer over every parameter of a model.
    pub fn for_params(params: &ParamStore, config: AdamWConfig) -> Result<Self> {
        Self::new(params.iter().map(|(n, v)| (n.to_string(), v.clone())), config)
    }

    /// Uses the composite (candle tensor ops) update on CPU and CUDA too: the path other devices
    /// take, exposed to test it against the fused kernels and to benchmark. Call before the first step.
    pub fn with_composite_update(mut self) -> Self {
        self.fused = false;
        self
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the next steps (call with `schedule.lr(optimizer.steps())`).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn param_groups(&self) -> ParamGroups {
        let mut groups = ParamGroups::default();
        for slot in &self.slots {
            if applies_weight_decay(&slot.name, slot.var.rank()) {
                groups.decay.push(slot.name.clone());
            } else {
                groups.no_decay.push(slot.name.clone());
            }
        }
        groups
    }

    /// Bytes of optimizer state allocated so far (moments and master weights).
    pub fn state_bytes(&self) -> usize {
        let per_tensor = |n: usize, master: bool| n * 4 * if master { 3 } else { 2 };
        self.slots
            .iter()
            .map(|s| match &s.state {
                None => 0,
                Some(SlotState::Host { exp_avg, master, .. }) => per_tensor(exp_avg.len(), master.is_some()),
                Some(SlotState::Device { exp_avg, master, .. }) => per_tensor(exp_avg.elem_count(), master.is_some()),
            })
            .sum()
    }

    /// One AdamW step on the given gradients (parameters without a gradient are skipped).
    /// Gradients with NaN or infinity are rejected before anything changes.
    pub fn step(&mut self, grads: &Gradients) -> Result<StepStats> {
        let norm = grad_norm(grads)?;
        self.step_with_grad_norm(grads, norm)
    }

    /// [`step`](Self::step) with the global gradient norm measured by the caller: a sharded
    /// optimizer holds only its shard of the gradients, while clipping needs the norm of all.
    pub fn step_with_grad_norm(&mut self, grads: &Gradients, grad_norm: f32) -> Result<StepStats> {
        let order = self.check_gradients(grads)?;
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFiniteGradients { name: "(the global gradient norm)".into(), norm: grad_norm });
        }
        let clip_coef = self.config.max_grad_norm.map_or(1.0, |max| clip_coefficient(grad_norm, max));
        self.steps += 1;
        let (beta1, beta2, eps, fused) = (self.config.beta1, self.config.beta2, self.config.eps, self.fused);
        // CUDA parameters step together after the loop: one launch per dtype
        #[cfg(feature = "cuda")]
        let mut on_device: Vec<(usize, Tensor, StepScalars)> = Vec::new();
        for (grad, i) in grads.values().zip(order) {
            let slot = &mut self.slots[i];
            slot.step += 1;
            let k = StepScalars::new(self.lr, slot.weight_decay, beta1, beta2, eps, slot.step, clip_coef);
            if slot.state.is_none() {
                slot.state = Some(init_state(&slot.var, self.config.keeps_master(slot.var.dtype()), fused)?);
            }
            match slot.state.as_mut().expect("state was just initialised") {
                SlotState::Host { exp_avg, exp_avg_sq, master } => {
                    // The kernel wants a contiguous gradient; this is free when it already is.
                    let grad = grad.contiguous()?;
                    let op = FusedAdamW {
                        scalars: k,
                        moments: Mutex::new(HostMoments { exp_avg, exp_avg_sq, master: master.as_deref_mut() }),
                    };
                    slot.var.as_tensor().inplace_op2(&grad, &op)?;
                }
                SlotState::Device { exp_avg, exp_avg_sq, master } => {
                    #[cfg(feature = "cuda")]
                    if fused && slot.var.device().is_cuda() {
                        // The kernel reads the gradient in the parameter's dtype (a no-op cast when equal).
                        on_device.push((i, grad.to_dtype(slot.var.dtype())?, k));
                        continue;
                    }
                    composite_update(&slot.var, grad, exp_avg, exp_avg_sq, master.as_mut(), &k)?;
                }
            }
        }
        #[cfg(feature = "cuda")]
        self.step_on_device(&on_device)?;
        Ok(StepStats { step: self.steps, lr: self.lr, grad_norm, clip_coef })
    }

    /// The slot of every gradient, in the map's order; an unknown name, another shape or another
    /// device is an error.
    fn check_gradients(&self, grads: &Gradients) -> Result<Vec<usize>> {
        let mut order = Vec::with_capacity(grads.len());
        for (name, grad) in grads {
            let &i = self.index.get(name).ok_or_else(|| TrainError::UnknownGradient(name.clone()))?;
            let var = &self.slots[i].var;
            if grad.dims() != var.dims() {
                return Err(TrainError::GradientShape {
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    found: grad.dims().to_vec(),
                });
            }
            if !grad.device().same_device(var.device()) {
                return Err(TrainError::GradientDevice { name: name.clone() });
            }
            order.push(i);
        }
        Ok(order)
    }

    /// The fused CUDA step of the given slots (index, gradient in the parameter's dtype, scalars).
    #[cfg(feature = "cuda")]
    fn step_on_device(&self, pending: &[(usize, Tensor, StepScalars)]) -> Result<()> {
        let mut updates = Vec::with_capacity(pending.len());
        for (i, grad, scalars) in pending {
            let slot = &self.slots[*i];
            let Some(SlotState::Device { exp_avg, exp_avg_sq, master }) = &slot.state else {
                unreachable!("a CUDA slot's state is initialised on the device before it is queued")
            };
            updates.push(forge_kernels::adamw::AdamWUpdate { param: slot.var.as_tensor(), grad, exp_avg, exp_avg_sq, master: master.as_ref(), scalars: *scalars });
        }
        forge_kernels::adamw::adamw_step(&updates)?;
        Ok(())
    }

    /// The first moment of a parameter (None before its first step).
    pub fn exp_avg(&self, name: &str) -> Result<Option<Tensor>> {
        self.state_tensor(name, |s| match s {
            SlotState::Host { exp_avg, .. } => Some(exp_avg.as_slice()),
            SlotState::Device { .. } => None,
        }, |s| match s {
            SlotState::Device { exp_avg, .. } => Some(exp_avg.clone()),
            SlotState::Host { .. } => None,
        })
    }

    /// The second moment of a parameter (None before its first step).
    pub fn exp_avg_sq(&self, name: &str) -> Result<Option<Tensor>> {
        self.state_tensor(name, |s| match s {
            SlotState::Host { exp_avg_sq, .. } => Some(exp_avg_sq.as_slice()),
            SlotState::Device { .. } => None,
        }, |s| match s {
            SlotState::Device { exp_avg_sq, .. } => Some(exp_avg_sq.clone()),
            SlotState::Host { .. } => None,
        })
    }

    /// The f32 master copy of a bf16/f16 parameter (None for f32 parameters, with `pure_bf16`,
    /// or before its first step).
    pub fn master_weight(&self, name: &str) -> Result<Option<Tensor>> {
        self.state_tensor(name, |s| match s {
            SlotState::Host { master, .. } => master.as_deref(),
            SlotState::Device { .. } => None,
        }, |s| match s {
            SlotState::Device { master, .. } => master.clone(),
            SlotState::Host { .. } => None,
        })
    }

    fn state_tensor(
        &self,
        name: &str,
        host: impl Fn(&SlotState) -> Option<&[f32]>,
        device: impl Fn(&SlotState) -> Option<Tensor>,
    ) -> Result<Option<Tensor>> {
        let &i = self.index.get(name).ok_or_else(|| TrainError::UnknownGradient(name.to_string()))?;
        let slot = &self.slots[i];
        let Some(state) = &slot.state else { return Ok(None) };
        if let Some(values) = host(state) {
            return Ok(Some(Tensor::from_slice(values, slot.var.shape(), &Device::Cpu)?));
        }
        Ok(device(state))
    }

    /// Writes moments, master weights, step counts and hyper-parameters to a safetensors file
    /// (through a temporary file and a rename, so an interrupted save leaves the old file).
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let mut param_steps = BTreeMap::new();
        for slot in &self.slots {
            param_steps.insert(slot.name.clone(), slot.step);
            for (kind, tensor) in [
                ("exp_avg", self.exp_avg(&slot.name)?),
                ("exp_avg_sq", self.exp_avg_sq(&slot.name)?),
                ("master", self.master_weight(&slot.name)?),
            ] {
                if let Some(tensor) = tensor {
                    tensors.push((format!("{kind}.{}", slot.name), tensor));
                }
            }
        }
        let c = &self.config;
        // Floats are written with Rust's shortest round-trip formatting and parsed back exactly.
        let metadata: HashMap<String, String> = [
            ("format", STATE_FORMAT.to_string()),
            ("steps", self.steps.to_string()),
            ("lr", self.lr.to_string()),
            ("beta1", c.beta1.to_string()),
            ("beta2", c.beta2.to_string()),
            ("eps", c.eps.to_string()),
            ("weight_decay", c.weight_decay.to_string()),
            ("max_grad_norm", c.max_grad_norm.map_or("none".to_string(), |m| m.to_string())),
            ("pure_bf16", c.pure_bf16.to_string()),
            ("param_steps", serde_json::to_string(&param_steps).expect("a map of integers serialises")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();

        let tmp = path.with_extension("safetensors.partial");
        safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata), &tmp)
            .map_err(|e| TrainError::BadState { path: tmp.clone(), reason: format!("serialising failed: {e}") })?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| TrainError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
        Ok(())
    }

    /// Restores what `save_state` wrote. The file must describe parameters of this optimizer with
    /// the same shapes; hyper-parameters that differ from the current config are reported and the
    /// current config is kept. Master weights are authoritative: the parameters are set to their
    /// rounding. On error nothing has changed.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let bad = |reason: String| TrainError::BadState { path: path.to_path_buf(), reason };
        let mismatch = |reason: String| TrainError::StateMismatch { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |key: &str| meta.get(key).ok_or_else(|| bad(format!("metadata `{key}` is missing")));
        if field("format")? != STATE_FORMAT {
            return Err(bad(format!("format `{}` is not `{STATE_FORMAT}`", field("format")?)));
        }
        let number = |key: &str| -> Result<f64> {
            field(key)?.parse::<f64>().map_err(|e| bad(format!("metadata `{key}`: {e}")))
        };
        let steps: u64 = field("steps")?.parse().map_err(|e| bad(format!("metadata `steps`: {e}")))?;
        let lr = number("lr")?;
        let saved_pure_bf16 = field("pure_bf16")? == "true";
        let saved_max_norm = match field("max_grad_norm")?.as_str() {
            "none" => None,
            _ => Some(number("max_grad_norm")?),
        };
        let saved = AdamWConfig {
            lr: self.config.lr,
            beta1: number("beta1")?,
            beta2: number("beta2")?,
            eps: number("eps")?,
            weight_decay: number("weight_decay")?,
            max_grad_norm: saved_max_norm,
            pure_bf16: saved_pure_bf16,
        };
        if saved_pure_bf16 != self.config.pure_bf16 {
            return Err(mismatch(format!(
                "it was saved with pure_bf16 = {saved_pure_bf16} and this optimizer has pure_bf16 = {}",
                self.config.pure_bf16
            )));
        }
        if saved != self.config {
            tracing::warn!(?saved, current = ?self.config, "optimizer hyper-parameters differ from the checkpoint's; continuing with the current ones");
        }
        let param_steps: BTreeMap<String, u64> =
            serde_json::from_str(field("param_steps")?).map_err(|e| bad(format!("metadata `param_steps`: {e}")))?;
        let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;

        // Read and check everything first; touch the optimizer only when all of it fits.
        let mut restored: Vec<(usize, u64, Option<SlotState>)> = Vec::new();
        for (name, &step) in &param_steps {
            let &i = self.index.get(name).ok_or_else(|| mismatch(format!("parameter `{name}` is not in this model")))?;
            let slot = &self.slots[i];
            let load = |kind: &str| -> Result<Option<Tensor>> {
                let key = format!("{kind}.{name}");
                let Ok(view) = file.tensor(&key) else { return Ok(None) };
                let tensor = view.load(slot.var.device())?;
                if tensor.dims() != slot.var.dims() || tensor.dtype() != DType::F32 {
                    return Err(mismatch(format!(
                        "`{key}` is {:?} {:?} but the parameter is {:?} (state is f32)",
                        tensor.dtype(),
                        tensor.dims(),
                        slot.var.dims()
                    )));
                }
                Ok(Some(tensor))
            };
            let (exp_avg, exp_avg_sq, master) = (load("exp_avg")?, load("exp_avg_sq")?, load("master")?);
            let state = match (exp_avg, exp_avg_sq) {
                (None, None) if step == 0 => None,
                (Some(exp_avg), Some(exp_avg_sq)) => {
                    if master.is_some() != self.config.keeps_master(slot.var.dtype()) {
                        return Err(mismatch(format!(
                            "`{name}` ({:?}) {} master weights in the file",
                            slot.var.dtype(),
                            if master.is_some() { "has" } else { "lacks" }
                        )));
                    }
                    Some(if self.fused && slot.var.device().is_cpu() {
                        SlotState::Host {
                            exp_avg: to_f32_vec(&exp_avg)?,
                            exp_avg_sq: to_f32_vec(&exp_avg_sq)?,
                            master: master.as_ref().map(to_f32_vec).transpose()?,
                        }
                    } else {
                        SlotState::Device { exp_avg, exp_avg_sq, master }
                    })
                }
                _ => return Err(bad(format!("`{name}` has step {step} but incomplete moments"))),
            };
            restored.push((i, step, state));
        }

        for slot in &mut self.slots {
            slot.step = 0;
            slot.state = None;
        }
        for (i, step, state) in restored {
            let slot = &mut self.slots[i];
            if let Some(master) = match &state {
                Some(SlotState::Host { master: Some(m), .. }) => Some(Tensor::from_slice(m, slot.var.shape(), &Device::Cpu)?),
                Some(SlotState::Device { master: Some(m), .. }) => Some(m.clone()),
                _ => None,
            } {
                slot.var.set(&master.to_dtype(slot.var.dtype())?)?;
            }
            slot.step = step;
            slot.state = state;
        }
        self.steps = steps;
        self.lr = lr;
        Ok(())
    }
}

fn init_state(var: &Var, with_master: bool, fused_cpu: bool) -> Result<SlotState> {
    let n = var.elem_count();
    if fused_cpu && var.device().is_cpu() {
        let master = if with_master { Some(to_f32_vec(var.as_tensor())?) } else { None };
        return Ok(SlotState::Host { exp_avg: vec![0.0; n], exp_avg_sq: vec![0.0; n], master });
    }
    let zeros = || Tensor::zeros(var.shape(), DType::F32, var.device());
    let master = if with_master { Some(var.as_tensor().to_dtype(DType::F32)?) } else { None };
    Ok(SlotState::Device { exp_avg: zeros()?, exp_avg_sq: zeros()?, master })
}

/// The update from candle tensor ops, for parameters off the CPU: the fused kernel's arithmetic
/// in the same order (so on CPU both paths agree to the bit), at the cost of ~10 kernels.
fn composite_update(
    var: &Var,
    grad: &Tensor,
    exp_avg: &mut Tensor,
    exp_avg_sq: &mut Tensor,
    master: Option<&mut Tensor>,
    k: &StepScalars,
) -> Result<()> {
    let g = grad.to_dtype(DType::F32)?;
    let g = if k.grad_scale != 1.0 { g.affine(k.grad_scale as f64, 0.0)? } else { g };
    let w = match &master {
        Some(m) => (*m).clone(),
        None => var.as_tensor().to_dtype(DType::F32)?,
    };
    let w = if k.decay != 1.0 { w.affine(k.decay as f64, 0.0)? } else { w };
    let m = (&*exp_avg + (&g - &*exp_avg)?.affine(k.one_minus_beta1 as f64, 0.0)?)?;
    let v = (exp_avg_sq.affine(k.beta2 as f64, 0.0)? + (g.affine(k.one_minus_beta2 as f64, 0.0)? * &g)?)?;
    let bc2_sqrt = Tensor::new(k.bias_correction2_sqrt, g.device())?;
    let denom = v.sqrt()?.broadcast_div(&bc2_sqrt)?.affine(1.0, k.eps as f64)?;
    let w = (w - (&m / denom)?.affine(k.step_size as f64, 0.0)?)?;
    *exp_avg = m;
    *exp_avg_sq = v;
    if w.dtype() == var.dtype() {
        var.set(&w)?;
    } else {
        var.set(&w.to_dtype(var.dtype())?)?;
    }
    if let Some(master) = master {
        *master = w;
    }
    Ok(())
}
