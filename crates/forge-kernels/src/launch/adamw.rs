//! The launch of kernels/adamw.cu: one group step over a table of tensors (src/adamw.rs builds the
//! table from the optimizer's tensors on a GPU; the emulator from its buffers).

use candle_core::Result;

use crate::adamw::{group_launch, AdamWTensor};
use crate::backend::{Backend, Elem};
use crate::kernels::adamw;

/// Steps every tensor of `table` (parameters and gradients of dtype `T`) in one launch: gives each
/// its blocks, uploads the table and launches over all of them.
pub fn step<T: Elem, B: Backend>(dev: &B, table: &mut [AdamWTensor]) -> Result<()> {
    let Some(shape) = group_launch(table)? else { return Ok(()) };
    let count = table.len() as i32; // group_launch checked it fits
    let tensors = dev.upload(table)?;
    adamw::<B, T>(dev, &shape, &tensors, count)
}
