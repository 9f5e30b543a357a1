//! Gradients between GPUs: an NCCL communicator on each worker's candle stream (so reductions are
//! ordered after the backward that produced the gradients, without a host synchronisation). Rank 0
//! creates the communicator id and sends it to the others over the TCP link.

use candle_core::cuda_backend::CudaStorage;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, DType, Storage, Tensor};
use cudarc::driver::{CudaSlice, CudaView};
use cudarc::nccl::result::{NcclError, NcclStatus};
use cudarc::nccl::{Comm, Id, NcclType, ReduceOp};

use super::tcp::Link;
use crate::{Result, TrainError};

pub(super) struct Communicator {
    comm: std::sync::Mutex<SerialComm>,
    device: CudaDevice,
}

/// cudarc's `Comm` holds NCCL's raw communicator pointer, so it is neither `Send` nor `Sync`.
/// NCCL lets a communicator be used from any thread as long as calls on it do not overlap,
/// which the mutex around it ensures (a ZeRO-3 model gathers its layers from whichever thread
/// trains it).
struct SerialComm(Comm);

// SAFETY: see `SerialComm`: the communicator is only reached through `Communicator::comm`'s
// mutex, one call at a time, and NCCL communicators are not tied to the thread that made them.
unsafe impl Send for SerialComm {}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Distributed(format!("NCCL {what} failed ({e:?}); set NCCL_DEBUG=INFO for NCCL's own account"))
}

impl Communicator {
    pub(super) fn new(link: &Link, device: &CudaDevice) -> Result<Self> {
        let (rank, world_size) = (link.rank(), link.world_size());
        let id = match rank {
            0 => {
                let id = Id::new().map_err(|e| nccl_error("unique id", e))?;
                let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                link.broadcast(Some(&bytes))?;
                id
            }
            _ => {
                let bytes = link.broadcast(None)?;
                let internal: [std::ffi::c_char; 128] = std::array::from_fn(|i| bytes.get(i).copied().unwrap_or(0) as std::ffi::c_char);
                Id::uninit(internal)
            }
        };
        let comm = Comm::from_rank(device.cuda_stream(), rank, world_size, id).map_err(|e| nccl_error("communicator init", e))?;
        Ok(Self { comm: std::sync::Mutex::new(SerialComm(comm)), device: device.clone() })
    }

    /// Sums each tensor (f32, on this worker's GPU) over the workers.
    pub(super) fn all_reduce(&self, tensors: Vec<Tensor>) -> Result<Vec<Tensor>> {
        tensors
            .into_iter()
            .map(|tensor| {
                let shape = tensor.dims().to_vec();
                self.collective::<f32>("all_reduce", &tensor.to_dtype(DType::F32)?, &shape, |comm, source, out| comm.all_reduce(source, out, &ReduceOp::Sum))
            })
            .collect()
    }

    /// This worker's chunk of the sum of `padded` (f32, `world × chunk` rows) over the workers.
    pub(super) fn reduce_scatter(&self, padded: &Tensor, chunk_shape: &[usize]) -> Result<Tensor> {
        self.collective::<f32>("reduce_scatter", &padded.to_dtype(DType::F32)?, chunk_shape, |comm, source, out| comm.reduce_scatter(source, out, &ReduceOp::Sum))
    }

    /// Every worker's `chunk` concatenated along dim 0 in rank order (f32, bf16 or f16).
    pub(super) fn all_gather(&self, chunk: &Tensor, full_shape: &[usize]) -> Result<Tensor> {
        match chunk.dtype() {
            DType::F32 => self.collective::<f32>("all_gather", chunk, full_shape, |comm, source, out| comm.all_gather(source, out)),
            DType::BF16 => self.collective::<half::bf16>("all_gather", chunk, full_shape, |comm, source, out| comm.all_gather(source, out)),
            DType::F16 => self.collective::<half::f16>("all_gather", chunk, full_shape, |comm, source, out| comm.all_gather(source, out)),
            other => Err(TrainError::Distributed(format!("NCCL all-gather of {other:?} tensors is not supported"))),
        }
    }

    /// Runs the NCCL call `what` from `tensor` (this worker's GPU, elements `T`) into a new tensor of
    /// `out_shape`: the one place that takes a tensor's device memory and wraps the result.
    fn collective<T>(
        &self,
        what: &str,
        tensor: &Tensor,
        out_shape: &[usize],
        call: impl FnOnce(&Comm, &CudaView<'_, T>, &mut CudaSlice<T>) -> std::result::Result<NcclStatus, NcclError>,
    ) -> Result<Tensor>
    where
        T: NcclType + candle_core::cuda_backend::CudaDType + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits,
    {
        let tensor = tensor.contiguous()?;
        let (storage, layout) = tensor.storage_and_layout();
        let Storage::Cuda(storage) = &*storage else {
            return Err(TrainError::Distributed(format!("NCCL's {what} takes GPU tensors; this one is on the CPU")));
        };
        let (start, end) = layout.contiguous_offsets().expect("contiguous");
        let source = storage.as_cuda_slice::<T>()?.slice(start..end);
        let mut out = self.device.cuda_stream().alloc_zeros::<T>(out_shape.iter().product()).map_err(|e| nccl_error("allocation", e))?;
        call(&self.comm.lock().expect("NCCL communicator lock").0, &source, &mut out).map_err(|e| nccl_error(what, e))?;
        let storage = CudaStorage::wrap_cuda_slice(out, self.device.clone());
        Ok(Tensor::from_storage(Storage::Cuda(storage), out_shape, BackpropOp::none(), false))
    }
}
