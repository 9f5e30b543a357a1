//! ZeRO stage 3 (DeepSpeed; PyTorch FSDP) from the model's side: parameters are sharded across
//! the data-parallel workers, and a sharded [`crate::Qwen3ForCausalLM`] gathers each unit's full
//! weights just before it runs (forward, then again for backward) and drops them after, so one
//! unit's weights (and, in backward, its gradients) exist at a time.

use candle_core::{DType, Device, Tensor};

use crate::{Config, ModelError, Result};

/// Where a sharded model's full weights come from. Every worker calls these in the same order
/// with the same names: they are collectives.
pub trait ParamGather: Send + Sync {
    /// The full tensors of `names` (HF parameter names, e.g. "model.layers.3.mlp.up_proj.weight"), in order, on the model's device and dtype.
    fn gather(&self, names: &[String]) -> Result<Vec<Tensor>>;
}

/// The parameters a sharded model gathers at once. A training step gathers `Embedding`, each
/// `Layer` in order and `Head` for its forward, then each `Layer` in reverse for its backward
/// (the embedding's gradient needs no weights); forward-only passes gather `Embedding`, the
/// layers and `Head` once each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatherUnit {
    /// `model.embed_tokens.weight`.
    Embedding,
    /// Every parameter of decoder layer `l` (`model.layers.{l}.…`).
    Layer(usize),
    /// `model.norm.weight` and `lm_head.weight`, or `model.embed_tokens.weight` in its place when
    /// the embeddings are tied (then the only parameter in two units).
    Head,
}

impl GatherUnit {
    /// Every unit, in the order of a forward pass.
    pub fn in_order(config: &Config) -> Vec<Self> {
        let layers = (0..config.num_hidden_layers).map(Self::Layer);
        std::iter::once(Self::Embedding).chain(layers).chain([Self::Head]).collect()
    }

    /// The unit's HF parameter names and full shapes, in `Config::parameter_shapes` order.
    pub fn parameter_shapes(self, config: &Config) -> Vec<(String, Vec<usize>)> {
        let layer_prefix = match self {
            Self::Layer(l) => format!("model.layers.{l}."),
            Self::Embedding | Self::Head => String::new(),
        };
        let lm_head = if config.tie_word_embeddings { EMBED_TOKENS } else { LM_HEAD };
        let in_unit = |name: &str| match self {
            Self::Embedding => name == EMBED_TOKENS,
            Self::Layer(_) => name.starts_with(&layer_prefix),
            Self::Head => name == NORM || name == lm_head,
        };
        config.parameter_shapes().into_iter().filter(|(name, _)| in_unit(name)).collect()
    }

    /// The unit's HF parameter names, in the order [`ParamGather::gather`] is asked for them.
    pub fn param_names(self, config: &Config) -> Vec<String> {
        self.parameter_shapes(config).into_iter().map(|(name, _)| name).collect()
    }
}

pub(crate) const EMBED_TOKENS: &str = "model.embed_tokens.weight";
pub(crate) const NORM: &str = "model.norm.weight";
pub(crate) const LM_HEAD: &str = "lm_head.weight";

/// `unit`'s full tensors with their names, checked against the config: a shard layout that disagrees with
/// the model fails here by name rather than as a shape error deep in a matmul.
pub(crate) fn gather_unit(source: &dyn ParamGather, config: &Config, unit: GatherUnit, dtype: DType, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let (names, shapes): (Vec<String>, Vec<Vec<usize>>) = unit.parameter_shapes(config).into_iter().unzip();
    let tensors = source.gather(&names)?;
    if tensors.len() != names.len() {
        return Err(ModelError::Invalid(format!("gathering {unit:?} asked for {} tensors and got {}", names.len(), tensors.len())));
    }
    for ((name, shape), tensor) in names.iter().zip(&shapes).zip(&tensors) {
        if tensor.dims() != shape.as_slice() {
            return Err(ModelError::ShapeMismatch { name: name.clone(), expected: shape.clone(), found: tensor.dims().to_vec() });
        }
        if tensor.dtype() != dtype || !tensor.device().same_device(device) {
            return Err(ModelError::Invalid(format!(
                "gathered `{name}` is {:?} on {:?}; the model is {dtype:?} on {:?}",
                tensor.dtype(),
                tensor.device().location(),
                device.location()
            )));
        }
    }
    Ok(names.into_iter().zip(tensors).collect())
}
