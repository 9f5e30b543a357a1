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
    script: Box<Script>,
}

/// The reply to give: (prompt, index of the turn in its episode) -> text.
type Script = dyn Fn(&str, usize) -> String + Send + Sync;

impl ScriptedPolicy {
    pub fn new(chat: Arc<ChatFormat>, script: impl Fn(&str, usize) -> String + Send + Sync + 'static) -> Self {
        ScriptedPolicy { chat, script: Box::new(script) }
    }

    /// The gold-patch oracle for `instances`: finds the instance by its problem statement in the
    /// prompt and plays [`oracle_turns`].
    pub fn oracle(chat: Arc<ChatFormat>, instances: &[TaskInstance]) -> Self {
        Self::playing(chat, instances, oracle_turns)
    }

    /// The gold oracle that edits like an agent: [`edit_oracle_turns`] for one-line fixes (short
    /// enough for a tiny model to learn from), [`oracle_turns`] for the others.
    pub fn edit_oracle(chat: Arc<ChatFormat>, instances: &[TaskInstance]) -> Self {
        Self::playing(chat, instances, |chat, instance| edit_oracle_turns(chat, instance).unwrap_or_else(|| oracle_turns(chat, instance)))
    }

    /// Plays `turns(instance)` for the instance whose problem statement is in the prompt.
    fn playing(chat: Arc<ChatFormat>, instances: &[TaskInstance], turns: impl Fn(&ChatFormat, &TaskInstance) -> Vec<String>) -> Self {
        let scripts: Vec<(String, Vec<String>)> = instances.iter().map(|i| (i.problem_statement.trim().to_string(), turns(&chat, i))).collect();
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
    // Tasks from datasets run the project's own test command in its environment, and the call's
    // exit status is the tests' (not the pipe's): a broken environment shows as a failure.
    let run_tests = match forge_swe::resolve::Source::of(instance) {
        forge_swe::resolve::Source::Forge => "python3 -m pytest -q -p no:cacheprovider 2>&1 | tail -n 5".to_string(),
        _ => {
            let cmd = forge_swe::resolve::test_command(instance).unwrap_or_else(|| "python -m pytest -q".into());
            format!("{cmd} 2>&1 | tail -n 5; test ${{PIPESTATUS[0]}} -eq 0")
        }
    };
    vec![
        tool_call_text(chat, &[(EXECUTE_BASH, json!({"command": apply}))]),
        tool_call_text(chat, &[(EXECUTE_BASH, json!({"command": run_tests}))]),
        tool_call_text(chat, &[(STR_REPLACE_EDITOR, json!({"command": "view", "path": format!("/testbed/{changed}"), "view_range": [1, 10]}))]),
        tool_call_text(chat, &[(FINISH, json!({"message": "Applied the fix and ran the tests."}))]),
    ]
}

/// The edit oracle's turns for an instance whose gold patch changes one line: `str_replace` in
/// `/testbed/<file>` of the removed line's text by the added line's (their common indentation left
/// out: the shortest text that names the line, since each line of the bundled demo is unique in its
/// file), then `finish`. `None` for any other patch.
pub fn edit_oracle_turns(chat: &ChatFormat, instance: &TaskInstance) -> Option<Vec<String>> {
    let (file, removed, added) = single_line_fix(&instance.patch)?;
    let indent = removed.len() - removed.trim_start().len();
    let indent = indent.min(added.len() - added.trim_start().len());
    let (old_str, new_str) = (removed[indent..].trim_end(), added[indent..].trim_end());
    let edit = json!({"command": "str_replace", "path": format!("/testbed/{file}"), "old_str": old_str, "new_str": new_str});
    Some(vec![
        tool_call_text(chat, &[(STR_REPLACE_EDITOR, edit)]),
        tool_call_text(chat, &[(FINISH, json!({"message": "Fixed the issue."}))]),
    ])
}

/// (file, removed line, added line) of a patch that replaces exactly one line of one file.
fn single_line_fix(patch: &str) -> Option<(String, String, String)> {
    let [file] = forge_swe::instance::patch_files(patch).try_into().ok()?;
    let body = patch.lines().filter(|l| !l.starts_with("---") && !l.starts_with("+++"));
    let (removed, added): (Vec<&str>, Vec<&str>) = body.filter(|l| l.starts_with(['-', '+'])).partition(|l| l.starts_with('-'));
    match (removed.as_slice(), added.as_slice()) {
        ([removed], [added]) => Some((file, removed[1..].to_string(), added[1..].to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_fixes_are_recognised() {
        let patch = "diff --git a/p/f.py b/p/f.py\nindex 1..2 100644\n--- a/p/f.py\n+++ b/p/f.py\n@@ -1,2 +1,2 @@\n def f(a, b):\n-    return a * b\n+    return a + b\n";
        let fix = single_line_fix(patch).unwrap();
        assert_eq!(fix, ("p/f.py".to_string(), "    return a * b".to_string(), "    return a + b".to_string()));
        let two_lines = patch.replace("+    return a + b\n", "+    return a + b\n+    pass\n");
        assert_eq!(single_line_fix(&two_lines), None);
        let two_files = format!("{patch}{}", patch.replace("p/f.py", "p/g.py"));
        assert_eq!(single_line_fix(&two_files), None);
    }
}
