//! The software-engineering agent: prompts, Qwen/Hermes tool-call parsing that survives any model
//! output, the loop between a [`Policy`] and the tools in a task's container, trajectories recorded
//! for SFT (messages + tools) and for RL (token ids, loss mask, sampling log-probs), and
//! `forge eval swebench --model` ([`run_agent_eval`]), or on any OpenAI-compatible server
//! ([`EndpointPolicy`]: `--endpoint URL --served-model NAME`); `forge sample` ([`run_sampling`]):
//! rejection sampling of a teacher's trajectories into SFT data.
//!
//! ```text
//! render(messages) ─► prompt ids ─► Policy::generate ─► ids + log-probs ─► decode ─► parse
//!        ▲                                                                            │
//!        └── prompt += generated ids + encode(observation delta) ◄── tools in /testbed ◄┘
//! ```

pub mod chat;
pub mod endpoint;
pub mod episode;
pub mod error;
pub mod eval;
pub mod parse;
pub mod policy;
pub mod prompt;
pub mod sample;
pub mod testing;
pub mod trajectory;
pub mod workspace;

pub use chat::ChatFormat;
pub use endpoint::{EndpointConfig, EndpointPolicy, EndpointUsage};
pub use episode::{run_episode, AgentConfig, DEFAULT_MAX_EPISODE_TIME};
pub use error::{AgentError, Result};
pub use eval::{run_agent_eval, run_placed_episode, AgentEvalOptions, AgentEvalSummary};
pub use parse::{parse_tool_calls, ParsedCall};
pub use policy::{FinishReason, Generation, Policy, SamplingParams};
pub use prompt::Scaffold;
pub use sample::{run_sampling, AttemptRecord, SampleOptions, SampleSummary, SolveRate};
pub use trajectory::{FailureCause, Status, TokenRecord, Trajectory, TurnRecord};
pub use workspace::{TaskWorkspace, Workspace};
