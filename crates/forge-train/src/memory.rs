//! What one data-parallel worker of a training run holds in its device's memory, counted from the
//! model's config before any weight is loaded: weights, the frozen RL reference, gradients, AdamW's
//! state, the activations of one micro-batch (`forge_model::memory`) and the CUDA workspace, each
//! as `train.zero_stage` shards it across the workers. `plan.rs` sets it against a budget (and
//! sizes the rollout engine's KV pool from what is left). Checked against measured peaks in
//! benches/results/memory-estimate.md.

use candle_core::{DType, Device};
use forge_model::device::DeviceSpec;
use forge_model::lora::adapted_modules;
use forge_model::memory::{activation_bytes, StepShape};
use forge_model::{Config, GatherUnit, LoraConfig};

use crate::distributed::ZeroStage;

/// A GPU's memory that no tensor of the run holds: the CUDA context (~0.5 GiB on an H100 with
/// CUDA 12's lazy module loading), cuBLAS(Lt)'s workspace (32 MiB per handle on Hopper) and NCCL's
/// buffers (`NCCL_BUFFSIZE` 4 MiB per channel and peer), rounded up. An assumption from those
/// libraries' documented defaults until measured on a GPU.
pub const CUDA_WORKSPACE_BYTES: u64 = 1 << 30;

/// What the run trains on. Its memory is the budget: a GPU's, or on the CPU the host's (shared
/// by the workers on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn of(device: &Device) -> Self {
        if device.is_cuda() {
            Self::Cuda
        } else {
            Self::Cpu
        }
    }

    /// The kind `model.device` names (nothing is opened: a GPU run is planned on any machine).
    pub fn of_spec(spec: DeviceSpec) -> Self {
        match spec {
            DeviceSpec::Cpu => Self::Cpu,
            DeviceSpec::Cuda(_) => Self::Cuda,
        }
    }

    /// Whether attention runs through the fused kernels, which store no `[seq, seq]` scores.
    pub fn fused_attention(self, dtype: DType, head_dim: usize) -> bool {
        self == Self::Cuda && forge_kernels::flash_attn::runs_on_cuda(dtype, head_dim)
    }

    /// The memory the device takes besides the run's tensors ([`CUDA_WORKSPACE_BYTES`]; none is
    /// counted on the host).
    pub fn workspace_bytes(self) -> u64 {
        match self {
            Self::Cuda => CUDA_WORKSPACE_BYTES,
            Self::Cpu => 0,
        }
    }

    /// Bytes of one `block_size`-position block of the rollout engine's KV pool: the model's dtype
    /// on a GPU whose decode kernels serve this attention shape, else f32 (on the host), as
    /// `forge_model::memory::kv_block_bytes` counts for an open device.
    pub fn kv_block_bytes(self, model: &Config, block_size: usize, dtype: DType) -> u64 {
        let on_gpu = self == Self::Cuda && forge_kernels::decode_attn::unsupported_shape(model.num_attention_heads, model.num_key_value_heads, model.head_dim).is_none();
        let element = if on_gpu { dtype } else { DType::F32 };
        forge_model::memory::kv_block_bytes(model, block_size, DType::F32, &Device::Cpu) / 4 * element.size_in_bytes() as u64
    }
}

/// What a run trains and how, as far as memory goes.
#[derive(Debug, Clone)]
pub struct RunShape<'a> {
    pub model: &'a Config,
    /// The parameters' dtype.
    pub dtype: DType,
    pub lora: Option<&'a LoraConfig>,
    /// bf16 parameters with f32 master weights in the optimizer (not `optim.pure_bf16`).
    pub master_weights: bool,
    /// A frozen reference model is held (RL with a KL penalty).
    pub reference_model: bool,
    pub zero_stage: ZeroStage,
    /// Data-parallel workers (the world size), across which `zero_stage` shards.
    pub workers: usize,
    /// The largest micro-batch's forward and backward.
    pub step: StepShape,
    /// RL: what the rollout engine keeps in its KV pool.
    pub rollouts: Option<Rollouts>,
    pub device: DeviceKind,
}

/// The rollout engine's concurrent sequences and its KV pool (RL's `[engine]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollouts {
    /// Concurrent sequences (`rollout.workers`).
    pub sequences: usize,
    /// The tokens each may reach (`agent.max_context_tokens`).
    pub context: usize,
    /// Positions per KV block (`engine.block_size`).
    pub block_size: usize,
    pub pool: KvPoolSize,
}

/// How large the KV pool is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvPoolSize {
    /// `engine.kv_cache_memory`.
    Fixed(u64),
    /// `engine.gpu_memory_utilization` of the device's memory less everything else (vLLM's rule).
    Utilization(f64),
}

impl RunShape<'_> {
    /// Parameters that receive gradients and optimizer state.
    pub fn trainable_parameters(&self) -> u64 {
        match self.lora {
            None => self.model.num_parameters() as u64,
            Some(lora) => adapted_modules(self.model, lora).iter().map(|(_, out, inp)| (lora.rank * (out + inp)) as u64).sum(),
        }
    }

    /// The stage that applies: with one worker nothing is sharded, whatever `zero_stage` says.
    pub fn effective_stage(&self) -> ZeroStage {
        if self.workers > 1 {
            self.zero_stage
        } else {
            ZeroStage::Replicated
        }
    }

    /// `bytes` on one worker: a 1/N share where `sharded`.
    fn per_worker(&self, bytes: u64, sharded: bool) -> u64 {
        if sharded {
            bytes.div_ceil(self.workers as u64)
        } else {
            bytes
        }
    }
}

/// Bytes one worker holds, by what holds them (the KV pool apart: it is sized against a budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The model's weights (with LoRA, the base and the adapters); at stage 3 this worker's shard,
    /// two gathered units in flight (the one running and its copy for the backward, or the
    /// next), and in RL the replicated copy the rollout engine decodes with (it cannot gather a
    /// layer per token; every update refreshes it).
    pub weights: u64,
    /// A frozen copy of the starting weights (RL's KL reference under full fine-tuning).
    pub reference: u64,
    /// The backward's gradients in the model's dtype, and the f32 accumulation and reduction buffer.
    pub gradients: u64,
    /// AdamW's f32 moments and, for bf16 parameters, f32 master weights.
    pub optimizer: u64,
    pub activations: u64,
    pub workspace: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.reference + self.gradients + self.optimizer + self.activations + self.workspace
    }
}

pub fn estimate(run: &RunShape) -> MemoryEstimate {
    let bytes = run.dtype.size_in_bytes() as u64;
    let stage = run.effective_stage();
    let base = run.model.num_parameters() as u64;
    let trainable = run.trainable_parameters();
    let adapters = if run.lora.is_some() { trainable } else { 0 };
    let gathered = match stage.shards_parameters() {
        true => 2 * largest_gathered_unit(run.model) * bytes,
        false => 0,
    };
    let serving_copy = if stage.shards_parameters() && run.rollouts.is_some() { base * bytes } else { 0 };
    MemoryEstimate {
        weights: run.per_worker((base + adapters) * bytes, stage.shards_parameters()) + gathered + serving_copy,
        // LoRA's reference is the same model with its adapters off: no copy
        reference: if run.reference_model && run.lora.is_none() { run.per_worker(base * bytes, stage.shards_parameters()) } else { 0 },
        gradients: trainable * bytes + run.per_worker(trainable * 4, stage.shards_gradients()),
        optimizer: run.per_worker(trainable * (8 + if run.master_weights { 4 } else { 0 }), stage.shards_optimizer()),
        activations: activation_bytes(run.model, &run.step),
        workspace: run.device.workspace_bytes(),
    }
}

/// Parameters of the largest unit ZeRO-3 gathers at once ([`GatherUnit`]: the embedding, a
/// decoder layer, or the final norm with the LM head).
pub fn largest_gathered_unit(model: &Config) -> u64 {
    let parameters = |unit: GatherUnit| unit.parameter_shapes(model).iter().map(|(_, shape)| shape.iter().product::<usize>() as u64).sum::<u64>();
    GatherUnit::in_order(model).into_iter().map(parameters).max().unwrap_or(0)
}

/// `1.5 GiB`, `380.0 MiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 8_190_735_360;

    fn qwen3_8b() -> Config {
        Config::qwen3_release("8b").unwrap()
    }

    fn step() -> StepShape {
        StepShape { tokens: 8192, seq_len: 8192, recompute: true, fused_attention: true, dtype: DType::BF16 }
    }

    fn full_8b(model: &Config, stage: ZeroStage, workers: usize) -> RunShape<'_> {
        RunShape { model, dtype: DType::BF16, lora: None, master_weights: true, reference_model: false, zero_stage: stage, workers, step: step(), rollouts: None, device: DeviceKind::Cuda }
    }

    #[test]
    fn full_fine_tuning_of_8b_in_bf16_replicated_holds_18_bytes_per_parameter() {
        let c = qwen3_8b();
        let e = estimate(&full_8b(&c, ZeroStage::Replicated, 8));
        // bf16 weights 2, bf16 gradients 2 + the f32 buffer 4, AdamW moments 8 + f32 master 4
        assert_eq!((e.weights, e.reference, e.gradients, e.optimizer), (2 * P, 0, 6 * P, 12 * P));
        assert_eq!((e.activations, e.workspace), (activation_bytes(&c, &step()), 1 << 30));
        // a KL reference is a second copy of the weights
        let rl = estimate(&RunShape { reference_model: true, ..full_8b(&c, ZeroStage::Replicated, 8) });
        assert_eq!(rl.reference, 2 * P);
    }

    #[test]
    fn each_zero_stage_shards_its_part_across_the_workers() {
        let c = qwen3_8b();
        let stage = |s, workers| estimate(&RunShape { reference_model: true, ..full_8b(&c, s, workers) });
        let one = stage(ZeroStage::OptimizerState, 8);
        assert_eq!((one.weights, one.reference, one.gradients, one.optimizer), (2 * P, 2 * P, 6 * P, (12 * P).div_ceil(8)));
        assert_eq!(one.optimizer, 12_286_103_040);
        let two = stage(ZeroStage::Gradients, 8);
        assert_eq!((two.weights, two.gradients, two.optimizer), (2 * P, 2 * P + (4 * P).div_ceil(8), 12_286_103_040));
        // stage 3: a shard of the weights and of the reference, and two gathered units: Qwen3-8B's
        // largest is its head (the final norm and the untied 151,936 × 4,096 LM head), larger
        // than a decoder layer's 192.9M parameters
        let head = 4096 + 151_936 * 4096;
        assert_eq!(largest_gathered_unit(&c), head);
        let three = stage(ZeroStage::Parameters, 8);
        assert_eq!((three.weights, three.reference), ((2 * P).div_ceil(8) + 2 * 2 * head, (2 * P).div_ceil(8)));
        assert_eq!((three.gradients, three.optimizer), (two.gradients, two.optimizer));
        // one worker shards nothing
        assert_eq!(stage(ZeroStage::Parameters, 1), stage(ZeroStage::Replicated, 1));
    }

    #[test]
    fn lora_trains_only_the_adapters_and_needs_no_reference_copy() {
        let c = qwen3_8b();
        let lora = LoraConfig { rank: 16, alpha: 32.0, dropout: 0.0, target_modules: vec!["q_proj".into(), "v_proj".into()], seed: 0 };
        let run = RunShape { lora: Some(&lora), reference_model: true, ..full_8b(&c, ZeroStage::Replicated, 1) };
        // per layer: q_proj 16·(4096 + 4096), v_proj 16·(4096 + 1024)
        let adapters = 36 * (16 * 8192 + 16 * 5120);
        assert_eq!(run.trainable_parameters(), adapters);
        let e = estimate(&run);
        assert_eq!((e.weights, e.gradients, e.optimizer, e.reference), (2 * (P + adapters), 6 * adapters, 12 * adapters, 0));
    }

    #[test]
    fn a_kv_block_is_in_the_models_dtype_on_a_gpu_and_f32_on_the_host() {
        let c = qwen3_8b();
        // keys and values × 36 layers × 8 KV heads × 128 × 16 positions
        let elements = 2 * 36 * 8 * 128 * 16;
        assert_eq!(DeviceKind::Cuda.kv_block_bytes(&c, 16, DType::BF16), elements * 2);
        assert_eq!(DeviceKind::Cpu.kv_block_bytes(&c, 16, DType::BF16), elements * 4);
        assert_eq!(DeviceKind::Cpu.kv_block_bytes(&c, 16, DType::BF16), forge_model::memory::kv_block_bytes(&c, 16, DType::BF16, &Device::Cpu));
    }
}
