//! What a training step of a Qwen3 keeps for its backward pass, from the model's shape alone, so a
//! run can be sized before any weight is loaded. The counts follow what `loss_and_gradients`
//! holds (qwen3.rs): per decoder layer the norms, projections, normed and rotated q/k, the
//! attention output and the MLP's three intermediates; the attention scores and probabilities
//! unless attention is fused (flash attention never stores them); and during backward the
//! gradients of one layer's (plain) or one residual block's (recompute) activations on top.
//! The language-model head is chunked (`linear_cross_entropy`) and not counted. Checked against
//! the measured live-heap peak of the `train_step` bench: benches/results/memory-estimate.md.

use candle_core::{DType, Device};

use crate::Config;

/// The shape of one micro-batch's forward and backward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepShape {
    /// Padded tokens in the micro-batch (rows × sequence length).
    pub tokens: usize,
    /// The sequence length (the width of the attention scores).
    pub seq_len: usize,
    /// Layer-wise activation recomputation (`loss_and_gradients(.., true)`).
    pub recompute: bool,
    /// Attention through a fused kernel that stores no `[seq, seq]` scores (flash attention).
    pub fused_attention: bool,
    /// The activations' dtype (the model's).
    pub dtype: DType,
}

/// Peak bytes of activations (and their gradients) in one forward + backward of `shape`.
pub fn activation_bytes(config: &Config, shape: &StepShape) -> u64 {
    let (hidden, inter) = (config.hidden_size as u64, config.intermediate_size as u64);
    let q = (config.num_attention_heads * config.head_dim) as u64;
    let kv = (config.num_key_value_heads * config.head_dim) as u64;
    // per token: the block's input norm, q/k/v projections, normed and rotated q and k, the
    // attention output, o_proj's output and the residual sum
    let attention_block = 3 * hidden + 4 * q + 4 * kv;
    // per token: the block's input norm, gate, up, their SwiGLU, down_proj's output and the residual sum
    let mlp_block = 3 * hidden + 3 * inter;
    // per token: scores and probabilities of every head over the sequence
    let scores = if shape.fused_attention { 0 } else { 2 * config.num_attention_heads as u64 * shape.seq_len as u64 };
    let (tokens, layers) = (shape.tokens as u64, config.num_hidden_layers as u64);
    let elements = if shape.recompute {
        // saved block inputs, then one block's recomputed activations and their gradients
        let largest_block = (attention_block + scores).max(mlp_block);
        2 * layers * tokens * hidden + 2 * tokens * largest_block
    } else {
        // every layer's activations, then one layer's gradients on top
        let layer = attention_block + scores + mlp_block;
        (layers + 1) * tokens * layer
    };
    elements * shape.dtype.size_in_bytes() as u64
}

/// The decoding caches of `sequences` concurrent sequences of up to `context` tokens, as
/// [`crate::KvCache::for_model`] allocates them (at full length) for a model of `dtype` on
/// `device`: in the model's dtype on the GPU where the decode kernels serve its attention shape,
/// else in f32 on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheSize {
    pub bytes: u64,
    pub on_device: bool,
}

pub fn kv_cache_size(config: &Config, sequences: usize, context: usize, dtype: DType, device: &Device) -> KvCacheSize {
    let on_device = forge_kernels::decode_attn::supported(device, config.num_attention_heads, config.num_key_value_heads, config.head_dim);
    let element = if on_device { dtype.size_in_bytes() } else { 4 };
    let per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim;
    KvCacheSize { bytes: (sequences * context * per_token * element) as u64, on_device }
}

/// Bytes of one block of the engine's KV pool ([`crate::KvBlockPool`]): keys and values of every
/// layer for `block_size` positions, where the pool of a model of `dtype` on `device` keeps them
/// (as [`kv_cache_size`]: the model's dtype on the GPU where the decode kernels serve its attention
/// shape, else f32 on the host). A budget of `B` bytes holds `B / kv_block_bytes(..)` blocks.
pub fn kv_block_bytes(config: &Config, block_size: usize, dtype: DType, device: &Device) -> u64 {
    kv_cache_size(config, 1, block_size, dtype, device).bytes
}

/// An amount of memory as configs and flags write it: `80GiB`, `141 GB`, `512MiB`, `1.5TiB` or a
/// plain number of bytes (binary units are powers of 1024, decimal ones of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ByteSizeText", into = "String")]
pub struct ByteSize(pub u64);

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ByteSizeText {
    Number(u64),
    Text(String),
}

impl TryFrom<ByteSizeText> for ByteSize {
    type Error = String;

    fn try_from(value: ByteSizeText) -> Result<Self, String> {
        match value {
            ByteSizeText::Number(n) => Ok(Self(n)),
            ByteSizeText::Text(text) => text.parse(),
        }
    }
}

impl From<ByteSize> for String {
    fn from(size: ByteSize) -> String {
        size.to_string()
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (number, unit) = (t[..split].trim(), t[split..].trim());
        let unit_bytes: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(format!("`{text}` is not an amount of memory: write e.g. 80GiB, 141GB, 512MiB or a number of bytes")),
        };
        let value: f64 = number.parse().map_err(|_| format!("`{text}` is not an amount of memory: write e.g. 80GiB, 141GB, 512MiB or a number of bytes"))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!("`{text}`: an amount of memory is a non-negative number"));
        }
        Ok(Self((value * unit_bytes as f64).round() as u64))
    }
}

impl std::fmt::Display for ByteSize {
    /// Whole GiB or MiB when exact (`80GiB`), else bytes: parsing the text gives the same size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            b if b >= 1 << 30 && b % (1 << 30) == 0 => write!(f, "{}GiB", b >> 30),
            b if b >= 1 << 20 && b % (1 << 20) == 0 => write!(f, "{}MiB", b >> 20),
            b => write!(f, "{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen3_8b() -> Config {
        Config::qwen3_release("8b").unwrap()
    }

    #[test]
    fn sizes_parse_in_binary_and_decimal_units_and_print_back() {
        for (text, bytes) in [("80GiB", 80u64 << 30), ("141 GB", 141_000_000_000), ("512MiB", 512 << 20), ("1.5GiB", 3 << 29), ("4096", 4096)] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size.0, bytes, "{text}");
            assert_eq!(size.to_string().parse::<ByteSize>().unwrap(), size, "{text}");
        }
        let err = "80 gigs".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("write e.g. 80GiB"), "{err}");
        #[derive(serde::Deserialize)]
        struct Section {
            a: ByteSize,
            b: ByteSize,
        }
        let s: Section = toml::from_str("a = \"40GiB\"\nb = 1024").unwrap();
        assert_eq!((s.a.0, s.b.0), (40 << 30, 1024));
    }

    #[test]
    fn the_release_architectures_have_their_published_parameter_counts() {
        assert_eq!(qwen3_8b().num_parameters(), 8_190_735_360);
        // tied embeddings: 0.6B and 1.7B count the embedding once
        assert_eq!(Config::qwen3_release("0.6b").unwrap().num_parameters(), 596_049_920);
        assert_eq!(Config::qwen3_release("1.7b").unwrap().num_parameters(), 1_720_574_976);
        assert!(Config::qwen3_release("9b").is_none());
    }

    #[test]
    fn activations_follow_the_counted_tensors() {
        let c = qwen3_8b();
        let shape = StepShape { tokens: 4096, seq_len: 4096, recompute: false, fused_attention: true, dtype: DType::BF16 };
        // per token and layer: 3·4096 + 4·4096 + 4·1024 (attention) + 3·4096 + 3·12288 (MLP) = 81920 elements
        assert_eq!(activation_bytes(&c, &shape), 37 * 4096 * 81920 * 2);
        let recompute = StepShape { recompute: true, ..shape };
        // 2·36 saved block inputs of 4096, then the MLP block (49152 > 32768) twice
        assert_eq!(activation_bytes(&c, &recompute), (72 * 4096 + 2 * 49152) * 4096 * 2);
    }

    #[test]
    fn the_host_kv_cache_holds_keys_and_values_of_every_layer_in_f32() {
        // 36 layers · 2 · 8 heads · 128 · 4 bytes = 288 KiB per token, whatever the model's dtype
        let size = kv_cache_size(&qwen3_8b(), 4, 32768, DType::BF16, &Device::Cpu);
        assert_eq!(size, KvCacheSize { bytes: 4 * 32768 * 288 * 1024, on_device: false });
    }

    #[test]
    fn scores_dominate_long_contexts_unless_fused() {
        let c = qwen3_8b();
        let fused = StepShape { tokens: 32768, seq_len: 32768, recompute: true, fused_attention: true, dtype: DType::BF16 };
        let materialized = StepShape { fused_attention: false, ..fused };
        let (f, m) = (activation_bytes(&c, &fused), activation_bytes(&c, &materialized));
        // fused: the MLP block is the largest; materialized: the attention block with 2 · 32 heads · 32k scores per token
        assert_eq!(f, (72 * 4096 + 2 * 49152) * 32768 * 2);
        assert_eq!(m, (72 * 4096 + 2 * (32768 + 2 * 32 * 32768)) * 32768 * 2);
        assert!(f < 32 << 30 && m > 256 << 30, "fused {f}, materialized {m}");
    }
}
