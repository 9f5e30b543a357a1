//! `forge data inspect`: each example's rendered text, token ids and loss mask.

use std::fmt::Write as _;
use std::path::Path;

use forge_model::chat_template::{encode_conversation_with_kwargs, ChatTemplate};
use forge_model::tokenizer::Tokenizer;
use serde_json::{json, Value};

use super::data::parse_conversation;
use crate::{Result, TrainError};

/// Renders up to `limit` examples of `data` with the template and tokenizer of `model_dir` and
/// the template variables `chat_template_kwargs` (a JSON object or null: what SFT's
/// `data.chat_template_kwargs` passes), exactly as `forge train sft` encodes them.
/// Human form marks the trained (assistant) text with ⟦ ⟧; `as_json` gives one JSON object per
/// example with `text`, `input_ids` and `loss_mask`.
pub fn inspect(model_dir: &Path, data: &Path, limit: usize, as_json: bool, chat_template_kwargs: &Value) -> Result<String> {
    let tokenizer = Tokenizer::from_model_dir(model_dir)?;
    let template = ChatTemplate::from_model_dir(model_dir)?;
    let text = crate::text::read_text(data)?;
    let mut out = String::new();
    let mut shown = 0;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if shown == limit {
            break;
        }
        shown += 1;
        let number = index + 1;
        let (messages, tools) = parse_conversation(line).map_err(|reason| TrainError::Data(format!("{}:{number}: {reason}", data.display())))?;
        let encoded = encode_conversation_with_kwargs(&template, &tokenizer, &messages, tools.as_deref(), chat_template_kwargs)?;
        let trained = encoded.loss_mask.iter().filter(|&&m| m == 1).count();
        if as_json {
            let record = json!({
                "line": number,
                "text": encoded.text,
                "input_ids": encoded.input_ids,
                "loss_mask": encoded.loss_mask,
                "tokens": encoded.input_ids.len(),
                "trained_tokens": trained,
                "non_prefix_turns": encoded.non_prefix_turns,
            });
            writeln!(out, "{record}").expect("writing to a String");
            continue;
        }
        writeln!(out, "── {}:{number} — {} tokens, {trained} trained (⟦…⟧) ──", data.display(), encoded.input_ids.len()).expect("String");
        let mut start = 0;
        while start < encoded.input_ids.len() {
            let trained_span = encoded.loss_mask[start] == 1;
            let end = (start..encoded.input_ids.len()).find(|&i| (encoded.loss_mask[i] == 1) != trained_span).unwrap_or(encoded.input_ids.len());
            let piece = tokenizer.decode(&encoded.input_ids[start..end])?;
            if trained_span {
                write!(out, "⟦{piece}⟧").expect("String");
            } else {
                out.push_str(&piece);
            }
            start = end;
        }
        writeln!(out, "\nids: {:?}\nmask: {}\n", encoded.input_ids, encoded.loss_mask.iter().map(|m| m.to_string()).collect::<String>())
            .expect("String");
    }
    Ok(out)
}
