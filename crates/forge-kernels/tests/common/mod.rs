//! Inputs shared by the CPU and GPU parity tests.

use candle_core::{Device, Tensor};

/// RoPE cos/sin tables `[batch, seq, half]` (f32, CPU); row b's positions start at b.
pub fn rope_tables(batch: usize, seq: usize, half: usize) -> (Tensor, Tensor) {
    let angles: Vec<f32> = (0..batch * seq * half)
        .map(|i| {
            let (p, f) = ((i / half) % seq + i / (seq * half), i % half);
            p as f32 * 10000f32.powf(-(2.0 * f as f32) / (2 * half) as f32)
        })
        .collect();
    let a = Tensor::from_vec(angles, (batch, seq, half), &Device::Cpu).unwrap();
    (a.cos().unwrap(), a.sin().unwrap())
}
