//! The model's chat format for the agent: its chat template (with the tool schemas as the
//! `tools` variable) and tokenizer, and each turn's prompt as token ids.
//!
//! Every prompt is what transformers' `apply_chat_template(history, tools,
//! add_generation_prompt=True, **template_vars)` gives, and generated tokens are never
//! re-tokenised where the template lets the conversation grow by appending. After the model's
//! turn k (its tokens end with the end-of-turn token, e.g. `<|im_end|>`), with
//! `after = render(history + observations, gen prompt)` and `cut` = the end of the n-th
//! end-of-turn string in `after` (n = their number in `render(history)`: the assistant turn k ends
//! there):
//! - if the token record so far decodes to `after[..cut]` — the template renders the history as the
//!   model saw and wrote it (the bundled tiny tokenizer's, TRL's `*_training` templates) — the
//!   prompt of turn k+1 continues it: `record + encode(after[cut..])`. Because that text starts
//!   right after a special token, tokenising it alone gives the ids tokenising the whole would;
//! - otherwise the template rewrote the history: Qwen3's original template with
//!   `enable_thinking=false` prefills `<think>\n\n</think>\n\n` in every generation prompt and drops
//!   it from every assistant turn but the last. The prompt of turn k+1 is then `encode(after)`,
//!   apply_chat_template's tokens exactly, and starts a new token record
//!   ([`crate::Trajectory::earlier_tokens`]): RL trains each record as its own sequence, so every
//!   generated token is trained in the context it was sampled in.

use std::path::Path;

use forge_model::chat_template::ChatTemplate;
use forge_model::tokenizer::Tokenizer;
use serde_json::Value;

use crate::error::{AgentError, Result};
use crate::prompt::Scaffold;

pub struct ChatFormat {
    template: ChatTemplate,
    tokenizer: Tokenizer,
    scaffold: Scaffold,
    tools: Vec<Value>,
    template_vars: Value,
    end_of_turn_id: u32,
}

impl ChatFormat {
    /// The model directory's `tokenizer.json` and chat template, with the standard scaffold.
    /// `template_vars` are extra template variables, e.g. `{"enable_thinking": false}` for Qwen3.
    pub fn from_model_dir(dir: &Path, template_vars: Value) -> Result<Self> {
        let template = ChatTemplate::from_model_dir(dir)?;
        let tokenizer = Tokenizer::from_model_dir(dir)?;
        Self::new(template, tokenizer, Scaffold::Standard.tools(), template_vars)
    }

    /// The same format with `scaffold`'s prompts and tools.
    pub fn with_scaffold(mut self, scaffold: Scaffold) -> Self {
        self.scaffold = scaffold;
        self.tools = scaffold.tools();
        self
    }

    pub fn new(template: ChatTemplate, tokenizer: Tokenizer, tools: Vec<Value>, template_vars: Value) -> Result<Self> {
        let end_of_turn = template.eos_token();
        let end_of_turn_id = match tokenizer.encode(end_of_turn)?.as_slice() {
            [id] if !end_of_turn.is_empty() => *id,
            ids => {
                return Err(AgentError::Template(format!(
                    "the end-of-turn token {end_of_turn:?} (eos_token of tokenizer_config.json) is not one token of tokenizer.json (it encodes to {ids:?})"
                )))
            }
        };
        Ok(Self { template, tokenizer, scaffold: Scaffold::Standard, tools, template_vars, end_of_turn_id })
    }

    pub fn tools(&self) -> &[Value] {
        &self.tools
    }

    /// The conversation an episode on `problem_statement` starts from.
    pub fn initial_messages(&self, problem_statement: &str) -> Vec<Value> {
        self.scaffold.initial_messages(problem_statement)
    }

    /// [`ChatFormat::initial_messages`] with the task's environment described.
    pub fn initial_messages_with(&self, problem_statement: &str, environment: Option<&str>) -> Vec<Value> {
        self.scaffold.initial_messages_with(problem_statement, environment)
    }

    /// The token that ends an assistant turn (the sampling stop token).
    pub fn end_of_turn_id(&self) -> u32 {
        self.end_of_turn_id
    }

    pub fn render(&self, messages: &[Value], add_generation_prompt: bool) -> Result<String> {
        Ok(self.template.render(messages, Some(&self.tools), add_generation_prompt, &self.template_vars)?)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text)?)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids)?)
    }

    /// The prompt of the next turn after `appended` (observations) follow `history`, whose last
    /// assistant turn ends the token record `record` (see the module docs).
    pub fn next_prompt(&self, record: &[u32], history: &[Value], appended: &[Value]) -> Result<NextPrompt> {
        let end_of_turn = self.template.eos_token();
        let before = self.render(history, false)?;
        let turns = before.matches(end_of_turn).count();
        let mut extended = history.to_vec();
        extended.extend_from_slice(appended);
        let after = self.render(&extended, true)?;
        let cut = after
            .match_indices(end_of_turn)
            .nth(turns.wrapping_sub(1))
            .filter(|_| turns > 0)
            .map(|(i, _)| i + end_of_turn.len())
            .ok_or_else(|| {
                AgentError::Template(format!(
                    "the rendering of the conversation with its observations has fewer than {turns} {end_of_turn:?} tokens; the template drops earlier turns"
                ))
            })?;
        if self.decode(record)? == after[..cut] {
            Ok(NextPrompt::Continue(self.encode(&after[cut..])?))
        } else {
            Ok(NextPrompt::Restart(self.encode(&after)?))
        }
    }
}

/// How the next turn's prompt relates to the token record so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPrompt {
    /// These tokens follow the record (observations and the generation prompt).
    Continue(Vec<u32>),
    /// The template rendered the history differently from the record: the whole prompt, which
    /// starts a new record.
    Restart(Vec<u32>),
}
