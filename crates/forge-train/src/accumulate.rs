//! Gradient accumulation over micro-batches.

use candle_core::{DType, Tensor};
use forge_model::Gradients;

use crate::{Result, TrainError};

/// Sums the gradients of several micro-batches (in f32, whatever the model dtype: bf16 sums
/// lose low bits quickly) and returns their mean. Summing then scaling by 1/n equals averaging
/// the micro-batch losses, which is what a larger batch of equally weighted micro-batches means.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    sum: Gradients,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one micro-batch's gradients. Parameters missing from some micro-batches are summed
    /// over the micro-batches that have them (and still divided by the total count).
    pub fn add(&mut self, grads: Gradients) -> Result<()> {
        for (name, grad) in grads {
            // Never mutate in place: a gradient may share storage with the caller's tensors.
            let grad = grad.to_dtype(DType::F32)?;
            let sum = match self.sum.remove(&name) {
                Some(previous) => (previous + grad)?,
                None => grad,
            };
            self.sum.insert(name, sum);
        }
        self.micro_batches += 1;
        Ok(())
    }

    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The sum of the gradients added (f32) and how many micro-batches they came from: what a
    /// data-parallel reduction (`DistributedAdamW::reduce`) takes.
    pub fn into_sum(self) -> (Gradients, usize) {
        (self.sum, self.micro_batches)
    }

    /// The mean gradient over the micro-batches added so far (f32).
    pub fn finish(self) -> Result<Gradients> {
        if self.micro_batches == 0 {
            return Err(TrainError::EmptyAccumulation);
        }
        if self.micro_batches == 1 {
            return Ok(self.sum);
        }
        let scale = 1.0 / self.micro_batches as f64;
        self.sum.into_iter().map(|(name, g)| -> Result<(String, Tensor)> { Ok((name, g.affine(scale, 0.0)?)) }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mean_of_micro_batches() {
        let mut acc = GradAccumulator::new();
        for v in [1f32, 2.0, 6.0] {
            let t = Tensor::new(&[v, -v], &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
            acc.add([("w".to_string(), t)].into_iter().collect()).unwrap();
        }
        assert_eq!(acc.micro_batches(), 3);
        let mean = acc.finish().unwrap();
        assert_eq!(mean["w"].dtype(), DType::F32);
        assert_eq!(mean["w"].to_vec1::<f32>().unwrap(), vec![3.0, -3.0]);
    }

    #[test]
    fn finishing_nothing_is_an_error() {
        assert!(matches!(GradAccumulator::new().finish(), Err(TrainError::EmptyAccumulation)));
    }
}
