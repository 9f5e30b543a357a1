//! The model's chat format for the agent: its chat template (with the tool schemas as the
//! `tools` variable) and tokenizer, and the token-level continuation of a conversation.
//!
//! Generated tokens are never re-tokenised. After the model's turn k (its tokens end with the
//! end-of-turn token, e.g. `<|im_end|>`), the prompt of turn k+1 is
//! `prompt_k + generated_k + encode(delta)`, where `delta` is the text the template adds after
//! that end-of-turn token when the observations are appended and the generation prompt is asked
//! for: with `before = render(history)` and `after = render(history + observations, gen prompt)`,
//! `delta = after[end of the n-th end-of-turn string ..]`, n = the number of end-of-turn strings
//! in `before` (the assistant turn k ends at the n-th). The assistant turn's own rendering does not
//! enter `delta`, so templates that re-render earlier turns (Qwen3 dropping empty `<think>` blocks)
//! still give the right continuation. Because `delta` starts right after a special token,
//! tokenising it alone gives the same ids as tokenising the whole text would. Whether the token
//! stream decodes to the rendering of the recorded messages is checked per trajectory
//! (`Trajectory::rendering_matches_tokens`): true for templates that render prefix-consistently,
//! like the bundled tiny tokenizer's. Qwen3's original template is not one: with
//! `enable_thinking=false` every generation prompt prefills `<think>\n\n</think>\n\n`, which the
//! template drops from every assistant turn but the last, so the prompt of turn k > 1 is
//! `apply_chat_template(history, add_generation_prompt=True, enable_thinking=False)` with that
//! empty think block after each earlier `<|im_start|>assistant\n` (4 tokens per earlier turn;
//! `episode::tests::qwen3_agent_prompts_are_the_template_plus_the_earlier_turns_empty_think_blocks`).
//! The model thus sees its earlier turns as it generated them, while SFT data rendered by the
//! template shows them without the block.

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

    /// The text that follows the last assistant turn of `history` once `appended` (observations)
    /// are added and the next assistant turn is prompted (see the module docs).
    pub fn observation_delta(&self, history: &[Value], appended: &[Value]) -> Result<String> {
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
        Ok(after[cut..].to_string())
    }
}
