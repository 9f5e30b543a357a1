//! kernels/flash_attn.cu, run on the CPU by the SIMT emulator, against the reference attention:
//! the cases of tests/cuda_parity.rs (GQA 4:1 and 8:1, head dim 64 and 128, lengths that are not
//! multiples of the 64-row tiles, right padding, packed sequences with an empty one). Outputs are
//! poisoned with NaN, every buffer ends at a guard page, and each case runs under both thread
//! orders, which must agree bit for bit. What this cannot show (speed; a fragment layout the
//! kernel and the emulator misread alike) is left to scripts/gpu-check.sh on a GPU.

use candle_core::{DType, Device, Tensor, Var};
use forge_kernels::flash_attn::{self, Sequences};
use forge_kernels_emu::flash_attn::{backward, forward, Problem, Saved};
use forge_kernels_emu::{Buffer, Schedule};
use half::bf16;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// As tests/cuda_parity.rs: bf16 output rounding plus the bf16 rounding of the probabilities and
/// dS that feed the tensor-core products, against an f32 reference from the same bf16 inputs.
const FLASH_TOLERANCE: f32 = 2e-2;

enum Batch {
    /// `[b, s, heads, d]` with right-padding lengths.
    Padded { b: usize, s: usize, lengths: Vec<usize> },
    /// `[total, heads, d]` packed with cumulative offsets.
    Packed { cu_seqlens: Vec<usize> },
}

impl Batch {
    fn sequences(&self) -> Sequences {
        match self {
            Batch::Padded { b, s, lengths } => Sequences::padded(*b, *s, lengths).unwrap(),
            Batch::Packed { cu_seqlens } => Sequences::packed(cu_seqlens).unwrap(),
        }
    }

    fn shape(&self, heads: usize, d: usize) -> Vec<usize> {
        match self {
            Batch::Padded { b, s, .. } => vec![*b, *s, heads, d],
            Batch::Packed { cu_seqlens } => vec![*cu_seqlens.last().unwrap(), heads, d],
        }
    }

    fn reference(&self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        match self {
            Batch::Padded { lengths, .. } => flash_attn::reference_padded(q, k, v, lengths, scale).unwrap(),
            Batch::Packed { cu_seqlens } => flash_attn::reference_varlen(q, k, v, cu_seqlens, scale).unwrap(),
        }
    }
}

/// Random values already rounded to bf16, so the f32 reference sees exactly the kernel's inputs.
fn random_bf16(rng: &mut StdRng, n: usize) -> Vec<bf16> {
    (0..n).map(|_| bf16::from_f32(StandardNormal.sample(rng))).collect()
}

fn to_f32(values: &[bf16]) -> Vec<f32> {
    values.iter().map(|v| v.to_f32()).collect()
}

fn rel_err(name: &str, what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{name}: {what} length");
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("{name}: {what} element {i} is {} (left unwritten by the kernel?)", got[i]);
    }
    let diff: f64 = got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff.sqrt() / norm.sqrt().max(1e-30)) as f32
}

struct Emulated {
    o: Vec<bf16>,
    lse: Vec<f32>,
    dq: Vec<bf16>,
    dk: Vec<bf16>,
    dv: Vec<bf16>,
}

fn run(p: &Problem, q: &[bf16], k: &[bf16], v: &[bf16], dout: &[bf16], schedule: Schedule) -> Emulated {
    let (q, k, v) = (Buffer::from_slice(c"q", q), Buffer::from_slice(c"k", k), Buffer::from_slice(c"v", v));
    let dout = Buffer::from_slice(c"dO", dout);
    let (o, lse) = forward(p, &q, &k, &v, schedule).unwrap_or_else(|e| panic!("{schedule:?}: {e}"));
    let g = backward(p, &q, &k, &v, &Saved { o: &o, lse: &lse, dout: &dout }, schedule).unwrap_or_else(|e| panic!("{schedule:?}: {e}"));
    Emulated { o: o.to_vec(), lse: lse.to_vec(), dq: g.dq.to_vec(), dk: g.dk.to_vec(), dv: g.dv.to_vec() }
}

fn bits(values: &[bf16]) -> Vec<u16> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn assert_emulated_flash_matches_reference(name: &str, batch: &Batch, h: usize, h_kv: usize, d: usize, seed: u64, schedules: &[Schedule]) {
    let seqs = batch.sequences();
    let mut rng = StdRng::seed_from_u64(seed);
    let (nq, nk) = (seqs.total() * h * d, seqs.total() * h_kv * d);
    let (q, k, v, probe) = (random_bf16(&mut rng, nq), random_bf16(&mut rng, nk), random_bf16(&mut rng, nk), random_bf16(&mut rng, nq));
    let scale = 1.0 / (d as f64).sqrt();

    // reference: f32 on the CPU, gradients of Σ out·probe
    let tensor = |values: &[bf16], heads| Tensor::from_vec(to_f32(values), batch.shape(heads, d), &Device::Cpu).unwrap();
    let vars = [Var::from_tensor(&tensor(&q, h)).unwrap(), Var::from_tensor(&tensor(&k, h_kv)).unwrap(), Var::from_tensor(&tensor(&v, h_kv)).unwrap()];
    let y = batch.reference(vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor(), scale);
    let grads = (&y * tensor(&probe, h)).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = [flat(&y), flat(grads.get(vars[0].as_tensor()).unwrap()), flat(grads.get(vars[1].as_tensor()).unwrap()), flat(grads.get(vars[2].as_tensor()).unwrap())];

    let problem = Problem { seqs: &seqs, h, h_kv, d, scale: scale as f32 };
    let mut first: Option<Emulated> = None;
    for &schedule in schedules {
        let got = run(&problem, &q, &k, &v, &probe, schedule);
        let errors: Vec<(&str, f32)> = [("o", &got.o), ("dq", &got.dq), ("dk", &got.dk), ("dv", &got.dv)]
            .iter()
            .zip(&want)
            .map(|((what, values), want)| (*what, rel_err(name, what, &to_f32(values), want)))
            .collect();
        eprintln!("{name} {schedule:?}: relative errors {errors:?}");
        for (what, e) in &errors {
            assert!(*e <= FLASH_TOLERANCE, "{name} {schedule:?}: {what} relative error {e:e} > {FLASH_TOLERANCE:e}");
        }
        // padded query rows attend every real key too, so every lse is finite
        assert!(got.lse.iter().all(|v| v.is_finite()), "{name}: an lse was left unwritten");
        if let Some(first) = &first {
            for (what, a, b) in [("o", &first.o, &got.o), ("dq", &first.dq, &got.dq), ("dk", &first.dk, &got.dk), ("dv", &first.dv, &got.dv)] {
                assert!(bits(a) == bits(b), "{name}: {what} differs between thread orders (a race)");
            }
            assert!(first.lse.iter().zip(&got.lse).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: lse differs between thread orders");
        }
        first = Some(got);
    }
}

const BOTH: &[Schedule] = &[Schedule::Ascending, Schedule::Descending];

#[test]
fn emulated_flash_attention_padded_causal_gqa_matches_reference() {
    // 4:1 at head dim 128, lengths not multiples of the 64-row tiles (one row fully real, one padded)
    let batch = Batch::Padded { b: 2, s: 200, lengths: vec![200, 77] };
    assert_emulated_flash_matches_reference("flash padded 8:2 d128 s200", &batch, 8, 2, 128, 21, BOTH);
    // 8:1 at head dim 64, a length-1 row and a length exactly one tile plus one
    let batch = Batch::Padded { b: 3, s: 130, lengths: vec![130, 1, 65] };
    assert_emulated_flash_matches_reference("flash padded 16:2 d64 s130", &batch, 16, 2, 64, 22, BOTH);
}

#[test]
fn emulated_flash_attention_packed_varlen_matches_reference() {
    // 8:1 at head dim 128: sequences of 1, 63, 129 and 250 rows (tile boundaries ±1)
    let batch = Batch::Packed { cu_seqlens: vec![0, 1, 64, 193, 443] };
    assert_emulated_flash_matches_reference("flash packed 8:1 d128", &batch, 8, 1, 128, 23, BOTH);
    // 4:1 at head dim 64, an empty sequence in between
    let batch = Batch::Packed { cu_seqlens: vec![0, 300, 300, 317] };
    assert_emulated_flash_matches_reference("flash packed 4:1 d64", &batch, 4, 1, 64, 24, BOTH);
}

#[test]
fn emulated_flash_attention_long_sequence_matches_reference() {
    // many key tiles per query tile: the online-softmax rescaling, and the dK/dV loop over query tiles
    let batch = Batch::Padded { b: 1, s: 1000, lengths: vec![1000] };
    assert_emulated_flash_matches_reference("flash 4:1 d128 s1000", &batch, 4, 1, 128, 25, &[Schedule::Ascending]);
}
