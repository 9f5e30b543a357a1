//! Gradients between GPUs: an NCCL communicator on each worker's candle stream (so reductions are
//! ordered after the backward that produced the gradients, without a host synchronisation). Rank 0
//! creates the communicator id and sends it to the others over the TCP link.

use candle_core::cuda_backend::CudaStorage;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, DType, Storage, Tensor};
use cudarc::nccl::{Comm, Id, ReduceOp};

use super::tcp::Link;
use crate::{Result, TrainError};

pub(super) struct Communicator {
    comm: Comm,
    device: CudaDevice,
}

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
        Ok(Self { comm, device: device.clone() })
    }

    /// Sums each tensor (f32, on this worker's GPU) over the workers.
    pub(super) fn all_reduce(&self, tensors: Vec<Tensor>) -> Result<Vec<Tensor>> {
        tensors
            .into_iter()
            .map(|tensor| {
                let tensor = tensor.to_dtype(DType::F32)?.contiguous()?;
                let (storage, layout) = tensor.storage_and_layout();
                let Storage::Cuda(storage) = &*storage else {
                    return Err(TrainError::Distributed("NCCL reduces GPU tensors; this gradient is on the CPU".into()));
                };
                let (start, end) = layout.contiguous_offsets().expect("contiguous");
                let source = storage.as_cuda_slice::<f32>()?.slice(start..end);
                let mut summed = self.device.cuda_stream().alloc_zeros::<f32>(end - start).map_err(|e| nccl_error("allocation", e))?;
                self.comm.all_reduce(&source, &mut summed, &ReduceOp::Sum).map_err(|e| nccl_error("all_reduce", e))?;
                let storage = CudaStorage::wrap_cuda_slice(summed, self.device.clone());
                Ok(Tensor::from_storage(Storage::Cuda(storage), tensor.shape().clone(), BackpropOp::none(), false))
            })
            .collect()
    }
}
