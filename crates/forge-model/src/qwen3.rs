//! Qwen3 dense decoder (HF `Qwen3ForCausalLM`), trainable: every op on the path has a backward.
//!
//! Parameter names are HF's. Forward covers whole sequences (training, scoring); a causal mask
//! is combined with an optional padding mask so batches may hold sequences of different lengths,
//! or rows hold several sequences back to back ("packing", told by `position_ids`).
//!
//! The weights are the model's own (replicated: every data-parallel worker holds them all) or,
//! ZeRO stage 3, sharded across the workers and gathered unit by unit for each use
//! ([`Qwen3ForCausalLM::sharded`]). Both run one code path: every use of a decoder layer, the
//! embedding table or the head obtains it through one accessor (`layer`, `embedding_table`, `head`),
//! borrowed from a replicated model, built from a gather for a sharded one.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var, D};
use forge_kernels::{
    attention, cross_entropy_per_token, embedding_gradient, linear_cross_entropy_per_token, rms_norm, rope, swiglu, IGNORE_TARGET,
};

use crate::lora::LORA_TARGETS;
use crate::params::accumulate_gradient;
use crate::sharded::{gather_unit, GatherUnit, ParamGather, EMBED_TOKENS, LM_HEAD, NORM};
use crate::{Config, Gradients, LoraConfig, ModelError, ParamStore, Result};

pub mod decode;

/// Sequences of token ids with their padding mask and (for training) labels.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[b, s]` u32.
    pub input_ids: Tensor,
    /// `[b, s]`, non-zero = real token; `None` = no padding.
    pub attention_mask: Option<Tensor>,
    /// `[b, s]` i64, HF convention: position t is predicted from tokens < t, `-100` = ignored.
    pub labels: Option<Tensor>,
    /// `[b, s]` u32 for packed rows (HF's `DataCollatorWithFlattening`): each row holds sequences
    /// back to back, their positions counting 0, 1, 2, … and a 0 starting the next. Attention stays
    /// within a sequence and no label is predicted across a boundary, so the loss equals that of
    /// the sequences padded into rows of their own. `None`: each row is one sequence at 0..s.
    /// Not combined with `attention_mask` (packed rows have no padding).
    pub position_ids: Option<Tensor>,
}

/// `x·wᵀ` over the last dim of `x: [.., in]` with `w: [out, in]`.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (rows, inner) = (dims[..dims.len() - 1].iter().product::<usize>(), dims[dims.len() - 1]);
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank ≥ 1") = w.dim(0)?;
    Ok(y.reshape(out_dims)?)
}

/// A LoRA adapter of one projection: `scale·B·A·dropout(x)`.
#[derive(Clone)]
struct Adapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f64,
    /// Distinguishes the dropout masks of the adapted projections within one step.
    id: u64,
}

/// A projection `x·Wᵀ`, optionally with a LoRA adapter.
#[derive(Clone)]
struct Linear {
    weight: Tensor,
    adapter: Option<Adapter>,
}

impl Linear {
    fn forward(&self, x: &Tensor, inputs: &LayerInputs) -> Result<Tensor> {
        let y = match inputs.no_grad {
            true => forge_kernels::few_rows::linear(x, &self.weight)?.map_or_else(|| linear(x, &self.weight), Ok)?,
            false => linear(x, &self.weight)?,
        };
        match &self.adapter {
            Some(adapter) if inputs.adapters_on => {
                let x = match inputs.dropout_seed {
                    Some(seed) if adapter.dropout > 0.0 => dropout(x, adapter.dropout, seed ^ adapter.id.wrapping_mul(0x9E37_79B9_7F4A_7C15))?,
                    _ => x.clone(),
                };
                let delta = linear(&linear(&x, &adapter.a)?, &adapter.b)?;
                Ok((y + (delta * adapter.scale)?)?)
            }
            _ => Ok(y),
        }
    }
}

/// Inverted dropout with a mask that is a pure function of `seed`: the recomputed forward of
/// activation checkpointing and a resumed run draw the same mask.
fn dropout(x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p) as f32;
    let mask: Vec<f32> = (0..x.elem_count()).map(|_| if rng.random::<f64>() < p { 0.0 } else { keep }).collect();
    let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// Each row's length when every row of `keep_key` (`[b][s]`, non-zero = real token; `None` = no
/// padding) is right padding with at least one real token; `None` for any other mask.
fn right_padded_lengths(keep_key: Option<&[Vec<u8>]>, b: usize, s: usize) -> Option<Vec<usize>> {
    let Some(keep_key) = keep_key else { return Some(vec![s; b]) };
    keep_key
        .iter()
        .map(|row| {
            let n = row.iter().take_while(|&&k| k != 0).count();
            (n > 0 && row[n..].iter().all(|&k| k == 0)).then_some(n)
        })
        .collect()
}

/// Per-batch inputs shared by all layers: the additive attention mask, the RoPE tables, and
/// whether LoRA adapters (and their dropout) apply.
pub struct LayerInputs {
    /// `[b or 1, 1, s, s]` in the model dtype; `None` for incremental decoding, whose attention
    /// reads only the cached positions a query may see, and when `causal_lengths` is set.
    bias: Option<Tensor>,
    /// Where the fused attention runs (CUDA, bf16: `forge_kernels::flash_attn::supported`) and
    /// the mask is causal + right padding: each row's real length; attention then never
    /// materialises the `[s, s]` mask or scores.
    causal_lengths: Option<Vec<usize>>,
    /// Packed rows: the cumulative offsets of their sequences over the flattened `[b·s]` rows
    /// (`[0, len0, len0 + len1, …, b·s]`); attention is then per sequence (`causal_attention_varlen`).
    packed: Option<Vec<usize>>,
    /// `[1 or b, s, head_dim/2]` f32.
    cos: Tensor,
    sin: Tensor,
    adapters_on: bool,
    dropout_seed: Option<u64>,
    /// Inference only (incremental decoding): projections of a few rows may skip autograd.
    no_grad: bool,
}

#[derive(Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    eps: f64,
}

impl Attention {
    fn forward(&self, x: &Tensor, inputs: &LayerInputs) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (h, h_kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // 1. projections, per-head RMSNorm of q and k, rotary positions: [b, s, heads, d]
        let q = rms_norm(&self.q_proj.forward(x, inputs)?.reshape((b, s, h, d))?, &self.q_norm, self.eps)?;
        let k = rms_norm(&self.k_proj.forward(x, inputs)?.reshape((b, s, h_kv, d))?, &self.k_norm, self.eps)?;
        let v = self.v_proj.forward(x, inputs)?.reshape((b, s, h_kv, d))?;
        let q = rope(&q, &inputs.cos, &inputs.sin)?;
        let k = rope(&k, &inputs.cos, &inputs.sin)?;
        // 2. heads first: [b, heads, s, d]
        let scale = 1.0 / (d as f64).sqrt();
        let out = match (&inputs.packed, &inputs.causal_lengths) {
            // sequences packed into rows: [b·s, heads, d], attention within each sequence
            (Some(cu_seqlens), _) => {
                let flat = |t: &Tensor, heads: usize| t.reshape((b * s, heads, d));
                forge_kernels::causal_attention_varlen(&flat(&q, h)?, &flat(&k, h_kv)?, &flat(&v, h_kv)?, cu_seqlens, scale)?.reshape((b, s, h * d))?
            }
            // fused kernel on [b, s, heads, d] directly
            (None, Some(lengths)) => forge_kernels::causal_attention_padded(&q, &k, &v, lengths, scale)?.reshape((b, s, h * d))?,
            (None, None) => {
                let (q, k, v) = (q.transpose(1, 2)?, k.transpose(1, 2)?, v.transpose(1, 2)?);
                let out = attention(&q, &k, &v, inputs.bias.as_ref(), scale)?;
                // 3. [b, h, s, d] -> [b, s, h·d]
                out.transpose(1, 2)?.reshape((b, s, h * d))?
            }
        };
        // -> [b, s, hidden]
        self.o_proj.forward(&out, inputs)
    }
}

#[derive(Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, inputs: &LayerInputs) -> Result<Tensor> {
        let gated = swiglu(&self.gate_proj.forward(x, inputs)?, &self.up_proj.forward(x, inputs)?)?;
        self.down_proj.forward(&gated, inputs)
    }
}

#[derive(Clone)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: Tensor,
    post_attention_layernorm: Tensor,
    eps: f64,
}

/// One of the two residual blocks of a decoder layer: the unit of activation recomputation.
#[derive(Clone, Copy)]
enum Block {
    Attention,
    Mlp,
}

/// A decoder layer's or the head's weights by HF parameter name.
type WeightByName<'a> = &'a dyn Fn(&str) -> Result<Tensor>;

impl DecoderLayer {
    /// Layer `l` from its weights, with adapters on the projections `lora` targets.
    fn new(config: &Config, l: usize, weight: WeightByName<'_>, lora: Option<&(LoraConfig, ParamStore)>) -> Result<Self> {
        let prefix = format!("model.layers.{l}");
        let p = |name: &str| weight(&format!("{prefix}.{name}"));
        // adapters are numbered through the model (their dropout masks differ), layer by layer
        let adapted_per_layer = lora.map_or(0, |(cfg, _)| LORA_TARGETS.iter().filter(|t| cfg.targets(t)).count());
        let last_id = Cell::new((l * adapted_per_layer) as u64);
        let proj = |module: &str| -> Result<Linear> {
            let path = format!("{prefix}.{module}");
            let adapter = match lora {
                Some((cfg, adapters)) if cfg.targets(module.rsplit('.').next().unwrap_or_default()) => {
                    last_id.set(last_id.get() + 1);
                    Some(Adapter {
                        a: adapters.tensor(&format!("{path}.lora_A.weight"))?,
                        b: adapters.tensor(&format!("{path}.lora_B.weight"))?,
                        scale: cfg.scale(),
                        dropout: cfg.dropout,
                        id: last_id.get(),
                    })
                }
                _ => None,
            };
            Ok(Linear { weight: weight(&format!("{path}.weight"))?, adapter })
        };
        let eps = config.rms_norm_eps;
        Ok(Self {
            self_attn: Attention {
                q_proj: proj("self_attn.q_proj")?,
                k_proj: proj("self_attn.k_proj")?,
                v_proj: proj("self_attn.v_proj")?,
                o_proj: proj("self_attn.o_proj")?,
                q_norm: p("self_attn.q_norm.weight")?,
                k_norm: p("self_attn.k_norm.weight")?,
                num_heads: config.num_attention_heads,
                num_kv_heads: config.num_key_value_heads,
                head_dim: config.head_dim,
                eps,
            },
            mlp: Mlp { gate_proj: proj("mlp.gate_proj")?, up_proj: proj("mlp.up_proj")?, down_proj: proj("mlp.down_proj")? },
            input_layernorm: p("input_layernorm.weight")?,
            post_attention_layernorm: p("post_attention_layernorm.weight")?,
            eps,
        })
    }

    /// `[b, s, hidden] -> [b, s, hidden]`
    fn forward(&self, h: &Tensor, inputs: &LayerInputs) -> Result<Tensor> {
        self.block(Block::Mlp, &self.block(Block::Attention, h, inputs)?, inputs)
    }

    /// `h + block(norm(h))`
    fn block(&self, block: Block, h: &Tensor, inputs: &LayerInputs) -> Result<Tensor> {
        let out = match block {
            Block::Attention => self.self_attn.forward(&rms_norm(h, &self.input_layernorm, self.eps)?, inputs)?,
            Block::Mlp => self.mlp.forward(&rms_norm(h, &self.post_attention_layernorm, self.eps)?, inputs)?,
        };
        Ok((h + out)?)
    }
}

/// Which weights a forward pass uses. Without LoRA the two are the same model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// The model as trained: the base with its LoRA adapters.
    Trained,
    /// The frozen base alone, adapters left out (the KL reference of a LoRA run): nothing is
    /// switched on the shared model, so generation may go on meanwhile.
    Base,
}

/// The final norm and the output projection: last hidden states to logits.
#[derive(Clone)]
struct Head {
    norm: Tensor,
    /// `[vocab, hidden]`: `model.embed_tokens.weight` when the embeddings are tied.
    lm_head: Tensor,
    eps: f64,
}

impl Head {
    fn new(config: &Config, weight: WeightByName<'_>) -> Result<Self> {
        let lm_head = if config.tie_word_embeddings { EMBED_TOKENS } else { LM_HEAD };
        Ok(Self { norm: weight(NORM)?, lm_head: weight(lm_head)?, eps: config.rms_norm_eps })
    }

    fn normed(&self, h: &Tensor) -> Result<Tensor> {
        Ok(rms_norm(h, &self.norm, self.eps)?)
    }
}

/// Where the model's modules come from.
enum Modules {
    /// Built once from the model's own parameters.
    Held(HeldModules),
    /// ZeRO stage 3: built for each use from the weights of one [`GatherUnit`], gathered from the
    /// data-parallel workers' shards, and dropped after it.
    Sharded(Arc<dyn ParamGather>),
}

struct HeldModules {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    head: Head,
}

/// A unit's module for backward, and the store in which backward finds the gradients of its
/// trainable weights: the model's trainable parameters, or the unit's gathered weights.
struct Trainable<'a, M: Clone> {
    module: Cow<'a, M>,
    params: Cow<'a, ParamStore>,
}

pub struct Qwen3ForCausalLM {
    config: Config,
    /// The model's own parameters; empty when sharded (the workers hold them, in shards).
    params: ParamStore,
    /// With LoRA: the adapters (the base is frozen); `None`: every parameter trains.
    lora: Option<(LoraConfig, ParamStore)>,
    modules: Modules,
    dtype: DType,
    device: Device,
    dropout_seed: Mutex<Option<u64>>,
    /// Additive-mask value for masked positions: the most negative finite value of the dtype.
    mask_value: f64,
    /// RoPE's inverse frequencies (`head_dim / 2`, YaRN-scaled when configured) and the factor
    /// cos/sin are multiplied by: fixed by the config, computed once.
    rope_inv_freq: Vec<f32>,
    rope_scaling: f64,
}

impl Qwen3ForCausalLM {
    /// Full fine-tuning: every parameter of `params` trains.
    pub fn new(config: Config, params: ParamStore) -> Result<Self> {
        Self::build(config, params, None)
    }

    /// LoRA: `base` is frozen (no gradients are computed for it); `adapters` train.
    pub fn with_lora(config: Config, base: ParamStore, lora: LoraConfig, adapters: ParamStore) -> Result<Self> {
        lora.validate()?;
        Self::build(config, base, Some((lora, adapters)))
    }

    /// ZeRO stage 3, full fine-tuning: a model that holds no weights; each use gathers them from
    /// `source` one [`GatherUnit`] at a time. Training takes the recompute path
    /// ([`Self::objective_and_gradients_into`]); decoding is refused (decode a replicated copy).
    /// Full fine-tuning only: it takes no adapters (LoRA runs stay replicated).
    pub fn sharded(config: Config, source: Arc<dyn ParamGather>, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self::assemble(config, ParamStore::from_entries(Vec::new()), None, Modules::Sharded(source), dtype, device.clone()))
    }

    fn build(config: Config, params: ParamStore, lora: Option<(LoraConfig, ParamStore)>) -> Result<Self> {
        let frozen = lora.is_some();
        let weight = |name: &str| -> Result<Tensor> {
            let t = params.tensor(name)?;
            Ok(if frozen { t.detach() } else { t })
        };
        let layers = (0..config.num_hidden_layers).map(|l| DecoderLayer::new(&config, l, &weight, lora.as_ref())).collect::<Result<Vec<_>>>()?;
        let modules = HeldModules { embed_tokens: weight(EMBED_TOKENS)?, layers, head: Head::new(&config, &weight)? };
        let (dtype, device) = (modules.embed_tokens.dtype(), modules.embed_tokens.device().clone());
        Ok(Self::assemble(config, params, lora, Modules::Held(modules), dtype, device))
    }

    fn assemble(config: Config, params: ParamStore, lora: Option<(LoraConfig, ParamStore)>, modules: Modules, dtype: DType, device: Device) -> Self {
        let mask_value = match dtype {
            DType::F16 => f64::from(half::f16::MIN),
            DType::BF16 => f64::from(half::bf16::MIN),
            _ => f64::from(f32::MIN),
        };
        Self {
            params,
            lora,
            modules,
            dtype,
            device,
            dropout_seed: Mutex::new(None),
            mask_value,
            rope_inv_freq: config.rope_inv_freq(),
            rope_scaling: config.rope_attention_scaling(),
            config,
        }
    }

    /// The embedding table `[vocab, hidden]`, for the embedding step.
    fn embedding_table(&self) -> Result<Cow<'_, Tensor>> {
        self.module(GatherUnit::Embedding, |held| &held.embed_tokens, |weight| weight(EMBED_TOKENS))
    }

    /// Decoder layer `l` for a forward pass.
    fn layer(&self, l: usize) -> Result<Cow<'_, DecoderLayer>> {
        self.module(GatherUnit::Layer(l), |held| &held.layers[l], |weight| DecoderLayer::new(&self.config, l, weight, None))
    }

    fn head(&self) -> Result<Cow<'_, Head>> {
        self.module(GatherUnit::Head, |held| &held.head, |weight| Head::new(&self.config, weight))
    }

    /// Decoder layer `l` for its backward.
    fn trainable_layer(&self, l: usize) -> Result<Trainable<'_, DecoderLayer>> {
        self.trainable_module(GatherUnit::Layer(l), |held| &held.layers[l], |weight| DecoderLayer::new(&self.config, l, weight, None))
    }

    fn trainable_head(&self) -> Result<Trainable<'_, Head>> {
        self.trainable_module(GatherUnit::Head, |held| &held.head, |weight| Head::new(&self.config, weight))
    }

    /// A replicated model's own module, or one `build` from the gathered plain tensors of `unit`:
    /// no autograd graph refers to them, so they are freed as soon as the module is dropped.
    fn module<'a, M: Clone>(&'a self, unit: GatherUnit, held: impl FnOnce(&'a HeldModules) -> &'a M, build: impl FnOnce(WeightByName<'_>) -> Result<M>) -> Result<Cow<'a, M>> {
        match &self.modules {
            Modules::Held(modules) => Ok(Cow::Borrowed(held(modules))),
            Modules::Sharded(source) => {
                let gathered = gather_unit(source.as_ref(), &self.config, unit, self.dtype, &self.device)?;
                Ok(Cow::Owned(build(&|name| by_name(&gathered, name))?))
            }
        }
    }

    /// [`Self::module`] for backward: a sharded model's gathered tensors become fresh `Var`s, so
    /// that backward yields their gradients.
    fn trainable_module<'a, M: Clone>(
        &'a self,
        unit: GatherUnit,
        held: impl FnOnce(&'a HeldModules) -> &'a M,
        build: impl FnOnce(WeightByName<'_>) -> Result<M>,
    ) -> Result<Trainable<'a, M>> {
        match &self.modules {
            Modules::Held(modules) => Ok(Trainable { module: Cow::Borrowed(held(modules)), params: Cow::Borrowed(self.trainable()) }),
            Modules::Sharded(source) => {
                let gathered = gather_unit(source.as_ref(), &self.config, unit, self.dtype, &self.device)?;
                let vars = gathered.into_iter().map(|(name, t)| Ok((name, Var::from_tensor(&t)?))).collect::<Result<Vec<_>>>()?;
                let params = ParamStore::from_entries(vars);
                let module = build(&|name| params.tensor(name))?;
                Ok(Trainable { module: Cow::Owned(module), params: Cow::Owned(params) })
            }
        }
    }

    /// The modules of a model that holds its weights, for `what`; a sharded model refuses it
    /// rather than gather every weight for every call.
    fn held_modules(&self, what: &str) -> Result<&HeldModules> {
        match &self.modules {
            Modules::Held(held) => Ok(held),
            Modules::Sharded(_) => Err(ModelError::Invalid(format!(
                "{what} needs a model that holds its weights, and this one is sharded (ZeRO-3): it would gather every layer for \
                 every token. Decode with a replicated copy (gather every parameter into a ParamStore, then Qwen3ForCausalLM::new)"
            ))),
        }
    }

    pub fn is_sharded(&self) -> bool {
        matches!(self.modules, Modules::Sharded(_))
    }

    /// The parameters that receive gradients: the adapters with LoRA, else all of them (none of a
    /// sharded model's own: see [`Self::objective_and_gradients_into`]).
    pub fn trainable(&self) -> &ParamStore {
        self.lora.as_ref().map_or(&self.params, |(_, adapters)| adapters)
    }

    pub fn lora(&self) -> Option<(&LoraConfig, &ParamStore)> {
        self.lora.as_ref().map(|(c, a)| (c, a))
    }

    /// Seeds LoRA dropout for the next forward passes (training); `None` disables dropout.
    pub fn set_dropout_seed(&self, seed: Option<u64>) {
        *self.dropout_seed.lock().expect("dropout seed lock") = seed;
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model's own parameters: empty for a sharded model, whose workers hold them in shards.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Rejects ids the embedding table does not have (candle would index out of bounds).
    pub fn check_token_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            Some(&id) => Err(ModelError::TokenOutOfVocab { id, vocab_size: self.config.vocab_size }),
            None => Ok(()),
        }
    }

    /// Mask and RoPE tables for `input_ids: [b, s]`: positions 0..s for every row (right padding),
    /// or `position_ids` for packed rows.
    fn layer_inputs(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>, position_ids: Option<&Tensor>, weights: Weights) -> Result<LayerInputs> {
        let (b, s) = input_ids.dims2()?;
        let device = self.device();
        if let Some(positions) = position_ids {
            if attention_mask.is_some() {
                return Err(ModelError::Invalid("a batch with position_ids (packed rows) has no attention_mask: packed rows hold no padding".into()));
            }
            let (cu_seqlens, positions) = packed_sequences(positions, b, s)?;
            let (cos, sin) = self.rotary_tables(positions.into_iter())?;
            let reshape = |t: Tensor| t.reshape((b, s, self.config.head_dim / 2));
            return Ok(LayerInputs {
                bias: None,
                causal_lengths: None,
                packed: Some(cu_seqlens),
                cos: reshape(cos)?,
                sin: reshape(sin)?,
                adapters_on: weights == Weights::Trained,
                dropout_seed: *self.dropout_seed.lock().expect("dropout seed lock"),
                no_grad: false,
            });
        }
        let keep_key: Option<Vec<Vec<u8>>> = match attention_mask {
            Some(mask) => {
                if mask.dims() != [b, s] {
                    return Err(ModelError::Invalid(format!("attention_mask has shape {:?}, input_ids {:?}", mask.dims(), [b, s])));
                }
                Some(mask.ne(0u32)?.to_vec2::<u8>()?)
            }
            None => None,
        };
        let (cos, sin) = self.rotary_tables(0..s)?;
        let mut inputs = LayerInputs {
            bias: None,
            causal_lengths: None,
            packed: None,
            cos,
            sin,
            adapters_on: weights == Weights::Trained,
            dropout_seed: *self.dropout_seed.lock().expect("dropout seed lock"),
            no_grad: false,
        };
        if forge_kernels::flash_attn::supported(device, self.dtype(), self.config.head_dim) {
            if let Some(lengths) = right_padded_lengths(keep_key.as_deref(), b, s) {
                inputs.causal_lengths = Some(lengths);
                return Ok(inputs);
            }
        }
        let rows = keep_key.as_ref().map_or(1, |_| b);
        let mut bias = vec![0f32; rows * s * s];
        for r in 0..rows {
            for i in 0..s {
                for j in 0..s {
                    let masked = j > i || keep_key.as_ref().is_some_and(|k| k[r][j] == 0);
                    if masked {
                        bias[(r * s + i) * s + j] = self.mask_value as f32;
                    }
                }
            }
        }
        inputs.bias = Some(Tensor::from_vec(bias, (rows, 1, s, s), device)?.to_dtype(self.dtype())?);
        Ok(inputs)
    }

    /// RoPE `cos`, `sin` tables `[1, positions, head_dim/2]` (f32) for the given positions.
    fn rotary_tables(&self, positions: impl ExactSizeIterator<Item = usize>) -> Result<(Tensor, Tensor)> {
        let half = self.config.head_dim / 2;
        let inv_freq = &self.rope_inv_freq;
        let n = positions.len();
        let angles: Vec<f32> = positions.flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f)).collect();
        let angles = Tensor::from_vec(angles, (1, n, half), self.device())?;
        let scaling = self.rope_scaling;
        if scaling == 1.0 {
            return Ok((angles.cos()?, angles.sin()?));
        }
        // YaRN: transformers multiplies cos and sin (in f32) by the attention factor
        Ok(((angles.cos()? * scaling)?, (angles.sin()? * scaling)?))
    }

    /// The rows of `table` (`[vocab, hidden]`) for `input_ids: [b, s]`: `[b, s, hidden]`.
    fn embed(&self, table: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        self.check_token_ids(&input_ids.flatten_all()?.to_vec1::<u32>()?)?;
        Ok(table.index_select(&input_ids.flatten_all()?, 0)?.reshape((b, s, self.config.hidden_size))?)
    }

    /// Final hidden states after the last norm: `[b, s, hidden]`.
    pub fn forward_hidden(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let h = self.last_layer_output(input_ids, attention_mask, None, Weights::Trained)?;
        self.head()?.normed(&h)
    }

    /// [`Self::forward_hidden`] of packed rows (see [`Batch::position_ids`]).
    pub fn forward_hidden_packed(&self, input_ids: &Tensor, position_ids: &Tensor) -> Result<Tensor> {
        let h = self.last_layer_output(input_ids, None, Some(position_ids), Weights::Trained)?;
        self.head()?.normed(&h)
    }

    /// The last decoder layer's output, before the final norm: `[b, s, hidden]`.
    fn last_layer_output(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>, position_ids: Option<&Tensor>, weights: Weights) -> Result<Tensor> {
        let inputs = self.layer_inputs(input_ids, attention_mask, position_ids, weights)?;
        let mut h = self.embed(&*self.embedding_table()?, input_ids)?;
        for l in 0..self.config.num_hidden_layers {
            h = self.layer(l)?.forward(&h, &inputs)?;
        }
        Ok(h)
    }

    /// Logits at every position: `[b, s, vocab]` in the model dtype.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with(input_ids, attention_mask, Weights::Trained)
    }

    /// [`Self::forward`] with the chosen [`Weights`] (the base alone: LoRA's frozen reference).
    pub fn forward_with(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>, weights: Weights) -> Result<Tensor> {
        let h = self.last_layer_output(input_ids, attention_mask, None, weights)?;
        let head = self.head()?;
        linear(&head.normed(&h)?, &head.lm_head)
    }

    /// Mean next-token cross-entropy over the labelled positions (HF `ForCausalLMLoss`).
    pub fn loss(&self, batch: &Batch) -> Result<Tensor> {
        let h = self.last_layer_output(&batch.input_ids, batch.attention_mask.as_ref(), batch.position_ids.as_ref(), Weights::Trained)?;
        let head = self.head()?;
        let (nll, count) = self.head_nll(&head, &head.normed(&h)?, batch, Logits::Full)?;
        mean_over_labels(&nll, count)
    }

    /// Per-position negative log-likelihood of the shifted labels, `[b·(s−1)]` f32 (position t of
    /// row r at `r·(s−1) + t` scores label t+1; 0 where the label is −100), and the label count.
    fn head_nll(&self, head: &Head, hidden: &Tensor, batch: &Batch, logits: Logits) -> Result<(Tensor, usize)> {
        let labels = batch.labels.as_ref().ok_or_else(|| ModelError::Invalid("the batch has no labels".into()))?;
        let (b, s) = labels.dims2()?;
        let positions = batch.position_ids.as_ref().map(|p| packed_sequences(p, b, s)).transpose()?.map(|(_, positions)| positions);
        let (targets, count) = shifted_targets(labels, positions.as_deref(), self.config.vocab_size)?;
        let (b, s, h) = hidden.dims3()?;
        // position t predicts label t+1; the last position predicts nothing
        let hidden = hidden.narrow(1, 0, s - 1)?.reshape((b * (s - 1), h))?;
        let targets = Tensor::from_vec(targets, b * (s - 1), self.device())?;
        let nll = match logits {
            Logits::Full => cross_entropy_per_token(&linear(&hidden, &head.lm_head)?, &targets)?,
            Logits::Sliced => linear_cross_entropy_per_token(&hidden, &head.lm_head, &targets)?,
        };
        Ok((nll, count))
    }

    /// Loss and the gradient of every parameter. With `recompute`, memory is traded for compute:
    /// layer activations are not kept for backward (each residual block's forward is re-run from
    /// its saved input during backward: activation checkpointing) and the head's logits exist one
    /// vocabulary slice at a time (recomputed in backward). The gradients are those of the plain
    /// backward up to float summation order in the head (see `tests/hf_parity.rs`).
    pub fn loss_and_gradients(&self, batch: &Batch, recompute: bool) -> Result<(f32, Gradients)> {
        self.objective_and_gradients(batch, recompute, mean_over_labels)
    }

    /// [`Self::loss_and_gradients`] for any objective of the per-token log-likelihoods:
    /// `objective(nll, label_count)` gets the `[b·(s−1)]` negative log-likelihoods of the batch's
    /// labels (row r, position t at `r·(s−1) + t`, scoring label t+1; e.g. GRPO's clipped ratio objective) and returns the
    /// scalar to minimise. A sharded model needs `recompute`.
    pub fn objective_and_gradients<F>(&self, batch: &Batch, recompute: bool, objective: F) -> Result<(f32, Gradients)>
    where
        F: FnOnce(&Tensor, usize) -> Result<Tensor>,
    {
        let mut grads = Gradients::new();
        if recompute {
            let loss = self.objective_and_gradients_into(batch, objective, &mut |unit| {
                unit.into_iter().try_for_each(|(name, grad)| accumulate_gradient(&name, grad, &mut grads))
            })?;
            return Ok((loss, grads));
        }
        if self.is_sharded() {
            return Err(ModelError::Invalid(
                "training a sharded (ZeRO-3) model needs recompute = true: candle's autograd keeps every weight of the graph alive \
                 until backward ends, so only the block-wise recompute path releases each layer's gathered weights"
                    .into(),
            ));
        }
        let h = self.last_layer_output(&batch.input_ids, batch.attention_mask.as_ref(), batch.position_ids.as_ref(), Weights::Trained)?;
        let head = self.head()?;
        let (nll, count) = self.head_nll(&head, &head.normed(&h)?, batch, Logits::Full)?;
        let loss = objective(&nll, count)?;
        self.trainable().accumulate_gradients(&loss.backward()?, &mut grads)?;
        Ok((loss.to_scalar::<f32>()?, grads))
    }

    /// The recompute path of [`Self::objective_and_gradients`] (activation checkpointing, sliced
    /// logits), handing the trainable parameters' gradients (HF names, full shapes) to `sink` unit
    /// by unit as backward produces them: the head's (`model.norm.weight` and `lm_head.weight`, or
    /// `model.embed_tokens.weight` when tied), each decoder layer's from the last to the first,
    /// then the embedding table's; under LoRA, each layer's adapters' (the head's call is empty).
    /// With tied embeddings the table's gradient comes in two parts, from the head and from the
    /// embedding step: their sum is the gradient. A sharded model gathers each layer before its
    /// forward and again before its backward, and drops its weights and gradients once `sink`
    /// returns: one layer's weights and gradients exist at a time, and `sink` may reduce-scatter
    /// them.
    pub fn objective_and_gradients_into<F>(&self, batch: &Batch, objective: F, sink: &mut dyn FnMut(Gradients) -> Result<()>) -> Result<f32>
    where
        F: FnOnce(&Tensor, usize) -> Result<Tensor>,
    {
        let inputs = self.layer_inputs(&batch.input_ids, batch.attention_mask.as_ref(), batch.position_ids.as_ref(), Weights::Trained)?;
        let num_layers = self.config.num_hidden_layers;
        // 1. forward without a graph, keeping only each residual block's input: blocks rather
        // than whole layers, so the attention block's backward (the largest transient: scores,
        // probabilities and their gradients) runs without the MLP's activations
        let mut saved = Vec::with_capacity(2 * num_layers);
        let mut h = self.embed(&*self.embedding_table()?, &batch.input_ids)?.detach();
        for l in 0..num_layers {
            let layer = self.layer(l)?;
            for block in [Block::Attention, Block::Mlp] {
                let out = layer.block(block, &h, &inputs)?.detach();
                saved.push(std::mem::replace(&mut h, out));
            }
        }
        // 2. head: loss and the gradient w.r.t. the last hidden state; the head's graph and
        // GradStore are dropped before the layers' backward starts
        let (loss, mut upstream) = {
            let head = self.trainable_head()?;
            let last = Var::from_tensor(&h)?;
            drop(h);
            let hidden = head.module.normed(last.as_tensor())?;
            let (nll, count) = self.head_nll(&head.module, &hidden, batch, Logits::Sliced)?;
            let loss = objective(&nll, count)?;
            let store = loss.backward()?;
            let mut grads = Gradients::new();
            head.params.accumulate_gradients(&store, &mut grads)?;
            sink(grads)?;
            (loss.to_scalar::<f32>()?, gradient_of(&store, &last)?)
        };
        // 3. layers in reverse, each block's forward re-run from its saved input and `upstream`
        // back-propagated through it; each saved input is freed once its block is done
        for l in (0..num_layers).rev() {
            let layer = self.trainable_layer(l)?;
            let mut grads = Gradients::new();
            for block in [Block::Mlp, Block::Attention] {
                let input = Var::from_tensor(&saved.pop().expect("one saved input per block"))?;
                let out = layer.module.block(block, input.as_tensor(), &inputs)?;
                let store = (out * &upstream)?.sum_all()?.backward()?;
                layer.params.accumulate_gradients(&store, &mut grads)?;
                upstream = gradient_of(&store, &input)?;
            }
            sink(grads)?;
        }
        // 4. embedding (frozen under LoRA): the upstream rows scattered to their token ids
        if self.lora.is_none() {
            let (ids, hidden_size) = (batch.input_ids.flatten_all()?, self.config.hidden_size);
            let grad = embedding_gradient(&ids, &upstream.reshape(((), hidden_size))?, self.config.vocab_size)?;
            sink(Gradients::from([(EMBED_TOKENS.to_string(), grad)]))?;
        }
        Ok(loss)
    }

    /// `log p(token_t | tokens_<t)` for t ≥ 1 of each row, natural log, computed in f32.
    /// Rows are right-padded; `lengths[r]` real tokens in row r.
    pub fn token_logprobs(&self, input_ids: &Tensor, lengths: &[usize]) -> Result<Vec<Vec<f32>>> {
        self.token_logprobs_with(input_ids, lengths, Weights::Trained)
    }

    /// [`Self::token_logprobs`] with the chosen [`Weights`].
    pub fn token_logprobs_with(&self, input_ids: &Tensor, lengths: &[usize], weights: Weights) -> Result<Vec<Vec<f32>>> {
        let (b, s) = input_ids.dims2()?;
        let mask: Vec<u32> = lengths.iter().flat_map(|&n| (0..s).map(move |j| u32::from(j < n))).collect();
        let mask = Tensor::from_vec(mask, (b, s), self.device())?;
        let logits = self.forward_with(input_ids, Some(&mask), weights)?.to_dtype(DType::F32)?;
        let log_probs = candle_nn::ops::log_softmax(&logits.narrow(1, 0, s - 1)?, D::Minus1)?;
        let next = input_ids.narrow(1, 1, s - 1)?.contiguous()?.unsqueeze(2)?;
        let picked = log_probs.gather(&next, 2)?.squeeze(2)?.to_vec2::<f32>()?;
        Ok(picked.into_iter().zip(lengths).map(|(row, &n)| row[..n.saturating_sub(1)].to_vec()).collect())
    }
}

/// How the head turns hidden states into the loss.
#[derive(Clone, Copy)]
enum Logits {
    /// `[tokens, vocab]` logits materialised, then cross-entropy (fastest).
    Full,
    /// One vocabulary slice at a time, recomputed in backward (least memory).
    Sliced,
}

fn mean_over_labels(nll: &Tensor, count: usize) -> Result<Tensor> {
    Ok((nll.sum_all()? / count.max(1) as f64)?)
}

fn by_name(tensors: &[(String, Tensor)], name: &str) -> Result<Tensor> {
    tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone()).ok_or_else(|| ModelError::Invalid(format!("no gathered parameter named `{name}`")))
}

fn gradient_of(store: &candle_core::backprop::GradStore, var: &Var) -> Result<Tensor> {
    store
        .get(var.as_tensor())
        .map(Tensor::detach)
        .ok_or_else(|| ModelError::Invalid("recomputation lost the gradient of a layer input".into()))
}

/// The sequences of packed rows (`position_ids: [b, s]`): their cumulative offsets over the
/// flattened `b·s` rows, and every token's position. A row starts a sequence; so does every 0;
/// within a sequence the positions count up by one.
fn packed_sequences(position_ids: &Tensor, b: usize, s: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    if position_ids.dims() != [b, s] {
        return Err(ModelError::Invalid(format!("position_ids has shape {:?}, input_ids {:?}", position_ids.dims(), [b, s])));
    }
    let positions: Vec<usize> = position_ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?.into_iter().map(|p| p as usize).collect();
    let mut cu_seqlens = Vec::new();
    for (i, &p) in positions.iter().enumerate() {
        let starts_row = i % s == 0;
        if starts_row || p == 0 {
            if p != 0 {
                return Err(ModelError::Invalid(format!("position_ids row {} starts at {p}: each packed sequence starts at 0", i / s)));
            }
            cu_seqlens.push(i);
        } else if p != positions[i - 1] + 1 {
            return Err(ModelError::Invalid(format!(
                "position_ids row {} goes {} then {p}: within a packed sequence positions count up by one (0 starts the next)",
                i / s,
                positions[i - 1]
            )));
        }
    }
    cu_seqlens.push(b * s);
    Ok((cu_seqlens, positions))
}

/// HF label shift: targets for positions 0..s-1 are labels 1..s; `-100` becomes [`IGNORE_TARGET`].
/// With the `[b·s]` positions of packed rows, a label at a sequence's first position (0) is
/// ignored too: the previous sequence's last token does not predict it.
fn shifted_targets(labels: &Tensor, positions: Option<&[usize]>, vocab_size: usize) -> Result<(Vec<u32>, usize)> {
    let rows = labels.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    let s = rows.first().map_or(0, Vec::len);
    let mut targets = Vec::new();
    let mut count = 0;
    for (r, row) in rows.iter().enumerate() {
        for (t, &label) in row.iter().enumerate().skip(1) {
            if label == -100 || positions.is_some_and(|p| p[r * s + t] == 0) {
                targets.push(IGNORE_TARGET);
            } else if label < 0 || label as usize >= vocab_size {
                return Err(ModelError::Invalid(format!("label {label} is neither -100 nor a token id below vocab_size {vocab_size}")));
            } else {
                targets.push(label as u32);
                count += 1;
            }
        }
    }
    Ok((targets, count))
}

#[cfg(test)]
mod tests {
    use super::right_padded_lengths;

    #[test]
    fn right_padding_becomes_lengths_and_other_masks_do_not() {
        assert_eq!(right_padded_lengths(None, 2, 4), Some(vec![4, 4]));
        let rows = |r: &[&[u8]]| r.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
        assert_eq!(right_padded_lengths(Some(&rows(&[&[1, 1, 1, 0], &[1, 0, 0, 0], &[1, 1, 1, 1]])), 3, 4), Some(vec![3, 1, 4]));
        // left padding, a hole, and an all-padding row keep the additive-mask path
        for mask in [&[&[0u8, 1, 1, 1][..]][..], &[&[1, 0, 1, 0][..]], &[&[0, 0, 0, 0][..]]] {
            assert_eq!(right_padded_lengths(Some(&rows(mask)), 1, 4), None, "{mask:?}");
        }
    }
}
