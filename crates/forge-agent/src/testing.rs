//! Scripted policies for tests and benchmarks: they answer with fixed text, tokenised with the
//! model's tokenizer, so the real loop, sandbox and harness can be exercised without a model.

use std::sync::Arc;

use anyhow::Context;
use forge_sandbox::{EXECUTE_BASH, FINISH, STR_REPLACE_EDITOR};
use forge_swe::TaskInstance;
use serde_json::{json, Value};

use crate::chat::ChatFormat;
use crate::policy::{FinishReason, Generation, Policy, SamplingParams};

/// Answers turn k of a conversation with `script(prompt text, k)`. Turns are counted as the
/// ChatML assistant headers (`<|im_start|>assistant`) in the prompt, so one policy serves many
/// concurrent episodes. Log-probs are a deterministic stand-in, `-id / 1000`, so that tests can
/// check they stay aligned with their tokens.
pub struct ScriptedPolicy {
    chat: Arc<ChatFormat>,
    script: Box<dyn Fn(&str, usize) -> String + Send + Sync>,
}

impl ScriptedPolicy {
    pub fn new(chat: Arc<ChatFormat>, script: impl Fn(&str, usize) -> String + Send + Sync + 'static) -> Self {
        ScriptedPolicy { chat, script: Box::new(script) }
    }

    /// The gold-patch oracle for `instances`: finds the instance by its problem statement in the
    /// prompt and plays [`oracle_turns`].
    pub fn oracle(chat: Arc<ChatFormat>, instances: &[TaskInstance]) -> Self {
        let scripts: Vec<(String, Vec<String>)> =
            instances.iter().map(|i| (i.problem_statement.trim().to_string(), oracle_turns(&chat, i))).collect();
        Self::new(chat, move |prompt, turn| {
            scripts
                .iter()
                .find(|(problem, _)| prompt.contains(problem.as_str()))
                .and_then(|(_, turns)| turns.get(turn).cloned())
                .unwrap_or_else(|| "I do not know this task.".into())
        })
    }

    /// Calls `finish` at once (never changes anything).
    pub fn finish_only(chat: Arc<ChatFormat>) -> Self {
        let text = tool_call_text(&chat, &[(FINISH, json!({"message": "done"}))]);
        Self::new(chat, move |_, _| text.clone())
    }
}

impl Policy for ScriptedPolicy {
    async fn generate(&self, prompt: &[u32], params: &SamplingParams) -> anyhow::Result<Generation> {
        let prompt = self.chat.decode(prompt).context("decoding the prompt")?;
        let turn = prompt.matches("<|im_start|>assistant").count().saturating_sub(1);
        let mut tokens = self.chat.encode(&(self.script)(&prompt, turn)).context("encoding the scripted reply")?;
        tokens.push(self.chat.end_of_turn_id());
        let finish_reason = if tokens.len() > params.max_new_tokens {
            tokens.truncate(params.max_new_tokens);
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        let logprobs = tokens.iter().map(|&t| -(t as f32) / 1000.0).collect();
        Ok(Generation { tokens, logprobs, finish_reason })
    }
}

/// An assistant turn calling `calls` exactly as the chat template renders them (the text a model
/// trained on such data produces), without the turn's header and end-of-turn token.
pub fn tool_call_text(chat: &ChatFormat, calls: &[(&str, Value)]) -> String {
    let tool_calls: Vec<Value> = calls.iter().map(|(name, arguments)| json!({"type": "function", "function": {"name": name, "arguments": arguments}})).collect();
    let rendered = chat.render(&[json!({"role": "assistant", "content": "", "tool_calls": tool_calls})], false).expect("the template renders tool calls");
    let body = rendered.split_once("<|im_start|>assistant\n").map_or(rendered.as_str(), |(_, b)| b);
    body[..body.rfind("<|im_end|>").unwrap_or(body.len())].to_string()
}

/// The oracle's turns for an instance: apply the gold patch with `git apply`, run the existing
/// tests, look at the changed file with the editor, `finish`.
pub fn oracle_turns(chat: &ChatFormat, instance: &TaskInstance) -> Vec<String> {
    let apply = format!("git apply --verbose - <<'__GOLD_PATCH__'\n{}\n__GOLD_PATCH__", instance.patch.trim_end_matches('\n'));
    let changed = forge_swe::instance::patch_files(&instance.patch).into_iter().next().unwrap_or_default();
    vec![
        tool_call_text(chat, &[(EXECUTE_BASH, json!({"command": apply}))]),
        tool_call_text(chat, &[(EXECUTE_BASH, json!({"command": "python3 -m pytest -q -p no:cacheprovider 2>&1 | tail -n 5"}))]),
        tool_call_text(chat, &[(STR_REPLACE_EDITOR, json!({"command": "view", "path": format!("/testbed/{changed}"), "view_range": [1, 10]}))]),
        tool_call_text(chat, &[(FINISH, json!({"message": "Applied the fix and ran the tests."}))]),
    ]
}
