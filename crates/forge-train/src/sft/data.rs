//! SFT data: JSONL conversations `{"messages": [...], "tools": [...]}` in the OpenAI/TRL chat
//! format, validated, rendered with the model's chat template and masked to the assistant turns.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;

use forge_model::chat_template::{encode_conversation_with_kwargs, ChatTemplate};
use forge_model::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Result, TrainError};

/// What to do with an example that is malformed or teaches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadExamples {
    /// Log it with file:line, count it, go on.
    Skip,
    /// Stop with an error naming file:line.
    Error,
}

/// What to do with an example longer than `max_seq_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLength {
    /// Keep the first `max_seq_len` tokens (dropped if no assistant token survives).
    Truncate,
    Drop,
}

/// One training example: token ids and HF-style labels (`-100` = no loss).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// 1-based line of the source file.
    pub line: usize,
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

impl Example {
    pub fn trained_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != -100).count()
    }
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct DataStats {
    pub lines: usize,
    pub examples: usize,
    pub skipped_bad: usize,
    pub truncated: usize,
    pub dropped_over_length: usize,
    pub non_prefix_templates: usize,
    pub tokens: usize,
    pub trained_tokens: usize,
}

/// Checks one JSONL line; the error says what is wrong (the caller adds file:line).
pub fn parse_conversation(line: &str) -> std::result::Result<(Vec<Value>, Option<Vec<Value>>), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = value.as_object().ok_or("expected a JSON object with \"messages\"")?;
    if let Some(key) = object.keys().find(|k| *k != "messages" && *k != "tools") {
        return Err(format!("unknown key \"{key}\" (expected \"messages\" and optionally \"tools\")"));
    }
    let messages = object.get("messages").and_then(Value::as_array).ok_or("\"messages\" must be a list")?.clone();
    let tools = match object.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(t)) => Some(t.clone()),
        Some(_) => return Err("\"tools\" must be a list".into()),
    };
    let tool_names: Option<BTreeSet<String>> = tools.as_ref().map(|tools| {
        tools
            .iter()
            .filter_map(|t| t.pointer("/function/name").or_else(|| t.get("name")).and_then(Value::as_str).map(String::from))
            .collect()
    });
    let mut has_assistant = false;
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).ok_or(format!("message {i} has no \"role\""))?;
        match role {
            "system" | "user" | "tool" => {}
            "assistant" => has_assistant = true,
            other => return Err(format!("message {i} has unknown role \"{other}\" (use system, user, assistant or tool)")),
        }
        let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) else { continue };
        let calls = calls.as_array().ok_or(format!("message {i}: tool_calls must be a list"))?;
        if role != "assistant" {
            return Err(format!("message {i}: only assistant messages may have tool_calls"));
        }
        for call in calls {
            let function = call.get("function").unwrap_or(call);
            let name = function.get("name").and_then(Value::as_str).ok_or(format!("message {i}: a tool call has no function name"))?;
            if let Some(names) = &tool_names {
                if !names.contains(name) {
                    return Err(format!("message {i}: tool call to \"{name}\", which is not among the example's tools {names:?}"));
                }
            }
            match function.get("arguments") {
                Some(Value::Object(_)) | None => {}
                Some(Value::String(text)) => {
                    if !matches!(serde_json::from_str::<Value>(text), Ok(Value::Object(_))) {
                        return Err(format!("message {i}: arguments of \"{name}\" are a string that is not a JSON object"));
                    }
                }
                Some(_) => return Err(format!("message {i}: arguments of \"{name}\" must be an object or a JSON string")),
            }
        }
    }
    if !has_assistant {
        return Err("no assistant message: nothing to learn from".into());
    }
    Ok((messages, tools))
}

/// Reads, validates and encodes every example of a JSONL file, rendered without template
/// variables (see [`load_examples_with_kwargs`]).
pub fn load_examples(
    path: &Path,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    max_seq_len: usize,
    over_length: OverLength,
    bad: BadExamples,
) -> Result<(Vec<Example>, DataStats)> {
    load_examples_with_kwargs(path, template, tokenizer, &Value::Null, max_seq_len, over_length, bad)
}

/// Reads, validates and encodes every example of a JSONL file; `chat_template_kwargs` (a JSON
/// object or null) are template variables for every rendering, like TRL's
/// `SFTConfig.chat_template_kwargs` (e.g. `{"enable_thinking": false}`).
pub fn load_examples_with_kwargs(
    path: &Path,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    chat_template_kwargs: &Value,
    max_seq_len: usize,
    over_length: OverLength,
    bad: BadExamples,
) -> Result<(Vec<Example>, DataStats)> {
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut stats = DataStats::default();
    let mut examples = Vec::new();
    let mut first_non_prefix: Option<(usize, Vec<usize>)> = None;
    let reject = |stats: &mut DataStats, line: usize, reason: String| -> Result<()> {
        let message = format!("{}:{line}: {reason}", path.display());
        match bad {
            BadExamples::Error => Err(TrainError::Data(format!("{message} (set data.bad_examples = \"skip\" to skip such lines)"))),
            BadExamples::Skip => {
                tracing::warn!("skipping {message}");
                stats.skipped_bad += 1;
                Ok(())
            }
        }
    };
    for (index, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| TrainError::io(path, e))?;
        let line = match String::from_utf8(line) {
            Ok(line) if index == 0 => line.strip_prefix(crate::text::BOM).map(str::to_string).unwrap_or(line),
            Ok(line) => line,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                return Err(crate::text::not_utf8(path, number, Some(at + 1), e.as_bytes()[at]));
            }
        };
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.trim().is_empty() {
            continue;
        }
        stats.lines += 1;
        let (messages, tools) = match parse_conversation(line) {
            Ok(parsed) => parsed,
            Err(reason) => {
                reject(&mut stats, number, reason)?;
                continue;
            }
        };
        let encoded = match encode_conversation_with_kwargs(template, tokenizer, &messages, tools.as_deref(), chat_template_kwargs) {
            Ok(e) => e,
            Err(e) => {
                reject(&mut stats, number, e.to_string())?;
                continue;
            }
        };
        if !encoded.non_prefix_turns.is_empty() {
            // Expected for every multi-turn example of history-rewriting templates (Qwen3), so
            // one summary at the end instead of a warning per line.
            if stats.non_prefix_templates == 0 {
                first_non_prefix = Some((number, encoded.non_prefix_turns.clone()));
            }
            stats.non_prefix_templates += 1;
        }
        let mut input_ids = encoded.input_ids;
        let mut labels: Vec<i64> = input_ids.iter().zip(&encoded.loss_mask).map(|(&id, &m)| if m == 1 { i64::from(id) } else { -100 }).collect();
        let truncated = input_ids.len() > max_seq_len;
        if truncated {
            match over_length {
                OverLength::Drop => {
                    stats.dropped_over_length += 1;
                    continue;
                }
                OverLength::Truncate => {
                    input_ids.truncate(max_seq_len);
                    labels.truncate(max_seq_len);
                    stats.truncated += 1;
                }
            }
        }
        let example = Example { line: number, input_ids, labels };
        if example.trained_tokens() == 0 {
            if truncated {
                // everything it taught was cut off
                stats.dropped_over_length += 1;
                continue;
            }
            reject(&mut stats, number, "the rendered conversation has no assistant tokens".into())?;
            continue;
        }
        stats.tokens += example.input_ids.len();
        stats.trained_tokens += example.trained_tokens();
        examples.push(example);
    }
    stats.examples = examples.len();
    if let Some((line, turns)) = first_non_prefix {
        tracing::warn!(
            "{}: in {} example(s) (first: line {line}, assistant messages {turns:?}) the chat template renders earlier assistant turns differently in the whole conversation than when each was the last (e.g. Qwen3 drops earlier think blocks); their loss covers the turns as the whole conversation renders them",
            path.display(),
            stats.non_prefix_templates
        );
    }
    if examples.is_empty() {
        return Err(TrainError::Data(format!("{}: no usable examples ({stats:?})", path.display())));
    }
    Ok((examples, stats))
}
