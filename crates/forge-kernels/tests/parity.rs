//! Every fused op against its slow composite reference: forward values and the gradients of a
//! random projection of the output, for each input that takes a gradient.

use candle_core::{DType, Device, Result, Tensor, Var};
use forge_kernels::{reference, IGNORE_TARGET};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

mod common;
use common::rope_tables;

fn randn(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    let diff = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    let norm = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    diff / norm.max(1e-30)
}

/// Runs `f` on fresh Vars made from `inputs`, back-propagates `Σ out·probe`, and returns the output
/// and the gradient of each input.
fn value_and_grads(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], probe: &Tensor) -> (Tensor, Vec<Option<Tensor>>) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors).unwrap();
    let grads = (out.to_dtype(DType::F32).unwrap() * probe).unwrap().sum_all().unwrap().backward().unwrap();
    let g = vars.iter().map(|v| grads.get(v.as_tensor()).cloned()).collect();
    (out, g)
}

fn assert_parity(
    name: &str,
    fused: impl Fn(&[Tensor]) -> Result<Tensor>,
    slow: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    differentiable: &[bool],
    tol: f32,
) {
    // A single fused op must hand out detached gradients; composites inherit candle's behaviour
    // (its matmul backward keeps a graph), which the model strips when collecting gradients.
    let single_fused_op = !name.starts_with("attention");
    let mut rng = StdRng::seed_from_u64(7);
    let out_shape = slow(inputs).unwrap().dims().to_vec();
    let probe = randn(&mut rng, &out_shape);
    let (y_fast, g_fast) = value_and_grads(&fused, inputs, &probe);
    let (y_slow, g_slow) = value_and_grads(&slow, inputs, &probe);
    let e = rel_err(&y_fast, &y_slow);
    assert!(e <= tol, "{name}: forward relative error {e:e} > {tol:e}");
    for (i, ((gf, gs), &diff)) in g_fast.iter().zip(&g_slow).zip(differentiable).enumerate() {
        if !diff {
            continue;
        }
        let gs = gs.as_ref().unwrap_or_else(|| panic!("{name}: reference has no gradient for input {i}"));
        let gf = gf.as_ref().unwrap_or_else(|| panic!("{name}: fused op gives no gradient for input {i}"));
        assert!(!single_fused_op || !gf.track_op(), "{name}: gradient of input {i} still carries a graph");
        let e = rel_err(gf, gs);
        assert!(e <= tol, "{name}: gradient {i} relative error {e:e} > {tol:e}");
    }
}

#[test]
fn rms_norm_matches_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    // many rows (parallel path) and few rows (serial path)
    for shape in [[2usize, 5, 48], [64, 33, 96]] {
        let x = randn(&mut rng, &shape);
        let w = randn(&mut rng, &[shape[2]]).affine(0.1, 1.0).unwrap();
        assert_parity(
            "rms_norm",
            |t| forge_kernels::rms_norm(&t[0], &t[1], 1e-6),
            |t| reference::rms_norm(&t[0], &t[1], 1e-6),
            &[x, w],
            &[true, true],
            1e-5,
        );
    }
}

#[test]
fn softmax_matches_reference() {
    let mut rng = StdRng::seed_from_u64(2);
    for shape in [[3usize, 7, 9], [8, 40, 129]] {
        let x = (randn(&mut rng, &shape) * 3.0).unwrap();
        assert_parity(
            "softmax",
            |t| forge_kernels::softmax_last_dim(&t[0]),
            |t| reference::softmax_last_dim(&t[0]),
            &[x],
            &[true],
            1e-5,
        );
    }
}

#[test]
fn rope_matches_reference() {
    let mut rng = StdRng::seed_from_u64(3);
    for (b, table_batch) in [(2usize, 1usize), (3, 3)] {
        let x = randn(&mut rng, &[b, 11, 4, 16]);
        let (cos, sin) = rope_tables(table_batch, 11, 8);
        assert_parity(
            "rope",
            |t| forge_kernels::rope(&t[0], &t[1], &t[2]),
            |t| reference::rope(&t[0], &t[1], &t[2]),
            &[x, cos, sin],
            &[true, false, false],
            1e-5,
        );
    }
}

fn causal_padding_bias(b: usize, s: usize, lengths: &[usize]) -> Tensor {
    let mut bias = vec![0f32; b * s * s];
    for r in 0..b {
        for i in 0..s {
            for j in 0..s {
                if j > i || j >= lengths[r] {
                    bias[(r * s + i) * s + j] = f32::MIN;
                }
            }
        }
    }
    Tensor::from_vec(bias, (b, 1, s, s), &Device::Cpu).unwrap()
}

#[test]
fn attention_matches_reference_with_gqa_and_padding() {
    let mut rng = StdRng::seed_from_u64(4);
    for (h, h_kv) in [(4usize, 4usize), (4, 2), (8, 1)] {
        let (b, s, d) = (2, 13, 16);
        let q = randn(&mut rng, &[b, h, s, d]);
        let k = randn(&mut rng, &[b, h_kv, s, d]);
        let v = randn(&mut rng, &[b, h_kv, s, d]);
        let bias = causal_padding_bias(b, s, &[13, 6]);
        let scale = 1.0 / (d as f64).sqrt();
        assert_parity(
            &format!("attention {h}:{h_kv}"),
            |t| forge_kernels::attention(&t[0], &t[1], &t[2], Some(&t[3]), scale),
            |t| reference::attention(&t[0], &t[1], &t[2], Some(&t[3]), scale),
            &[q, k, v, bias],
            &[true, true, true, false],
            1e-5,
        );
    }
}

#[test]
fn cross_entropy_matches_reference() {
    let mut rng = StdRng::seed_from_u64(5);
    let (n, vocab) = (37, 301);
    let logits = (randn(&mut rng, &[n, vocab]) * 2.0).unwrap();
    let targets: Vec<u32> = (0..n).map(|i| if i % 5 == 0 { IGNORE_TARGET } else { rng.random_range(0..vocab as u32) }).collect();
    let targets = Tensor::new(targets, &Device::Cpu).unwrap();
    assert_parity(
        "cross_entropy",
        |t| forge_kernels::cross_entropy_per_token(&t[0], &targets),
        |t| reference::cross_entropy_per_token(&t[0], &targets),
        &[logits],
        &[true],
        1e-5,
    );
}

#[test]
fn linear_cross_entropy_matches_full_logits() {
    let mut rng = StdRng::seed_from_u64(11);
    let (n, hidden, vocab) = (37, 24, 301);
    let h = randn(&mut rng, &[n, hidden]);
    let w = (randn(&mut rng, &[vocab, hidden]) * 0.3).unwrap();
    let targets: Vec<u32> = (0..n).map(|i| if i % 5 == 0 { IGNORE_TARGET } else { rng.random_range(0..vocab as u32) }).collect();
    let targets = Tensor::new(targets, &Device::Cpu).unwrap();
    // chunks that do not divide the rows, one chunk for all rows, and one row per chunk
    for chunk in [8, n, 1] {
        assert_parity(
            &format!("linear_cross_entropy chunk {chunk}"),
            |t| forge_kernels::linear_cross_entropy_row_chunks(&t[0], &t[1], &targets, chunk),
            |t| reference::cross_entropy_per_token(&t[0].matmul(&t[1].t()?)?, &targets),
            &[h.clone(), w.clone()],
            &[true, true],
            1e-5,
        );
    }
}

#[test]
fn cross_entropy_rejects_targets_outside_the_vocabulary() {
    let logits = Tensor::zeros((2, 10), DType::F32, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[3u32, 10], &Device::Cpu).unwrap();
    let err = forge_kernels::cross_entropy_per_token(&logits, &targets).unwrap_err().to_string();
    assert!(err.contains("target id 10 is outside the vocabulary (size 10)"), "{err}");
}

#[test]
fn bf16_ops_stay_within_bf16_tolerance_of_f32() {
    let mut rng = StdRng::seed_from_u64(6);
    let x = randn(&mut rng, &[4, 9, 64]);
    let w = randn(&mut rng, &[64]).affine(0.1, 1.0).unwrap();
    let f32_out = forge_kernels::rms_norm(&x, &w, 1e-6).unwrap();
    let bf16_out = forge_kernels::rms_norm(&x.to_dtype(DType::BF16).unwrap(), &w.to_dtype(DType::BF16).unwrap(), 1e-6).unwrap();
    assert_eq!(bf16_out.dtype(), DType::BF16);
    let e = rel_err(&bf16_out, &f32_out);
    assert!(e < 1e-2, "bf16 rms_norm relative error {e}");
    let s32 = forge_kernels::softmax_last_dim(&x).unwrap();
    let s16 = forge_kernels::softmax_last_dim(&x.to_dtype(DType::BF16).unwrap()).unwrap();
    let e = rel_err(&s16, &s32);
    assert!(e < 1e-2, "bf16 softmax relative error {e}");
}

/// The reason this crate exists: candle-nn's fused RMSNorm and softmax are applied without a
/// backward pass, so the gradient silently stops there. If candle ever fixes this, this test
/// fails and the fused ops here can be reconsidered.
#[test]
fn candle_stock_fused_ops_cut_the_gradient() {
    let mut rng = StdRng::seed_from_u64(8);
    let x = Var::from_tensor(&randn(&mut rng, &[3, 16])).unwrap();
    let w = Tensor::ones(16, DType::F32, &Device::Cpu).unwrap();
    let stock = candle_nn::ops::rms_norm(x.as_tensor(), &w, 1e-6).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(stock.get(x.as_tensor()).is_none(), "candle's rms_norm now has a backward");
    let stock = candle_nn::ops::softmax_last_dim(x.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(stock.get(x.as_tensor()).is_none(), "candle's softmax_last_dim now has a backward");
    let ours = forge_kernels::rms_norm(x.as_tensor(), &w, 1e-6).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(ours.get(x.as_tensor()).is_some());
}

#[test]
fn scaled_masked_softmax_matches_reference() {
    let mut rng = StdRng::seed_from_u64(9);
    for (b, bias_batch) in [(2usize, 2usize), (3, 1)] {
        let x = randn(&mut rng, &[b, 4, 9, 9]);
        let lengths: Vec<usize> = (0..bias_batch).map(|i| 9 - 3 * i).collect();
        let bias = causal_padding_bias(bias_batch, 9, &lengths);
        assert_parity(
            "scaled_masked_softmax",
            |t| forge_kernels::scaled_masked_softmax(&t[0], Some(&t[1]), 0.25),
            |t| reference::scaled_masked_softmax(&t[0], Some(&t[1]), 0.25),
            &[x.clone(), bias],
            &[true, false],
            1e-5,
        );
    }
    let x = randn(&mut rng, &[2, 8, 40, 129]);
    assert_parity(
        "scaled_softmax (no mask)",
        |t| forge_kernels::scaled_masked_softmax(&t[0], None, 0.5),
        |t| reference::scaled_masked_softmax(&t[0], None, 0.5),
        &[x],
        &[true],
        1e-5,
    );
}

#[test]
fn swiglu_matches_reference() {
    let mut rng = StdRng::seed_from_u64(10);
    for shape in [[3usize, 5, 7], [4, 64, 300]] {
        let gate = randn(&mut rng, &shape).affine(3.0, 0.0).unwrap();
        let up = randn(&mut rng, &shape);
        assert_parity(
            "swiglu",
            |t| forge_kernels::swiglu(&t[0], &t[1]),
            |t| reference::swiglu(&t[0], &t[1]),
            &[gate, up],
            &[true, true],
            1e-5,
        );
    }
}

#[test]
fn linear_cross_entropy_matches_the_full_logits_reference() {
    use forge_kernels::linear_cross_entropy::linear_cross_entropy_per_token_chunked;
    let mut rng = StdRng::seed_from_u64(9);
    let (n, h, vocab) = (45, 24, 301);
    let hidden = randn(&mut rng, &[n, h]);
    let weight = (randn(&mut rng, &[vocab, h]) * 0.3).unwrap();
    let targets: Vec<u32> = (0..n).map(|i| if i % 6 == 0 { IGNORE_TARGET } else { rng.random_range(0..vocab as u32) }).collect();
    let targets = Tensor::new(targets, &Device::Cpu).unwrap();
    // the whole vocabulary in one slice, slices with a ragged last one, one token per slice
    for chunk in [vocab, 64, 1] {
        assert_parity(
            "linear_cross_entropy",
            |t| linear_cross_entropy_per_token_chunked(&t[0], &t[1], &targets, chunk),
            |t| reference::linear_cross_entropy_per_token(&t[0], &t[1], &targets),
            &[hidden.clone(), weight.clone()],
            &[true, true],
            1e-5,
        );
    }
}

#[test]
fn linear_cross_entropy_slices_the_vocabulary_when_rows_times_vocab_exceed_the_budget() {
    use forge_kernels::linear_cross_entropy::default_vocab_chunk;
    let mut rng = StdRng::seed_from_u64(10);
    let (n, h, vocab) = (4096, 8, 301);
    assert!(default_vocab_chunk(n, vocab) < vocab, "the default path must be sliced for this test to mean anything");
    let hidden = randn(&mut rng, &[n, h]);
    let weight = randn(&mut rng, &[vocab, h]);
    let targets = Tensor::new((0..n as u32).map(|i| i % vocab as u32).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    assert_parity(
        "linear_cross_entropy (default slices)",
        |t| forge_kernels::linear_cross_entropy_per_token(&t[0], &t[1], &targets),
        |t| reference::linear_cross_entropy_per_token(&t[0], &t[1], &targets),
        &[hidden, weight],
        &[true, true],
        1e-5,
    );
}

#[test]
fn linear_cross_entropy_rejects_mismatched_shapes_and_targets() {
    let hidden = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
    let weight = Tensor::zeros((10, 5), DType::F32, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[3u32, 1], &Device::Cpu).unwrap();
    let err = forge_kernels::linear_cross_entropy_per_token(&hidden, &weight, &targets).unwrap_err().to_string();
    assert!(err.contains("differ in the hidden size"), "{err}");
    let weight = Tensor::zeros((10, 4), DType::F32, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[3u32, 10], &Device::Cpu).unwrap();
    let err = forge_kernels::linear_cross_entropy_per_token(&hidden, &weight, &targets).unwrap_err().to_string();
    assert!(err.contains("target id 10 is outside the vocabulary (size 10)"), "{err}");
}

#[test]
fn embedding_gradient_equals_candles_index_select_backward() {
    let mut rng = StdRng::seed_from_u64(11);
    let (vocab, h) = (50, 16);
    // repeated ids: their rows must add up in order
    let ids = Tensor::new((0..40u32).map(|i| (i * 7) % 23).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let table = Var::from_tensor(&randn(&mut rng, &[vocab, h]).to_dtype(dtype).unwrap()).unwrap();
        let grad = randn(&mut rng, &[40, h]).to_dtype(dtype).unwrap();
        let store = (table.as_tensor().index_select(&ids, 0).unwrap() * &grad).unwrap().sum_all().unwrap().backward().unwrap();
        let candle = store.get(table.as_tensor()).unwrap();
        let fused = forge_kernels::embedding_gradient(&ids, &grad, vocab).unwrap();
        assert_eq!(fused.dtype(), dtype);
        let diff = (fused.to_dtype(DType::F32).unwrap() - candle.to_dtype(DType::F32).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{dtype:?}: embedding gradient differs from candle's");
    }
}

/// `[b, s, heads, d]` -> `[b, heads, s, d]` and back: the flash-attention layouts around
/// `forge_kernels::attention`'s.
fn heads_first(t: &Tensor) -> Result<Tensor> {
    t.transpose(1, 2)?.contiguous()
}

#[test]
fn padded_flash_attention_matches_the_masked_attention_path() {
    let mut rng = StdRng::seed_from_u64(11);
    for (h, h_kv, lengths) in [(4usize, 1usize, [13usize, 6]), (8, 2, [1, 13]), (4, 4, [13, 13])] {
        let (b, s, d) = (2, 13, 16);
        let q = randn(&mut rng, &[b, s, h, d]);
        let k = randn(&mut rng, &[b, s, h_kv, d]);
        let v = randn(&mut rng, &[b, s, h_kv, d]);
        let bias = causal_padding_bias(b, s, &lengths);
        let scale = 1.0 / (d as f64).sqrt();
        assert_parity(
            &format!("attention padded {h}:{h_kv} lengths {lengths:?}"),
            |t| forge_kernels::causal_attention_padded(&t[0], &t[1], &t[2], &lengths, scale),
            |t| heads_first(&forge_kernels::attention(&heads_first(&t[0])?, &heads_first(&t[1])?, &heads_first(&t[2])?, Some(&t[3]), scale)?),
            &[q, k, v, bias],
            &[true, true, true, false],
            1e-6,
        );
    }
}

/// Right padding changes nothing for the real rows: they equal the attention of the sequence alone.
#[test]
fn padded_flash_attention_real_rows_equal_the_unpadded_sequence() {
    let mut rng = StdRng::seed_from_u64(12);
    let (b, s, h, h_kv, d, lengths) = (2usize, 11usize, 4usize, 2usize, 8usize, [11usize, 4]);
    let q = randn(&mut rng, &[b, s, h, d]);
    let k = randn(&mut rng, &[b, s, h_kv, d]);
    let v = randn(&mut rng, &[b, s, h_kv, d]);
    let out = forge_kernels::causal_attention_padded(&q, &k, &v, &lengths, 0.3).unwrap();
    for (r, &n) in lengths.iter().enumerate() {
        let one = |t: &Tensor| t.narrow(0, r, 1).unwrap().narrow(1, 0, n).unwrap();
        let alone = forge_kernels::causal_attention_padded(&one(&q), &one(&k), &one(&v), &[n], 0.3).unwrap();
        let e = rel_err(&one(&out), &alone);
        assert!(e <= 1e-6, "row {r}: real rows differ from the sequence alone by {e:e}");
    }
}

/// Packed sequences: each one attends only itself, causally — the attention of each sequence
/// alone (with the test's own mask), concatenated; forward and gradients. An empty sequence and
/// sequences of 1 row included.
#[test]
fn varlen_flash_attention_equals_per_sequence_attention() {
    let mut rng = StdRng::seed_from_u64(13);
    let cu = [0usize, 5, 5, 6, 19, 30];
    for (h, h_kv) in [(4usize, 1usize), (8, 1), (2, 2)] {
        let (total, d) = (cu[cu.len() - 1], 16);
        let q = randn(&mut rng, &[total, h, d]);
        let k = randn(&mut rng, &[total, h_kv, d]);
        let v = randn(&mut rng, &[total, h_kv, d]);
        let scale = 0.25;
        let per_sequence = |t: &[Tensor]| -> Result<Tensor> {
            let parts = cu
                .windows(2)
                .filter(|w| w[1] > w[0])
                .map(|w| {
                    let n = w[1] - w[0];
                    let one = |x: &Tensor| heads_first(&x.narrow(0, w[0], n)?.unsqueeze(0)?);
                    let bias = causal_padding_bias(1, n, &[n]);
                    heads_first(&forge_kernels::attention(&one(&t[0])?, &one(&t[1])?, &one(&t[2])?, Some(&bias), scale)?)?.squeeze(0)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        };
        assert_parity(
            &format!("attention varlen {h}:{h_kv}"),
            |t| forge_kernels::causal_attention_varlen(&t[0], &t[1], &t[2], &cu, scale),
            per_sequence,
            &[q, k, v],
            &[true, true, true],
            1e-6,
        );
    }
}

#[test]
fn flash_attention_rejects_bad_arguments() {
    let mut rng = StdRng::seed_from_u64(14);
    let (q, k) = (randn(&mut rng, &[10, 4, 8]), randn(&mut rng, &[10, 2, 8]));
    let varlen = |q: &Tensor, k: &Tensor, cu: &[usize]| forge_kernels::causal_attention_varlen(q, k, k, cu, 1.0).map(drop).map_err(|e| e.to_string());
    assert!(varlen(&q, &k, &[0, 4, 10]).is_ok());
    for (cu, why) in [(&[][..], "empty"), (&[0][..], "at least one"), (&[1, 10][..], "start at 0"), (&[0, 6, 4, 10][..], "decreases"), (&[0, 4, 9][..], "ends at 9")] {
        let err = varlen(&q, &k, cu).expect_err(why);
        assert!(err.contains(why), "cu_seqlens {cu:?}: {err}");
    }
    let err = varlen(&q, &randn(&mut rng, &[10, 3, 8]), &[0, 10]).unwrap_err();
    assert!(err.contains("not a multiple"), "{err}");
    let err = varlen(&q, &randn(&mut rng, &[10, 2, 4]), &[0, 10]).unwrap_err();
    assert!(err.contains("do not match"), "{err}");

    let (q, k) = (randn(&mut rng, &[2, 5, 4, 8]), randn(&mut rng, &[2, 5, 2, 8]));
    let padded = |lengths: &[usize]| forge_kernels::causal_attention_padded(&q, &k, &k, lengths, 1.0).map(drop).map_err(|e| e.to_string());
    assert!(padded(&[5, 1]).is_ok());
    for (lengths, why) in [(&[5, 0][..], "outside 1..=5"), (&[6, 5][..], "outside 1..=5"), (&[5][..], "1 lengths for a batch of 2")] {
        let err = padded(lengths).expect_err(why);
        assert!(err.contains(why), "lengths {lengths:?}: {err}");
    }
}

#[test]
fn flash_attention_is_fused_only_on_cuda_bf16_with_head_dim_64_or_128() {
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        assert!(!forge_kernels::flash_attn::supported(&Device::Cpu, dtype, 128));
    }
}

/// Runs `f` in a rayon pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

fn bitwise(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// A training run must not depend on how rayon happens to split the work: with work stealing a
/// parallel fold groups its rows differently from run to run (more so on a loaded machine), and a
/// float sum grouped differently differs in its last bits — enough for two runs of the same seed to
/// end in different models. Every fused CPU kernel, forward and backward, above its parallel
/// threshold, must give bit-identical results on 1, 2, 3 and 5 threads.
#[test]
fn fused_kernels_are_bitwise_identical_on_any_number_of_threads() {
    let mut rng = StdRng::seed_from_u64(12);
    let (b, s, h, h_kv, d) = (2, 40, 4, 2, 16);
    let (q, k, v) = (randn(&mut rng, &[b, h, s, d]), randn(&mut rng, &[b, h_kv, s, d]), randn(&mut rng, &[b, h_kv, s, d]));
    let bias = causal_padding_bias(b, s, &[40, 23]);
    let (n, hidden, vocab) = (96, 48, 301);
    let targets: Vec<u32> = (0..n).map(|i| if i % 5 == 0 { IGNORE_TARGET } else { rng.random_range(0..vocab as u32) }).collect();
    let targets = Tensor::new(targets, &Device::Cpu).unwrap();
    let (cos, sin) = rope_tables(1, 40, 8);
    type Case = (&'static str, Box<dyn Fn(&[Tensor]) -> Result<Tensor> + Sync>, Vec<Tensor>);
    let cases: Vec<Case> = vec![
        ("rms_norm", Box::new(|t| forge_kernels::rms_norm(&t[0], &t[1], 1e-6)), vec![randn(&mut rng, &[64, 33, 96]), randn(&mut rng, &[96])]),
        ("softmax", Box::new(|t| forge_kernels::softmax_last_dim(&t[0])), vec![randn(&mut rng, &[8, 40, 129])]),
        ("rope", Box::new(move |t| forge_kernels::rope(&t[0], &cos, &sin)), vec![randn(&mut rng, &[4, 40, 8, 16])]),
        ("swiglu", Box::new(|t| forge_kernels::swiglu(&t[0], &t[1])), vec![randn(&mut rng, &[4, 64, 300]), randn(&mut rng, &[4, 64, 300])]),
        ("attention", Box::new(move |t| forge_kernels::attention(&t[0], &t[1], &t[2], Some(&bias), 0.25)), vec![q, k, v]),
        ("cross_entropy", Box::new({ let targets = targets.clone(); move |t| forge_kernels::cross_entropy_per_token(&t[0], &targets) }), vec![randn(&mut rng, &[n, vocab])]),
        (
            "linear_cross_entropy",
            Box::new(move |t| forge_kernels::linear_cross_entropy_per_token(&t[0], &t[1], &targets)),
            vec![randn(&mut rng, &[n, hidden]), (randn(&mut rng, &[vocab, hidden]) * 0.3).unwrap()],
        ),
    ];
    for (name, f, inputs) in &cases {
        let probe = randn(&mut rng, f(inputs).unwrap().dims());
        let run = |threads| {
            on_threads(threads, || {
                let (y, grads) = value_and_grads(f, inputs, &probe);
                let mut bits = vec![bitwise(&y)];
                bits.extend(grads.iter().flatten().map(bitwise));
                bits
            })
        };
        let one = run(1);
        for threads in [2, 3, 5] {
            let many = run(threads);
            for (i, (a, b)) in one.iter().zip(&many).enumerate() {
                let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
                assert_eq!(differ, 0, "{name}: output {i} (0 = value, then gradients) differs in {differ} elements between 1 and {threads} threads");
            }
        }
    }
}
