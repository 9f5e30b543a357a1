//! Where a model runs, as users write it (`cpu`, `cuda`, `cuda:N`, the spellings of PyTorch), and
//! how much memory that device has left — what the recipes check their memory estimate against.

use std::fmt;
use std::str::FromStr;

use candle_core::{Device, DeviceLocation};
use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// A device named in a config or on the command line; nothing is opened until [`DeviceSpec::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// A GPU by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = ModelError;

    fn from_str(spec: &str) -> Result<Self> {
        let ordinal = match spec {
            "cpu" => return Ok(Self::Cpu),
            "cuda" => Some(0),
            other => other.strip_prefix("cuda:").and_then(|n| n.parse().ok()),
        };
        ordinal.map(Self::Cuda).ok_or_else(|| ModelError::Invalid(format!("unknown device `{spec}`: use cpu, cuda or cuda:N (N = the GPU's index)")))
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = ModelError;

    fn try_from(spec: String) -> Result<Self> {
        spec.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(spec: DeviceSpec) -> Self {
        spec.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device; a GPU in a build without CUDA, or one the machine does not have, is an
    /// error that says so.
    pub fn open(&self) -> Result<Device> {
        match *self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !candle_core::utils::cuda_is_available() => Err(ModelError::Invalid(format!(
                "device `{self}`: this forge was built without CUDA; build it with scripts/gpu/build-cuda.sh \
                 (cargo build --release --features cuda), or use device cpu"
            ))),
            Self::Cuda(ordinal) => Device::new_cuda(ordinal)
                .map_err(|e| ModelError::Invalid(format!("device `{self}` could not be opened ({e}); nvidia-smi lists this machine's GPUs"))),
        }
    }
}

/// The memory `device` can still allocate (the host's for the CPU); `None` where it cannot be read.
pub fn memory_available(device: &Device) -> Option<u64> {
    match device.location() {
        DeviceLocation::Cuda { .. } => gpu_memory_free(device),
        _ => host_memory_available(),
    }
}

#[cfg(feature = "cuda")]
fn gpu_memory_free(device: &Device) -> Option<u64> {
    let gpu = device.as_cuda_device().ok()?;
    gpu.cuda_stream().context().mem_get_info().ok().map(|(free, _total)| free as u64)
}

#[cfg(not(feature = "cuda"))]
fn gpu_memory_free(_device: &Device) -> Option<u64> {
    None
}

/// Bytes this process can still allocate on the host: the kernel's `MemAvailable`, capped by the
/// cgroup's limit (what a container may use) when one is set. `None` where neither can be read.
pub fn host_memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    let read = |path: &str| std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let cgroup = match (read("/sys/fs/cgroup/memory.max"), read("/sys/fs/cgroup/memory.current")) {
        (Some(max), Some(current)) => Some(max.saturating_sub(current)),
        _ => None,
    };
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_as_pytorch_spells_them_and_print_back_the_same() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA", ""] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("unknown device `{bad}`: use cpu, cuda or cuda:N")), "{err}");
        }
    }

    #[test]
    fn a_config_field_holds_the_spec_as_a_string() {
        #[derive(Debug, Deserialize, Serialize)]
        struct Section {
            device: DeviceSpec,
        }
        let section: Section = toml::from_str("device = \"cuda:1\"").unwrap();
        assert_eq!(section.device, DeviceSpec::Cuda(1));
        assert_eq!(toml::to_string(&section).unwrap().trim(), "device = \"cuda:1\"");
        let err = toml::from_str::<Section>("device = \"tpu\"").unwrap_err().to_string();
        assert!(err.contains("unknown device `tpu`"), "{err}");
    }

    #[test]
    fn the_cpu_opens_and_reports_the_host_memory() {
        let device = DeviceSpec::Cpu.open().unwrap();
        assert!(memory_available(&device).expect("/proc/meminfo is readable on Linux") > 64 << 20);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_in_a_build_without_cuda_is_refused_with_how_to_build_one() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("device `cuda:0`: this forge was built without CUDA; build it with scripts/gpu/build-cuda.sh"), "{err}");
    }
}
