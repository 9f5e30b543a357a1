//! Request bodies of /v1/chat/completions and /v1/completions, checked and turned into a [`Plan`]:
//! prompt token ids and the engine's sampling settings. Every refusal names the field at fault.

use forge_engine::SamplingParams;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::model::ServedModel;
use crate::ApiError;

/// What a request asks the engine for, with the response options.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One prompt for a chat; /v1/completions may send several.
    pub prompts: Vec<Vec<u32>>,
    /// Choices per prompt; choice `i` samples with seed `seed + i`.
    pub n: usize,
    /// `max_new_tokens` is set per prompt from `max_tokens` (see [`Plan::params_for`]).
    pub sampling: SamplingParams,
    /// The completion length asked for; `None`: up to the end of the context (as vLLM).
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    pub return_token_ids: bool,
    /// Parse `<tool_call>` blocks of the output against these tools (chat with `tools` and
    /// `tool_choice` auto).
    pub tools: Option<Vec<Json>>,
}

impl Plan {
    /// The engine's settings for choice `choice` of `prompt`: its seed, and room for at most
    /// `max_tokens` new tokens within the context.
    pub fn params_for(&self, prompt: &[u32], choice: usize, max_model_len: usize) -> SamplingParams {
        let room = max_model_len.saturating_sub(prompt.len());
        SamplingParams {
            max_new_tokens: self.max_tokens.map_or(room, |m| m.min(room)).max(1),
            seed: self.sampling.seed.wrapping_add(choice as u64),
            ..self.sampling.clone()
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The fields both endpoints share.
#[derive(Deserialize)]
struct CommonFields {
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// vLLM's extension; 0 or -1 = off.
    top_k: Option<i64>,
    max_tokens: Option<u64>,
    n: Option<u64>,
    seed: Option<i64>,
    stop: Option<StopField>,
    /// vLLM's extension: more token ids that end the generation.
    stop_token_ids: Option<Vec<u32>>,
    /// vLLM's extension: do not stop at the model's end-of-turn tokens.
    ignore_eos: Option<bool>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// vLLM's extension: `prompt_token_ids` and `token_ids` in the response.
    return_token_ids: Option<bool>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    logit_bias: Option<Map<String, Json>>,
    min_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChatFields {
    messages: Vec<Json>,
    tools: Option<Vec<Json>>,
    tool_choice: Option<Json>,
    logprobs: Option<bool>,
    top_logprobs: Option<u64>,
    max_completion_tokens: Option<u64>,
    /// vLLM's extension: more template variables, e.g. `{"enable_thinking": false}`.
    chat_template_kwargs: Option<Map<String, Json>>,
    /// vLLM's extension (default true).
    add_generation_prompt: Option<bool>,
    response_format: Option<Json>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PromptField {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct CompletionFields {
    prompt: PromptField,
    logprobs: Option<u64>,
    echo: Option<bool>,
    best_of: Option<u64>,
    suffix: Option<String>,
}

/// The body as a JSON object (400 when it is not one).
pub fn parse_body(body: &[u8]) -> Result<Json, ApiError> {
    let value: Json = serde_json::from_slice(body).map_err(|e| ApiError::invalid(None, format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid(None, "the request body must be a JSON object"));
    }
    Ok(value)
}

/// `T` from the body; a field of the wrong type is named in the 400.
fn typed<T: for<'de> Deserialize<'de>>(body: &Json) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path);
        let message = match &param {
            Some(p) => format!("invalid `{p}`: {}", e.inner()),
            None => format!("invalid request: {}", e.inner()),
        };
        ApiError::invalid(param, message)
    })
}

/// A 404 unless `model` (when given) is the served name.
pub fn check_model(body: &Json, model: &ServedModel) -> Result<(), ApiError> {
    match &body["model"] {
        Json::Null => Ok(()),
        Json::String(asked) if *asked == model.name => Ok(()),
        Json::String(asked) => Err(ApiError::model_not_found(asked, &model.name)),
        _ => Err(ApiError::invalid("model".to_string(), "`model` must be a string")),
    }
}

pub fn chat_plan(body: &Json, model: &ServedModel) -> Result<Plan, ApiError> {
    check_model(body, model)?;
    let common: CommonFields = typed(body)?;
    let chat: ChatFields = typed(body)?;
    if chat.messages.is_empty() {
        return Err(ApiError::invalid("messages".to_string(), "`messages` is empty: give at least one message"));
    }
    if let Some(format) = &chat.response_format {
        if format["type"] != "text" {
            return Err(ApiError::unsupported("response_format", "only response_format {\"type\": \"text\"} is supported (no JSON mode or structured outputs)"));
        }
    }
    if chat.top_logprobs.is_some_and(|k| k > 0) {
        return Err(ApiError::unsupported("top_logprobs", "top_logprobs is not supported: forge's engine returns the log-probability of the sampled token only (use logprobs: true with top_logprobs 0 or absent)"));
    }
    let parse_tools = match &chat.tool_choice {
        None => true,
        Some(Json::String(choice)) if choice == "auto" => true,
        Some(Json::String(choice)) if choice == "none" => false,
        Some(_) => {
            return Err(ApiError::unsupported("tool_choice", "tool_choice must be \"auto\" or \"none\" (\"required\" and named functions need constrained decoding, which this server does not do)"))
        }
    };
    let tools = chat.tools.filter(|t| !t.is_empty());
    if let Some(tools) = &tools {
        for (i, tool) in tools.iter().enumerate() {
            if !tool.get("function").unwrap_or(tool)["name"].is_string() {
                return Err(ApiError::invalid(format!("tools[{i}]"), "each tool must be {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": {...}}}"));
            }
        }
    }
    let messages = normalize_messages(chat.messages)?;
    let kwargs = chat.chat_template_kwargs.map_or(Json::Null, Json::Object);
    let text = model
        .template()?
        .render(&messages, tools.as_deref(), chat.add_generation_prompt.unwrap_or(true), &kwargs)
        .map_err(|e| ApiError::invalid("messages".to_string(), format!("the chat template could not render these messages: {e}")))?;
    let prompt = model.tokenizer.encode(&text).map_err(|e| ApiError::server(e.to_string()))?;
    check_context(&prompt, model, "messages")?;
    let max_tokens = chat.max_completion_tokens.or(common.max_tokens);
    plan(
        common,
        vec![prompt],
        max_tokens,
        chat.logprobs.unwrap_or(false),
        tools.filter(|_| parse_tools),
        model,
    )
}

pub fn completion_plan(body: &Json, model: &ServedModel) -> Result<Plan, ApiError> {
    check_model(body, model)?;
    let common: CommonFields = typed(body)?;
    let completion: CompletionFields = typed(body)?;
    if completion.logprobs.is_some_and(|k| k > 0) {
        return Err(ApiError::unsupported("logprobs", "logprobs > 0 asks for the most likely alternatives, which forge's engine does not compute: use logprobs: 0 for the sampled tokens' log-probabilities"));
    }
    if completion.echo == Some(true) {
        return Err(ApiError::unsupported("echo", "echo is not supported"));
    }
    if completion.best_of.is_some_and(|b| b > 1) {
        return Err(ApiError::unsupported("best_of", "best_of is not supported: ask for n choices and pick"));
    }
    if completion.suffix.is_some() {
        return Err(ApiError::unsupported("suffix", "suffix (fill-in-the-middle) is not supported"));
    }
    let encode = |text: &str| model.tokenizer.encode(text).map_err(|e| ApiError::server(e.to_string()));
    let prompts = match completion.prompt {
        PromptField::Text(text) => vec![encode(&text)?],
        PromptField::Tokens(ids) => vec![ids],
        PromptField::Texts(texts) => texts.iter().map(|t| encode(t)).collect::<Result<_, _>>()?,
        PromptField::TokenLists(lists) => lists,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt".to_string(), "`prompt` is an empty list"));
    }
    for prompt in &prompts {
        if prompt.is_empty() {
            return Err(ApiError::invalid("prompt".to_string(), "the prompt is empty: give at least one token"));
        }
        check_context(prompt, model, "prompt")?;
    }
    let logprobs = completion.logprobs.is_some();
    let max_tokens = common.max_tokens;
    plan(common, prompts, max_tokens, logprobs, None, model)
}

fn check_context(prompt: &[u32], model: &ServedModel, what: &str) -> Result<(), ApiError> {
    if prompt.len() >= model.max_model_len {
        return Err(ApiError::context_length_exceeded(model.max_model_len, prompt.len(), what));
    }
    Ok(())
}

fn plan(common: CommonFields, prompts: Vec<Vec<u32>>, max_tokens: Option<u64>, logprobs: bool, tools: Option<Vec<Json>>, model: &ServedModel) -> Result<Plan, ApiError> {
    let unsupported_penalty = |name: &str, value: Option<f32>, neutral: f32| match value {
        Some(v) if v != neutral => Err(ApiError::unsupported(name, format!("{name} is not supported (only {neutral})"))),
        _ => Ok(()),
    };
    unsupported_penalty("presence_penalty", common.presence_penalty, 0.0)?;
    unsupported_penalty("frequency_penalty", common.frequency_penalty, 0.0)?;
    unsupported_penalty("repetition_penalty", common.repetition_penalty, 1.0)?;
    if common.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::unsupported("logit_bias", "logit_bias is not supported"));
    }
    if common.min_tokens.is_some_and(|m| m > 0) {
        return Err(ApiError::unsupported("min_tokens", "min_tokens is not supported"));
    }
    let temperature = common.temperature.unwrap_or(model.defaults.temperature);
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(ApiError::invalid("temperature".to_string(), format!("temperature {temperature} must be a number ≥ 0 (0 = greedy)")));
    }
    let top_p = common.top_p.unwrap_or(model.defaults.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p".to_string(), format!("top_p {top_p} must be in (0, 1]")));
    }
    let top_k = match common.top_k {
        None => model.defaults.top_k,
        Some(k) if k <= 0 => 0,
        Some(k) => k as usize,
    };
    let n = common.n.unwrap_or(1);
    if n == 0 {
        return Err(ApiError::invalid("n".to_string(), "n must be at least 1"));
    }
    if n as usize > model.max_concurrency {
        return Err(ApiError::invalid("n".to_string(), format!("n = {n} exceeds the server's --max-concurrency {}: each choice is a sequence generated at once", model.max_concurrency)));
    }
    if max_tokens == Some(0) {
        return Err(ApiError::invalid("max_tokens".to_string(), "max_tokens must be at least 1"));
    }
    let mut stop_tokens = if common.ignore_eos == Some(true) { Vec::new() } else { model.end_tokens.clone() };
    stop_tokens.extend(common.stop_token_ids.unwrap_or_default());
    let stop = match common.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(list)) => list,
    };
    let stream = common.stream.unwrap_or(false);
    Ok(Plan {
        prompts,
        n: n as usize,
        sampling: SamplingParams {
            max_new_tokens: 1,
            temperature,
            top_p,
            top_k,
            stop_tokens,
            // no seed: each request its own draw, as OpenAI's API
            seed: common.seed.map_or_else(rand::random, |s| s as u64),
        },
        max_tokens: max_tokens.map(|m| m as usize),
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        stream,
        include_usage: stream && common.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        logprobs,
        return_token_ids: common.return_token_ids.unwrap_or(false),
        tools,
    })
}

/// Messages as chat templates expect them: text content as one string (a list of text parts
/// joined by newlines, as vLLM does), and an assistant's tool-call `arguments` given as a JSON
/// string turned back into the object (Qwen's template writes objects with `tojson`).
pub fn normalize_messages(messages: Vec<Json>) -> Result<Vec<Json>, ApiError> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, mut message)| {
            let Json::Object(fields) = &mut message else {
                return Err(ApiError::invalid(format!("messages[{i}]"), "each message must be an object with a \"role\""));
            };
            if !fields.get("role").is_some_and(Json::is_string) {
                return Err(ApiError::invalid(format!("messages[{i}].role"), "each message needs a \"role\" string"));
            }
            if let Some(Json::Array(parts)) = fields.get("content") {
                let mut texts = Vec::new();
                for (j, part) in parts.iter().enumerate() {
                    match (part["type"].as_str(), part["text"].as_str()) {
                        (Some("text"), Some(text)) => texts.push(text.to_string()),
                        _ => return Err(ApiError::unsupported(&format!("messages[{i}].content[{j}]"), "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported")),
                    }
                }
                fields.insert("content".into(), Json::String(texts.join("\n")));
            }
            if let Some(Json::Array(calls)) = fields.get_mut("tool_calls") {
                for arguments in calls.iter_mut().filter_map(|call| call.get_mut("function")?.get_mut("arguments")) {
                    if let Some(Ok(object @ Json::Object(_))) = arguments.as_str().map(serde_json::from_str::<Json>) {
                        *arguments = object;
                    }
                }
            }
            Ok(message)
        })
        .collect()
}
