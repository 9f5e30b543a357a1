//! Attention of a decoding step's query heads over one sequence's cached keys and values (CPU,
//! f32): scores by the register-tiled `x·wᵀ` of [`few_rows`](crate::few_rows), the weighted sum
//! of values in AVX-512 registers where the CPU has it. The keys and values are one contiguous run
//! of positions ([`attend`]) or blocks of a paged cache read in place ([`attend_blocks`]): the same
//! arithmetic in the same order, so both give the same bits where the blocks hold a multiple of
//! [`SCORE_TILE`] positions.

use crate::few_rows;

/// `softmax(q·kᵀ·scale)·v` for the query heads `queries: [heads, d]` that read one key/value head
/// (`keys`, `values`: `[positions, d]`), into `out: [heads, d]`. `scores` is scratch space.
pub fn attend(queries: &[f32], keys: &[f32], values: &[f32], d: usize, scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    attend_blocks(queries, &[keys], &[values], d, scale, scores, out)
}

/// Key rows the score product takes together (`few_rows`' tile width): blocks of a multiple of it
/// split the positions into the same tiles as one contiguous run.
pub const SCORE_TILE: usize = 4;

/// [`attend`] over positions held in blocks, in order: `key_blocks[i]` and `value_blocks[i]` are
/// `[rows_i, d]` (a paged cache's blocks of one key/value head, read where they lie).
pub fn attend_blocks(queries: &[f32], key_blocks: &[&[f32]], value_blocks: &[&[f32]], d: usize, scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    let heads = queries.len() / d;
    let positions: usize = key_blocks.iter().map(|k| k.len() / d).sum();
    let widest = key_blocks.iter().map(|k| k.len() / d).max().unwrap_or(0);
    // the scores [heads, positions], then room for one block's [heads, rows] when there are several
    let block_room = if key_blocks.len() > 1 { heads * widest } else { 0 };
    scores.resize(heads * positions + block_room, 0.0);
    let (scores, block_scores) = scores.split_at_mut(heads * positions);
    if let [keys] = key_blocks {
        few_rows::product_on_this_thread(queries, keys, d, scores);
    } else {
        let mut first = 0;
        for keys in key_blocks {
            let rows = keys.len() / d;
            let block_scores = &mut block_scores[..heads * rows];
            few_rows::product_on_this_thread(queries, keys, d, block_scores);
            for (head, row) in block_scores.chunks_exact(rows).enumerate() {
                scores[head * positions + first..head * positions + first + rows].copy_from_slice(row);
            }
            first += rows;
        }
    }
    for (row, o) in scores.chunks_exact_mut(positions).zip(out.chunks_exact_mut(d)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0f32;
        for s in row.iter_mut() {
            *s = ((*s - max) * scale).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|s| *s *= inv);
        weighted_sum(row, value_blocks, o);
    }
}

/// The value rows of positions `0..` in order, across blocks `[rows_i, d]`.
fn value_rows<'a>(value_blocks: &'a [&'a [f32]], d: usize) -> impl Iterator<Item = &'a [f32]> + Clone {
    value_blocks.iter().flat_map(move |block| block.chunks_exact(d))
}

/// `out = Σ_t weights[t] · values[t]` over the value rows of `value_blocks` (positions in order).
fn weighted_sum(weights: &[f32], value_blocks: &[&[f32]], out: &mut [f32]) {
    assert_eq!(value_blocks.iter().map(|b| b.len()).sum::<usize>(), weights.len() * out.len());
    #[cfg(target_arch = "x86_64")]
    if few_rows::has_avx512() {
        // SAFETY: AVX-512F was detected.
        return unsafe { avx512::weighted_sum(weights, value_rows(value_blocks, out.len()), out) };
    }
    portable_weighted_sum(weights, value_blocks, out)
}

fn portable_weighted_sum(weights: &[f32], value_blocks: &[&[f32]], out: &mut [f32]) {
    out.fill(0.0);
    for (&p, v) in weights.iter().zip(value_rows(value_blocks, out.len())) {
        for (o, &vi) in out.iter_mut().zip(v) {
            *o += p * vi;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    const LANES: usize = 16;
    /// Output lanes kept in registers while the weights stream past: 8 vectors of 16, so
    /// head dims up to 128 take one pass and the multiply-adds have independent chains.
    const VECTORS: usize = 8;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_sum<'a>(weights: &[f32], rows: impl Iterator<Item = &'a [f32]> + Clone, out: &mut [f32]) {
        let d = out.len();
        for start in (0..d).step_by(LANES * VECTORS) {
            let masks: [__mmask16; VECTORS] = std::array::from_fn(|v| lane_mask(d, start + v * LANES));
            let mut acc = [_mm512_setzero_ps(); VECTORS];
            for (&p, values) in weights.iter().zip(rows.clone()) {
                let p = _mm512_set1_ps(p);
                let row = values[start..].as_ptr();
                for (v, a) in acc.iter_mut().enumerate() {
                    if masks[v] != 0 {
                        // SAFETY: the mask holds only lanes below d of row t.
                        *a = _mm512_fmadd_ps(p, unsafe { _mm512_maskz_loadu_ps(masks[v], row.add(v * LANES)) }, *a);
                    }
                }
            }
            for (v, a) in acc.iter().enumerate() {
                // SAFETY: as for the loads, within `out`.
                unsafe { _mm512_mask_storeu_ps(out[start..].as_mut_ptr().add(v * LANES), masks[v], *a) };
            }
        }
    }

    /// The lanes of the vector starting at `from` that lie below `len`.
    fn lane_mask(len: usize, from: usize) -> __mmask16 {
        match len.saturating_sub(from) {
            0 => 0,
            n if n >= LANES => 0xFFFF,
            n => (1u16 << n) - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_weighted_sums_match_the_definition() {
        for d in [1, 16, 37, 130, 300] {
            let weights: Vec<f32> = (0..7).map(|t| (t as f32 * 0.3).cos()).collect();
            let values: Vec<f32> = (0..7 * d).map(|i| (i as f32 * 0.11).sin()).collect();
            let want: Vec<f32> = (0..d).map(|i| (0..7).map(|t| weights[t] * values[t * d + i]).sum()).collect();
            let (mut fast, mut portable) = (vec![f32::NAN; d], vec![f32::NAN; d]);
            weighted_sum(&weights, &[&values], &mut fast);
            portable_weighted_sum(&weights, &[&values], &mut portable);
            for (i, ((a, b), w)) in fast.iter().zip(&portable).zip(&want).enumerate() {
                assert!((a - w).abs() < 1e-5 && (b - w).abs() < 1e-5, "d {d} lane {i}: {a}, {b} vs {w}");
            }
        }
    }

    #[test]
    fn attention_over_blocks_is_that_over_their_concatenation_bit_for_bit() {
        // 2 query heads, 23 positions in blocks of 8 (a multiple of the score tile) and a last of 7
        for d in [4, 64, 130] {
            let value = |i: usize, s: f32| ((i as f32) * s).sin();
            let queries: Vec<f32> = (0..2 * d).map(|i| value(i, 0.37)).collect();
            let keys: Vec<f32> = (0..23 * d).map(|i| value(i, 0.71)).collect();
            let values: Vec<f32> = (0..23 * d).map(|i| value(i, 1.3)).collect();
            let (mut whole, mut paged) = (vec![f32::NAN; 2 * d], vec![f32::NAN; 2 * d]);
            attend(&queries, &keys, &values, d, 0.5, &mut Vec::new(), &mut whole);
            let blocks = |rows: &[f32]| -> Vec<Vec<f32>> { rows.chunks(8 * d).map(<[f32]>::to_vec).collect() };
            let (key_blocks, value_blocks) = (blocks(&keys), blocks(&values));
            let key_slices: Vec<&[f32]> = key_blocks.iter().map(Vec::as_slice).collect();
            let value_slices: Vec<&[f32]> = value_blocks.iter().map(Vec::as_slice).collect();
            attend_blocks(&queries, &key_slices, &value_slices, d, 0.5, &mut Vec::new(), &mut paged);
            assert_eq!(whole, paged, "d {d}");
        }
    }

    #[test]
    fn attend_matches_a_direct_softmax() {
        // 3 query heads over 5 positions; head dims off and on the vector width
        for d in [4, 16, 37, 64, 130] {
            let value = |i: usize, s: f32| ((i as f32) * s).sin();
            let queries: Vec<f32> = (0..3 * d).map(|i| value(i, 0.37)).collect();
            let keys: Vec<f32> = (0..5 * d).map(|i| value(i, 0.71)).collect();
            let values: Vec<f32> = (0..5 * d).map(|i| value(i, 1.3)).collect();
            let mut out = vec![f32::NAN; 3 * d];
            attend(&queries, &keys, &values, d, 0.5, &mut Vec::new(), &mut out);
            for h in 0..3 {
                let scores: Vec<f64> = (0..5).map(|t| 0.5 * (0..d).map(|i| f64::from(queries[h * d + i] * keys[t * d + i])).sum::<f64>()).collect();
                let total: f64 = scores.iter().map(|s| s.exp()).sum();
                for i in 0..d {
                    let expected: f64 = (0..5).map(|t| scores[t].exp() / total * f64::from(values[t * d + i])).sum();
                    let got = f64::from(out[h * d + i]);
                    assert!((got - expected).abs() < 1e-5, "d {d} head {h} dim {i}: {got} vs {expected}");
                }
            }
        }
    }
}
