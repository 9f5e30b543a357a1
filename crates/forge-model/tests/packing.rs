//! Packed rows (`Batch::position_ids`, HF's `DataCollatorWithFlattening`): sequences back to back
//! in one row give the hidden states, loss and gradients of the same sequences right-padded into
//! rows of their own (with and without activation recomputation); malformed positions are refused.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{model_dir, rel_err};
use forge_model::{load_model, Batch, Qwen3ForCausalLM};

/// Three sequences of different lengths with prompt tokens unlabelled (-100).
fn sequences() -> Vec<(Vec<u32>, Vec<i64>)> {
    [(5usize, 2usize, 3u32), (9, 4, 40), (1, 1, 90)]
        .into_iter()
        .map(|(len, prompt, first)| {
            let ids: Vec<u32> = (0..len as u32).map(|i| (first + 7 * i) % 100).collect();
            let labels = ids.iter().enumerate().map(|(i, &id)| if i < prompt { -100 } else { i64::from(id) }).collect();
            (ids, labels)
        })
        .collect()
}

/// The sequences right-padded, one per row.
fn padded(seqs: &[(Vec<u32>, Vec<i64>)]) -> Batch {
    let s = seqs.iter().map(|(ids, _)| ids.len()).max().unwrap();
    let (mut ids, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (i, l) in seqs {
        let pad = s - i.len();
        ids.extend(i.iter().copied().chain(std::iter::repeat_n(0, pad)));
        mask.extend(std::iter::repeat_n(1u32, i.len()).chain(std::iter::repeat_n(0, pad)));
        labels.extend(l.iter().copied().chain(std::iter::repeat_n(-100, pad)));
    }
    let b = seqs.len();
    Batch {
        input_ids: Tensor::from_vec(ids, (b, s), &Device::Cpu).unwrap(),
        attention_mask: Some(Tensor::from_vec(mask, (b, s), &Device::Cpu).unwrap()),
        labels: Some(Tensor::from_vec(labels, (b, s), &Device::Cpu).unwrap()),
        position_ids: None,
    }
}

/// The sequences packed into `rows` rows of equal length (`split[r]` sequences in row r). The
/// first label of every sequence is a real token on purpose: packing must not let the previous
/// sequence's last token predict it.
fn packed(seqs: &[(Vec<u32>, Vec<i64>)], split: &[usize]) -> Batch {
    let mut rows: Vec<(Vec<u32>, Vec<u32>, Vec<i64>)> = Vec::new();
    let mut next = seqs.iter();
    for &count in split {
        let (mut ids, mut positions, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (i, l) in next.by_ref().take(count) {
            ids.extend(i);
            positions.extend(0..i.len() as u32);
            labels.push(i64::from(i[0]));
            labels.extend(&l[1..]);
        }
        rows.push((ids, positions, labels));
    }
    let s = rows[0].0.len();
    assert!(rows.iter().all(|r| r.0.len() == s), "rows of equal length");
    type Row = (Vec<u32>, Vec<u32>, Vec<i64>);
    let flat = |f: &dyn Fn(&Row) -> Vec<i64>| -> Vec<i64> { rows.iter().flat_map(f).collect() };
    let b = rows.len();
    let u32s = |v: Vec<i64>| Tensor::from_vec(v.into_iter().map(|x| x as u32).collect::<Vec<u32>>(), (b, s), &Device::Cpu).unwrap();
    Batch {
        input_ids: u32s(flat(&|r| r.0.iter().map(|&x| i64::from(x)).collect())),
        attention_mask: None,
        labels: Some(Tensor::from_vec(flat(&|r| r.2.clone()), (b, s), &Device::Cpu).unwrap()),
        position_ids: Some(u32s(flat(&|r| r.1.iter().map(|&x| i64::from(x)).collect()))),
    }
}

fn model() -> Qwen3ForCausalLM {
    load_model(&model_dir("gqa2-untied-f32"), DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn packed_rows_give_the_loss_and_gradients_of_padded_rows() {
    let model = model();
    let seqs = sequences();
    let want_loss = model.loss(&padded(&seqs)).unwrap().to_scalar::<f32>().unwrap();
    // all three in one row of 5 + 9 + 1 tokens
    let one_row = packed(&seqs, &[3]);
    let got_loss = model.loss(&one_row).unwrap().to_scalar::<f32>().unwrap();
    assert!((got_loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "packed loss {got_loss} vs padded {want_loss}");
    for recompute in [false, true] {
        let (loss, grads) = model.loss_and_gradients(&padded(&seqs), recompute).unwrap();
        let (packed_loss, packed_grads) = model.loss_and_gradients(&one_row, recompute).unwrap();
        assert!((packed_loss - loss).abs() <= 1e-5 * loss.abs(), "recompute {recompute}: loss {packed_loss} vs {loss}");
        assert_eq!(grads.keys().collect::<Vec<_>>(), packed_grads.keys().collect::<Vec<_>>());
        for (name, g) in &grads {
            let err = rel_err(&packed_grads[name], g);
            assert!(err <= 1e-4, "recompute {recompute}: gradient of {name} differs by {err:.2e}");
        }
    }
}

#[test]
fn packed_hidden_states_equal_each_sequence_alone() {
    let model = model();
    let seqs = sequences();
    // two rows: [seq 0 (5) + seq 2 (1) + seq 0 again (5) = 11] needs equal rows, so pack pairs of
    // equal total length: (9) and (5 + 1 + ... ) is uneven; use seq 1 alone and seq 0 + seq 0'
    let seqs = vec![seqs[1].clone(), seqs[0].clone(), (seqs[0].0.iter().take(4).copied().collect(), seqs[0].1[..4].to_vec())];
    let batch = packed(&seqs, &[1, 2]);
    let hidden = model.forward_hidden_packed(&batch.input_ids, batch.position_ids.as_ref().unwrap()).unwrap();
    let mut at = [(0usize, 0usize), (1, 0), (1, 5)].into_iter();
    for (ids, _) in &seqs {
        let (row, start) = at.next().unwrap();
        let alone = model.forward_hidden(&Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(), None).unwrap();
        let part = hidden.narrow(0, row, 1).unwrap().narrow(1, start, ids.len()).unwrap();
        let err = rel_err(&part, &alone);
        assert!(err <= 1e-5, "sequence of {} tokens at row {row}, column {start}: relative error {err:.2e}", ids.len());
    }
}

#[test]
fn malformed_position_ids_are_refused_by_name() {
    let model = model();
    let mut batch = packed(&sequences(), &[3]);
    let ids = batch.input_ids.clone();
    let bad = |positions: Vec<u32>| Tensor::from_vec(positions, (1, 15), &Device::Cpu).unwrap();
    let err = |batch: &Batch| model.loss(batch).unwrap_err().to_string();

    batch.position_ids = Some(bad((1..16).collect()));
    assert!(err(&batch).contains("row 0 starts at 1"), "{}", err(&batch));
    batch.position_ids = Some(bad((0..5).chain(0..4).chain(5..7).chain(0..4).collect()));
    assert!(err(&batch).contains("goes 3 then 5"), "{}", err(&batch));
    batch.position_ids = Some(Tensor::from_vec((0..15u32).collect(), (15, 1), &Device::Cpu).unwrap());
    assert!(err(&batch).contains("position_ids has shape [15, 1]"), "{}", err(&batch));
    batch.position_ids = Some(bad((0..15).collect()));
    batch.attention_mask = Some(ids.ones_like().unwrap());
    assert!(err(&batch).contains("packed rows hold no padding"), "{}", err(&batch));
}
