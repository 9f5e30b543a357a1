//! The agent loop: render → generate → parse → run tools → observe, until `finish`, the turn
//! limit, the context budget, the wall clock, or a failure the model's commands caused.

use std::time::{Duration, Instant};

use forge_sandbox::FINISH;
use serde_json::{json, Value};

use crate::chat::{ChatFormat, NextPrompt};
use crate::error::{AgentError, Result};
use crate::parse::{parse_tool_calls, ParsedCall, TOOL_CALL_OPEN};
use crate::policy::{Policy, SamplingParams};
use crate::prompt::{bad_call_message, no_tool_call_message, observation_message};
use crate::trajectory::{FailureCause, Status, Trajectory, TurnRecord};
use crate::workspace::Workspace;

/// Limits and sampling of an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Assistant turns at most.
    pub max_turns: usize,
    /// Prompt plus generation never exceeds this many tokens.
    pub max_context_tokens: usize,
    /// Tokens one turn may generate.
    pub max_new_tokens: usize,
    /// Characters of one observation shown to the model (the middle is clipped).
    pub max_observation_chars: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    /// Turn k samples with seed `seed + k`.
    pub seed: u64,
    /// When the task's image is pulled from its registry (the grading container's follows).
    pub pull: forge_sandbox::PullPolicy,
    /// Wall-clock bound of the episode (generation and tools): past it the episode ends as
    /// [`Status::PolicyFailure`] with cause `wall_clock`.
    pub max_episode_time: Duration,
    /// Sandbox limits of the task's container: the longest timeout one tool call may ask for,
    /// and how much the container may write (`None`: unlimited).
    pub max_call_timeout: Duration,
    pub storage_bytes: Option<u64>,
    /// Memory, CPUs and pids of the task's container over its source's defaults (never network:
    /// the agent works offline).
    pub container: forge_swe::ContainerOverrides,
}

/// Default of [`AgentConfig::max_episode_time`].
pub const DEFAULT_MAX_EPISODE_TIME: Duration = Duration::from_secs(1800);

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_turns: 35,
            max_context_tokens: 32_768,
            max_new_tokens: 4_096,
            max_observation_chars: 12_000,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            pull: forge_sandbox::PullPolicy::Missing,
            max_episode_time: DEFAULT_MAX_EPISODE_TIME,
            max_call_timeout: forge_sandbox::DEFAULT_MAX_CALL_TIMEOUT,
            storage_bytes: Some(forge_sandbox::DEFAULT_STORAGE_BYTES),
            container: forge_swe::ContainerOverrides::default(),
        }
    }
}

/// Runs one episode on `problem_statement` with tools in `workspace`. Never fails: an
/// infrastructure failure ends the episode with [`Status::InfraError`] and what was recorded; a
/// failure the model's commands caused (the container killed, OOM, the storage limit, the wall
/// clock) with [`Status::PolicyFailure`] and its [`FailureCause`], and no patch.
pub async fn run_episode<P: Policy, W: Workspace>(
    policy: &P,
    workspace: &mut W,
    chat: &ChatFormat,
    instance_id: &str,
    problem_statement: &str,
    config: &AgentConfig,
) -> Trajectory {
    let started = Instant::now();
    let mut episode = Episode {
        trajectory: Trajectory::start(
            instance_id,
            chat.initial_messages_with(problem_statement, workspace.environment_note().as_deref()),
            chat.tools().to_vec(),
        ),
        chat,
        config,
        deadline: tokio::time::Instant::now() + config.max_episode_time,
    };
    let outcome = match episode.run(policy, workspace).await {
        Ok(Status::PolicyFailure) => Ok(Status::PolicyFailure),
        Ok(status) => match workspace.patch().await {
            Ok(patch) => {
                episode.trajectory.patch = patch;
                Ok(status)
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let mut trajectory = episode.trajectory;
    match outcome {
        Ok(status) => trajectory.status = status,
        Err(AgentError::Sandbox(e)) if FailureCause::of(&e).is_some() => {
            // no patch from a container that the model's commands broke (a background job of
            // theirs killed it, or wrote past the limit, after the last call)
            tracing::info!(instance = instance_id, error = %e, "episode ended by the model's commands");
            trajectory.status = Status::PolicyFailure;
            trajectory.cause = FailureCause::of(&e);
            trajectory.error = Some(e.to_string());
        }
        Err(e) => {
            tracing::warn!(instance = instance_id, error = %e, "episode ended by an infrastructure error");
            trajectory.status = Status::InfraError;
            trajectory.error = Some(e.to_string());
        }
    }
    trajectory.rendering_matches_tokens = rendering_matches_tokens(chat, &trajectory);
    trajectory.total_seconds = started.elapsed().as_secs_f64();
    trajectory.image = workspace.image();
    trajectory
}

struct Episode<'a> {
    trajectory: Trajectory,
    chat: &'a ChatFormat,
    config: &'a AgentConfig,
    deadline: tokio::time::Instant,
}

/// What ended a turn's tool calls early.
enum Stop {
    Finished,
    Failed(FailureCause, String),
}

impl Episode<'_> {
    async fn run<P: Policy, W: Workspace>(&mut self, policy: &P, workspace: &mut W) -> Result<Status> {
        let chat = self.chat;
        let end_of_turn = chat.end_of_turn_id();
        let prompt = chat.encode(&chat.render(&self.trajectory.messages, true)?)?;
        self.trajectory.tokens.push_context(&prompt);
        for turn in 0..self.config.max_turns {
            let prompt_len = self.trajectory.tokens.len();
            let room = self.config.max_context_tokens.saturating_sub(prompt_len);
            if room == 0 {
                return Ok(Status::ContextExhausted);
            }
            if tokio::time::Instant::now() >= self.deadline {
                return Ok(self.failed(FailureCause::WallClock, self.wall_clock_message()));
            }
            let params = SamplingParams {
                max_new_tokens: self.config.max_new_tokens.min(room),
                temperature: self.config.temperature,
                top_p: self.config.top_p,
                top_k: self.config.top_k,
                stop_tokens: vec![end_of_turn],
                seed: self.config.seed.wrapping_add(turn as u64),
            };
            let clock = Instant::now();
            let generation = policy.generate(&self.trajectory.tokens.input_ids, &params).await.map_err(AgentError::Policy)?;
            let generation_seconds = clock.elapsed().as_secs_f64();
            self.trajectory.generation_seconds += generation_seconds;
            if generation.logprobs.len() != generation.tokens.len() || generation.tokens.len() > params.max_new_tokens {
                return Err(AgentError::Policy(anyhow::anyhow!(
                    "the policy returned {} tokens and {} log-probs for at most {} new tokens",
                    generation.tokens.len(),
                    generation.logprobs.len(),
                    params.max_new_tokens
                )));
            }
            self.trajectory.tokens.push_generated(&generation.tokens, &generation.logprobs);
            let generated_end = self.trajectory.tokens.len();
            let text_ids = match generation.tokens.split_last() {
                Some((&last, rest)) if last == end_of_turn => rest,
                _ => {
                    // Cut by the token limit: the turn is closed for the model (not trained on).
                    self.trajectory.tokens.push_context(&[end_of_turn]);
                    &generation.tokens[..]
                }
            };
            let text = chat.decode(text_ids)?;
            let calls = parse_tool_calls(&text, chat.tools());
            let assistant = self.assistant_message(&text, &calls)?;
            self.trajectory.messages.push(assistant);

            let clock = Instant::now();
            let mut replies = Vec::new();
            let (mut tool_calls, mut call_errors, mut stop) = (0, 0, None);
            if calls.is_empty() {
                call_errors += 1;
                replies.push(no_tool_call_message(chat.tools()));
            }
            for call in calls {
                match call {
                    Err(problem) => {
                        call_errors += 1;
                        replies.push(bad_call_message(&problem, chat.tools()));
                    }
                    Ok(call) => {
                        tool_calls += 1;
                        let observation = match tokio::time::timeout_at(self.deadline, workspace.call(&call)).await {
                            Err(_) => {
                                stop = Some(Stop::Failed(FailureCause::WallClock, self.wall_clock_message()));
                                break;
                            }
                            Ok(Err(e)) => match FailureCause::of(&e) {
                                Some(cause) => {
                                    stop = Some(Stop::Failed(cause, e.to_string()));
                                    break;
                                }
                                None => return Err(e.into()),
                            },
                            Ok(Ok(observation)) => observation,
                        };
                        if call.name == FINISH {
                            stop = Some(Stop::Finished);
                            break;
                        }
                        replies.push(observation_message(&call.name, &observation, self.config.max_observation_chars));
                    }
                }
            }
            let tool_seconds = clock.elapsed().as_secs_f64();
            self.trajectory.tool_seconds += tool_seconds;
            self.trajectory.turns.push(TurnRecord {
                record: self.trajectory.earlier_tokens.len(),
                prompt_len,
                generated_end,
                finish_reason: generation.finish_reason,
                tool_calls,
                call_errors,
                generation_seconds,
                tool_seconds,
            });
            match stop {
                Some(Stop::Finished) => return Ok(Status::Finished),
                Some(Stop::Failed(cause, detail)) => return Ok(self.failed(cause, detail)),
                None => {}
            }
            let next = chat.next_prompt(&self.trajectory.tokens.input_ids, &self.trajectory.messages, &replies)?;
            self.trajectory.messages.extend(replies);
            // Recorded even when it overflows the budget: the next iteration then stops.
            match next {
                NextPrompt::Continue(ids) => self.trajectory.tokens.push_context(&ids),
                NextPrompt::Restart(ids) => {
                    let finished = std::mem::take(&mut self.trajectory.tokens);
                    self.trajectory.earlier_tokens.push(finished);
                    self.trajectory.tokens.push_context(&ids);
                }
            }
        }
        Ok(Status::TurnLimit)
    }

    /// Records a failure the model caused; the episode ends with it.
    fn failed(&mut self, cause: FailureCause, detail: String) -> Status {
        self.trajectory.cause = Some(cause);
        self.trajectory.error = Some(detail);
        Status::PolicyFailure
    }

    fn wall_clock_message(&self) -> String {
        format!("the episode ran past its wall-clock bound of {:?}", self.config.max_episode_time)
    }

    /// The assistant message of a turn: with structured `tool_calls` when every call parsed and
    /// the template renders that message back to exactly `text`, else `text` as content (so the
    /// SFT record always reproduces what the model generated).
    fn assistant_message(&self, text: &str, calls: &[ParsedCall]) -> Result<Value> {
        let raw = json!({"role": "assistant", "content": text});
        if calls.is_empty() || calls.iter().any(Result::is_err) {
            return Ok(raw);
        }
        let content = text[..text.find(TOOL_CALL_OPEN).unwrap_or(text.len())].trim_end();
        let tool_calls: Vec<Value> = calls
            .iter()
            .flatten()
            .map(|c| json!({"type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        let structured = json!({"role": "assistant", "content": content, "tool_calls": tool_calls});
        let same = self.chat.render(std::slice::from_ref(&structured), false)? == self.chat.render(std::slice::from_ref(&raw), false)?;
        Ok(if same { structured } else { raw })
    }
}

/// Whether the latest token record decodes to the rendering of the recorded messages (see
/// [`Trajectory::rendering_matches_tokens`]); an episode that ended on its own assistant turn
/// is rendered without, any other with the generation prompt.
fn rendering_matches_tokens(chat: &ChatFormat, trajectory: &Trajectory) -> bool {
    let ends_on_assistant = trajectory.messages.last().is_some_and(|m| m["role"] == "assistant");
    let rendered = chat.render(&trajectory.messages, !ends_on_assistant);
    let decoded = chat.decode(&trajectory.tokens.input_ids);
    match (rendered, decoded) {
        (Ok(rendered), Ok(decoded)) => rendered.trim_end() == decoded.trim_end(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use forge_model::chat_template::testing::{qwen3_template, require_qwen3_template_dir};
    use forge_model::tokenizer::Tokenizer;
    use forge_sandbox::{Observation, ToolCall};

    use super::*;
    use crate::policy::Generation;
    use crate::prompt::Scaffold;
    use crate::trajectory::TokenRecord;
    use crate::testing::{tool_call_text, ScriptedPolicy};

    /// Answers every call with its command.
    struct EchoWorkspace;

    impl Workspace for EchoWorkspace {
        async fn call(&mut self, call: &ToolCall) -> forge_sandbox::Result<Observation> {
            Ok(Observation {
                output: format!("ran {}", call.arguments["command"].as_str().unwrap_or("?")),
                exit_code: Some(0),
                timed_out: false,
                finished: call.name == FINISH,
            })
        }

        async fn patch(&mut self) -> Result<String> {
            Ok(String::new())
        }
    }

    /// Remembers every prompt it is given.
    struct Recording {
        inner: ScriptedPolicy,
        prompts: Mutex<Vec<Vec<u32>>>,
    }

    impl Policy for Recording {
        async fn generate(&self, prompt: &[u32], params: &SamplingParams) -> anyhow::Result<Generation> {
            self.prompts.lock().unwrap().push(prompt.to_vec());
            self.inner.generate(prompt, params).await
        }
    }

    /// The agent's prompts with Qwen3's original template in the non-thinking mode the agent runs
    /// in are `apply_chat_template(history, tools, add_generation_prompt=True,
    /// enable_thinking=False)` token for token (the renderer equals transformers on this template:
    /// forge-model's tests/qwen3_chat_template.rs), for a 3-turn tool episode. The template drops
    /// the empty think block that each generation prompt prefilled from every assistant turn but
    /// the last, so turns 2 and 3 cannot continue the record they follow: each starts a record of
    /// its own, in which exactly that turn's tokens are trained, in the context it was sampled in.
    #[tokio::test]
    async fn qwen3_agent_prompts_are_apply_chat_template_and_each_rewrite_starts_a_record() {
        let Some(dir) = require_qwen3_template_dir("qwen3_agent_prompts_are_apply_chat_template_and_each_rewrite_starts_a_record") else { return };
        let tokenizer = Tokenizer::from_model_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/tiny-tokenizer")).unwrap();
        let chat = Arc::new(ChatFormat::new(qwen3_template(&dir), tokenizer, Scaffold::Standard.tools(), json!({"enable_thinking": false})).unwrap());
        let replies = [
            tool_call_text(&chat, &[("execute_bash", json!({"command": "ls"}))]),
            format!("Let me read it.\n{}", tool_call_text(&chat, &[("execute_bash", json!({"command": "cat a.py"}))])),
            tool_call_text(&chat, &[(FINISH, json!({"message": "done"}))]),
        ];
        let policy = Recording { inner: ScriptedPolicy::new(chat.clone(), move |_, turn| replies[turn].clone()), prompts: Mutex::new(Vec::new()) };
        let trajectory = run_episode(&policy, &mut EchoWorkspace, &chat, "demo-1", "a.py crashes.", &AgentConfig::default()).await;
        assert_eq!(trajectory.status, Status::Finished, "{:?}", trajectory.error);
        let prompts = policy.prompts.into_inner().unwrap();
        assert_eq!(prompts.len(), 3);

        let assistant_at: Vec<usize> = trajectory.messages.iter().enumerate().filter(|(_, m)| m["role"] == "assistant").map(|(i, _)| i).collect();
        for (turn, prompt) in prompts.iter().enumerate() {
            let template_text = chat.render(&trajectory.messages[..assistant_at[turn]], true).unwrap();
            assert!(template_text.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"), "enable_thinking=false prefills an empty think block");
            assert_eq!(*prompt, chat.encode(&template_text).unwrap(), "turn {turn}: the prompt is apply_chat_template's");
        }
        let records: Vec<&TokenRecord> = trajectory.token_records().collect();
        assert_eq!(records.len(), 3, "turns 2 and 3 each start a record");
        for (turn, record) in trajectory.turns.iter().enumerate() {
            assert_eq!(record.record, turn);
            let tokens = records[turn];
            assert_eq!(tokens.input_ids[..record.prompt_len], prompts[turn][..], "turn {turn} is trained in its sampling context");
            let trained: Vec<usize> = (0..tokens.len()).filter(|&i| tokens.loss_mask[i] == 1).collect();
            assert_eq!(trained, (record.prompt_len..record.generated_end).collect::<Vec<_>>(), "record {turn} trains exactly turn {turn}'s tokens");
        }
        assert!(trajectory.rendering_matches_tokens, "the last record decodes to the template's rendering of the conversation");
    }
}
