//! What an episode leaves behind: the conversation in the SFT format `forge train sft` reads, and
//! the token-level record RL trains on.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::policy::FinishReason;

/// How an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The model called `finish`.
    Finished,
    /// `max_turns` turns without `finish`.
    TurnLimit,
    /// The next prompt would not fit the context budget.
    ContextExhausted,
    /// The model's own commands ended the episode ([`Trajectory::cause`] says how): it is scored
    /// 0 like any unresolved episode, never excluded — a policy must not escape its reward by
    /// crashing its sandbox.
    PolicyFailure,
    /// The engine, the container or the tooling failed: not the model's doing. RL must leave
    /// such episodes out; evaluation reruns them on resume.
    InfraError,
}

impl Status {
    /// Whether the episode says something about the model (everything but infrastructure errors).
    pub fn is_model_outcome(self) -> bool {
        self != Status::InfraError
    }
}

/// How the model's own doing ended an episode ([`Status::PolicyFailure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The container stopped while the model's command ran: its main process was killed.
    ContainerExited,
    /// The kernel's OOM killer ended the container (its memory limit).
    OomKilled,
    /// The container wrote more than its storage limit.
    DiskQuotaExceeded,
    /// The episode ran past its wall-clock bound (`AgentConfig::max_episode_time`).
    WallClock,
}

impl FailureCause {
    pub const ALL: [FailureCause; 4] = [FailureCause::ContainerExited, FailureCause::OomKilled, FailureCause::DiskQuotaExceeded, FailureCause::WallClock];

    /// The snake_case name (as serialised).
    pub fn name(self) -> &'static str {
        match self {
            FailureCause::ContainerExited => "container_exited",
            FailureCause::OomKilled => "oom_killed",
            FailureCause::DiskQuotaExceeded => "disk_quota_exceeded",
            FailureCause::WallClock => "wall_clock",
        }
    }

    /// The cause of a sandbox error that the commands run in it caused; `None` for
    /// infrastructure failures.
    pub fn of(e: &forge_sandbox::SandboxError) -> Option<Self> {
        use forge_sandbox::SandboxError;
        if !e.is_policy_fault() {
            return None;
        }
        Some(match e {
            SandboxError::StorageExceeded { .. } => FailureCause::DiskQuotaExceeded,
            SandboxError::ContainerGone { oom_killed: true, .. } => FailureCause::OomKilled,
            _ => FailureCause::ContainerExited,
        })
    }
}

/// The token ids fed to and produced by the model, in order: prompt tokens, then per turn the
/// generated tokens and the rendered observations. `loss_mask[i] == 1` exactly for tokens the
/// model generated; `logprobs[i]` is their sampling log-prob (0 where the mask is 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
    pub logprobs: Vec<f32>,
}

impl TokenRecord {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    pub(crate) fn push_context(&mut self, ids: &[u32]) {
        self.input_ids.extend_from_slice(ids);
        self.loss_mask.extend(std::iter::repeat_n(0, ids.len()));
        self.logprobs.extend(std::iter::repeat_n(0.0, ids.len()));
    }

    pub(crate) fn push_generated(&mut self, ids: &[u32], logprobs: &[f32]) {
        self.input_ids.extend_from_slice(ids);
        self.loss_mask.extend(std::iter::repeat_n(1, ids.len()));
        self.logprobs.extend_from_slice(logprobs);
    }
}

/// One model turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The token record the turn is in: its index in [`Trajectory::token_records`] (0 unless the
    /// template rewrote the conversation).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub record: usize,
    /// Tokens `[0, prompt_len)` of that record were this turn's prompt.
    pub prompt_len: usize,
    /// The generated tokens are `[prompt_len, generated_end)`.
    pub generated_end: usize,
    pub finish_reason: FinishReason,
    /// Tool calls run (the rejected ones not counted).
    pub tool_calls: usize,
    /// Tool-call blocks rejected as malformed, plus 1 for a turn that called no tool.
    pub call_errors: usize,
    pub generation_seconds: f64,
    pub tool_seconds: f64,
}

/// One episode of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub instance_id: String,
    pub status: Status,
    /// What failed, for infrastructure errors and policy failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the model's doing ended the episode, for [`Status::PolicyFailure`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
    /// The conversation (OpenAI/TRL chat format); assistant turns carry structured `tool_calls`
    /// when the template renders them back to exactly the generated text, else the raw text.
    pub messages: Vec<Value>,
    pub tools: Vec<Value>,
    /// The token record of the latest turns.
    pub tokens: TokenRecord,
    /// The records before `tokens`, oldest first. A turn whose prompt (apply_chat_template of the
    /// history) does not continue the record it follows — the template rewrote earlier turns, as
    /// Qwen3's drops their think blocks — starts a new record; RL trains each as its own sequence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_tokens: Vec<TokenRecord>,
    pub turns: Vec<TurnRecord>,
    /// The repository diff against the base commit (empty when nothing changed or on error).
    pub patch: String,
    /// `decode(tokens.input_ids)` (the latest record) equals the template's rendering of `messages`
    /// (up to trailing whitespace): the SFT record and the token record describe the same sequence.
    pub rendering_matches_tokens: bool,
    pub generation_seconds: f64,
    pub tool_seconds: f64,
    pub total_seconds: f64,
    /// The image the episode ran in (name and content id): what a result is reproduced from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Trajectory {
    /// A trajectory before its first turn (status `InfraError` until the episode says otherwise).
    pub fn start(instance_id: &str, messages: Vec<Value>, tools: Vec<Value>) -> Self {
        Trajectory {
            instance_id: instance_id.to_string(),
            status: Status::InfraError,
            error: None,
            cause: None,
            messages,
            tools,
            tokens: TokenRecord::default(),
            earlier_tokens: Vec::new(),
            turns: Vec::new(),
            patch: String::new(),
            rendering_matches_tokens: false,
            generation_seconds: 0.0,
            tool_seconds: 0.0,
            total_seconds: 0.0,
            image: None,
        }
    }

    /// An episode that could not start (no container, no tokenizer): only the error.
    pub fn failed_to_start(instance_id: &str, error: String) -> Self {
        Trajectory { error: Some(error), ..Self::start(instance_id, Vec::new(), Vec::new()) }
    }

    /// Every token record, oldest first: one sequence each for RL.
    pub fn token_records(&self) -> impl Iterator<Item = &TokenRecord> {
        self.earlier_tokens.iter().chain(std::iter::once(&self.tokens))
    }

    /// Turns that ran at least one tool (agent steps).
    pub fn tool_turns(&self) -> usize {
        self.turns.iter().filter(|t| t.tool_calls > 0).count()
    }

    /// The SFT example: `{"messages": [...], "tools": [...]}`, one JSONL line of `forge train sft`.
    pub fn sft_record(&self) -> Value {
        json!({"messages": self.messages, "tools": self.tools})
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
