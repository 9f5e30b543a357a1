//! One choice of a response, built token by token as the engine samples them: the text (decoded
//! incrementally), cut at the first stop string, tool calls parsed at the end; and, for streaming,
//! the pieces that may be sent so far. A streamed choice and a whole one are built by the same
//! code, so the pieces always concatenate to the whole text.

use forge_agent::parse::{parse_tool_calls, TOOL_CALL_OPEN};
use forge_engine::FinishReason;
use forge_model::tokenizer::Tokenizer;
use serde_json::{json, Value as Json};

/// Where reasoning ends in Qwen's format; forge-agent's parser ignores tool calls before the last one.
const THINK_CLOSE: &str = "</think>";

/// Text decoded from token ids one token at a time. A token may end in the middle of a UTF-8
/// character; its text is held back until a later token completes it. Each step decodes only a
/// short window (the previous piece and the new tokens), not the whole generation.
#[derive(Default)]
struct IncrementalDecoder {
    ids: Vec<u32>,
    /// `ids[prefix..read]` decoded to the last piece handed out, which the next decode needs as context.
    prefix: usize,
    read: usize,
}

impl IncrementalDecoder {
    /// The text `token` completes (empty while a character is incomplete).
    fn push(&mut self, tokenizer: &Tokenizer, token: u32) -> forge_model::Result<String> {
        self.ids.push(token);
        self.advance(tokenizer, false)
    }

    /// Whatever is still held back, complete or not.
    fn flush(&mut self, tokenizer: &Tokenizer) -> forge_model::Result<String> {
        self.advance(tokenizer, true)
    }

    fn advance(&mut self, tokenizer: &Tokenizer, force: bool) -> forge_model::Result<String> {
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let now = tokenizer.decode(&self.ids[self.prefix..])?;
        let complete = force || !now.ends_with(char::REPLACEMENT_CHARACTER);
        if now.len() > before.len() && complete && now.is_char_boundary(before.len()) {
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(now[before.len()..].to_string());
        }
        Ok(String::new())
    }
}

/// Newly generated text and the tokens since the previous piece (a token whose text is held back
/// comes with the piece that releases it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Piece {
    pub text: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
}

/// A call the model made, as OpenAI returns it (`arguments`: the JSON object as a string).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ToolCall {
    pub fn to_json(&self) -> Json {
        json!({"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}})
    }
}

/// A finished choice.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedChoice {
    /// The message text: all of it, or with tool calls the text before the first call.
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    /// `stop`, `length` or `tool_calls`.
    pub finish_reason: &'static str,
    /// Every generated token (a final end-of-turn token too) and its log-prob.
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// What was not yet handed out as pieces: the end of `content`, the last tokens.
    pub rest: Piece,
    /// The tool-call blocks that did not parse, with what was wrong (the text is then `content`).
    pub tool_call_errors: Vec<String>,
}

/// Builds one choice from its tokens. `end_tokens` end the generation and are not text (the
/// model's end-of-turn / eos ids); `stop` strings end it where they appear (not included); with
/// `tools`, `<tool_call>` blocks become structured calls.
pub struct ChoiceBuilder<'a> {
    tokenizer: &'a Tokenizer,
    end_tokens: &'a [u32],
    stop: &'a [String],
    tools: Option<&'a [Json]>,
    decoder: IncrementalDecoder,
    text: String,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    released_text: usize,
    released_tokens: usize,
    stopped_by_string: bool,
}

impl<'a> ChoiceBuilder<'a> {
    pub fn new(tokenizer: &'a Tokenizer, end_tokens: &'a [u32], stop: &'a [String], tools: Option<&'a [Json]>) -> Self {
        Self {
            tokenizer,
            end_tokens,
            stop,
            tools,
            decoder: IncrementalDecoder::default(),
            text: String::new(),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            released_text: 0,
            released_tokens: 0,
            stopped_by_string: false,
        }
    }

    /// Adds a sampled token; returns whether a stop string has ended the choice (take no more).
    pub fn push(&mut self, token: u32, logprob: f32) -> forge_model::Result<bool> {
        self.tokens.push(token);
        self.logprobs.push(logprob);
        if self.stopped_by_string || self.end_tokens.contains(&token) {
            return Ok(self.stopped_by_string);
        }
        let delta = self.decoder.push(self.tokenizer, token)?;
        self.append(&delta);
        Ok(self.stopped_by_string)
    }

    fn append(&mut self, delta: &str) {
        if delta.is_empty() {
            return;
        }
        // a stop string may straddle the old end: search from where one could begin
        let longest = self.stop.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.text.len().saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        self.text.push_str(delta);
        let first = self.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| self.text[from..].find(s.as_str())).min();
        if let Some(at) = first {
            self.text.truncate(from + at);
            self.stopped_by_string = true;
        }
    }

    /// The text that can be sent now, with the tokens since the last piece; `None` while nothing
    /// new may be sent. Held back: a tail that may begin a stop string (it would be cut), and with
    /// tools, everything from the first `<tool_call>` (it becomes a structured call if it parses).
    pub fn take_piece(&mut self) -> Option<Piece> {
        let mut end = self.text.len();
        for stop in self.stop {
            end = end.min(self.text.len() - partial_match_at_end(&self.text, stop));
        }
        if self.tools.is_some() {
            end = end.min(content_end(&self.text)).min(self.text.len() - partial_match_at_end(&self.text, TOOL_CALL_OPEN));
        }
        if end <= self.released_text {
            return None;
        }
        let text = self.text[self.released_text..end].to_string();
        self.released_text = end;
        Some(self.take_tokens(text))
    }

    fn take_tokens(&mut self, text: String) -> Piece {
        let piece = Piece { text, tokens: self.tokens[self.released_tokens..].to_vec(), logprobs: self.logprobs[self.released_tokens..].to_vec() };
        self.released_tokens = self.tokens.len();
        piece
    }

    /// The finished choice; `engine_finish` is the engine's reason (`None` when a stop string
    /// ended it first). `new_call_id` names each tool call.
    pub fn finish(mut self, engine_finish: Option<FinishReason>, mut new_call_id: impl FnMut() -> String) -> forge_model::Result<FinishedChoice> {
        if !self.stopped_by_string {
            let rest = self.decoder.flush(self.tokenizer)?;
            self.append(&rest);
        }
        let mut finish_reason = match engine_finish {
            Some(FinishReason::Length) if !self.stopped_by_string => "length",
            _ => "stop",
        };
        let mut content_len = self.text.len();
        let mut tool_calls = Vec::new();
        let mut tool_call_errors = Vec::new();
        if let Some(tools) = self.tools {
            let parsed = parse_tool_calls(&self.text, tools);
            tool_call_errors = parsed.iter().filter_map(|c| c.as_ref().err().cloned()).collect();
            // one bad block and the whole text goes back as it is: a caller must not act on part of a turn
            if !parsed.is_empty() && tool_call_errors.is_empty() {
                content_len = content_end(&self.text);
                tool_calls = parsed
                    .into_iter()
                    .flatten()
                    .map(|call| ToolCall { id: new_call_id(), name: call.name, arguments: call.arguments.to_string() })
                    .collect();
                finish_reason = "tool_calls";
            }
        }
        // content_end only grows as text arrives, so what was released is within it
        let rest_text = self.text[self.released_text.min(content_len)..content_len].to_string();
        let rest = self.take_tokens(rest_text);
        self.text.truncate(content_len);
        Ok(FinishedChoice { content: self.text, tool_calls, finish_reason, tokens: self.tokens, logprobs: self.logprobs, rest, tool_call_errors })
    }
}

/// Where the message text ends when the text holds tool calls: at the first `<tool_call>` after
/// the last `</think>` (the calls forge-agent's parser takes); the whole text if there is none.
pub fn content_end(text: &str) -> usize {
    let visible = text.rfind(THINK_CLOSE).map_or(0, |i| i + THINK_CLOSE.len());
    text[visible..].find(TOOL_CALL_OPEN).map_or(text.len(), |i| visible + i)
}

/// Bytes at the end of `text` that begin `pattern` without completing it (the longest such tail).
fn partial_match_at_end(text: &str, pattern: &str) -> usize {
    (1..pattern.len()).rev().find(|&k| pattern.is_char_boundary(k) && text.ends_with(&pattern[..k])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_matches_and_content_end() {
        assert_eq!(partial_match_at_end("abc<tool", "<tool_call>"), 5);
        assert_eq!(partial_match_at_end("abc", "<tool_call>"), 0);
        assert_eq!(partial_match_at_end("x\n\nUs", "\n\nUser:"), 4);
        assert_eq!(content_end("hi <tool_call>{}</tool_call>"), 3);
        assert_eq!(content_end("<think><tool_call>x</tool_call></think>ok"), "<think><tool_call>x</tool_call></think>ok".len());
        assert_eq!(content_end("<think>a</think>b<tool_call>"), "<think>a</think>b".len());
    }
}
