//! The memory a training run needs, estimated from the model's config before any weight is loaded
//! and printed at setup, so a run that cannot fit says so at once instead of after loading (or
//! when the kernel's OOM killer ends it). Weights, the frozen reference (RL), gradients (with the
//! f32 accumulation sum), AdamW's f32 moments and master weights, and the activations of one
//! micro-batch (`forge_model::memory`). Checked against measured peaks in
//! benches/results/memory-estimate.md.

use std::fmt;

use candle_core::{DType, Device, DeviceLocation};
use forge_model::device::{host_memory_available, memory_available, DeviceSpec};
use forge_model::lora::adapted_modules;
use forge_model::memory::{activation_bytes, kv_cache_size, StepShape};
use forge_model::{Config, LoraConfig};

use crate::error::MemoryShortfall;
use crate::{Result, TrainError};

/// Bytes by what holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    /// A frozen copy of the starting weights (RL's KL reference under full fine-tuning).
    pub reference: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    /// The rollout engine's KV caches (RL).
    pub kv_cache: u64,
    /// The KV caches live on the model's GPU (else on the host).
    pub kv_cache_on_device: bool,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.reference + self.gradients + self.optimizer + self.activations + self.kv_cache
    }
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

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "weights {}", human(self.weights))?;
        if self.reference > 0 {
            write!(f, " + reference {}", human(self.reference))?;
        }
        write!(f, " + gradients {} + optimizer {} + activations {}", human(self.gradients), human(self.optimizer), human(self.activations))?;
        if self.kv_cache > 0 {
            write!(f, " + KV cache {}", human(self.kv_cache))?;
        }
        write!(f, " = {}", human(self.total()))
    }
}

/// What a run trains and how.
#[derive(Debug, Clone)]
pub struct RunShape<'a> {
    pub model: &'a Config,
    /// The parameters' dtype.
    pub dtype: DType,
    pub lora: Option<&'a LoraConfig>,
    /// bf16 parameters with f32 master weights in the optimizer (not `optim.pure_bf16`).
    pub master_weights: bool,
    /// Micro-batches per optimizer step (above 1, an f32 sum of the gradients is kept).
    pub grad_accum: usize,
    /// A frozen reference model is held (RL with a KL penalty).
    pub reference_model: bool,
    pub step: StepShape,
    /// Rollouts (RL): concurrent sequences and the context each may reach; (0, 0) for SFT.
    pub rollouts: (usize, usize),
    /// Where the model runs (which decides where its KV caches live).
    pub device: &'a Device,
}

impl RunShape<'_> {
    /// Parameters that receive gradients and optimizer state.
    pub fn trainable_parameters(&self) -> u64 {
        match self.lora {
            None => self.model.num_parameters() as u64,
            Some(lora) => adapted_modules(self.model, lora).iter().map(|(_, out, inp)| (lora.rank * (out + inp)) as u64).sum(),
        }
    }
}

pub fn estimate(run: &RunShape) -> MemoryEstimate {
    let bytes = run.dtype.size_in_bytes() as u64;
    let base = run.model.num_parameters() as u64;
    let trainable = run.trainable_parameters();
    let adapters = if run.lora.is_some() { trainable } else { 0 };
    let kv_cache = kv_cache_size(run.model, run.rollouts.0, run.rollouts.1, run.dtype, run.device);
    MemoryEstimate {
        weights: (base + adapters) * bytes,
        // LoRA's reference is the same model with its adapters off: no copy
        reference: if run.reference_model && run.lora.is_none() { base * bytes } else { 0 },
        gradients: trainable * bytes + if run.grad_accum > 1 { trainable * 4 } else { 0 },
        optimizer: trainable * (8 + if run.master_weights { 4 } else { 0 }),
        activations: activation_bytes(run.model, &run.step),
        kv_cache: kv_cache.bytes,
        kv_cache_on_device: kv_cache.on_device,
    }
}

/// A memory a run draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    Host,
    /// The GPU of this ordinal.
    Gpu(usize),
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("host"),
            Self::Gpu(ordinal) => DeviceSpec::Cuda(*ordinal).fmt(f),
        }
    }
}

/// How much the estimate puts in one memory and how much that memory has left (`None` where it
/// cannot be read: then it is not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    pub memory: Memory,
    pub needed: u64,
    pub available: Option<u64>,
}

impl MemoryEstimate {
    /// The bytes each memory holds when the model runs on `location`: everything sits with the
    /// model, except KV caches the rollout engine keeps on the host (`forge_model::KvCache`).
    pub fn placement(&self, location: DeviceLocation) -> Vec<(Memory, u64)> {
        match location {
            DeviceLocation::Cuda { gpu_id } => {
                let on_host = if self.kv_cache_on_device { 0 } else { self.kv_cache };
                let mut uses = vec![(Memory::Gpu(gpu_id), self.total() - on_host)];
                uses.extend((on_host > 0).then_some((Memory::Host, on_host)));
                uses
            }
            _ => vec![(Memory::Host, self.total())],
        }
    }
}

/// The settings that would shrink a run: `specific` ones first, then LoRA and recomputation
/// where the run does not use them yet.
pub fn remedies<'a>(specific: &[&'a str], lora: bool, recompute: bool) -> Vec<&'a str> {
    let mut all = specific.to_vec();
    all.extend((!lora).then_some("train LoRA adapters ([lora])"));
    all.extend((!recompute).then_some("enable train.recompute"));
    all
}

/// Prints the estimate (and what each memory it draws on has available) and checks it unless
/// `check` is off; `remedies` are the settings of this run that would shrink it. The host's part
/// counts `workers_on_host` times: the workers of a data-parallel run on one machine share it.
pub fn report_and_check(estimate: &MemoryEstimate, device: &Device, workers_on_host: usize, check: bool, remedies: &[&str]) -> Result<()> {
    let uses: Vec<MemoryUse> = estimate
        .placement(device.location())
        .into_iter()
        .map(|(memory, needed)| {
            let (available, needed) = match memory {
                Memory::Host => (host_memory_available(), needed * workers_on_host.max(1) as u64),
                Memory::Gpu(_) => (memory_available(device), needed),
            };
            MemoryUse { memory, needed, available }
        })
        .collect();
    let where_ = uses
        .iter()
        .map(|u| format!("{}: {} of {} available", u.memory, human(u.needed), u.available.map_or_else(|| "unknown".to_string(), human)))
        .collect::<Vec<_>>()
        .join("; ");
    tracing::info!("memory estimate: {estimate} ({where_})");
    match check {
        true => check_fits(estimate, &uses, remedies),
        false => Ok(()),
    }
}

/// Err([`TrainError::WouldNotFit`]) when a memory would be asked for more than it has available
/// (unknown: no check).
pub fn check_fits(estimate: &MemoryEstimate, uses: &[MemoryUse], remedies: &[&str]) -> Result<()> {
    match uses.iter().find(|u| u.available.is_some_and(|available| u.needed > available)) {
        Some(short) => Err(TrainError::WouldNotFit(Box::new(MemoryShortfall {
            needed: human(short.needed),
            memory: short.memory.to_string(),
            available: human(short.available.unwrap_or_default()),
            estimate: estimate.to_string(),
            remedies: remedies.join(", "),
        }))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen3_8b() -> Config {
        Config::qwen3_release("8b").unwrap()
    }

    fn step() -> StepShape {
        StepShape { tokens: 8192, seq_len: 8192, recompute: true, fused_attention: true, dtype: DType::BF16 }
    }

    #[test]
    fn full_fine_tuning_of_8b_in_bf16_counts_16_bytes_of_state_per_parameter() {
        let c = qwen3_8b();
        let run = RunShape { model: &c, dtype: DType::BF16, lora: None, master_weights: true, grad_accum: 1, reference_model: false, step: step(), rollouts: (0, 0), device: &Device::Cpu };
        let e = estimate(&run);
        let p = 8_190_735_360u64;
        assert_eq!((e.weights, e.gradients, e.optimizer, e.reference), (2 * p, 2 * p, 12 * p, 0));
        assert_eq!(e.activations, activation_bytes(&c, &step()));
        assert!(e.total() > 120 << 30, "{e}");
        let accumulating = estimate(&RunShape { grad_accum: 4, reference_model: true, ..run });
        assert_eq!((accumulating.gradients, accumulating.reference), (6 * p, 2 * p));
    }

    #[test]
    fn lora_trains_only_the_adapters_and_needs_no_reference_copy() {
        let c = qwen3_8b();
        let lora = LoraConfig { rank: 16, alpha: 32.0, dropout: 0.0, target_modules: vec!["q_proj".into(), "v_proj".into()], seed: 0 };
        let run = RunShape { model: &c, dtype: DType::BF16, lora: Some(&lora), master_weights: true, grad_accum: 1, reference_model: true, step: step(), rollouts: (4, 32768), device: &Device::Cpu };
        // per layer: q_proj 16·(4096 + 4096), v_proj 16·(4096 + 1024)
        let adapters = 36 * (16 * 8192 + 16 * 5120);
        assert_eq!(run.trainable_parameters(), adapters);
        let e = estimate(&run);
        assert_eq!((e.weights, e.gradients, e.optimizer, e.reference), (2 * (8_190_735_360 + adapters), 2 * adapters, 12 * adapters, 0));
        assert_eq!(e.kv_cache, kv_cache_size(&c, 4, 32768, DType::BF16, &Device::Cpu).bytes);
    }

    #[test]
    fn a_run_larger_than_what_is_available_is_refused_with_the_breakdown_and_the_fixes() {
        let e = MemoryEstimate { weights: 3 << 30, reference: 0, gradients: 3 << 30, optimizer: 12 << 30, activations: 1 << 29, kv_cache: 0, kv_cache_on_device: false };
        let remedies = ["enable train.recompute", "lower train.micro_batch_tokens"];
        let host = |available| [MemoryUse { memory: Memory::Host, needed: e.total(), available }];
        assert!(check_fits(&e, &host(Some(19 << 30)), &remedies).is_ok());
        assert!(check_fits(&e, &host(None), &remedies).is_ok(), "unknown capacity: no check");
        let err = check_fits(&e, &host(Some(16 << 30)), &remedies).unwrap_err().to_string();
        assert!(err.contains("about 18.5 GiB of host memory but 16.0 GiB is available"), "{err}");
        assert!(err.contains("weights 3.0 GiB + gradients 3.0 GiB + optimizer 12.0 GiB + activations 512.0 MiB"), "{err}");
        assert!(err.contains("to fit: enable train.recompute, lower train.micro_batch_tokens; or set train.check_memory = false"), "{err}");
    }

    #[test]
    fn on_a_gpu_everything_but_host_kv_caches_is_placed_on_the_gpu() {
        let e = MemoryEstimate { weights: 16 << 30, reference: 16 << 30, gradients: 16 << 30, optimizer: 96 << 30, activations: 4 << 30, kv_cache: 288 << 30, kv_cache_on_device: false };
        assert_eq!(e.placement(DeviceLocation::Cpu), [(Memory::Host, e.total())]);
        assert_eq!(e.placement(DeviceLocation::Cuda { gpu_id: 1 }), [(Memory::Gpu(1), 148 << 30), (Memory::Host, 288 << 30)]);
        let sft = MemoryEstimate { kv_cache: 0, ..e };
        assert_eq!(sft.placement(DeviceLocation::Cuda { gpu_id: 0 }), [(Memory::Gpu(0), 148 << 30)]);
        // caches the decode kernels keep on the GPU count there
        let device_caches = MemoryEstimate { kv_cache_on_device: true, ..e };
        assert_eq!(device_caches.placement(DeviceLocation::Cuda { gpu_id: 0 }), [(Memory::Gpu(0), 436 << 30)]);
        // the GPU is what is short, though the host has room for everything
        let uses = [
            MemoryUse { memory: Memory::Gpu(1), needed: 148 << 30, available: Some(139 << 30) },
            MemoryUse { memory: Memory::Host, needed: 288 << 30, available: Some(1 << 40) },
        ];
        let err = check_fits(&e, &uses, &["train LoRA adapters ([lora])"]).unwrap_err().to_string();
        assert!(err.contains("about 148.0 GiB of cuda:1 memory but 139.0 GiB is available"), "{err}");
    }

    #[test]
    fn a_cpu_run_reports_and_checks_the_host() {
        let small = MemoryEstimate { weights: 1 << 20, reference: 0, gradients: 1 << 20, optimizer: 1 << 20, activations: 1 << 20, kv_cache: 0, kv_cache_on_device: false };
        report_and_check(&small, &Device::Cpu, 1, true, &[]).unwrap();
        let huge = MemoryEstimate { weights: 1 << 60, ..small };
        let err = report_and_check(&huge, &Device::Cpu, 1, true, &[]).unwrap_err().to_string();
        assert!(err.contains("of host memory but"), "{err}");
        report_and_check(&huge, &Device::Cpu, 1, false, &[]).expect("train.check_memory = false starts anyway");
        // workers on one host share its memory: what fits one worker need not fit 2^20 of them
        let err = report_and_check(&small, &Device::Cpu, 1 << 20, true, &[]).unwrap_err().to_string();
        assert!(err.contains("about 4096.0 GiB of host memory"), "{err}");
    }
}
