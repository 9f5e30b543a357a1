//! Data parallelism: one worker process per device, each training on its share of every global
//! batch, gradients summed across workers before each (replicated) optimizer step — PyTorch DDP's
//! semantics, with torchrun's environment (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`) so launchers and cluster scripts written for it work unchanged.
//!
//! Workers meet over TCP at the master's address ([`tcp`]): that link carries the small
//! all-reduces (loss sums, token counts) and, on the CPU, the gradients (summed by rank 0 in rank
//! order, so every run of the same plan gives the same bits). On CUDA the gradients go through
//! NCCL (`nccl`), whose communicator id travels over the same link.
//! [`launch::run_workers`] is the launcher behind `--nproc-per-node` (and `--nnodes`).

pub mod launch;
#[cfg(feature = "cuda")]
mod nccl;
mod tcp;
pub mod zero;

pub use zero::ZeroStage;

use std::collections::BTreeMap;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use forge_model::device::DeviceSpec;
use forge_model::{Gradients, ParamStore};

use crate::{Result, TrainError};

/// How long workers wait for each other to start and connect.
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);

/// Where this worker sits among the others, as torchrun describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub rank: usize,
    pub world_size: usize,
    /// This worker's index on its node: the GPU it takes.
    pub local_rank: usize,
    /// Workers on this node (torchrun's `LOCAL_WORLD_SIZE`; 1 when unset): they share its memory.
    pub local_world_size: usize,
    /// Rank 0's `host:port`, where the others connect.
    pub master: String,
}

impl Topology {
    /// The topology torchrun's variables describe; `None` when `WORLD_SIZE` is unset or 1 (a
    /// single worker). Missing or inconsistent variables are errors that name them.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let launch_hint = "launch each worker with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (as torchrun does), or let --nproc-per-node start them";
        let number = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| v.trim().parse::<usize>().map_err(|_| TrainError::Distributed(format!("{name}={v} is not a number; {launch_hint}"))))
                .transpose()
        };
        let world_size = match number("WORLD_SIZE")? {
            None | Some(1) => return Ok(None),
            Some(0) => return Err(TrainError::Distributed(format!("WORLD_SIZE=0; {launch_hint}"))),
            Some(n) => n,
        };
        let required = |name: &str| -> Result<String> {
            var(name).ok_or_else(|| TrainError::Distributed(format!("WORLD_SIZE={world_size} is set but {name} is not; {launch_hint}")))
        };
        let rank = number("RANK")?.ok_or_else(|| TrainError::Distributed(format!("WORLD_SIZE={world_size} is set but RANK is not; {launch_hint}")))?;
        if rank >= world_size {
            return Err(TrainError::Distributed(format!("RANK={rank} but WORLD_SIZE={world_size}: ranks are 0..{world_size}")));
        }
        let local_rank = number("LOCAL_RANK")?.unwrap_or(rank);
        let local_world_size = number("LOCAL_WORLD_SIZE")?.unwrap_or(1).max(1);
        let master = format!("{}:{}", required("MASTER_ADDR")?, required("MASTER_PORT")?);
        Ok(Some(Self { rank, world_size, local_rank, local_world_size, master }))
    }

    /// The device of this worker: CUDA ranks take `cuda:LOCAL_RANK`; a config naming another GPU
    /// is an error (choose the GPUs with `CUDA_VISIBLE_DEVICES`, as with torchrun).
    pub fn device(&self, configured: DeviceSpec) -> Result<DeviceSpec> {
        match configured {
            DeviceSpec::Cpu => Ok(DeviceSpec::Cpu),
            DeviceSpec::Cuda(0) => Ok(DeviceSpec::Cuda(self.local_rank)),
            DeviceSpec::Cuda(n) => Err(TrainError::Config(format!(
                "model.device = cuda:{n}, but in a run of {} workers each takes cuda:LOCAL_RANK; set model.device = \"cuda\" \
                 and choose the GPUs with CUDA_VISIBLE_DEVICES",
                self.world_size
            ))),
        }
    }
}

/// The worker count of a checkpoint written before checkpoints recorded it (serde default).
pub fn one_worker() -> usize {
    1
}

/// Refuses to resume a checkpoint of step `step`, trained by `trained_by` workers, with `world`
/// workers: another count changes the global batch (and with it the steps and the schedule).
pub fn check_resume_workers(step: u64, trained_by: usize, world: usize) -> Result<()> {
    if trained_by == world {
        return Ok(());
    }
    Err(TrainError::Config(format!(
        "--resume: step {step} was trained by {trained_by} worker(s), this run has {world}; resume with --nproc-per-node {trained_by} \
         (another count changes the global batch, and with it the steps and the schedule)"
    )))
}

/// The device a worker trains on: the configured one alone, or the worker's own GPU
/// ([`Topology::device`]) in a data-parallel run.
pub fn worker_device(topology: Option<&Topology>, configured: DeviceSpec) -> Result<DeviceSpec> {
    topology.map_or(Ok(configured), |t| t.device(configured))
}

/// The workers of a run, connected. A single worker (no topology) makes every collective the
/// identity, so recipes call them unconditionally.
pub struct ProcessGroup {
    rank: usize,
    world_size: usize,
    link: Option<tcp::Link>,
    #[cfg(feature = "cuda")]
    nccl: Option<nccl::Communicator>,
}

impl ProcessGroup {
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            link: None,
            #[cfg(feature = "cuda")]
            nccl: None,
        }
    }

    /// Meets the other workers (blocks until all have connected, at most [`RENDEZVOUS_TIMEOUT`]).
    /// Gradients on a CUDA `device` are then reduced by NCCL, all else over TCP.
    pub fn join(topology: &Topology, device: &Device) -> Result<Self> {
        let link = tcp::Link::connect(topology, RENDEZVOUS_TIMEOUT)?;
        tracing::info!(rank = topology.rank, world_size = topology.world_size, master = %topology.master, "joined the process group");
        #[cfg(feature = "cuda")]
        let nccl = match device {
            Device::Cuda(cuda) => Some(nccl::Communicator::new(&link, cuda)?),
            _ => None,
        };
        #[cfg(not(feature = "cuda"))]
        let _ = device;
        Ok(Self {
            rank: topology.rank,
            world_size: topology.world_size,
            link: Some(link),
            #[cfg(feature = "cuda")]
            nccl,
        })
    }

    /// `join` for a topology, [`single`](Self::single) without one.
    pub fn for_topology(topology: Option<&Topology>, device: &Device) -> Result<Self> {
        topology.map_or_else(|| Ok(Self::single()), |t| Self::join(t, device))
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Rank 0: the worker that writes checkpoints, logs and the final model.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Sums `values` over the workers, in place (every worker gets the same result).
    pub fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()> {
        match &self.link {
            Some(link) => link.all_reduce(values),
            None => Ok(()),
        }
    }

    /// Every worker's `bytes` at rank 0, in rank order (rank 0's first); `None` on the others.
    pub fn gather_bytes(&self, bytes: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>> {
        match &self.link {
            Some(link) => link.gather(&bytes),
            None => Ok(Some(vec![bytes])),
        }
    }

    /// The largest of the workers' `value`s, on every worker.
    pub fn max_over_workers(&self, value: usize) -> Result<usize> {
        let mut each = vec![0f64; self.world_size];
        each[self.rank] = value as f64;
        self.all_reduce_f64(&mut each)?;
        Ok(each.into_iter().fold(0.0, f64::max) as usize)
    }

    /// Waits until every worker has reached this point.
    pub fn barrier(&self) -> Result<()> {
        self.all_reduce_f64(&mut [])
    }

    /// Sums `tensors` (f32, the same shapes in the same order on every worker) over the workers.
    pub fn all_reduce_tensors(&self, tensors: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let Some(link) = &self.link else { return Ok(tensors) };
        #[cfg(feature = "cuda")]
        if let Some(nccl) = &self.nccl {
            return nccl.all_reduce(tensors);
        }
        let mut flat: Vec<f32> = Vec::with_capacity(tensors.iter().map(Tensor::elem_count).sum());
        for t in &tensors {
            flat.extend(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        link.all_reduce(&mut flat)?;
        let mut offset = 0;
        tensors
            .iter()
            .map(|t| {
                let n = t.elem_count();
                let summed = Tensor::from_slice(&flat[offset..offset + n], t.shape(), t.device())?;
                offset += n;
                Ok(summed)
            })
            .collect()
    }

    /// Sums `padded` (f32, `world_size × chunk` rows, the same shape on every worker) over the
    /// workers and returns this worker's chunk of the sum: rows `rank × chunk ..`. Over TCP the
    /// sum is taken in rank order, so the chunk equals those rows of an all-reduce to the bit.
    pub fn reduce_scatter(&self, padded: &Tensor) -> Result<Tensor> {
        let Some(link) = &self.link else { return Ok(padded.clone()) };
        let mut chunk_shape = padded.dims().to_vec();
        chunk_shape[0] /= self.world_size;
        #[cfg(feature = "cuda")]
        if let Some(nccl) = &self.nccl {
            return nccl.reduce_scatter(padded, &chunk_shape);
        }
        let values = padded.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Tensor::from_vec(link.reduce_scatter(&values)?, chunk_shape, padded.device())?)
    }

    /// Every worker's `chunk` (the same shape and dtype on each), concatenated along dim 0 in
    /// rank order, on every worker.
    pub fn all_gather(&self, chunk: &Tensor) -> Result<Tensor> {
        let Some(link) = &self.link else { return Ok(chunk.clone()) };
        let mut full_shape = chunk.dims().to_vec();
        full_shape[0] *= self.world_size;
        #[cfg(feature = "cuda")]
        if let Some(nccl) = &self.nccl {
            return nccl.all_gather(chunk, &full_shape);
        }
        let (bytes, dtype) = (tensor_bytes(chunk)?, chunk.dtype());
        let all = link.all_gather(&bytes)?;
        Ok(Tensor::from_raw_buffer(&all, dtype, &full_shape, &Device::Cpu)?.to_device(chunk.device())?)
    }

    /// Which of `params` any worker has a gradient for (a parameter no micro-batch produced a
    /// gradient for stays absent, as with one worker), and the micro-batches of the step over
    /// all workers (zero is an error).
    pub(crate) fn gradients_present(&self, local_sum: &Gradients, local_micro_batches: usize, params: &ParamStore) -> Result<(Vec<bool>, f64)> {
        // per parameter: how many workers hold a gradient; last: the micro-batches of the step
        let mut counts: Vec<f64> = params.iter().map(|(name, _)| f64::from(u8::from(local_sum.contains_key(name)))).collect();
        counts.push(local_micro_batches as f64);
        self.all_reduce_f64(&mut counts)?;
        let total = counts.pop().unwrap_or_default();
        if total == 0.0 {
            return Err(TrainError::EmptyAccumulation);
        }
        Ok((counts.into_iter().map(|c| c > 0.0).collect(), total))
    }

    /// The sum (or with `mean`, the mean) over every micro-batch of every worker of the
    /// gradients: each worker passes the sum of its own micro-batches' gradients (f32) and how
    /// many it had (zero is allowed: a worker without data in the last step contributes
    /// nothing). `params` fixes the order and shapes.
    pub(crate) fn reduce_gradients(&self, local_sum: Gradients, local_micro_batches: usize, params: &ParamStore, mean: bool) -> Result<Gradients> {
        let (present, total) = self.gradients_present(&local_sum, local_micro_batches, params)?;
        let present: Vec<(&str, &candle_core::Var)> = params.iter().zip(&present).filter(|(_, &p)| p).map(|(p, _)| p).collect();
        let mut local_sum = local_sum;
        let tensors = present
            .iter()
            .map(|(name, var)| match local_sum.remove(*name) {
                Some(grad) => Ok(grad.to_dtype(DType::F32)?),
                None => Ok(Tensor::zeros(var.shape(), DType::F32, var.device())?),
            })
            .collect::<Result<Vec<_>>>()?;
        let summed = self.all_reduce_tensors(tensors)?;
        let mut reduced = BTreeMap::new();
        for ((name, _), grad) in present.into_iter().zip(summed) {
            reduced.insert(name.to_string(), if !mean || total == 1.0 { grad } else { grad.affine(1.0 / total, 0.0)? });
        }
        Ok(reduced)
    }
}

/// The little-endian bytes of a tensor's elements (row-major), as `Tensor::from_raw_buffer` reads them.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => flat.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::BF16 => flat.to_vec1::<half::bf16>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => flat.to_vec1::<half::f16>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F64 => flat.to_vec1::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        other => return Err(TrainError::Distributed(format!("all-gather of {other:?} tensors is not supported"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn torchrun_variables_describe_the_topology() {
        assert_eq!(Topology::from_vars(vars(&[])).unwrap(), None);
        assert_eq!(Topology::from_vars(vars(&[("WORLD_SIZE", "1"), ("RANK", "0")])).unwrap(), None);
        let t = Topology::from_vars(vars(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(t, Topology { rank: 3, world_size: 4, local_rank: 1, local_world_size: 2, master: "10.0.0.1:29500".into() });
        assert_eq!(t.device(DeviceSpec::Cuda(0)).unwrap(), DeviceSpec::Cuda(1));
        assert_eq!(t.device(DeviceSpec::Cpu).unwrap(), DeviceSpec::Cpu);
        let err = t.device(DeviceSpec::Cuda(2)).unwrap_err().to_string();
        assert!(err.contains("CUDA_VISIBLE_DEVICES"), "{err}");
    }

    #[test]
    fn missing_or_bad_variables_are_named() {
        let err = Topology::from_vars(vars(&[("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")])).unwrap_err().to_string();
        assert!(err.contains("RANK is not"), "{err}");
        let err = Topology::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "1"), ("MASTER_PORT", "1")])).unwrap_err().to_string();
        assert!(err.contains("MASTER_ADDR is not"), "{err}");
        let err = Topology::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")])).unwrap_err().to_string();
        assert!(err.contains("RANK=2 but WORLD_SIZE=2"), "{err}");
        let err = Topology::from_vars(vars(&[("WORLD_SIZE", "two")])).unwrap_err().to_string();
        assert!(err.contains("WORLD_SIZE=two is not a number"), "{err}");
    }
}
