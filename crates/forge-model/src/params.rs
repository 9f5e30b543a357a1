//! The parameters of a model as named `Var`s (HF names, HF order).

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::{Config, ModelError, Result};

/// Gradients by parameter name.
pub type Gradients = BTreeMap<String, Tensor>;

#[derive(Debug, Clone)]
pub struct ParamStore {
    entries: Vec<(String, Var)>,
    index: HashMap<String, usize>,
}

impl ParamStore {
    pub fn from_entries(entries: Vec<(String, Var)>) -> Self {
        let index = entries.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
        Self { entries, index }
    }

    /// Random initialisation as HF's `_init_weights`: N(0, std²) for matrices, ones for norms.
    pub fn random(config: &Config, std: f64, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let normal = Normal::new(0f32, std as f32).map_err(|e| ModelError::Invalid(format!("init std {std}: {e}")))?;
        let mut entries = Vec::new();
        for (name, shape) in config.parameter_shapes() {
            let numel: usize = shape.iter().product();
            let tensor = if shape.len() == 1 {
                Tensor::ones(shape, DType::F32, device)?
            } else {
                let data: Vec<f32> = (0..numel).map(|_| normal.sample(&mut rng)).collect();
                Tensor::from_vec(data, shape, device)?
            };
            entries.push((name, Var::from_tensor(&tensor.to_dtype(dtype)?)?));
        }
        Ok(Self::from_entries(entries))
    }

    pub fn get(&self, name: &str) -> Result<&Var> {
        self.index
            .get(name)
            .map(|&i| &self.entries[i].1)
            .ok_or_else(|| ModelError::Invalid(format!("no parameter named `{name}`")))
    }

    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        Ok(self.get(name)?.as_tensor().clone())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn num_elements(&self) -> usize {
        self.entries.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Adds each parameter's gradient in a candle `GradStore` (detached) to `into`.
    pub fn accumulate_gradients(&self, grads: &candle_core::backprop::GradStore, into: &mut Gradients) -> Result<()> {
        for (name, var) in self.iter() {
            if let Some(g) = grads.get(var.as_tensor()) {
                accumulate_gradient(name, g.detach(), into)?;
            }
        }
        Ok(())
    }
}

/// Adds `grad` to the gradient of `name` in `into` (or sets it, if it has none yet).
pub(crate) fn accumulate_gradient(name: &str, grad: Tensor, into: &mut Gradients) -> Result<()> {
    let sum = match into.remove(name) {
        Some(previous) => (previous + grad)?,
        None => grad,
    };
    into.insert(name.to_string(), sum);
    Ok(())
}
