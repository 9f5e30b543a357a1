//! The CUDA kernels against their CPU references (the fused CPU ops, themselves checked against
//! the composite path in parity.rs): forward values and the gradients of a random projection of
//! the output, in f32, bf16 and f16, on random inputs with sizes that are not multiples of the
//! block shapes. Every kernel output is poisoned with NaN before the kernel runs, so an element a
//! kernel fails to write fails the test. Needs a GPU: run by scripts/gpu/gpu-check.sh (CI=true there;
//! CI on GPU-less machines only compiles this file).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Result, Tensor, Var};
use forge_kernels::decode_attn::{append_and_attend, LayerCache};
use forge_kernels::testing::{decode_parity_cases, flash_parity_cases, parity_tolerance, require_cuda, FlashCase, FlashGroup, FLASH_TOLERANCE};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

mod common;
use common::rope_tables;

fn randn(rng: &mut StdRng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    let b = b.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    let diff = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    let norm = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    diff / norm.max(1e-30)
}

fn assert_all_finite(name: &str, what: &str, t: &Tensor) {
    let values = t.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let bad = values.iter().position(|v| !v.is_finite());
    assert!(bad.is_none(), "{name}: {what} element {} is {} (unwritten by the kernel?)", bad.unwrap_or(0), values[bad.unwrap_or(0)]);
}

/// Output and the gradient of each differentiable input of `Σ out·probe`, with `inputs` (on the
/// CPU) moved to `device`.
fn value_and_grads(
    f: &impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    differentiable: &[bool],
    dtype: DType,
    device: &Device,
    probe: &Tensor,
) -> (Tensor, Vec<Option<Tensor>>) {
    // Inputs that take a gradient get `dtype`; the others (rotation tables, targets) keep theirs.
    let placed: Vec<Tensor> = inputs
        .iter()
        .zip(differentiable)
        .map(|(t, &d)| t.to_dtype(if d { dtype } else { t.dtype() }).unwrap().to_device(device).unwrap())
        .collect();
    let vars: Vec<Option<Var>> = placed.iter().zip(differentiable).map(|(t, &d)| d.then(|| Var::from_tensor(t).unwrap())).collect();
    let tensors: Vec<Tensor> = placed.iter().zip(&vars).map(|(t, v)| v.as_ref().map_or_else(|| t.clone(), |v| v.as_tensor().clone())).collect();
    let out = f(&tensors).unwrap();
    let probe = probe.to_device(device).unwrap();
    let grads = (out.to_dtype(DType::F32).unwrap() * probe).unwrap().sum_all().unwrap().backward().unwrap();
    let g = vars.iter().map(|v| v.as_ref().and_then(|v| grads.get(v.as_tensor()).cloned())).collect();
    (out, g)
}

fn assert_gpu_matches_cpu(name: &str, gpu: &Device, op: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], differentiable: &[bool]) {
    forge_kernels::poison_cuda_outputs(true);
    let mut rng = StdRng::seed_from_u64(7);
    let out_shape = op(inputs).unwrap().dims().to_vec();
    let probe = randn(&mut rng, &out_shape);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let (y_cpu, g_cpu) = value_and_grads(&op, inputs, differentiable, dtype, &Device::Cpu, &probe);
        let (y_gpu, g_gpu) = value_and_grads(&op, inputs, differentiable, dtype, gpu, &probe);
        assert!(y_gpu.device().is_cuda() && y_gpu.dtype() == y_cpu.dtype(), "{name}: output on {:?} in {:?}", y_gpu.device(), y_gpu.dtype());
        assert_all_finite(name, &format!("{dtype:?} output"), &y_gpu);
        let tol = parity_tolerance(dtype);
        let e = rel_err(&y_gpu, &y_cpu);
        assert!(e <= tol, "{name} {dtype:?}: forward relative error {e:e} > {tol:e}");
        for (i, (gg, gc)) in g_gpu.iter().zip(&g_cpu).enumerate() {
            let (Some(gg), Some(gc)) = (gg, gc) else {
                assert!(gg.is_none() && gc.is_none(), "{name} {dtype:?}: gradient {i} exists on one device only");
                continue;
            };
            assert!(!gg.track_op(), "{name}: gradient of input {i} still carries a graph");
            assert_all_finite(name, &format!("{dtype:?} gradient {i}"), gg);
            let e = rel_err(gg, gc);
            assert!(e <= tol, "{name} {dtype:?}: gradient {i} relative error {e:e} > {tol:e}");
        }
    }
}

#[test]
fn rms_norm_on_gpu_matches_cpu() {
    let Some(gpu) = require_cuda("rms_norm_on_gpu_matches_cpu") else { return };
    let mut rng = StdRng::seed_from_u64(1);
    // warp-per-row path (rows not a multiple of the 8 rows per block), block-per-row path (a
    // last dim not a multiple of 256), and enough rows for several weight-gradient chunks
    for shape in [[3usize, 7, 128], [5, 3, 2600], [2, 150, 96], [1, 67, 4096]] {
        let x = randn(&mut rng, &shape);
        let w = randn(&mut rng, &[shape[2]]).affine(0.1, 1.0).unwrap();
        assert_gpu_matches_cpu(
            &format!("rms_norm {shape:?}"),
            &gpu,
            |t| forge_kernels::rms_norm(&t[0], &t[1], 1e-6),
            &[x, w],
            &[true, true],
        );
    }
}

#[test]
fn rope_on_gpu_matches_cpu() {
    let Some(gpu) = require_cuda("rope_on_gpu_matches_cpu") else { return };
    let mut rng = StdRng::seed_from_u64(3);
    // shared and per-batch tables; Qwen3's head dim 128
    for (b, table_batch, s, h, d) in [(2usize, 1usize, 11usize, 4usize, 16usize), (3, 3, 9, 5, 64), (1, 1, 257, 8, 128)] {
        let x = randn(&mut rng, &[b, s, h, d]);
        let (cos, sin) = rope_tables(table_batch, s, d / 2);
        assert_gpu_matches_cpu(
            &format!("rope [{b}, {s}, {h}, {d}] tables for {table_batch}"),
            &gpu,
            |t| forge_kernels::rope(&t[0], &t[1], &t[2]),
            &[x, cos, sin],
            &[true, false, false],
        );
    }
}

#[test]
fn swiglu_on_gpu_matches_cpu() {
    let Some(gpu) = require_cuda("swiglu_on_gpu_matches_cpu") else { return };
    let mut rng = StdRng::seed_from_u64(8);
    // whole 16-byte packs (a multiple of 8 elements, as the MLP widths) and an odd count (one
    // element at a time)
    for shape in [[2usize, 33, 3072], [3, 7, 13]] {
        let gate = (randn(&mut rng, &shape) * 2.0).unwrap();
        let up = randn(&mut rng, &shape);
        assert_gpu_matches_cpu(&format!("swiglu {shape:?}"), &gpu, |t| forge_kernels::swiglu(&t[0], &t[1]), &[gate, up], &[true, true]);
    }
    // views one element into their buffers: whole packs, but misaligned (one element at a time)
    let n = 8 * 1000;
    let (gate, up) = ((randn(&mut rng, &[n + 1]) * 2.0).unwrap(), randn(&mut rng, &[n + 1]));
    assert_gpu_matches_cpu(
        "swiglu of views one element in",
        &gpu,
        |t| forge_kernels::swiglu(&t[0].narrow(0, 1, n)?, &t[1].narrow(0, 1, n)?),
        &[gate, up],
        &[true, true],
    );
}

#[test]
fn cross_entropy_on_gpu_matches_cpu() {
    let Some(gpu) = require_cuda("cross_entropy_on_gpu_matches_cpu") else { return };
    let mut rng = StdRng::seed_from_u64(4);
    // warp-per-row (vocabulary ≤ 1024) and block-per-row paths; every fifth target ignored
    for (n, vocab) in [(37usize, 301usize), (19, 5000)] {
        let logits = (randn(&mut rng, &[n, vocab]) * 2.0).unwrap();
        let targets: Vec<u32> =
            (0..n).map(|i| if i % 5 == 0 { forge_kernels::IGNORE_TARGET } else { rand::Rng::random_range(&mut rng, 0..vocab as u32) }).collect();
        let targets = Tensor::new(targets, &Device::Cpu).unwrap();
        assert_gpu_matches_cpu(
            &format!("cross_entropy [{n}, {vocab}]"),
            &gpu,
            |t| forge_kernels::cross_entropy_per_token(&t[0], &t[1]),
            &[logits, targets],
            &[true, false],
        );
    }
}

#[test]
fn linear_cross_entropy_on_gpu_matches_cpu() {
    let Some(gpu) = require_cuda("linear_cross_entropy_on_gpu_matches_cpu") else { return };
    let mut rng = StdRng::seed_from_u64(6);
    let (n, hidden, vocab) = (45usize, 64usize, 3001usize);
    let h = randn(&mut rng, &[n, hidden]);
    let w = (randn(&mut rng, &[vocab, hidden]) * 0.2).unwrap();
    let targets: Vec<u32> =
        (0..n).map(|i| if i % 7 == 0 { forge_kernels::IGNORE_TARGET } else { rand::Rng::random_range(&mut rng, 0..vocab as u32) }).collect();
    let targets = Tensor::new(targets, &Device::Cpu).unwrap();
    assert_gpu_matches_cpu(
        "linear_cross_entropy chunk 16",
        &gpu,
        |t| forge_kernels::linear_cross_entropy_row_chunks(&t[0], &t[1], &t[2], 16),
        &[h, w, targets],
        &[true, true, false],
    );
}

/// The fused ops must agree with the composite definitions on the GPU too (the model's CPU and GPU
/// runs then differ only by kernel rounding).
#[test]
fn fused_ops_on_gpu_match_the_composite_path_on_gpu() {
    let Some(gpu) = require_cuda("fused_ops_on_gpu_match_the_composite_path_on_gpu") else { return };
    forge_kernels::poison_cuda_outputs(true);
    let mut rng = StdRng::seed_from_u64(5);
    let x = randn(&mut rng, &[4, 33, 1536]).to_device(&gpu).unwrap();
    let w = randn(&mut rng, &[1536]).affine(0.1, 1.0).unwrap().to_device(&gpu).unwrap();
    let e = rel_err(&forge_kernels::rms_norm(&x, &w, 1e-6).unwrap(), &forge_kernels::reference::rms_norm(&x, &w, 1e-6).unwrap());
    assert!(e <= 1e-5, "rms_norm fused vs composite on GPU: {e:e}");
    let q = randn(&mut rng, &[2, 33, 16, 128]).to_device(&gpu).unwrap();
    let (cos, sin) = rope_tables(1, 33, 64);
    let (cos, sin) = (cos.to_device(&gpu).unwrap(), sin.to_device(&gpu).unwrap());
    let e = rel_err(&forge_kernels::rope(&q, &cos, &sin).unwrap(), &forge_kernels::reference::rope(&q, &cos, &sin).unwrap());
    assert!(e <= 1e-5, "rope fused vs composite on GPU: {e:e}");
    let (gate, up) = (randn(&mut rng, &[33, 3072]).to_device(&gpu).unwrap(), randn(&mut rng, &[33, 3072]).to_device(&gpu).unwrap());
    let e = rel_err(&forge_kernels::swiglu(&gate, &up).unwrap(), &forge_kernels::reference::swiglu(&gate, &up).unwrap());
    assert!(e <= 1e-5, "swiglu fused vs composite on GPU: {e:e}");
    let logits = randn(&mut rng, &[65, 3001]).to_device(&gpu).unwrap();
    let targets = Tensor::arange(0u32, 65, &gpu).unwrap();
    let e = rel_err(
        &forge_kernels::cross_entropy_per_token(&logits, &targets).unwrap(),
        &forge_kernels::reference::cross_entropy_per_token(&logits, &targets).unwrap(),
    );
    assert!(e <= 1e-5, "cross_entropy fused vs composite on GPU: {e:e}");
}

/// The fused kernels (bf16, GPU, outputs poisoned) against the reference attention in f32 on the
/// CPU, from the same bf16-rounded inputs: output and the gradients of q, k, v of Σ out·probe.
/// The composite bf16 path on the GPU is measured too and reported beside it.
fn assert_flash_matches_reference(gpu: &Device, case: &FlashCase) {
    use forge_kernels::flash_attn;
    let FlashCase { name, batch, h, h_kv, d, seed, .. } = case;
    forge_kernels::poison_cuda_outputs(true);
    assert!(flash_attn::supported(gpu, DType::BF16, *d), "{name}: the fused kernel is not selected for bf16, head dim {d}");
    let mut rng = StdRng::seed_from_u64(*seed);
    // inputs rounded to bf16 once, so the f32 reference sees exactly the kernel's values
    let bf16_exact = |t: Tensor| t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    let inputs = [randn(&mut rng, &batch.shape(*h, *d)), randn(&mut rng, &batch.shape(*h_kv, *d)), randn(&mut rng, &batch.shape(*h_kv, *d))].map(bf16_exact);
    let probe = randn(&mut rng, &batch.shape(*h, *d));
    let scale = 1.0 / (*d as f64).sqrt();
    let fused = |t: &[Tensor]| batch.attention(&t[0], &t[1], &t[2], scale);
    let reference = |t: &[Tensor]| batch.reference(&t[0], &t[1], &t[2], scale);
    let all = [true, true, true];
    let (y_ref, g_ref) = value_and_grads(&reference, &inputs, &all, DType::F32, &Device::Cpu, &probe);
    let (y, g) = value_and_grads(&fused, &inputs, &all, DType::BF16, gpu, &probe);
    let (y_mm, g_mm) = value_and_grads(&reference, &inputs, &all, DType::BF16, gpu, &probe);
    assert!(y.device().is_cuda() && y.dtype() == DType::BF16, "{name}: output on {:?} in {:?}", y.device(), y.dtype());
    assert_all_finite(name, "output", &y);
    let (e, e_mm) = (rel_err(&y, &y_ref), rel_err(&y_mm, &y_ref));
    assert!(e <= FLASH_TOLERANCE, "{name}: forward relative error {e:e} > {FLASH_TOLERANCE:e} (bf16 matmul path: {e_mm:e})");
    for (i, what) in ["dq", "dk", "dv"].iter().enumerate() {
        let (gf, gr, gm) = (g[i].as_ref().unwrap(), g_ref[i].as_ref().unwrap(), g_mm[i].as_ref().unwrap());
        assert!(!gf.track_op(), "{name}: {what} still carries a graph");
        assert_all_finite(name, what, gf);
        let (e, e_mm) = (rel_err(gf, gr), rel_err(gm, gr));
        assert!(e <= FLASH_TOLERANCE, "{name}: {what} relative error {e:e} > {FLASH_TOLERANCE:e} (bf16 matmul path: {e_mm:e})");
    }
}

fn assert_flash_group_matches_reference(test: &str, group: FlashGroup) {
    let Some(gpu) = require_cuda(test) else { return };
    let cases: Vec<FlashCase> = flash_parity_cases().into_iter().filter(|c| c.group == group).collect();
    assert!(!cases.is_empty(), "{test}: no cases in {group:?}");
    for case in &cases {
        assert_flash_matches_reference(&gpu, case);
    }
}

#[test]
fn flash_attention_padded_causal_gqa_matches_reference() {
    assert_flash_group_matches_reference("flash_attention_padded_causal_gqa_matches_reference", FlashGroup::PaddedGqa);
}

#[test]
fn flash_attention_packed_varlen_matches_reference() {
    assert_flash_group_matches_reference("flash_attention_packed_varlen_matches_reference", FlashGroup::PackedVarlen);
}

#[test]
fn flash_attention_long_sequence_matches_reference() {
    assert_flash_group_matches_reference("flash_attention_long_sequence_matches_reference", FlashGroup::LongSequence);
}

/// The decode-attention op on the GPU (kv_append, split-K and combine, `flash_fwd_cached` for
/// prefill runs; outputs poisoned, cache positions the step must not read NaN) against the host
/// decode path's attention, on the cases the emulator runs (every split-K kernel included).
#[test]
fn decode_attention_matches_reference() {
    let Some(gpu) = require_cuda("decode_attention_matches_reference") else { return };
    forge_kernels::poison_cuda_outputs(true);
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for case in decode_parity_cases() {
        let inputs = case.inputs(|| StandardNormal.sample(&mut rng));
        let (h, h_kv, d, n) = (case.heads, case.kv_heads, case.head_dim, inputs.rows.len());
        let on_gpu = |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape, &Device::Cpu).and_then(|t| t.to_dtype(case.dtype)).and_then(|t| t.to_device(&gpu)).unwrap();
        let on_host = |t: &Tensor| t.to_device(&Device::Cpu).and_then(|t| t.to_dtype(DType::F32)).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).unwrap();
        let caches: Vec<(Tensor, Tensor)> = inputs
            .caches
            .iter()
            .zip(&case.sequences)
            .map(|((keys, values), &(_, _, capacity))| (on_gpu(keys, &[h_kv, capacity, d]), on_gpu(values, &[h_kv, capacity, d])))
            .collect();
        let layer: Vec<LayerCache> = caches.iter().map(|(keys, values)| LayerCache { keys, values }).collect();
        let (q, k, v) = (on_gpu(&inputs.q, &[n, h * d]), on_gpu(&inputs.k, &[n, h_kv * d]), on_gpu(&inputs.v, &[n, h_kv * d]));
        let o = append_and_attend(&q, &k, &v, &layer, &inputs.rows, h, 1.0 / (d as f32).sqrt(), case.flash_min_rows).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let after: Vec<(Vec<f32>, Vec<f32>)> = caches.iter().map(|(keys, values)| (on_host(keys), on_host(values))).collect();
        case.assert_matches_reference(&inputs, &on_host(&o), &after);
    }
}
