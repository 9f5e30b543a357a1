//! Micro-batches by a token budget: each epoch visits the examples in a seeded random order;
//! within windows of that order, examples are sorted by length and filled greedily into
//! micro-batches of at most `micro_batch_tokens` tokens: right-padded rows (padded tokens count),
//! or with packing one row of examples back to back (HF's `DataCollatorWithFlattening`: no
//! padding; positions restart at 0 for each example, which keeps attention and labels inside it).
//! The plan of an epoch is a pure function of (seed, epoch), so a resumed run sees exactly the
//! same batches.

use candle_core::{Device, Tensor};
use forge_model::Batch;
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};

use super::data::Example;
use crate::Result;

/// Examples sorted by length together (a bucket) — large enough to cut padding, small enough
/// to keep the order random.
const SORT_WINDOW: usize = 64;

/// Indices of the examples of each micro-batch of `epoch`: at most `micro_batch_tokens` padded
/// tokens, or with `packing` at most that many tokens back to back (an example longer than the
/// budget gets a micro-batch of its own).
pub fn plan_epoch(examples: &[Example], micro_batch_tokens: usize, packing: bool, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut batches = Vec::new();
    for window in order.chunks_mut(SORT_WINDOW) {
        window.sort_by_key(|&i| std::cmp::Reverse(examples[i].input_ids.len()));
        let mut current: Vec<usize> = Vec::new();
        let (mut longest, mut total) = (0, 0);
        for &i in window.iter() {
            let len = examples[i].input_ids.len();
            let cost = if packing { total + len } else { longest.max(len) * (current.len() + 1) };
            if !current.is_empty() && cost > micro_batch_tokens {
                batches.push(std::mem::take(&mut current));
                (longest, total) = (0, 0);
            }
            (longest, total) = (longest.max(len), total + len);
            current.push(i);
        }
        if !current.is_empty() {
            batches.push(current);
        }
    }
    // shuffle batch order too, so long and short batches interleave
    batches.shuffle(&mut StdRng::seed_from_u64(seed ^ epoch.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03)));
    batches
}

/// A right-padded model batch of the given examples.
pub fn collate(examples: &[&Example], pad_id: u32, device: &Device) -> Result<Batch> {
    let b = examples.len();
    let s = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(1);
    let mut ids = vec![pad_id; b * s];
    let mut mask = vec![0u32; b * s];
    let mut labels = vec![-100i64; b * s];
    for (r, e) in examples.iter().enumerate() {
        let n = e.input_ids.len();
        ids[r * s..r * s + n].copy_from_slice(&e.input_ids);
        mask[r * s..r * s + n].fill(1);
        labels[r * s..r * s + n].copy_from_slice(&e.labels);
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (b, s), device)?,
        attention_mask: Some(Tensor::from_vec(mask, (b, s), device)?),
        labels: Some(Tensor::from_vec(labels, (b, s), device)?),
        position_ids: None,
    })
}

/// The given examples packed back to back into one row: `[1, Σ len]` ids and labels, and
/// position ids restarting at 0 for each example (no attention mask: there is no padding).
pub fn collate_packed(examples: &[&Example], device: &Device) -> Result<Batch> {
    let total: usize = examples.iter().map(|e| e.input_ids.len()).sum();
    let ids: Vec<u32> = examples.iter().flat_map(|e| e.input_ids.iter().copied()).collect();
    let labels: Vec<i64> = examples.iter().flat_map(|e| e.labels.iter().copied()).collect();
    let positions: Vec<u32> = examples.iter().flat_map(|e| 0..e.input_ids.len() as u32).collect();
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (1, total), device)?,
        attention_mask: None,
        labels: Some(Tensor::from_vec(labels, (1, total), device)?),
        position_ids: Some(Tensor::from_vec(positions, (1, total), device)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(len: usize) -> Example {
        Example { line: len, input_ids: vec![1; len], labels: vec![1; len] }
    }

    #[test]
    fn plans_respect_the_budget_cover_every_example_and_are_reproducible() {
        let examples: Vec<Example> = (1..200).map(|i| example(5 + (i * 37) % 90)).collect();
        for packing in [false, true] {
            let plan = plan_epoch(&examples, 256, packing, 7, 0);
            for batch in &plan {
                let lengths = batch.iter().map(|&i| examples[i].input_ids.len());
                let tokens = if packing { lengths.sum::<usize>() } else { lengths.max().unwrap() * batch.len() };
                assert!(batch.len() == 1 || tokens <= 256, "packing {packing}: {tokens} tokens");
            }
            let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
            seen.sort();
            assert_eq!(seen, (0..examples.len()).collect::<Vec<_>>());
            assert_eq!(plan, plan_epoch(&examples, 256, packing, 7, 0));
            assert_ne!(plan, plan_epoch(&examples, 256, packing, 7, 1));
        }
        // packing fills the budget with tokens instead of padding: fewer micro-batches
        let (padded, packed) = (plan_epoch(&examples, 256, false, 7, 0).len(), plan_epoch(&examples, 256, true, 7, 0).len());
        assert!(packed < padded, "{packed} packed vs {padded} padded micro-batches");
    }

    #[test]
    fn collate_packed_puts_examples_back_to_back_with_restarting_positions() {
        let (a, b) = (Example { line: 1, input_ids: vec![5, 6, 7], labels: vec![-100, 6, 7] }, example(2));
        let batch = collate_packed(&[&a, &b], &Device::Cpu).unwrap();
        assert_eq!(batch.input_ids.to_vec2::<u32>().unwrap(), [[5, 6, 7, 1, 1]]);
        assert_eq!(batch.position_ids.unwrap().to_vec2::<u32>().unwrap(), [[0, 1, 2, 0, 1]]);
        assert_eq!(batch.labels.unwrap().to_vec2::<i64>().unwrap(), [[-100, 6, 7, 1, 1]]);
        assert!(batch.attention_mask.is_none());
    }

    #[test]
    fn collate_pads_right_and_masks_labels() {
        let (a, b) = (example(3), example(1));
        let batch = collate(&[&a, &b], 9, &Device::Cpu).unwrap();
        assert_eq!(batch.input_ids.to_vec2::<u32>().unwrap(), [[1, 1, 1], [1, 9, 9]]);
        assert_eq!(batch.attention_mask.unwrap().to_vec2::<u32>().unwrap(), [[1, 1, 1], [1, 0, 0]]);
        assert_eq!(batch.labels.unwrap().to_vec2::<i64>().unwrap(), [[1, 1, 1], [1, -100, -100]]);
    }
}
