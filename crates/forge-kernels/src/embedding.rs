//! Gradient of an embedding lookup with respect to the table.
//!
//! candle's backward of `weight.index_select(ids, 0)` builds it as `zeros_like(weight)` then
//! `index_add` into a second table-sized buffer; here it is one buffer, filled in the same order
//! (so the values are identical).

use candle_core::{bail, DType, Device, Result, Tensor};

use crate::cpu::Elem;

/// `d weight` of `weight.index_select(ids, 0)` given `grad: [n, h]`, the gradient of the looked-up
/// rows, with `ids: [n]` u32: row `v` of the `[vocab, h]` result is the sum of the rows of `grad`
/// whose id is `v`, added in the order they appear.
pub fn embedding_gradient(ids: &Tensor, grad: &Tensor, vocab: usize) -> Result<Tensor> {
    let (n, h) = grad.dims2()?;
    if ids.dims() != [n] || ids.dtype() != DType::U32 {
        bail!("embedding_gradient: ids must be u32 of shape [{n}], got {:?} {:?}", ids.dtype(), ids.dims());
    }
    let id_values = ids.to_vec1::<u32>()?;
    if let Some(id) = id_values.iter().find(|&&id| id as usize >= vocab) {
        bail!("embedding_gradient: id {id} is outside the table (size {vocab})");
    }
    match (grad.device(), grad.dtype()) {
        (Device::Cpu, DType::F32) => scatter_rows::<f32>(&id_values, grad, vocab),
        (Device::Cpu, DType::BF16) => scatter_rows::<half::bf16>(&id_values, grad, vocab),
        (Device::Cpu, DType::F16) => scatter_rows::<half::f16>(&id_values, grad, vocab),
        _ => Tensor::zeros((vocab, h), grad.dtype(), grad.device())?.index_add(ids, grad, 0),
    }
}

fn scatter_rows<T: Elem + candle_core::WithDType>(ids: &[u32], grad: &Tensor, vocab: usize) -> Result<Tensor> {
    let h = grad.dim(1)?;
    let rows = grad.flatten_all()?.to_vec1::<T>()?;
    let mut table = vec![T::from_f32(0.0); vocab * h];
    for (&id, row) in ids.iter().zip(rows.chunks(h.max(1))) {
        let dst = &mut table[id as usize * h..(id as usize + 1) * h];
        for (d, &g) in dst.iter_mut().zip(row) {
            *d = T::from_f32(d.to_f32() + g.to_f32());
        }
    }
    Tensor::from_vec(table, (vocab, h), &Device::Cpu)
}
