//! The decode-attention op (kernels/decode_attn.cu's append, split-K attention and combine;
//! kernels/flash_attn.cu's `flash_fwd_cached` for prefill runs), run on the CPU by the SIMT
//! emulator, on the cases the GPU runs too (`forge_kernels::testing::decode_parity_cases`: every
//! split-K kernel, prefill runs through flash tiles), against the host decode path's attention
//! (`forge_kernels::cached_attention::attend`). Every cache position the step must not read holds
//! NaN, the outputs start as NaN, every buffer ends at a guard page, and every thread order
//! (`ORDERS`) must agree bit for bit.

use candle_core::DType;
use forge_kernels::decode_attn::{plan, CachedAttentionPlan, FLASH_MIN_ROWS};
use forge_kernels::testing::{decode_parity_cases, DecodeCase, DecodeInputs};
use forge_kernels_emu::decode_attn::{append_and_attend, Cache, DecodeFloat, Step};
use forge_kernels_emu::{take_memory_counts, Buffer, Schedule, ORDERS};
use half::{bf16, f16};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// A storage type with its f32 conversions.
trait Elem: DecodeFloat {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}
impl Elem for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}
impl Elem for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}
impl Elem for f16 {
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// The step's output and the caches it left (in f32), run under `schedule`.
type Outcome = (Vec<f32>, Vec<(Vec<f32>, Vec<f32>)>);

fn run<T: Elem>(case: &DecodeCase, inputs: &DecodeInputs, schedule: Schedule) -> Outcome {
    let typed = |v: &[f32]| -> Vec<T> { v.iter().map(|&x| T::from_f32(x)).collect() };
    let back = |v: Vec<T>| -> Vec<f32> { v.into_iter().map(T::to_f32).collect() };
    let caches: Vec<Cache<T>> = inputs
        .caches
        .iter()
        .zip(&case.sequences)
        .map(|((keys, values), &(_, _, capacity))| Cache { keys: Buffer::from_slice(c"cache keys", &typed(keys)), values: Buffer::from_slice(c"cache values", &typed(values)), capacity })
        .collect();
    let (sequence, positions): (Vec<usize>, Vec<usize>) = inputs.rows.iter().copied().unzip();
    let (h, h_kv, d) = (case.heads, case.kv_heads, case.head_dim);
    let step = Step { heads: h, kv_heads: h_kv, head_dim: d, scale: 1.0 / (d as f32).sqrt(), sequence: &sequence, positions: &positions, flash_min_rows: case.flash_min_rows };
    let (o, _) = append_and_attend(&step, &typed(&inputs.q), &typed(&inputs.k), &typed(&inputs.v), &caches, schedule).unwrap_or_else(|e| panic!("{}, {schedule:?}: {e}", case.name));
    (back(o), caches.iter().map(|c| (back(c.keys.to_vec()), back(c.values.to_vec()))).collect())
}

fn assert_case_matches_reference<T: Elem>(case: &DecodeCase) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let inputs = case.inputs(|| StandardNormal.sample(&mut rng));
    let bits = |o: &[f32]| o.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    take_memory_counts();
    let (first, caches) = run::<T>(case, &inputs, ORDERS[0]);
    // the flash tiles' ldmatrix phases (none where every row goes split-K) and every other shared
    // request without bank conflicts
    let counts = take_memory_counts();
    eprintln!("{}: {counts:?}", case.name);
    assert_eq!(counts.bank_conflicts(), 0, "{}: bank conflicts {counts:?}", case.name);
    for order in &ORDERS[1..] {
        let (o, _) = run::<T>(case, &inputs, *order);
        assert!(bits(&o) == bits(&first), "{}: {order:?} disagrees with {:?} (a race)", case.name, ORDERS[0]);
    }
    case.assert_matches_reference(&inputs, &first, &caches);
}

fn assert_cases_match_reference(dtype: DType) {
    let cases: Vec<DecodeCase> = decode_parity_cases().into_iter().filter(|c| c.dtype == dtype).collect();
    assert!(!cases.is_empty(), "no decode cases in {dtype:?}");
    for case in &cases {
        match dtype {
            DType::F32 => assert_case_matches_reference::<f32>(case),
            DType::BF16 => assert_case_matches_reference::<bf16>(case),
            DType::F16 => assert_case_matches_reference::<f16>(case),
            other => panic!("no decode kernels of {other:?}"),
        }
    }
}

#[test]
fn every_f32_case_matches_reference() {
    assert_cases_match_reference(DType::F32);
}

#[test]
fn every_bf16_case_matches_reference() {
    assert_cases_match_reference(DType::BF16);
}

#[test]
fn every_f16_case_matches_reference() {
    assert_cases_match_reference(DType::F16);
}

/// The plan the op runs a named case by (the emulator and the CUDA launcher follow it alike).
fn plan_of(name: &str) -> (DecodeCase, CachedAttentionPlan) {
    let case = decode_parity_cases().into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no decode case named {name}"));
    let rows = case.inputs(|| 0.0).rows;
    let plan = plan(&rows, case.heads, case.kv_heads, case.head_dim, case.dtype, case.flash_min_rows).unwrap();
    (case, plan)
}

/// Rows of the case's sequences that the plan must send through flash tiles.
fn flash_rows(case: &DecodeCase) -> usize {
    case.sequences.iter().map(|&(_, new, _)| new).filter(|&new| new >= FLASH_MIN_ROWS).sum()
}

#[test]
fn the_cases_cover_every_split_kernel_and_flash_tile_shape() {
    let cases = decode_parity_cases();
    let mut split = std::collections::BTreeSet::new();
    for case in &cases {
        let (_, plan) = plan_of(&case.name);
        if let Some(launch) = plan.split {
            split.insert((case.head_dim, launch.group_bound, format!("{:?}", case.dtype)));
        }
    }
    assert_eq!(split.len(), 2 * 3 * 3, "split-K kernels run by the cases: {split:?}");

    let (case, plan) = plan_of("decode prefill tiles 8:2 d128");
    assert!(plan.flash.is_some(), "a case whose ldmatrix phases the bank-conflict count sees");
    assert_eq!(plan.tiles.iter().map(|t| t.rows).collect::<Vec<_>>(), [64, 64, 2, 64, 6]);
    assert_eq!(plan.tiles.iter().map(|t| t.rows).sum::<usize>(), flash_rows(&case));
    assert_eq!(plan.slots.len(), 1 + 15);

    let (case, plan) = plan_of("decode prefill tiles 8:1 d64");
    assert_eq!(plan.tiles.iter().map(|t| t.rows).collect::<Vec<_>>(), [FLASH_MIN_ROWS, 64, 64, 1]);
    assert_eq!(plan.tiles.iter().map(|t| t.rows).sum::<usize>(), flash_rows(&case));
    assert_eq!(plan.slots, [FLASH_MIN_ROWS + 64 + 65]);

    let (_, plan) = plan_of("decode all in tiles 8:2 d128");
    assert_eq!(plan.tiles.iter().map(|t| t.rows).collect::<Vec<_>>(), [1, 5, 1, 1, 64, 6]);
    assert!(plan.slots.is_empty() && plan.split.is_none());

    let (_, plan) = plan_of("decode group of 3 6:2 d64");
    assert_eq!(plan.split.map(|s| s.group_bound), Some(4));
}

#[test]
fn a_position_outside_the_cache_is_refused_before_any_launch() {
    let cache = Cache { keys: Buffer::filled(c"k", 2 * 4 * 64, 0f32), values: Buffer::filled(c"v", 2 * 4 * 64, 0f32), capacity: 4 };
    let step = Step { heads: 2, kv_heads: 2, head_dim: 64, scale: 0.125, sequence: &[0], positions: &[4], flash_min_rows: FLASH_MIN_ROWS };
    let Err(err) = append_and_attend(&step, &[0f32; 128], &[0f32; 128], &[0f32; 128], &[cache], Schedule::Ascending) else { panic!("a position past the cache was accepted") };
    assert!(err.contains("position 4 in a cache of 4 positions"), "{err}");
}
