//! kernels/{rms_norm,rope,swiglu,cross_entropy,adamw}.cu, run on the CPU by the SIMT emulator, against
//! forge-kernels' fused CPU ops (themselves checked against the composite path in its parity.rs):
//! values and gradients in f32, bf16 and f16, with the shapes of tests/cuda_parity.rs (both row
//! paths: a warp per row and a block per row). Outputs are poisoned with NaN and every buffer ends
//! at a guard page; AdamW must agree bit for bit, as it is written to.

use candle_core::{DType, Device, Tensor, Var, WithDType};
use forge_kernels::adamw::{AdamWScalars, ADAMW_CHUNK};
use forge_kernels::testing::{parity_tolerance, relative_error};
use forge_kernels_emu::ops::{self, AdamWState, Float};
use forge_kernels_emu::{take_memory_counts, Schedule, ORDERS};
use half::{bf16, f16};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

fn randn<T: WithDType>(rng: &mut StdRng, n: usize, scale: f32, shift: f32) -> Vec<T> {
    (0..n).map(|_| {
        let z: f32 = StandardNormal.sample(rng);
        T::from_f64((z * scale + shift) as f64)
    }).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn f32s<T: WithDType>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f64() as f32).collect()
}

fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("{name}: element {i} is {} (left unwritten by the kernel?)", got[i]);
    }
    let e = relative_error(got, want);
    assert!(e <= tol, "{name}: relative error {e:e} > {tol:e}");
}

/// The shared-memory requests since the last call (the block-per-row reductions' partials) met no
/// bank conflict.
fn assert_no_bank_conflicts(name: &str) {
    let counts = take_memory_counts();
    assert_eq!(counts.bank_conflicts(), 0, "{name}: bank conflicts {counts:?}");
}

fn rms_norm_case<T: Float + WithDType>(shape: [usize; 3], rng: &mut StdRng) {
    let (n, count) = (shape[2], shape.iter().product::<usize>());
    let (x, w, probe) = (randn::<T>(rng, count, 1.0, 0.0), randn::<T>(rng, n, 0.1, 1.0), randn::<T>(rng, count, 1.0, 0.0));
    let name = format!("rms_norm {shape:?} {:?}", T::DTYPE);
    let xv = Var::from_tensor(&Tensor::from_slice(&x, &shape, &Device::Cpu).unwrap()).unwrap();
    let wv = Var::from_tensor(&Tensor::from_slice(&w, n, &Device::Cpu).unwrap()).unwrap();
    let y = forge_kernels::rms_norm(xv.as_tensor(), wv.as_tensor(), 1e-6).unwrap();
    let probe_t = Tensor::from_slice(&probe, &shape, &Device::Cpu).unwrap();
    let grads = (y.to_dtype(DType::F32).unwrap() * probe_t.to_dtype(DType::F32).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let tol = parity_tolerance(T::DTYPE);
    take_memory_counts();
    for schedule in ORDERS {
        let got = ops::rms_norm(&x, &w, 1e-6, schedule).unwrap();
        assert_close(&format!("{name} forward"), &f32s(&got), &values(&y), tol);
        let (dx, dw) = ops::rms_norm_grads(&x, &w, &probe, 1e-6, schedule).unwrap();
        assert_close(&format!("{name} dx"), &f32s(&dx), &values(grads.get(xv.as_tensor()).unwrap()), tol);
        assert_close(&format!("{name} dw"), &f32s(&dw), &values(grads.get(wv.as_tensor()).unwrap()), tol);
    }
    assert_no_bank_conflicts(&name);
}

#[test]
fn emulated_rms_norm_matches_cpu() {
    let mut rng = StdRng::seed_from_u64(1);
    // warp-per-row path (rows not a multiple of the 8 rows per block), block-per-row path (a last
    // dim not a multiple of 256), and more rows than one weight-gradient chunk
    for shape in [[3usize, 7, 128], [5, 3, 2600], [2, 150, 96]] {
        rms_norm_case::<f32>(shape, &mut rng);
        rms_norm_case::<bf16>(shape, &mut rng);
        rms_norm_case::<f16>(shape, &mut rng);
    }
}

fn rope_case<T: Float + WithDType>(b: usize, table_batch: usize, s: usize, h: usize, d: usize, rng: &mut StdRng) {
    let x = randn::<T>(rng, b * s * h * d, 1.0, 0.0);
    let probe = randn::<T>(rng, b * s * h * d, 1.0, 0.0);
    let angles: Vec<f32> = (0..table_batch * s * d / 2).map(|i| ((i % (s * d / 2)) as f32 * 0.37 + (i / (s * d / 2)) as f32).sin() * 3.0).collect();
    let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
    let name = format!("rope [{b}, {s}, {h}, {d}] tables for {table_batch} {:?}", T::DTYPE);
    let xv = Var::from_tensor(&Tensor::from_slice(&x, (b, s, h, d), &Device::Cpu).unwrap()).unwrap();
    let table = |v: &[f32]| Tensor::from_slice(v, (table_batch, s, d / 2), &Device::Cpu).unwrap();
    let y = forge_kernels::rope(xv.as_tensor(), &table(&cos), &table(&sin)).unwrap();
    let probe_t = Tensor::from_slice(&probe, (b, s, h, d), &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    let grads = (y.to_dtype(DType::F32).unwrap() * probe_t).unwrap().sum_all().unwrap().backward().unwrap();
    let tol = parity_tolerance(T::DTYPE);
    let got = ops::rope(&x, &cos, &sin, [b, s, h, d], false, Schedule::Ascending).unwrap();
    assert_close(&format!("{name} forward"), &f32s(&got), &values(&y), tol);
    let dx = ops::rope(&probe, &cos, &sin, [b, s, h, d], true, Schedule::Descending).unwrap();
    assert_close(&format!("{name} backward"), &f32s(&dx), &values(grads.get(xv.as_tensor()).unwrap()), tol);
}

#[test]
fn emulated_rope_matches_cpu() {
    let mut rng = StdRng::seed_from_u64(3);
    // shared and per-batch tables; Qwen3's head dim 128
    for (b, table_batch, s, h, d) in [(2usize, 1usize, 11usize, 4usize, 16usize), (3, 3, 9, 5, 64), (1, 1, 33, 8, 128)] {
        rope_case::<f32>(b, table_batch, s, h, d, &mut rng);
        rope_case::<bf16>(b, table_batch, s, h, d, &mut rng);
        rope_case::<f16>(b, table_batch, s, h, d, &mut rng);
    }
}

fn swiglu_case<T: Float + WithDType>(shape: [usize; 3], rng: &mut StdRng) {
    let count = shape.iter().product::<usize>();
    let (g, u, probe) = (randn::<T>(rng, count, 2.0, 0.0), randn::<T>(rng, count, 1.0, 0.0), randn::<T>(rng, count, 1.0, 0.0));
    let name = format!("swiglu {shape:?} {:?}", T::DTYPE);
    let gv = Var::from_tensor(&Tensor::from_slice(&g, &shape, &Device::Cpu).unwrap()).unwrap();
    let uv = Var::from_tensor(&Tensor::from_slice(&u, &shape, &Device::Cpu).unwrap()).unwrap();
    let y = forge_kernels::swiglu(gv.as_tensor(), uv.as_tensor()).unwrap();
    let probe_t = Tensor::from_slice(&probe, &shape, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    let grads = (y.to_dtype(DType::F32).unwrap() * probe_t).unwrap().sum_all().unwrap().backward().unwrap();
    let tol = parity_tolerance(T::DTYPE);
    take_memory_counts();
    for schedule in ORDERS {
        let got = ops::swiglu(&g, &u, schedule).unwrap();
        assert_close(&format!("{name} forward"), &f32s(&got), &values(&y), tol);
        let (dg, du) = ops::swiglu_grads(&g, &u, &probe, schedule).unwrap();
        assert_close(&format!("{name} d gate"), &f32s(&dg), &values(grads.get(gv.as_tensor()).unwrap()), tol);
        assert_close(&format!("{name} d up"), &f32s(&du), &values(grads.get(uv.as_tensor()).unwrap()), tol);
    }
    // on the packed path every warp request moves whole sectors (its lanes' 16-byte packs side by
    // side); element by element, d up starts mid-sector (grads + n)
    let global = take_memory_counts().global;
    eprintln!("{name}: global {global:?}");
    assert!(global.requests > 0 && (count % 8 != 0 || global.sectors == global.ideal), "{name}: uncoalesced {global:?}");
}

#[test]
fn emulated_swiglu_matches_cpu() {
    let mut rng = StdRng::seed_from_u64(5);
    // The emulator's buffers start 16-byte aligned, so the element count picks the kernel's path:
    // whole 16-byte packs (a multiple of 8 elements, as the model's MLP widths), or one element
    // per step (an odd count, which leaves every pack boundary misaligned).
    for shape in [[4usize, 64, 300], [3, 7, 13], [1, 5, 8]] {
        swiglu_case::<f32>(shape, &mut rng);
        swiglu_case::<bf16>(shape, &mut rng);
        swiglu_case::<f16>(shape, &mut rng);
    }
}

fn cross_entropy_case<T: Float + WithDType>(rows: usize, vocab: usize, rng: &mut StdRng) {
    let logits = randn::<T>(rng, rows * vocab, 2.0, 0.0);
    let targets: Vec<u32> = (0..rows).map(|i| if i % 5 == 0 { forge_kernels::IGNORE_TARGET } else { rng.random_range(0..vocab as u32) }).collect();
    let dnll: Vec<f32> = randn::<f32>(rng, rows, 1.0, 0.0);
    let name = format!("cross_entropy [{rows}, {vocab}] {:?}", T::DTYPE);
    let lv = Var::from_tensor(&Tensor::from_slice(&logits, (rows, vocab), &Device::Cpu).unwrap()).unwrap();
    let nll = forge_kernels::cross_entropy_per_token(lv.as_tensor(), &Tensor::new(targets.as_slice(), &Device::Cpu).unwrap()).unwrap();
    let grads = (nll.to_dtype(DType::F32).unwrap() * Tensor::new(dnll.as_slice(), &Device::Cpu).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let tol = parity_tolerance(T::DTYPE);
    take_memory_counts();
    for schedule in ORDERS {
        let got = ops::cross_entropy(&logits, &targets, vocab, schedule).unwrap();
        assert_close(&format!("{name} nll"), &got, &values(&nll), tol);
        let dlogits = ops::cross_entropy_grad(&logits, &targets, &dnll, vocab, schedule).unwrap();
        assert_close(&format!("{name} dlogits"), &f32s(&dlogits), &values(grads.get(lv.as_tensor()).unwrap()), tol);
    }
    assert_no_bank_conflicts(&name);
}

#[test]
fn emulated_cross_entropy_matches_cpu() {
    let mut rng = StdRng::seed_from_u64(4);
    // warp-per-row (vocabulary ≤ 1024) and block-per-row paths; every fifth target ignored
    for (rows, vocab) in [(37usize, 301usize), (19, 5000)] {
        cross_entropy_case::<f32>(rows, vocab, &mut rng);
        cross_entropy_case::<bf16>(rows, vocab, &mut rng);
        cross_entropy_case::<f16>(rows, vocab, &mut rng);
    }
}

/// `w` rounded to T as the CPU optimizer writes a parameter (`from_f32`, round to nearest even).
/// Not `T::from_f64(w as f64)`: half's f64 → bf16 conversion rounds some f32 values down that the
/// f32 → bf16 one (and the kernel) round up, e.g. 0xbf988006.
fn rounded<T: WithDType>(w: f32) -> f64 {
    match T::DTYPE {
        DType::BF16 => bf16::from_f32(w).to_f64(),
        DType::F16 => f16::from_f32(w).to_f64(),
        _ => w as f64,
    }
}

/// The group kernel against `AdamWScalars::apply` (forge-train's CPU step), element by element,
/// bit for bit: tensors of several sizes in one launch (one element, none, a chunk and one more —
/// two blocks), each with its own scalars (step count, weight decay, clip coefficient).
fn adamw_case<T: Float + WithDType>(sizes: &[usize], with_master: bool, rng: &mut StdRng) {
    let scalars: Vec<AdamWScalars> = (0..sizes.len()).map(|i| AdamWScalars::new(1e-3, 0.1 * i as f64, 0.9, 0.999, 1e-8, 3 + i as u64, 0.5 + 0.1 * i as f32)).collect();
    let mut before = Vec::new();
    let mut states = Vec::new();
    let mut grads = Vec::new();
    for &n in sizes {
        let weights: Vec<f32> = randn(rng, n, 1.0, 0.0);
        let param: Vec<T> = weights.iter().map(|&w| T::from_f64(w as f64)).collect();
        let grad: Vec<T> = randn(rng, n, 1.0, 0.0);
        let exp_avg: Vec<f32> = randn(rng, n, 0.1, 0.0);
        let exp_avg_sq: Vec<f32> = randn::<f32>(rng, n, 0.01, 0.0).iter().map(|v| v * v).collect();
        states.push(AdamWState { param: param.clone(), exp_avg: exp_avg.clone(), exp_avg_sq: exp_avg_sq.clone(), master: with_master.then(|| weights.clone()) });
        before.push((weights, param, exp_avg, exp_avg_sq));
        grads.push(grad);
    }
    let grad_slices: Vec<&[T]> = grads.iter().map(|g| g.as_slice()).collect();
    ops::adamw(&mut states, &grad_slices, &scalars, Schedule::Ascending).unwrap();
    for (t, (state, (weights, param, exp_avg, exp_avg_sq))) in states.iter().zip(&before).enumerate() {
        let k = scalars[t];
        for i in 0..sizes[t] {
            let (mut m, mut v) = (exp_avg[i], exp_avg_sq[i]);
            let start = if with_master { weights[i] } else { param[i].to_f64() as f32 };
            let w = k.apply(start, grads[t][i].to_f64() as f32, &mut m, &mut v);
            let name = format!("adamw {:?} master {with_master} tensor {t} element {i}", T::DTYPE);
            assert_eq!(state.exp_avg[i].to_bits(), m.to_bits(), "{name}: exp_avg");
            assert_eq!(state.exp_avg_sq[i].to_bits(), v.to_bits(), "{name}: exp_avg_sq");
            assert_eq!(state.param[i].to_f64(), rounded::<T>(w), "{name}: param");
            if let Some(master) = &state.master {
                assert_eq!(master[i].to_bits(), w.to_bits(), "{name}: master");
            }
        }
    }
}

#[test]
fn emulated_adamw_matches_the_cpu_step_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(8);
    let sizes = [1000, 1, 0, ADAMW_CHUNK + 1, 300];
    adamw_case::<f32>(&sizes, false, &mut rng);
    adamw_case::<bf16>(&sizes, true, &mut rng);
    adamw_case::<f16>(&[777, ADAMW_CHUNK], true, &mut rng);
}
