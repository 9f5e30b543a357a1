//! kernels/flash_attn.cu, run on the CPU by the SIMT emulator, against the reference attention:
//! the GPU tests' cases (`forge_kernels::testing::flash_parity_cases`: GQA 4:1 and 8:1, head dim
//! 64 and 128, lengths that are not multiples of the 64-row tiles, right padding, packed sequences
//! with an empty one, a 1000-row sequence). Outputs are poisoned with NaN, every buffer ends at a
//! guard page, and each case but the longest runs under every thread order (`ORDERS`: ascending,
//! descending, shuffled), which must agree bit for bit. What this cannot show (speed; a fragment layout the
//! kernel and the emulator misread alike) is left to scripts/gpu/gpu-check.sh on a GPU.

use candle_core::{DType, Device, Tensor, Var};
use forge_kernels::testing::{flash_parity_cases, relative_error, FlashCase, FlashGroup, FLASH_TOLERANCE};
use forge_kernels_emu::flash_attn::{backward, forward, Problem, Saved};
use forge_kernels_emu::{take_memory_counts, Buffer, Schedule, ORDERS};
use half::bf16;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// Random values already rounded to bf16, so the f32 reference sees exactly the kernel's inputs.
fn random_bf16(rng: &mut StdRng, n: usize) -> Vec<bf16> {
    (0..n).map(|_| bf16::from_f32(StandardNormal.sample(rng))).collect()
}

fn to_f32(values: &[bf16]) -> Vec<f32> {
    values.iter().map(|v| v.to_f32()).collect()
}

fn rel_err(name: &str, what: &str, got: &[f32], want: &[f32]) -> f32 {
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("{name}: {what} element {i} is {} (left unwritten by the kernel?)", got[i]);
    }
    relative_error(got, want)
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

fn assert_emulated_flash_matches_reference(case: &FlashCase, schedules: &[Schedule]) {
    let FlashCase { name, batch, h, h_kv, d, seed, .. } = case;
    let (h, h_kv, d) = (*h, *h_kv, *d);
    let seqs = batch.sequences().unwrap();
    let mut rng = StdRng::seed_from_u64(*seed);
    let (nq, nk) = (seqs.total() * h * d, seqs.total() * h_kv * d);
    let (q, k, v, probe) = (random_bf16(&mut rng, nq), random_bf16(&mut rng, nk), random_bf16(&mut rng, nk), random_bf16(&mut rng, nq));
    let scale = 1.0 / (d as f64).sqrt();

    // reference: f32 on the CPU, gradients of Σ out·probe
    let tensor = |values: &[bf16], heads| Tensor::from_vec(to_f32(values), batch.shape(heads, d), &Device::Cpu).unwrap();
    let vars = [Var::from_tensor(&tensor(&q, h)).unwrap(), Var::from_tensor(&tensor(&k, h_kv)).unwrap(), Var::from_tensor(&tensor(&v, h_kv)).unwrap()];
    let y = batch.reference(vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor(), scale).unwrap();
    let grads = (&y * tensor(&probe, h)).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = [flat(&y), flat(grads.get(vars[0].as_tensor()).unwrap()), flat(grads.get(vars[1].as_tensor()).unwrap()), flat(grads.get(vars[2].as_tensor()).unwrap())];

    let problem = Problem { seqs: &seqs, h, h_kv, d, scale: scale as f32 };
    let mut first: Option<Emulated> = None;
    for &schedule in schedules {
        take_memory_counts();
        let got = run(&problem, &q, &k, &v, &probe, schedule);
        let counts = take_memory_counts();
        assert!(counts.ldmatrix.accesses > 0 && counts.shared.accesses > 0 && counts.bank_conflicts() == 0, "{name}: bank conflicts {counts:?}");
        let errors: Vec<(&str, f32)> = [("o", &got.o), ("dq", &got.dq), ("dk", &got.dk), ("dv", &got.dv)]
            .iter()
            .zip(&want)
            .map(|((what, values), want)| (*what, rel_err(name, what, &to_f32(values), want)))
            .collect();
        eprintln!(
            "{name} {schedule:?}: relative errors {errors:?}, {} ldmatrix phases, {} other shared requests, global {:?}",
            counts.ldmatrix.accesses, counts.shared.accesses, counts.global
        );
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

fn assert_emulated_group_matches_reference(group: FlashGroup, schedules: &[Schedule]) {
    let cases: Vec<FlashCase> = flash_parity_cases().into_iter().filter(|c| c.group == group).collect();
    assert!(!cases.is_empty(), "no cases in {group:?}");
    for case in &cases {
        assert_emulated_flash_matches_reference(case, schedules);
    }
}

#[test]
fn emulated_flash_attention_padded_causal_gqa_matches_reference() {
    assert_emulated_group_matches_reference(FlashGroup::PaddedGqa, &ORDERS);
}

#[test]
fn emulated_flash_attention_packed_varlen_matches_reference() {
    assert_emulated_group_matches_reference(FlashGroup::PackedVarlen, &ORDERS);
}

#[test]
fn emulated_flash_attention_long_sequence_matches_reference() {
    // one thread order: ~16 times the work of the others, and its tiles are the same code
    assert_emulated_group_matches_reference(FlashGroup::LongSequence, &[Schedule::Ascending]);
}
