//! Each fused op against its composite reference, forward + backward, at the shapes of the
//! ~20M-parameter benchmark model (512 tokens, hidden 512, 8 heads of 64, vocab 8192); and the
//! decoding product `few_rows::linear` against candle's matmul (gemm) for a step's rows.
//! `cargo bench -p forge-kernels --bench ops [-- FILTER]`

use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use forge_kernels::reference;

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
}

/// forward, then backward of Σ out·probe, w.r.t. every input.
fn fwd_bwd(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Var], probe: &Tensor) {
    let tensors: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors).unwrap();
    let grads = (out * probe).unwrap().sum_all().unwrap().backward().unwrap();
    criterion::black_box(grads);
}

type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

fn bench_pair(c: &mut Criterion, name: &str, fused: Op, slow: Op, inputs: Vec<Tensor>, constants: usize) {
    let vars: Vec<Var> = inputs[..inputs.len() - constants].iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let consts: Vec<Tensor> = inputs[inputs.len() - constants..].to_vec();
    let with_consts = |f: Op| -> Op {
        let consts = consts.clone();
        Box::new(move |t: &[Tensor]| {
            let mut all = t.to_vec();
            all.extend(consts.iter().cloned());
            f(&all)
        })
    };
    let (fused, slow) = (with_consts(fused), with_consts(slow));
    let probe = randn(fused(&vars.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>()).unwrap().dims());
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    group.bench_function("fused", |b| b.iter(|| fwd_bwd(&fused, &vars, &probe)));
    group.bench_function("reference", |b| b.iter(|| fwd_bwd(&slow, &vars, &probe)));
    group.finish();
}

fn ops(c: &mut Criterion) {
    forge_kernels::cpu_memory::keep_freed_memory_for_reuse();
    let (tokens, hidden, heads, head_dim, vocab) = (512, 512, 8, 64, 8192);
    bench_pair(
        c,
        "rms_norm [512, 512]",
        Box::new(|t| forge_kernels::rms_norm(&t[0], &t[1], 1e-6)),
        Box::new(|t| reference::rms_norm(&t[0], &t[1], 1e-6)),
        vec![randn(&[tokens, hidden]), randn(&[hidden])],
        0,
    );
    bench_pair(
        c,
        "softmax [2, 8, 256, 256]",
        Box::new(|t| forge_kernels::softmax_last_dim(&t[0])),
        Box::new(|t| reference::softmax_last_dim(&t[0])),
        vec![randn(&[2, heads, 256, 256])],
        0,
    );
    let angles = randn(&[1, 256, head_dim / 2]);
    bench_pair(
        c,
        "rope [2, 256, 8, 64]",
        Box::new(|t| forge_kernels::rope(&t[0], &t[1], &t[2])),
        Box::new(|t| reference::rope(&t[0], &t[1], &t[2])),
        vec![randn(&[2, 256, heads, head_dim]), angles.cos().unwrap(), angles.sin().unwrap()],
        2,
    );
    bench_pair(
        c,
        "swiglu [512, 1536]",
        Box::new(|t| forge_kernels::swiglu(&t[0], &t[1])),
        Box::new(|t| reference::swiglu(&t[0], &t[1])),
        vec![randn(&[tokens, 1536]), randn(&[tokens, 1536])],
        0,
    );
    let targets = Tensor::arange(0u32, tokens as u32, &Device::Cpu).unwrap();
    bench_pair(
        c,
        "attention [2, 8 (4 kv), 256, 64]",
        Box::new(|t| forge_kernels::attention(&t[0], &t[1], &t[2], None, 0.125)),
        Box::new(|t| reference::attention(&t[0], &t[1], &t[2], None, 0.125)),
        vec![randn(&[2, heads, 256, head_dim]), randn(&[2, 4, 256, head_dim]), randn(&[2, 4, 256, head_dim])],
        0,
    );
    let t2 = targets.clone();
    bench_pair(
        c,
        "cross_entropy [512, 8192]",
        Box::new(move |t| forge_kernels::cross_entropy_per_token(&t[0], &targets)),
        Box::new(move |t| reference::cross_entropy_per_token(&t[0], &t2)),
        vec![randn(&[tokens, vocab]).to_dtype(DType::F32).unwrap()],
        0,
    );
}

/// `x·wᵀ` of `rows` decoding rows with the MLP's up projection and the vocabulary head: the
/// in-place kernel against gemm, which repacks the weights on every call.
fn few_rows(c: &mut Criterion) {
    for (n, k) in [(1536, 512), (8192, 512)] {
        let w = randn(&[n, k]);
        let wt = w.t().unwrap();
        let mut group = c.benchmark_group(format!("few_rows x·wᵀ, w [{n}, {k}]"));
        group.sample_size(20);
        for rows in [1, 8, 32, 128, 512, 2048] {
            let x = randn(&[rows, k]);
            if rows <= forge_kernels::few_rows::max_rows() {
                group.bench_function(format!("{rows} rows, in place"), |b| b.iter(|| forge_kernels::few_rows::linear(&x, &w).unwrap().unwrap()));
            }
            group.bench_function(format!("{rows} rows, gemm"), |b| b.iter(|| x.matmul(&wt).unwrap()));
        }
        group.finish();
    }
}

criterion_group!(benches, ops, few_rows);
criterion_main!(benches);
