//! ZeRO: the training state of data-parallel workers sharded across them instead of replicated
//! (DeepSpeed's stages, PyTorch FSDP's sharding strategies).
//!
//! | stage | sharded across the N workers                     | replicated       |
//! |-------|--------------------------------------------------|------------------|
//! | 0     | nothing (DDP)                                    | everything       |
//! | 1     | AdamW moments, fp32 master weights               | weights, grads   |
//! | 2     | + reduced gradients (reduce-scatter)             | weights          |
//! | 3     | + weights (each layer gathered when it runs)     | nothing          |

use serde::{Deserialize, Serialize};

/// `train.zero_stage`: 0 (default), 1, 2 or 3, DeepSpeed's meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum ZeroStage {
    /// Everything replicated; gradients all-reduced (PyTorch DDP).
    #[default]
    Replicated,
    /// Optimizer state sharded: each worker updates its shard, the updated weights are all-gathered.
    OptimizerState,
    /// Optimizer state and gradients sharded: gradients are reduce-scattered.
    Gradients,
    /// Optimizer state, gradients and weights sharded: a layer's weights are all-gathered just
    /// before its forward and backward and released after.
    Parameters,
}

impl ZeroStage {
    pub fn number(self) -> u8 {
        self.into()
    }

    pub fn shards_optimizer(self) -> bool {
        self >= Self::OptimizerState
    }

    pub fn shards_gradients(self) -> bool {
        self >= Self::Gradients
    }

    pub fn shards_parameters(self) -> bool {
        self >= Self::Parameters
    }
}

impl TryFrom<u8> for ZeroStage {
    type Error = String;

    fn try_from(stage: u8) -> Result<Self, String> {
        Ok(match stage {
            0 => Self::Replicated,
            1 => Self::OptimizerState,
            2 => Self::Gradients,
            3 => Self::Parameters,
            n => return Err(format!("zero_stage = {n}: it is 0 (replicated), 1 (optimizer state sharded), 2 (+ gradients) or 3 (+ parameters)")),
        })
    }
}

impl From<ZeroStage> for u8 {
    fn from(stage: ZeroStage) -> u8 {
        match stage {
            ZeroStage::Replicated => 0,
            ZeroStage::OptimizerState => 1,
            ZeroStage::Gradients => 2,
            ZeroStage::Parameters => 3,
        }
    }
}
