//! Global gradient-norm clipping with the semantics of `torch.nn.utils.clip_grad_norm_`
//! (L2 norm over all gradients together; coefficient `max_norm / (norm + 1e-6)` clamped to 1).

use candle_core::{DType, Tensor};
use forge_model::Gradients;

use crate::fused::sum_of_squares_cpu;
use crate::{Result, TrainError};

/// The squared L2 norm of each gradient, in the map's order. CPU tensors are reduced in one
/// pass with f64 accumulation; device tensors on the device with a single synchronisation.
pub(crate) fn squared_norms(grads: &Gradients) -> Result<Vec<f64>> {
    let mut out = vec![0f64; grads.len()];
    let mut on_device = Vec::new();
    for (i, grad) in grads.values().enumerate() {
        if grad.device().is_cpu() {
            out[i] = sum_of_squares_cpu(grad)?;
        } else {
            on_device.push((i, grad.to_dtype(DType::F32)?.sqr()?.sum_all()?));
        }
    }
    if !on_device.is_empty() {
        let sums: Vec<Tensor> = on_device.iter().map(|(_, t)| t.clone()).collect();
        let values = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
        for ((i, _), v) in on_device.iter().zip(values) {
            out[*i] = v as f64;
        }
    }
    Ok(out)
}

/// The global L2 norm of all gradients. NaN or infinity in any gradient is an error that names
/// the first tensor holding one.
pub fn grad_norm(grads: &Gradients) -> Result<f32> {
    let squares = squared_norms(grads)?;
    let norm = squares.iter().sum::<f64>().sqrt() as f32;
    if !norm.is_finite() {
        let name = grads.keys().zip(&squares).find(|(_, s)| !s.is_finite()).map(|(n, _)| n.clone());
        return Err(TrainError::NonFiniteGradients { name: name.unwrap_or_else(|| "(overflow of the sum)".into()), norm });
    }
    Ok(norm)
}

/// torch's clip coefficient, in f32 as torch computes it, clamped to at most 1.
pub fn clip_coefficient(norm: f32, max_norm: f64) -> f32 {
    (max_norm as f32 / (norm + 1e-6)).min(1.0)
}

/// Scales every gradient so that their global norm is at most `max_norm`; returns the norm
/// before clipping. The optimizer does this itself (folded into its update) when
/// `AdamWConfig::max_grad_norm` is set; this is for callers that need the clipped gradients.
pub fn clip_grad_norm(grads: &mut Gradients, max_norm: f64) -> Result<f32> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(TrainError::InvalidConfig(format!("max_grad_norm must be > 0, got {max_norm}")));
    }
    let norm = grad_norm(grads)?;
    let coef = clip_coefficient(norm, max_norm);
    if coef < 1.0 {
        for grad in grads.values_mut() {
            let scale = Tensor::new(coef, grad.device())?.to_dtype(grad.dtype())?;
            *grad = grad.broadcast_mul(&scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grads(values: &[(&str, Vec<f32>)]) -> Gradients {
        values.iter().map(|(n, v)| (n.to_string(), Tensor::new(v.as_slice(), &Device::Cpu).unwrap())).collect()
    }

    #[test]
    fn norm_spans_all_tensors() {
        let g = grads(&[("a", vec![3.0]), ("b", vec![4.0, 0.0])]);
        assert_eq!(grad_norm(&g).unwrap(), 5.0);
    }

    #[test]
    fn clipping_scales_to_max_norm_and_returns_the_old_norm() {
        let mut g = grads(&[("a", vec![3.0]), ("b", vec![4.0, 0.0])]);
        assert_eq!(clip_grad_norm(&mut g, 1.0).unwrap(), 5.0);
        let after = grad_norm(&g).unwrap();
        assert!((after - 1.0).abs() < 1e-6, "{after}");
        let mut small = grads(&[("a", vec![0.1])]);
        clip_grad_norm(&mut small, 1.0).unwrap();
        assert_eq!(small["a"].to_vec1::<f32>().unwrap(), vec![0.1]);
    }

    #[test]
    fn non_finite_gradients_name_the_tensor() {
        let g = grads(&[("a", vec![1.0]), ("b", vec![f32::NAN])]);
        match grad_norm(&g) {
            Err(TrainError::NonFiniteGradients { name, .. }) => assert_eq!(name, "b"),
            other => panic!("expected NonFiniteGradients, got {other:?}"),
        }
    }
}
