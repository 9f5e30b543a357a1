//! The memory plan of a run: what one worker holds (`memory.rs`), the rollout engine's KV pool
//! sized from what is left, whether it fits the device's memory, the largest
//! `train.micro_batch_tokens` and rollout sequences × context that would, and — when it does not
//! fit — the setting to change. `forge plan` prints it for a config; `forge train sft|rl` print it
//! at start and refuse a run that cannot fit before anything loads.

use std::fmt;

use candle_core::Device;
use forge_model::device::{host_memory_available, memory_available};

use crate::distributed::ZeroStage;
use crate::error::MemoryShortfall;
use crate::memory::{estimate, human, DeviceKind, KvPoolSize, MemoryEstimate, RunShape};
use crate::{Result, TrainError};

/// The plan of one worker against `budget` bytes of device memory (`None`: unknown, not checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub estimate: MemoryEstimate,
    /// RL: the rollout engine's KV pool.
    pub kv: Option<KvPlan>,
    pub budget: Option<u64>,
    /// The largest `train.micro_batch_tokens` (a multiple of the micro-batch's sequence length)
    /// that fits, everything else as it is; `None` when not even one sequence does (or no budget).
    pub largest_micro_batch_tokens: Option<usize>,
    /// Why the run does not fit and what to change; `None` when it fits (or cannot be checked).
    pub shortfall: Option<Shortfall>,
    rows: Vec<Row>,
    header: String,
    /// "GPU", or "worker" on the CPU.
    unit: &'static str,
}

/// The KV pool and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPlan {
    pub bytes: u64,
    pub block_bytes: u64,
    pub block_size: usize,
    /// `rollout.workers` and `agent.max_context_tokens`.
    pub sequences: usize,
    pub context: usize,
    /// Sequences of `context` tokens the pool holds at once (beyond them, the engine preempts).
    pub sequences_at_context: u64,
    /// The longest context (whole blocks) at which all `sequences` fit at once.
    pub context_for_sequences: usize,
}

impl KvPlan {
    pub fn blocks(&self) -> u64 {
        self.bytes / self.block_bytes
    }
}

/// What does not fit, and the setting that would make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub reason: String,
    pub change: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    term: &'static str,
    bytes: u64,
    how: String,
}

/// What a worker's device can hold: the GPU's free memory, or on the CPU the host's available
/// memory shared by the `workers_on_host`. `None` where it cannot be read.
pub fn available_memory(device: &Device, workers_on_host: usize) -> Option<u64> {
    match DeviceKind::of(device) {
        DeviceKind::Cuda => memory_available(device),
        DeviceKind::Cpu => host_memory_available().map(|bytes| bytes / workers_on_host.max(1) as u64),
    }
}

/// The plan of `run` against `budget` bytes per worker.
pub fn plan(run: &RunShape, budget: Option<u64>) -> Plan {
    let assessed = assess(run, budget);
    let largest_micro_batch_tokens = budget.and_then(|_| largest_micro_batch_tokens(run, budget));
    let shortfall = match assessed.fits {
        true => None,
        false => Some(Shortfall { reason: assessed.reason.clone(), change: change_to_fit(run, budget, &assessed) }),
    };
    Plan {
        rows: rows(run, budget, &assessed),
        header: header(run, budget),
        unit: match run.device {
            DeviceKind::Cuda => "GPU",
            DeviceKind::Cpu => "worker",
        },
        estimate: assessed.estimate,
        kv: assessed.kv,
        budget,
        largest_micro_batch_tokens,
        shortfall,
    }
}

impl Plan {
    pub fn fits(&self) -> bool {
        self.shortfall.is_none()
    }

    /// Everything the worker's device holds, the KV pool included.
    pub fn total(&self) -> u64 {
        self.estimate.total() + self.kv.map_or(0, |kv| kv.bytes)
    }

    /// Logs the plan and, unless `check` is off, refuses a run that does not fit.
    pub fn report_and_check(&self, check: bool) -> Result<()> {
        tracing::info!("memory plan\n{self}");
        match (&self.shortfall, check) {
            (Some(short), true) => Err(TrainError::WouldNotFit(Box::new(MemoryShortfall { reason: short.reason.clone(), change: short.change.clone(), plan: self.to_string() }))),
            _ => Ok(()),
        }
    }
}

/// The estimate and KV pool of a run against a budget, and whether they fit.
struct Assessed {
    estimate: MemoryEstimate,
    kv: Option<KvPlan>,
    fits: bool,
    reason: String,
}

fn assess(run: &RunShape, budget: Option<u64>) -> Assessed {
    let estimate = estimate(run);
    let rest = estimate.total();
    let Some(rollouts) = run.rollouts else {
        let fits = budget.is_none_or(|b| rest <= b);
        let reason = format!("each worker needs about {} of {}", human(rest), budget.map_or_else(|| "unknown".into(), human));
        return Assessed { estimate, kv: None, fits, reason };
    };
    let block_bytes = run.device.kv_block_bytes(run.model, rollouts.block_size, run.dtype);
    let blocks_per_sequence = rollouts.context.div_ceil(rollouts.block_size) as u64;
    let one_sequence = blocks_per_sequence * block_bytes;
    let (pool, limit) = match (pool_rule(run, budget), budget) {
        (PoolRule::Fixed(bytes), _) => (bytes, budget),
        (PoolRule::ShareOfGpu(fraction), Some(b)) => {
            let allowed = (b as f64 * fraction) as u64;
            (allowed.saturating_sub(rest), Some(allowed))
        }
        (PoolRule::ShareOfGpu(_) | PoolRule::EverySequenceAtFullContext, _) => (rollouts.sequences as u64 * one_sequence, budget),
    };
    let pool = pool / block_bytes * block_bytes;
    let blocks = pool / block_bytes;
    let kv = KvPlan {
        bytes: pool,
        block_bytes,
        block_size: rollouts.block_size,
        sequences: rollouts.sequences,
        context: rollouts.context,
        sequences_at_context: blocks / blocks_per_sequence,
        context_for_sequences: (blocks / rollouts.sequences.max(1) as u64) as usize * rollouts.block_size,
    };
    let (fits, reason) = match limit {
        Some(limit) if rest + pool > limit || rest >= limit => (false, format!("each worker needs about {} before its KV pool, of {}", human(rest), human(limit))),
        Some(_) if pool < one_sequence => (
            false,
            format!("the KV pool ({}) holds no sequence of agent.max_context_tokens = {} (one needs {})", human(pool), rollouts.context, human(one_sequence)),
        ),
        _ => (true, String::new()),
    };
    Assessed { estimate, kv: Some(kv), fits, reason }
}

/// How the rollout engine sizes its pool (forge-rl's `rollout_engine_config`).
enum PoolRule {
    /// `engine.kv_cache_memory`.
    Fixed(u64),
    /// `engine.gpu_memory_utilization` of the GPU less everything else (vLLM's rule).
    ShareOfGpu(f64),
    /// On the host, or without a known budget: room for every rollout sequence at full context.
    EverySequenceAtFullContext,
}

fn pool_rule(run: &RunShape, budget: Option<u64>) -> PoolRule {
    match (run.rollouts.map(|r| r.pool), run.device, budget) {
        (Some(KvPoolSize::Fixed(bytes)), _, _) => PoolRule::Fixed(bytes),
        (Some(KvPoolSize::Utilization(fraction)), DeviceKind::Cuda, Some(_)) => PoolRule::ShareOfGpu(fraction),
        _ => PoolRule::EverySequenceAtFullContext,
    }
}

/// The largest multiple of the micro-batch's sequence length that fits as `train.micro_batch_tokens`.
fn largest_micro_batch_tokens(run: &RunShape, budget: Option<u64>) -> Option<usize> {
    let width = run.step.seq_len.max(1);
    let fits = |rows: usize| assess(&with_tokens(run, rows * width), budget).fits;
    if !fits(1) {
        return None;
    }
    let (mut good, mut bad) = (1usize, 2usize);
    while fits(bad) {
        good = bad;
        bad *= 2;
        if bad > 1 << 24 {
            return Some(good * width);
        }
    }
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if fits(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good * width)
}

fn with_tokens<'a>(run: &RunShape<'a>, tokens: usize) -> RunShape<'a> {
    RunShape { step: forge_model::memory::StepShape { tokens, ..run.step }, ..run.clone() }
}

/// The first setting, in order of how little it changes the training, that makes the run fit.
fn change_to_fit(run: &RunShape, budget: Option<u64>, assessed: &Assessed) -> String {
    let fits = |candidate: &RunShape| assess(candidate, budget).fits;
    // the lowest higher stage that the rest of `candidate` allows (`ZeroStage::check`) and that fits it
    let stage_that_fits = |candidate: &RunShape| {
        let allowed = |stage: &ZeroStage| stage.check(candidate.step.recompute, candidate.lora.is_some()).is_ok();
        let stages = [ZeroStage::OptimizerState, ZeroStage::Gradients, ZeroStage::Parameters];
        stages.into_iter().filter(|s| run.workers > 1 && *s > run.zero_stage && allowed(s)).find(|s| fits(&RunShape { zero_stage: *s, ..candidate.clone() }))
    };
    let sharding = |stage: ZeroStage| format!("train.zero_stage = {} (shards {} across the {} workers)", stage.number(), sharded_by(stage), run.workers);
    if let Some(stage) = stage_that_fits(run) {
        return format!("set {}", sharding(stage));
    }
    if !run.step.recompute {
        let recomputing = RunShape { step: forge_model::memory::StepShape { recompute: true, ..run.step }, ..run.clone() };
        let recompute = "train.recompute = true (same gradients, activations of one layer at a time)";
        if fits(&recomputing) {
            return format!("set {recompute}");
        }
        if let Some(stage) = stage_that_fits(&recomputing) {
            return format!("set {recompute} and {}", sharding(stage));
        }
    }
    if let Some(tokens) = largest_micro_batch_tokens(run, budget) {
        return format!("lower train.micro_batch_tokens to {tokens} (or less)");
    }
    if let (Some(rollouts), Some(kv)) = (run.rollouts, assessed.kv) {
        let longest = kv.bytes / kv.block_bytes * kv.block_size as u64;
        match pool_rule(run, budget) {
            // a pool of no block at all: shortening the context cannot help, the later remedies can
            PoolRule::Fixed(_) if kv.sequences_at_context == 0 && longest > 0 => {
                return format!("lower agent.max_context_tokens to {longest} (or less), or raise engine.kv_cache_memory")
            }
            PoolRule::ShareOfGpu(_) if kv.sequences_at_context == 0 && longest > 0 && assessed.estimate.total() < budget.unwrap_or(u64::MAX) => {
                return format!("lower agent.max_context_tokens to {longest} (or less), or raise engine.gpu_memory_utilization")
            }
            PoolRule::EverySequenceAtFullContext if rollouts.sequences > 1 => {
                return "lower rollout.workers or agent.max_context_tokens, or set engine.kv_cache_memory (the engine preempts beyond it)".into()
            }
            _ => {}
        }
    }
    if run.lora.is_none() {
        return "train LoRA adapters ([lora])".into();
    }
    "more data-parallel workers with train.zero_stage = 3, or a device with more memory".into()
}

fn sharded_by(stage: ZeroStage) -> &'static str {
    match stage {
        ZeroStage::Replicated => "nothing",
        ZeroStage::OptimizerState => "the optimizer state",
        ZeroStage::Gradients => "the optimizer state and gradients",
        ZeroStage::Parameters => "the optimizer state, gradients and weights",
    }
}

fn header(run: &RunShape, budget: Option<u64>) -> String {
    let count = run.model.num_parameters() as f64;
    let params = if count >= 1e9 { format!("{:.2}B", count / 1e9) } else { format!("{:.2}M", count / 1e6) };
    let training = match run.lora {
        None => "full fine-tuning".to_string(),
        Some(lora) => format!("LoRA rank {} on {} ({:.1}M trainable)", lora.rank, lora.target_modules.join(", "), run.trainable_parameters() as f64 / 1e6),
    };
    let device = match run.device {
        DeviceKind::Cuda => "GPU",
        DeviceKind::Cpu => "CPU worker (host memory)",
    };
    let memory = budget.map_or_else(|| "unknown memory".into(), |b| format!("{} each", human(b)));
    format!(
        "Qwen3 {params}, {}, {training}; {} × {device}, {memory}; train.zero_stage = {}",
        if run.dtype == candle_core::DType::BF16 { "bf16" } else { "f32" },
        run.workers,
        run.zero_stage.number()
    )
}

fn rows(run: &RunShape, budget: Option<u64>, assessed: &Assessed) -> Vec<Row> {
    let e = &assessed.estimate;
    let stage = run.effective_stage();
    let bytes = run.dtype.size_in_bytes();
    let n = run.workers;
    let share = |sharded: bool| if sharded { format!(" / {n} workers") } else { String::new() };
    let base = run.model.num_parameters();
    let trainable = run.trainable_parameters();
    let params = |count: u64| format!("{} params", thousands(count));
    let weights = match stage.shards_parameters() {
        true => format!("{} × {bytes} B / {n} workers + 2 gathered units of {}", params(base as u64 + if run.lora.is_some() { trainable } else { 0 }), params(crate::memory::largest_gathered_unit(run.model))),
        false => format!("{} × {bytes} B", params(base as u64 + if run.lora.is_some() { trainable } else { 0 })),
    };
    let reference = match (run.reference_model, run.lora.is_some()) {
        (false, _) => "none (no KL penalty)".to_string(),
        (true, true) => "none (LoRA: the base with adapters off)".to_string(),
        (true, false) => format!("frozen copy, {} × {bytes} B{}", params(base as u64), share(stage.shards_parameters())),
    };
    let gradients = format!("{} × ({bytes} B backward + 4 B f32 buffer{})", params(trainable), share(stage.shards_gradients()));
    let optimizer = format!("{} × {} B (AdamW moments{}){}", params(trainable), if run.master_weights { 12 } else { 8 }, if run.master_weights { " + f32 master" } else { "" }, share(stage.shards_optimizer()));
    let s = &run.step;
    let activations = format!(
        "{} tokens in rows of {}, recompute {}, {}",
        s.tokens,
        s.seq_len,
        if s.recompute { "on" } else { "off" },
        if s.fused_attention { "flash attention" } else { "attention scores stored" }
    );
    let kv = match &assessed.kv {
        Some(kv) => {
            let size = match pool_rule(run, budget) {
                PoolRule::Fixed(_) => "engine.kv_cache_memory".to_string(),
                PoolRule::ShareOfGpu(f) => format!("{f} × memory − the rest"),
                PoolRule::EverySequenceAtFullContext => "rollout.workers × agent.max_context_tokens".to_string(),
            };
            format!(
                "{size}: {} blocks of {} tokens; holds {} × {} tokens (rollout.workers = {}: all at once up to {} tokens each)",
                kv.blocks(),
                kv.block_size,
                kv.sequences_at_context,
                kv.context,
                kv.sequences,
                kv.context_for_sequences
            )
        }
        _ => "none (SFT)".to_string(),
    };
    let workspace = match run.device {
        DeviceKind::Cuda => "CUDA context + cuBLAS/NCCL workspace (assumed, not measured)".to_string(),
        DeviceKind::Cpu => "none counted on the host".to_string(),
    };
    vec![
        Row { term: "weights", bytes: e.weights, how: weights },
        Row { term: "reference", bytes: e.reference, how: reference },
        Row { term: "gradients", bytes: e.gradients, how: gradients },
        Row { term: "optimizer", bytes: e.optimizer, how: optimizer },
        Row { term: "activations", bytes: e.activations, how: activations },
        Row { term: "KV pool", bytes: assessed.kv.map_or(0, |kv| kv.bytes), how: kv },
        Row { term: "workspace", bytes: e.workspace, how: workspace },
    ]
}

/// `8,190,735,360`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.header)?;
        writeln!(f, "| term | per {} | how |", self.unit)?;
        writeln!(f, "|---|---:|---|")?;
        for row in &self.rows {
            let bytes = if row.bytes == 0 { "0".to_string() } else { human(row.bytes) };
            writeln!(f, "| {} | {bytes} | {} |", row.term, row.how)?;
        }
        let verdict = match (self.budget, &self.shortfall) {
            (None, _) => "memory unknown: not checked".to_string(),
            (Some(b), None) => format!("fits {} ({} spare)", human(b), human(b.saturating_sub(self.total()))),
            (Some(b), Some(_)) => format!("does not fit {}", human(b)),
        };
        writeln!(f, "| **total** | **{}** | {verdict} |", human(self.total()))?;
        match self.largest_micro_batch_tokens {
            Some(tokens) => write!(f, "largest train.micro_batch_tokens that fits: {tokens}")?,
            None if self.budget.is_some() => write!(f, "no train.micro_batch_tokens fits")?,
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;
    use forge_model::memory::StepShape;
    use forge_model::{Config, LoraConfig};

    use super::*;
    use crate::memory::Rollouts;

    const P: u64 = 8_190_735_360;
    const GIB: u64 = 1 << 30;

    fn qwen3_8b() -> Config {
        Config::qwen3_release("8b").unwrap()
    }

    fn sft_8b(model: &Config, stage: ZeroStage) -> RunShape<'_> {
        let step = StepShape { tokens: 32768, seq_len: 32768, recompute: true, fused_attention: true, dtype: DType::BF16 };
        RunShape { model, dtype: DType::BF16, lora: None, master_weights: true, reference_model: false, zero_stage: stage, workers: 8, step, rollouts: None, device: DeviceKind::Cuda }
    }

    #[test]
    fn full_fine_tuning_of_8b_on_eight_80gib_gpus_needs_zero_stage_2() {
        let c = qwen3_8b();
        // activations of 32,768 tokens with recompute and flash attention: 2·36·4096 saved block
        // inputs + 2 × the MLP block's 3·4096 + 3·12288 per token, bf16
        let activations = 32768 * (2 * 36 * 4096 + 2 * (3 * 4096 + 3 * 12288)) * 2;
        let refused = plan(&sft_8b(&c, ZeroStage::Replicated), Some(80 * GIB));
        assert_eq!(refused.total(), 2 * P + 6 * P + 12 * P + activations + GIB);
        let short = refused.shortfall.clone().unwrap();
        assert!(short.reason.contains("each worker needs about 177.6 GiB of 80.0 GiB"), "{short:?}");
        assert_eq!(short.change, "set train.zero_stage = 2 (shards the optimizer state and gradients across the 8 workers)");
        assert!(refused.to_string().contains("| **total** | **177.6 GiB** | does not fit 80.0 GiB |"), "{refused}");

        let fits = plan(&sft_8b(&c, ZeroStage::Gradients), Some(80 * GIB));
        assert!(fits.fits(), "{fits}");
        assert_eq!(fits.total(), 2 * P + 2 * P + (4 * P).div_ceil(8) + (12 * P).div_ceil(8) + activations + GIB);
        // 80 GiB less 46.8 GiB of state leaves room for one more 32k row, not two
        assert_eq!(fits.largest_micro_batch_tokens, Some(32768));
        assert!(fits.to_string().contains("| optimizer | 11.4 GiB | 8,190,735,360 params × 12 B (AdamW moments + f32 master) / 8 workers |"), "{fits}");
    }

    #[test]
    fn the_kv_pool_takes_what_the_utilization_leaves_and_says_what_it_holds() {
        let c = qwen3_8b();
        let rollouts = Rollouts { sequences: 4, context: 32768, block_size: 16, pool: KvPoolSize::Utilization(0.9) };
        let run = RunShape { reference_model: true, rollouts: Some(rollouts), zero_stage: ZeroStage::Parameters, ..sft_8b(&c, ZeroStage::Parameters) };
        // stage 3 in RL keeps a replicated copy for the rollout engine: 141 GiB GPUs
        let p = plan(&run, Some(141 * GIB));
        let rest = estimate(&run).total();
        let block = 2 * 36 * 8 * 128 * 16 * 2;
        let kv = p.kv.unwrap();
        assert_eq!(kv.block_bytes, block);
        assert_eq!(kv.blocks(), (((141 * GIB) as f64 * 0.9) as u64 - rest) / block);
        // 32,768 tokens are 2,048 blocks (4.5 GiB)
        assert_eq!(kv.sequences_at_context, kv.blocks() / 2048);
        assert_eq!(kv.context_for_sequences as u64, kv.blocks() / 4 * 16);
        assert!(p.fits(), "{p}");
        // a fixed pool counts as it is, and one too small for a single sequence is refused
        let fixed = RunShape { rollouts: Some(Rollouts { pool: KvPoolSize::Fixed(2 * GIB), ..rollouts }), ..run.clone() };
        let small = plan(&fixed, Some(141 * GIB));
        // whole blocks: 2 GiB holds 910 of 2.25 MiB (14,560 tokens)
        assert_eq!(small.kv.unwrap().bytes, 910 * block);
        let short = small.shortfall.unwrap();
        assert!(short.reason.contains("holds no sequence of agent.max_context_tokens = 32768"), "{short:?}");
        assert_eq!(short.change, "lower agent.max_context_tokens to 14560 (or less), or raise engine.kv_cache_memory");
        // on the host the engine's pool is room for every sequence at full context (f32 blocks)
        let host = RunShape { device: DeviceKind::Cpu, step: StepShape { fused_attention: false, tokens: 4096, seq_len: 4096, ..run.step }, ..run.clone() };
        let host_kv = plan(&host, Some(512 * GIB)).kv.unwrap();
        assert_eq!((host_kv.bytes, host_kv.sequences_at_context), (4 * 2048 * 2 * block, 4));
    }

    #[test]
    fn lora_and_recompute_are_named_when_sharding_cannot_help() {
        let c = qwen3_8b();
        let one_worker = RunShape { workers: 1, ..sft_8b(&c, ZeroStage::Replicated) };
        assert_eq!(plan(&one_worker, Some(80 * GIB)).shortfall.unwrap().change, "train LoRA adapters ([lora])");
        let lora = LoraConfig { rank: 16, alpha: 32.0, dropout: 0.0, target_modules: vec!["q_proj".into()], seed: 0 };
        let plain = RunShape { lora: Some(&lora), step: StepShape { recompute: false, ..one_worker.step }, ..one_worker.clone() };
        assert_eq!(plan(&plain, Some(48 * GIB)).shortfall.unwrap().change, "set train.recompute = true (same gradients, activations of one layer at a time)");
        // without recompute, 8B full fine-tuning on 8 workers needs both (stage 3 needs recompute)
        let no_recompute = RunShape { step: StepShape { recompute: false, ..one_worker.step }, workers: 8, ..one_worker.clone() };
        assert_eq!(
            plan(&no_recompute, Some(80 * GIB)).shortfall.unwrap().change,
            "set train.recompute = true (same gradients, activations of one layer at a time) and train.zero_stage = 2 (shards the optimizer state and gradients across the 8 workers)"
        );
        // unknown memory: planned, not checked
        let unknown = plan(&one_worker, None);
        assert!(unknown.fits() && unknown.largest_micro_batch_tokens.is_none());
        assert!(unknown.to_string().contains("memory unknown: not checked"));
    }

    #[test]
    fn a_refused_run_names_the_change_and_check_memory_starts_it_anyway() {
        let c = qwen3_8b();
        let p = plan(&sft_8b(&c, ZeroStage::Replicated), Some(80 * GIB));
        let err = p.report_and_check(true).unwrap_err().to_string();
        assert!(err.contains("this run does not fit: each worker needs about 177.6 GiB of 80.0 GiB; to fit: set train.zero_stage = 2"), "{err}");
        assert!(err.contains("or set train.check_memory = false to start anyway"), "{err}");
        assert!(err.contains("| optimizer | 91.5 GiB |"), "the table comes with it: {err}");
        p.report_and_check(false).expect("train.check_memory = false starts anyway");
    }
}
