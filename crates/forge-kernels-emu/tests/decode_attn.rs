//! The decode-attention op (kernels/decode_attn.cu's append, split-K attention and combine;
//! kernels/flash_attn.cu's `flash_fwd_cached` for prefill runs), run on the CPU by the SIMT
//! emulator, against the host decode path's attention (`forge_kernels::cached_attention::attend`):
//! GQA 8:1, 4:1, 3:1 and 1:1 (the split kernel's group bounds 8, 4 and 2), head dim 64 and 128,
//! f32, bf16 and f16, steps mixing one-token decodes, short and long prefill runs (tiles of 64
//! with partial last tiles, a run of exactly `FLASH_MIN_ROWS`, a first prefill from position 0,
//! every run through tiles at threshold 1) and a sequence's first token, caches longer
//! than one split (256 positions) and not a multiple of it, caches filled to their last position.
//! Every cache position the step must not read holds NaN, the outputs start as NaN, every buffer
//! ends at a guard page, and both thread orders must agree bit for bit.

use forge_kernels::cached_attention::attend;
use forge_kernels::decode_attn::{CachedAttentionPlan, FLASH_MIN_ROWS};
use forge_kernels::testing::{parity_tolerance, relative_error};
use forge_kernels_emu::decode_attn::{append_and_attend, Cache, DecodeFloat, Step};
use forge_kernels_emu::{Buffer, Schedule};
use half::{bf16, f16};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// A storage type with its f32 conversions.
trait Elem: DecodeFloat + PartialEq + std::fmt::Debug {
    const DTYPE: candle_core::DType;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}
impl Elem for f32 {
    const DTYPE: candle_core::DType = candle_core::DType::F32;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}
impl Elem for bf16 {
    const DTYPE: candle_core::DType = candle_core::DType::BF16;
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Elem for f16 {
    const DTYPE: candle_core::DType = candle_core::DType::F16;
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

struct Case {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Per sequence: (positions cached before the step, new rows in the step, capacity).
    sequences: Vec<(usize, usize, usize)>,
    seed: u64,
    flash_min_rows: usize,
}

fn random<T: Elem>(rng: &mut StdRng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(StandardNormal.sample(rng))).collect()
}

/// Runs the case under `schedule`: the output, and each cache's keys and values afterwards.
struct Outcome<T> {
    o: Vec<T>,
    caches: Vec<(Vec<T>, Vec<T>)>,
    plan: CachedAttentionPlan,
}

fn run<T: Elem>(case: &Case, schedule: Schedule) -> (Outcome<T>, Vec<T>, Vec<usize>, Vec<usize>) {
    let (h, h_kv, d) = (case.heads, case.kv_heads, case.head_dim);
    let mut rng = StdRng::seed_from_u64(case.seed);
    let mut caches = Vec::new();
    let (mut sequence, mut positions) = (Vec::new(), Vec::new());
    for (s, &(cached, new, capacity)) in case.sequences.iter().enumerate() {
        // positions already cached hold values; the rest NaN, which a read would spread
        let fill = |rng: &mut StdRng| -> Vec<T> {
            let mut data = vec![T::POISON; h_kv * capacity * d];
            for head in 0..h_kv {
                let rows = random::<T>(rng, cached * d);
                data[head * capacity * d..][..cached * d].copy_from_slice(&rows);
            }
            data
        };
        let (keys, values) = (fill(&mut rng), fill(&mut rng));
        caches.push(Cache { keys: Buffer::from_slice(c"cache keys", &keys), values: Buffer::from_slice(c"cache values", &values), capacity });
        sequence.extend(std::iter::repeat_n(s, new));
        positions.extend(cached..cached + new);
    }
    let n = positions.len();
    let (q, k, v) = (random::<T>(&mut rng, n * h * d), random::<T>(&mut rng, n * h_kv * d), random::<T>(&mut rng, n * h_kv * d));
    let step = Step { heads: h, kv_heads: h_kv, head_dim: d, scale: 1.0 / (d as f32).sqrt(), sequence: &sequence, positions: &positions, flash_min_rows: case.flash_min_rows };
    let (o, plan) = append_and_attend(&step, &q, &k, &v, &caches, schedule).unwrap_or_else(|e| panic!("{schedule:?}: {e}"));
    // the new rows must be in the caches where the reference reads them
    for (r, (&s, &p)) in sequence.iter().zip(&positions).enumerate() {
        let capacity = caches[s].capacity;
        let (keys, values) = (caches[s].keys.to_vec(), caches[s].values.to_vec());
        for head in 0..h_kv {
            let at = (head * capacity + p) * d;
            assert_eq!(keys[at..at + d], k[(r * h_kv + head) * d..][..d], "row {r}: key of head {head} not appended at position {p}");
            assert_eq!(values[at..at + d], v[(r * h_kv + head) * d..][..d], "row {r}: value of head {head} not appended at position {p}");
        }
    }
    let caches = caches.iter().map(|c| (c.keys.to_vec(), c.values.to_vec())).collect();
    (Outcome { o, caches, plan }, q, sequence, positions)
}

/// Checks the case and returns the plan it ran by.
fn assert_decode_matches_reference<T: Elem>(case: &Case) -> CachedAttentionPlan {
    let (h, h_kv, d) = (case.heads, case.kv_heads, case.head_dim);
    let (ascending, q, sequence, positions) = run::<T>(case, Schedule::Ascending);
    let (descending, ..) = run::<T>(case, Schedule::Descending);
    assert!(ascending.o == descending.o, "the two thread orders disagree");

    // the host decode path's attention over the caches as the step left them
    let group = h / h_kv;
    let mut want = vec![0f32; q.len()];
    for (r, (&s, &p)) in sequence.iter().zip(&positions).enumerate() {
        let capacity = case.sequences[s].2;
        let (keys, values) = &ascending.caches[s];
        for head in 0..h_kv {
            let rows = |cache: &[T]| -> Vec<f32> { cache[head * capacity * d..][..(p + 1) * d].iter().map(|&x| x.to_f32()).collect() };
            let queries: Vec<f32> = q[(r * h + head * group) * d..][..group * d].iter().map(|&x| x.to_f32()).collect();
            let out = &mut want[(r * h + head * group) * d..][..group * d];
            attend(&queries, &rows(keys), &rows(values), d, 1.0 / (d as f32).sqrt(), &mut Vec::new(), out);
        }
    }
    let got: Vec<f32> = ascending.o.iter().map(|&x| x.to_f32()).collect();
    if let Some(i) = got.iter().position(|x| !x.is_finite()) {
        panic!("output element {i} is {} (unwritten, or a NaN cache position was read)", got[i]);
    }
    let err = relative_error(&got, &want);
    let tolerance = parity_tolerance(T::DTYPE);
    let (tiles, slots) = (ascending.plan.tiles.len(), ascending.plan.slots.len());
    eprintln!("decode {:?} h {h} h_kv {h_kv} d {d} {:?} ({tiles} flash tiles, {slots} split-K rows): relative error {err:.2e} (tolerance {tolerance:.0e})", T::DTYPE, case.sequences);
    assert!(err <= tolerance, "relative error {err:.2e} above {tolerance:.0e}");
    ascending.plan
}

/// Sequence 0 decodes one token after 300 cached (two splits), sequence 1 prefills 5 rows after 40,
/// sequence 2 takes its first token, sequence 3 one token after 511 (the second split's last
/// position).
fn mixed_step() -> Vec<(usize, usize, usize)> {
    vec![(300, 1, 320), (40, 5, 64), (0, 1, 8), (511, 1, 512)]
}

/// Rows of each (cached, new, capacity) sequence that the plan must send through flash tiles.
fn flash_rows(sequences: &[(usize, usize, usize)]) -> usize {
    sequences.iter().map(|&(_, new, _)| new).filter(|&new| new >= FLASH_MIN_ROWS).sum()
}

#[test]
fn prefill_runs_go_through_flash_tiles_gqa_4_to_1_head_dim_128_bf16() {
    // a decode over two splits; 130 rows from 40 (tiles 64, 64, 2); a first prefill of 70 rows
    // filling its cache to the last position (64, 6); 15 rows, one short of a flash run
    let sequences = vec![(300, 1, 320), (40, 130, 170), (0, 70, 70), (5, 15, 24)];
    let plan = assert_decode_matches_reference::<bf16>(&Case { heads: 8, kv_heads: 2, head_dim: 128, sequences: sequences.clone(), seed: 6, flash_min_rows: FLASH_MIN_ROWS });
    assert_eq!(plan.tiles.iter().map(|t| t.rows).collect::<Vec<_>>(), [64, 64, 2, 64, 6]);
    assert_eq!(plan.tiles.iter().map(|t| t.rows).sum::<usize>(), flash_rows(&sequences));
    assert_eq!(plan.slots.len(), 1 + 15);
}

#[test]
fn prefill_runs_go_through_flash_tiles_gqa_8_to_1_head_dim_64_bf16() {
    // exactly FLASH_MIN_ROWS rows from 0; one whole tile after 100; 65 rows after 63 over a long
    // cache; a one-token decode
    let sequences = vec![(0, FLASH_MIN_ROWS, FLASH_MIN_ROWS), (100, 64, 200), (63, 65, 600), (511, 1, 512)];
    let plan = assert_decode_matches_reference::<bf16>(&Case { heads: 8, kv_heads: 1, head_dim: 64, sequences: sequences.clone(), seed: 7, flash_min_rows: FLASH_MIN_ROWS });
    assert_eq!(plan.tiles.iter().map(|t| t.rows).collect::<Vec<_>>(), [FLASH_MIN_ROWS, 64, 64, 1]);
    assert_eq!(plan.tiles.iter().map(|t| t.rows).sum::<usize>(), flash_rows(&sequences));
    assert_eq!(plan.slots, [FLASH_MIN_ROWS + 64 + 65]);
}

#[test]
fn decodes_and_short_runs_through_one_row_flash_tiles_when_the_threshold_is_1() {
    // what the GPU threshold bench (benches/gpu_cached_attention.rs) times: every run in flash tiles,
    // a single decode row at a long position (its tile's other 63 rows empty) included
    let sequences = vec![(300, 1, 320), (40, 5, 64), (0, 1, 8), (511, 1, 512), (100, 70, 200)];
    let case = Case { heads: 8, kv_heads: 2, head_dim: 128, sequences, seed: 8, flash_min_rows: 1 };
    let plan = assert_decode_matches_reference::<bf16>(&case);
    assert_eq!(plan.tiles.iter().map(|t| t.rows).collect::<Vec<_>>(), [1, 5, 1, 1, 64, 6]);
    assert!(plan.slots.is_empty() && plan.split.is_none());
}

#[test]
fn gqa_8_to_1_head_dim_128_bf16() {
    assert_decode_matches_reference::<bf16>(&Case { heads: 8, kv_heads: 1, head_dim: 128, sequences: mixed_step(), seed: 1, flash_min_rows: FLASH_MIN_ROWS });
}

#[test]
fn gqa_4_to_1_head_dim_64_bf16() {
    assert_decode_matches_reference::<bf16>(&Case { heads: 8, kv_heads: 2, head_dim: 64, sequences: mixed_step(), seed: 2, flash_min_rows: FLASH_MIN_ROWS });
}

#[test]
fn three_query_heads_per_kv_head_run_in_the_kernel_built_for_four_bf16() {
    let case = Case { heads: 6, kv_heads: 2, head_dim: 64, sequences: mixed_step(), seed: 9, flash_min_rows: FLASH_MIN_ROWS };
    let plan = assert_decode_matches_reference::<bf16>(&case);
    assert_eq!(plan.split.map(|s| s.group_bound), Some(4));
}

#[test]
fn one_query_head_per_kv_head_f32() {
    assert_decode_matches_reference::<f32>(&Case { heads: 4, kv_heads: 4, head_dim: 64, sequences: vec![(600, 1, 700), (3, 2, 5)], seed: 3, flash_min_rows: FLASH_MIN_ROWS });
}

#[test]
fn gqa_4_to_1_head_dim_128_f32_over_three_splits() {
    assert_decode_matches_reference::<f32>(&Case { heads: 8, kv_heads: 2, head_dim: 128, sequences: vec![(700, 1, 701)], seed: 4, flash_min_rows: FLASH_MIN_ROWS });
}

#[test]
fn gqa_8_to_1_head_dim_128_f16_over_six_splits() {
    assert_decode_matches_reference::<f16>(&Case { heads: 16, kv_heads: 2, head_dim: 128, sequences: vec![(1500, 1, 1536), (255, 2, 300)], seed: 5, flash_min_rows: FLASH_MIN_ROWS });
}

#[test]
fn a_position_outside_the_cache_is_refused_before_any_launch() {
    let cache = Cache { keys: Buffer::filled(c"k", 2 * 4 * 64, 0f32), values: Buffer::filled(c"v", 2 * 4 * 64, 0f32), capacity: 4 };
    let step = Step { heads: 2, kv_heads: 2, head_dim: 64, scale: 0.125, sequence: &[0], positions: &[4], flash_min_rows: FLASH_MIN_ROWS };
    let Err(err) = append_and_attend(&step, &[0f32; 128], &[0f32; 128], &[0f32; 128], &[cache], Schedule::Ascending) else { panic!("a position past the cache was accepted") };
    assert!(err.contains("position 4 in a cache of 4 positions"), "{err}");
}
