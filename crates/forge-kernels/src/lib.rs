//! Differentiable fused ops for training Qwen3 on candle.
//!
//! candle-nn's fused ops (`rms_norm`, `softmax_last_dim`, `rope`) are applied without a backward
//! pass, so gradients silently stop at them. Every op here is a candle `CustomOp` whose forward AND
//! backward are fused CPU kernels; with the `cuda` feature, RMSNorm, RoPE and cross-entropy also
//! run fused CUDA kernels (`kernels/*.cu`, forward and backward) and `adamw` updates parameters
//! on the GPU in one pass. [`flash_attn`] is causal attention fused on CUDA bf16 (forward and
//! backward, GQA, variable lengths; unmeasured on a GPU so far: kernels/FLASH.md); [`decode_attn`]
//! appends to and attends KV caches kept on the GPU during decoding (split-K). Elsewhere the same
//! functions fall back to the differentiable composite path in [`reference`] until a device kernel
//! lands. Each op is checked against that composite path in the tests. `linear_cross_entropy` is the language-model head and its loss without full
//! logits; `embedding_gradient` is not an op but the table gradient of a lookup, for backward code
//! that bypasses autograd (activation recomputation).
//!
//! The CUDA kernels are declared once, in [`kernels`] (the kernel table: name, variants, dtypes,
//! C parameters); their launch code ([`launch`]) is written once over a [`backend::Backend`], which
//! candle's `CudaDevice` implements (`src/cuda`) and so does the host emulator
//! (crates/forge-kernels-emu, in CI). Changing one kernel's parameters touches: its `.cu` file in
//! `kernels/`, its line in `src/kernels.rs`, and its launch in `src/launch/<op>.rs`; the emulator's
//! bindings and the CUDA build's PTX check follow from the table (a new kernel also needs its
//! launch block size in `src/cuda/kernels.rs`'s check, and its parity test).

pub mod adamw;
pub mod backend;
pub mod cached_attention;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod cpu_memory;
pub mod cross_entropy;
pub mod decode_attn;
pub mod embedding;
pub mod flash_attn;
pub mod few_rows;
pub mod kernels;
pub mod launch;
pub mod linear_cross_entropy;
pub mod reference;
pub mod rms_norm;
pub mod rope;
pub mod softmax;
pub mod swiglu;
pub mod testing;
pub mod attention;

pub use attention::attention;
pub use cross_entropy::{cross_entropy_per_token, IGNORE_TARGET};
pub use embedding::embedding_gradient;
pub use flash_attn::{causal_attention_padded, causal_attention_varlen};
pub use linear_cross_entropy::{linear_cross_entropy_per_token, linear_cross_entropy_row_chunks};
pub use rms_norm::rms_norm;
pub use rope::rope;
pub use softmax::{scaled_masked_softmax, softmax_last_dim};
pub use swiglu::swiglu;
#[cfg(feature = "cuda")]
pub use cuda::poison_outputs as poison_cuda_outputs;
