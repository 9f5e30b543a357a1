//! Chat templates (the model directory's Jinja template) rendered with minijinja set up to behave
//! like transformers' `apply_chat_template`, and conversations encoded into token ids with an
//! assistant-only loss mask.

use std::path::Path;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::Value as Json;

use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

const TEMPLATE_NAME: &str = "chat";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// `chat_template.jinja` if present, else `chat_template` of `tokenizer_config.json` (a string,
    /// or a list of named templates of which "default" is used, as transformers does).
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Json = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| ModelError::Tokenizer { path: config_path.clone(), reason: format!("not valid JSON: {e}") })?,
            Err(_) => Json::Null,
        };
        let jinja_path = dir.join("chat_template.jinja");
        let source = if jinja_path.is_file() {
            std::fs::read_to_string(&jinja_path).map_err(|e| ModelError::io(&jinja_path, e))?
        } else {
            match &config["chat_template"] {
                Json::String(s) => s.clone(),
                Json::Array(named) => named
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_string)
                    .ok_or_else(|| ModelError::Tokenizer { path: config_path.clone(), reason: "chat_template list has no \"default\" entry".into() })?,
                _ => {
                    return Err(ModelError::Tokenizer {
                        path: dir.to_path_buf(),
                        reason: "no chat template: add chat_template.jinja or a \"chat_template\" to tokenizer_config.json".into(),
                    })
                }
            }
        };
        let token = |key: &str| match &config[key] {
            Json::String(s) => s.clone(),
            Json::Object(o) => o.get("content").and_then(Json::as_str).unwrap_or_default().to_string(),
            _ => String::new(),
        };
        Self::from_source(&source, token("bos_token"), token("eos_token"))
    }

    pub fn from_source(source: &str, bos_token: String, eos_token: String) -> Result<Self> {
        let mut env = Environment::new();
        // transformers: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) + loopcontrols
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |message: String| -> std::result::Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned(TEMPLATE_NAME, without_generation_tags(source))
            .map_err(|e| ModelError::Invalid(format!("chat template does not parse: {e:#}")))?;
        Ok(Self { env, bos_token, eos_token })
    }

    /// The end-of-turn token's text (`eos_token` of tokenizer_config.json, `<|im_end|>` for Qwen).
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The conversation as text. `messages` and `tools` are in the OpenAI/TRL chat format;
    /// `extra` holds further template variables (e.g. `enable_thinking`).
    pub fn render(&self, messages: &[Json], tools: Option<&[Json]>, add_generation_prompt: bool, extra: &Json) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).expect("added in from_source");
        let mut context = serde_json::Map::new();
        if let Json::Object(extra) = extra {
            context.extend(extra.clone());
        }
        context.insert("messages".into(), Json::from(messages.to_vec()));
        context.insert("tools".into(), tools.map_or(Json::Null, |t| Json::from(t.to_vec())));
        context.insert("add_generation_prompt".into(), Json::from(add_generation_prompt));
        context.insert("bos_token".into(), Json::from(self.bos_token.clone()));
        context.insert("eos_token".into(), Json::from(self.eos_token.clone()));
        template
            .render(Value::from_serialize(&context))
            .map_err(|e| ModelError::Invalid(format!("chat template failed: {e:#}")))
    }
}

/// transformers' `{% generation %}` blocks (assistant-mask markers) render their body unchanged;
/// `if true` keeps the whitespace semantics of the original tags.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body, trail) = strip_dashes(inner);
        match body.trim() {
            "generation" => out.push_str(&format!("{{%{lead} if true {trail}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{lead} endif {trail}%}}")),
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn strip_dashes(inner: &str) -> (&str, &str, &str) {
    let (lead, inner) = match inner.strip_prefix('-').or_else(|| inner.strip_prefix('+')) {
        Some(stripped) => (&inner[..1], stripped),
        None => ("", inner),
    };
    match inner.strip_suffix('-').or_else(|| inner.strip_suffix('+')) {
        Some(stripped) => (lead, stripped, &inner[inner.len() - 1..]),
        None => (lead, inner, ""),
    }
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`: `", "` and `": "` separators
/// without indent, key order kept, no HTML escaping (minijinja's own tojson escapes `<>&'`).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut buf = Vec::new();
    let result = match indent {
        Some(n) => {
            let spaces = " ".repeat(n);
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes()));
            serde::Serialize::serialize(&json, &mut ser)
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, PythonFormatter);
            serde::Serialize::serialize(&json, &mut ser)
        }
    };
    result.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(String::from_utf8(buf).expect("serde_json writes UTF-8")))
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// A conversation as model input: token ids and the loss mask (1 = assistant token to learn).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedConversation {
    pub text: String,
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
    /// Indices of assistant messages whose turn-by-turn rendering is NOT a prefix of the full
    /// rendering (templates that rewrite history, e.g. Qwen3 dropping earlier reasoning); their
    /// tokens are located in the full text instead and may differ from what generation saw.
    pub non_prefix_turns: Vec<usize>,
}

/// Renders `messages` and masks everything but the assistant turns: their content, tool-call text
/// and end-of-turn token. An assistant turn's span is what the template adds between the
/// conversation up to it (with the generation prompt) and the conversation including it, minus
/// trailing whitespace after the end-of-turn token.
pub fn encode_conversation(template: &ChatTemplate, tokenizer: &Tokenizer, messages: &[Json], tools: Option<&[Json]>) -> Result<EncodedConversation> {
    let none = Json::Null;
    let text = template.render(messages, tools, false, &none)?;
    let mut spans = Vec::new();
    let mut non_prefix_turns = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if message["role"] != "assistant" {
            continue;
        }
        let prompt = template.render(&messages[..i], tools, true, &none)?;
        let through = template.render(&messages[..=i], tools, false, &none)?;
        if text.starts_with(&prompt) && text.starts_with(&through) && through.starts_with(&prompt) {
            let turn = &through[prompt.len()..];
            spans.push((prompt.len(), prompt.len() + turn.trim_end().len()));
        } else {
            non_prefix_turns.push(i);
            // locate the turn's own rendering at the end of `through` inside the full text
            let turn = through.strip_prefix(&prompt).unwrap_or(&through).trim_end();
            let search_from = spans.last().map_or(0, |s: &(usize, usize)| s.1);
            if let Some(pos) = text[search_from..].find(turn) {
                spans.push((search_from + pos, search_from + pos + turn.len()));
            }
        }
    }
    let (input_ids, offsets) = tokenizer.encode_with_offsets(&text)?;
    let loss_mask = offsets
        .iter()
        .map(|&(start, end)| u8::from(spans.iter().any(|&(s, e)| start >= s && end <= e && end > start)))
        .collect();
    Ok(EncodedConversation { text, input_ids, loss_mask, non_prefix_turns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_transparent_blocks() {
        assert_eq!(without_generation_tags("a{%- generation %}b{% endgeneration -%}c"), "a{%- if true %}b{% endif -%}c");
        assert_eq!(without_generation_tags("{% if x %}y{% endif %}"), "{% if x %}y{% endif %}");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = ChatTemplate::from_source("{{ v | tojson }}|{{ v | tojson(indent=2) }}", String::new(), String::new()).unwrap();
        let v = serde_json::json!({"b": [1, 2.5, "é<&>\"\n"], "a": {}, "c": null, "d": true});
        let out = t.render(&[], None, false, &serde_json::json!({"v": v})).unwrap();
        let (flat, pretty) = out.split_once('|').unwrap();
        assert_eq!(flat, r#"{"b": [1, 2.5, "é<&>\"\n"], "a": {}, "c": null, "d": true}"#);
        assert_eq!(pretty, "{\n  \"b\": [\n    1,\n    2.5,\n    \"é<&>\\\"\\n\"\n  ],\n  \"a\": {},\n  \"c\": null,\n  \"d\": true\n}");
    }

    #[test]
    fn raise_exception_and_python_methods_work() {
        let t = ChatTemplate::from_source("{{ 'a b '.strip().split(' ') | join(',') }}{% if boom %}{{ raise_exception('bad role') }}{% endif %}", String::new(), String::new()).unwrap();
        assert_eq!(t.render(&[], None, false, &serde_json::json!({})).unwrap(), "a,b");
        let err = t.render(&[], None, false, &serde_json::json!({"boom": true})).unwrap_err().to_string();
        assert!(err.contains("bad role"), "{err}");
    }
}
