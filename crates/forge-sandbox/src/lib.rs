//! Docker sandbox runtime on bollard: containers from task images (pulled under a
//! [`PullPolicy`], loaded from `docker save` archives, or built locally; [`images`]),
//! a persistent shell over one attached `docker exec` per container (no server inside the
//! container), one-shot execs with timeouts, file transfer via tar, a pool that resets and
//! reuses containers, a reaper for containers of crashed runs, removal of this process's containers
//! on SIGINT/SIGTERM ([`cleanup`]), and the agent's tools
//! (`execute_bash`, `str_replace_editor`, `finish`).
//!
//! ```no_run
//! # async fn demo() -> forge_sandbox::Result<()> {
//! use forge_sandbox::{Runtime, SandboxSpec, ToolCall};
//! let rt = Runtime::connect().await?;
//! let mut sb = rt.create(&SandboxSpec::new("forge/base:py3").workdir("/testbed")).await?;
//! let obs = sb.call(&ToolCall { name: "execute_bash".into(),
//!                               arguments: serde_json::json!({"command": "ls"}) }).await?;
//! println!("{}", obs.output);
//! sb.remove().await?;
//! # Ok(()) }
//! ```

pub mod cleanup;
pub mod editor;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod images;
pub mod output;
pub mod pool;
pub mod replay;
pub mod runtime;
pub mod sandbox;
pub mod testing;
pub mod tools;

pub use editor::{EditorArgs, EditorResult, PathKind};
pub use engine::{EngineSpec, LOCAL_ENDPOINT};
pub use error::{Result, SandboxError};
pub use fleet::{EngineMetrics, Fleet, FleetMetrics, FleetOptions, Placement};
pub use images::{default_state_path, parse_size, ImageRecord, PruneReport, PullPolicy, PullProgress};
pub use output::CappedOutput;
pub use pool::{PoolStats, SandboxPool};
pub use replay::{read_calls, replay, ReplaySummary};
pub use runtime::{
    ImageInfo, Limits, Runtime, SandboxSpec, DEFAULT_IMAGE, DEFAULT_MAX_CALL_TIMEOUT, DEFAULT_STORAGE_BYTES, LABEL_OWNER,
    LABEL_OWNER_START, LABEL_SANDBOX, STORAGE_QUOTA_SLACK,
};
pub use sandbox::{ExecOutput, Sandbox};
pub use tools::{minimal_tool_schemas, tool_schemas, Observation, ToolCall, EXECUTE_BASH, FINISH, STR_REPLACE_EDITOR};
