//! The server in-process on 127.0.0.1:0 with the tiny fixture models, checked over HTTP against
//! forge's own engine, template and tokenizer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use forge_engine::{EngineConfig, EngineHandle, Generation, SamplingParams};
use forge_model::chat_template::ChatTemplate;
use forge_model::tokenizer::Tokenizer;
use forge_serve::{ChoiceBuilder, ModelServer, ServeConfig};
use serde_json::{json, Value as Json};
use tokio::sync::oneshot;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// gqa2-untied-f32's model with the chat template of the tiny tokenizer it was made with (the
/// fixture directory has none), and an `enable_thinking` switch appended as Qwen3's template has.
/// `context` replaces its max_position_embeddings (128) when given: the template's tool
/// instructions alone take more.
fn untied_with_template(tmp: &Path, context: Option<usize>) -> PathBuf {
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo().join("fixtures/gqa2-untied-f32/model")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let template = std::fs::read_to_string(repo().join("assets/tiny-tokenizer/chat_template.jinja")).unwrap();
    let switch = "{%- if add_generation_prompt and enable_thinking is defined and not enable_thinking %}\n    {{- '<think>\\n\\n</think>\\n\\n' }}\n{%- endif %}\n";
    std::fs::write(dir.join("chat_template.jinja"), template + switch).unwrap();
    if let Some(context) = context {
        let mut config: Json = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        config["max_position_embeddings"] = json!(context);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }
    dir
}

fn tf5_model() -> PathBuf {
    repo().join("fixtures/tf5-gqa2-f32/model")
}

struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), forge_serve::ServeError>>,
    client: reqwest::Client,
    engine: EngineHandle,
}

impl Running {
    async fn start(dir: &Path, max_concurrency: usize) -> Self {
        let config = ServeConfig { served_model_name: "tiny".into(), max_concurrency, max_model_len: None, kv_cache_memory: None, block_size: 16 };
        let server = ModelServer::load(dir, &dir.display().to_string(), DType::F32, &Device::Cpu, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let engine = server.engine().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self { base, stop: Some(stop), served, client: reqwest::Client::new(), engine }
    }

    async fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        let response = self.client.post(format!("{}{path}", self.base)).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn post_raw(&self, path: &str, body: &'static str) -> (u16, Json) {
        let response = self.client.post(format!("{}{path}", self.base)).header("content-type", "application/json").body(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// The `data:` payloads of a streamed response, `[DONE]` included.
    async fn post_stream(&self, path: &str, body: &Json) -> Vec<String> {
        let response = self.client.post(format!("{}{path}", self.base)).json(body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = response.text().await.unwrap();
        text.split("\n\n").filter(|e| !e.trim().is_empty()).map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}")).to_string()).collect()
    }

    async fn metric(&self, name: &str) -> u64 {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} in {text}")).parse().unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.served.await.unwrap().unwrap();
    }
}

/// The same model, template and tokenizer, used directly.
struct Reference {
    engine: EngineHandle,
    template: ChatTemplate,
    tokenizer: Tokenizer,
    end_tokens: Vec<u32>,
}

impl Reference {
    fn new(dir: &Path) -> Self {
        let model = Arc::new(forge_model::load_model(dir, DType::F32, &Device::Cpu).unwrap());
        let tokenizer = Tokenizer::from_model_dir(dir).unwrap();
        let end_tokens = forge_engine::generate::stop_tokens(dir, &tokenizer).unwrap();
        Self { engine: EngineHandle::start(model, EngineConfig { max_batch_size: 1, ..Default::default() }).unwrap(), template: ChatTemplate::from_model_dir(dir).unwrap(), tokenizer, end_tokens }
    }

    fn chat_prompt(&self, messages: &Json, tools: Option<&Json>, kwargs: &Json) -> Vec<u32> {
        let tools = tools.map(|t| t.as_array().unwrap().clone());
        let text = self.template.render(messages.as_array().unwrap(), tools.as_deref(), true, kwargs).unwrap();
        self.tokenizer.encode(&text).unwrap()
    }

    async fn generate(&self, prompt: &[u32], max_new_tokens: usize, temperature: f32, seed: u64) -> Generation {
        self.generate_with(prompt, SamplingParams { max_new_tokens, temperature, seed, ..Default::default() }).await
    }

    async fn generate_with(&self, prompt: &[u32], params: SamplingParams) -> Generation {
        self.engine.generate(prompt.to_vec(), SamplingParams { stop_tokens: self.end_tokens.clone(), ..params }).await.unwrap()
    }

    /// The text of generated tokens: without the final end-of-turn token.
    fn text(&self, generation: &Generation) -> String {
        let tokens = match generation.tokens.split_last() {
            Some((last, rest)) if self.end_tokens.contains(last) => rest,
            _ => &generation.tokens[..],
        };
        self.tokenizer.decode(tokens).unwrap()
    }
}

fn ids(value: &Json) -> Vec<u32> {
    value.as_array().unwrap_or_else(|| panic!("not a list: {value}")).iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn floats(values: impl IntoIterator<Item = Json>) -> Vec<f32> {
    values.into_iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: number of log-probs");
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-5, "{what}: log-prob {a} vs the engine's {b}");
    }
}

fn user(text: &str) -> Json {
    json!([{"role": "user", "content": text}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_chat_completion_is_the_engines_greedy_generation() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [untied_with_template(tmp.path(), None), tf5_model()] {
        let server = Running::start(&dir, 4).await;
        let reference = Reference::new(&dir);
        let messages = user("Fix the bug in add().");
        let (status, response) = server
            .post("/v1/chat/completions", &json!({"model": "tiny", "messages": messages, "temperature": 0, "max_tokens": 24, "logprobs": true, "return_token_ids": true}))
            .await;
        assert_eq!(status, 200, "{response}");
        let prompt = reference.chat_prompt(&messages, None, &Json::Null);
        assert_eq!(ids(&response["prompt_token_ids"]), prompt, "{}: the template's rendering, encoded", dir.display());
        let want = reference.generate(&prompt, 24, 0.0, 0).await;
        let choice = &response["choices"][0];
        assert_eq!(ids(&choice["token_ids"]), want.tokens, "{}", dir.display());
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], reference.text(&want));
        let finish = if want.tokens.len() == 24 && !reference.end_tokens.contains(want.tokens.last().unwrap()) { "length" } else { "stop" };
        assert_eq!(choice["finish_reason"], finish);
        let entries = choice["logprobs"]["content"].as_array().unwrap();
        assert_close(&floats(entries.iter().map(|e| e["logprob"].clone())), &want.logprobs, "chat logprobs");
        for (entry, token) in entries.iter().zip(&want.tokens) {
            let text = reference.tokenizer.decode(&[*token]).unwrap();
            assert_eq!(entry["token"], text);
            assert_eq!(entry["bytes"], json!(text.as_bytes()));
            assert_eq!(entry["top_logprobs"], json!([]));
        }
        assert_eq!(response["usage"], json!({"prompt_tokens": prompt.len(), "completion_tokens": want.tokens.len(), "total_tokens": prompt.len() + want.tokens.len()}));
        assert_eq!(response["object"], "chat.completion");
        assert!(response["id"].as_str().unwrap().starts_with("chatcmpl-"));
        // the model's own name is optional, as with vLLM
        let (status, again) = server.post("/v1/chat/completions", &json!({"messages": messages, "temperature": 0, "max_tokens": 24})).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["choices"][0]["message"], choice["message"]);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_take_text_or_token_ids_and_give_the_engines_tokens_and_logprobs() {
    let dir = tf5_model();
    let server = Running::start(&dir, 4).await;
    let reference = Reference::new(&dir);
    let text = "def add(a, b):\n    return";
    let prompt = reference.tokenizer.encode(text).unwrap();
    let want = reference.generate(&prompt, 16, 0.0, 0).await;
    for given in [json!(text), json!(prompt)] {
        let (status, response) = server
            .post("/v1/completions", &json!({"model": "tiny", "prompt": given, "temperature": 0, "max_tokens": 16, "logprobs": 0, "return_token_ids": true}))
            .await;
        assert_eq!(status, 200, "{response}");
        let choice = &response["choices"][0];
        assert_eq!(ids(&choice["prompt_token_ids"]), prompt);
        assert_eq!(ids(&choice["token_ids"]), want.tokens);
        assert_eq!(choice["text"], reference.text(&want));
        let logprobs = &choice["logprobs"];
        assert_close(&floats(logprobs["token_logprobs"].as_array().unwrap().clone()), &want.logprobs, "completion logprobs");
        assert_eq!(logprobs["tokens"].as_array().unwrap().len(), want.tokens.len());
        assert_eq!(logprobs["text_offset"][0], 0);
        assert_eq!(response["object"], "text_completion");
        assert_eq!(response["usage"]["completion_tokens"], want.tokens.len());
    }
    // several prompts in one request: choices in prompt order
    let other = reference.tokenizer.encode("import os\n").unwrap();
    let (status, response) = server.post("/v1/completions", &json!({"prompt": [prompt, other], "temperature": 0, "max_tokens": 16, "return_token_ids": true})).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(ids(&response["choices"][0]["token_ids"]), want.tokens);
    assert_eq!(ids(&response["choices"][1]["token_ids"]), reference.generate(&other, 16, 0.0, 0).await.tokens);
    assert_eq!(response["choices"][1]["index"], 1);
    assert_eq!(response["usage"]["prompt_tokens"], prompt.len() + other.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_sample_with_consecutive_seeds() {
    let dir = tf5_model();
    let server = Running::start(&dir, 4).await;
    let reference = Reference::new(&dir);
    let messages = user("Write a function.");
    let prompt = reference.chat_prompt(&messages, None, &Json::Null);
    let (status, response) = server.post("/v1/chat/completions", &json!({"messages": messages, "temperature": 0.9, "seed": 41, "n": 3, "max_tokens": 20, "return_token_ids": true})).await;
    assert_eq!(status, 200, "{response}");
    for i in 0..3 {
        // top_p and top_k not given: generation_config.json's (0.95 and 20), as vLLM
        let params = SamplingParams { max_new_tokens: 20, temperature: 0.9, top_p: 0.95, top_k: 20, seed: 41 + i as u64, ..Default::default() };
        let want = reference.generate_with(&prompt, params).await;
        assert_eq!(ids(&response["choices"][i]["token_ids"]), want.tokens, "choice {i}: seed 41 + {i}");
        assert_eq!(response["choices"][i]["index"], i);
    }
    server.stop().await;
}

/// One choice of a streamed response, put together from its chunks.
#[derive(Debug, Clone, Default)]
struct Streamed {
    text: String,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish_reason: String,
}

/// The choices of a streamed chat or text completion, and its usage chunk if any.
fn assemble(events: &[String], chat: bool) -> (Vec<Streamed>, Option<Json>) {
    assert_eq!(events.last().unwrap(), "[DONE]");
    let mut choices: Vec<Streamed> = Vec::new();
    let mut usage = None;
    for event in &events[..events.len() - 1] {
        let chunk: Json = serde_json::from_str(event).unwrap();
        assert_eq!(chunk["object"], if chat { "chat.completion.chunk" } else { "text_completion" });
        if !chunk["usage"].is_null() {
            assert_eq!(chunk["choices"], json!([]));
            usage = Some(chunk["usage"].clone());
            continue;
        }
        let choice = &chunk["choices"][0];
        let index = choice["index"].as_u64().unwrap() as usize;
        if choices.len() <= index {
            choices.resize(index + 1, Default::default());
        }
        let entry = &mut choices[index];
        assert!(entry.finish_reason.is_empty(), "a chunk after the finish reason: {event}");
        let text = if chat { &choice["delta"]["content"] } else { &choice["text"] };
        entry.text.push_str(text.as_str().unwrap_or(""));
        if !choice["token_ids"].is_null() {
            entry.tokens.extend(ids(&choice["token_ids"]));
        }
        if chat {
            entry.logprobs.extend(floats(choice["logprobs"]["content"].as_array().into_iter().flatten().map(|e| e["logprob"].clone())));
        } else {
            entry.logprobs.extend(floats(choice["logprobs"]["token_logprobs"].as_array().into_iter().flatten().cloned()));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            entry.finish_reason = reason.to_string();
        }
    }
    (choices, usage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_concatenates_to_the_whole_response() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Running::start(&untied_with_template(tmp.path(), None), 4).await;
    let chat = json!({"messages": user("Explain the failing test."), "temperature": 0.8, "seed": 7, "n": 2, "max_tokens": 40, "logprobs": true, "return_token_ids": true});
    let completion = json!({"prompt": "def main():\n", "temperature": 0.8, "seed": 3, "n": 2, "max_tokens": 40, "logprobs": 0, "return_token_ids": true});
    for (path, body, is_chat) in [("/v1/chat/completions", chat, true), ("/v1/completions", completion, false)] {
        let (status, whole) = server.post(path, &body).await;
        assert_eq!(status, 200, "{whole}");
        let mut streamed_body = body.clone();
        streamed_body["stream"] = json!(true);
        streamed_body["stream_options"] = json!({"include_usage": true});
        let events = server.post_stream(path, &streamed_body).await;
        assert!(events.len() > 10, "{path}: tokens arrive in many chunks, got {events:?}");
        let (choices, usage) = assemble(&events, is_chat);
        assert_eq!(choices.len(), 2);
        for (i, Streamed { text, tokens, logprobs, finish_reason }) in choices.iter().enumerate() {
            let want = &whole["choices"][i];
            let want_text = if is_chat { &want["message"]["content"] } else { &want["text"] };
            assert_eq!(text, want_text.as_str().unwrap(), "{path} choice {i}: streamed text");
            assert_eq!(tokens, &ids(&want["token_ids"]), "{path} choice {i}");
            let want_logprobs = if is_chat { floats(want["logprobs"]["content"].as_array().unwrap().iter().map(|e| e["logprob"].clone())) } else { floats(want["logprobs"]["token_logprobs"].as_array().unwrap().clone()) };
            assert_close(logprobs, &want_logprobs, path);
            assert_eq!(finish_reason, want["finish_reason"].as_str().unwrap());
        }
        assert_eq!(usage.as_ref(), Some(&whole["usage"]), "{path}");
        if is_chat {
            let first: Json = serde_json::from_str(&events[0]).unwrap();
            assert_eq!(first["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
            assert_eq!(first["prompt_token_ids"], whole["prompt_token_ids"]);
        }
    }
    // a stop string: cut before it, in both forms
    let (_, whole) = server.post("/v1/completions", &json!({"prompt": "def main():\n", "temperature": 0, "max_tokens": 40})).await;
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    let stop: String = text.chars().skip(text.chars().count() / 2).take(2).collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let body = json!({"prompt": "def main():\n", "temperature": 0, "max_tokens": 40, "stop": [stop, "never appears"]});
    let (_, stopped) = server.post("/v1/completions", &body).await;
    assert_eq!(stopped["choices"][0]["text"], cut, "stop {stop:?} in {text:?}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let (choices, usage) = assemble(&server.post_stream("/v1/completions", &streamed_body).await, false);
    assert_eq!(choices[0].text, cut);
    assert_eq!(choices[0].finish_reason, "stop");
    assert!(usage.is_none(), "no usage chunk unless asked");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_requests_all_complete_with_their_own_tokens() {
    let dir = tf5_model();
    // four places: twelve requests wait for one at first
    let server = Arc::new(Running::start(&dir, 4).await);
    let reference = Reference::new(&dir);
    let requests: Vec<Json> = (0..16).map(|i| json!({"messages": user(&format!("Task number {i}: fix it.")), "temperature": 0, "max_tokens": 12 + i, "return_token_ids": true, "stream": i % 2 == 1})).collect();
    let handles: Vec<_> = requests
        .iter()
        .map(|body| {
            let (server, body) = (server.clone(), body.clone());
            tokio::spawn(async move {
                if body["stream"] == true {
                    let (choices, _) = assemble(&server.post_stream("/v1/chat/completions", &body).await, true);
                    choices[0].tokens.clone()
                } else {
                    let (status, response) = server.post("/v1/chat/completions", &body).await;
                    assert_eq!(status, 200, "{response}");
                    ids(&response["choices"][0]["token_ids"])
                }
            })
        })
        .collect();
    for (i, (handle, body)) in handles.into_iter().zip(&requests).enumerate() {
        let got = handle.await.unwrap();
        let prompt = reference.chat_prompt(&body["messages"], None, &Json::Null);
        assert_eq!(got, reference.generate(&prompt, 12 + i, 0.0, 0).await.tokens, "request {i}");
    }
    assert_eq!(server.metric("forge_serve_requests_total").await, 16);
    assert_eq!(server.metric("forge_serve_running_sequences").await, 0);
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_tool_results_are_rendered_by_the_template_and_template_kwargs_reach_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = untied_with_template(tmp.path(), Some(1024));
    let server = Running::start(&dir, 4).await;
    let reference = Reference::new(&dir);
    let tools = json!([{"type": "function", "function": {"name": "execute_bash", "description": "Run a command", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]);
    let messages = json!([
        {"role": "system", "content": "You fix bugs."},
        {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "execute_bash", "arguments": "{\"command\": \"ls\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.py\nb.py"},
    ]);
    let body = json!({"messages": messages, "tools": tools, "tool_choice": "auto", "temperature": 0, "max_tokens": 16, "return_token_ids": true, "chat_template_kwargs": {"enable_thinking": false}});
    let (status, response) = server.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{response}");
    // what the template gets: text parts joined, the call's arguments as an object
    let normalized = json!([
        {"role": "system", "content": "You fix bugs."},
        {"role": "user", "content": "List the files."},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "execute_bash", "arguments": {"command": "ls"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.py\nb.py"},
    ]);
    let prompt = reference.chat_prompt(&normalized, Some(&tools), &json!({"enable_thinking": false}));
    assert_eq!(ids(&response["prompt_token_ids"]), prompt);
    let rendered = reference.tokenizer.decode(&prompt).unwrap();
    assert!(rendered.contains("<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls\"}}\n</tool_call>"), "{rendered}");
    assert!(rendered.contains("<tool_response>\na.py\nb.py\n</tool_response>") && rendered.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"), "{rendered}");
    // a random model calls no tool: its text comes back as content
    let want = reference.generate(&prompt, 16, 0.0, 0).await;
    assert_eq!(ids(&response["choices"][0]["token_ids"]), want.tokens);
    let message = &response["choices"][0]["message"];
    let text = reference.text(&want);
    if text.contains("<tool_call>") {
        assert!(message["tool_calls"].is_array() || message["content"] == text.as_str(), "{message}");
    } else {
        assert_eq!(message["content"], text.as_str());
        assert!(message.get("tool_calls").is_none());
    }
    server.stop().await;
}

/// A scripted turn through the code that builds every response: token by token, as the engine
/// hands them over.
fn build(tokenizer: &Tokenizer, text: &str, end: Option<u32>, stop: &[String], tools: Option<&[Json]>) -> (Vec<forge_serve::Piece>, forge_serve::FinishedChoice) {
    let mut tokens = tokenizer.encode(text).unwrap();
    tokens.extend(end);
    let end_tokens: Vec<u32> = end.into_iter().collect();
    let mut builder = ChoiceBuilder::new(tokenizer, &end_tokens, stop, tools);
    let mut pieces = Vec::new();
    let mut stopped = false;
    for (i, &token) in tokens.iter().enumerate() {
        stopped = builder.push(token, -(i as f32)).unwrap();
        pieces.extend(builder.take_piece());
        if stopped {
            break;
        }
    }
    let engine_finish = (!stopped).then_some(if end.is_some() { forge_engine::FinishReason::Stop } else { forge_engine::FinishReason::Length });
    let mut ids = 0;
    let finished = builder
        .finish(engine_finish, || {
            ids += 1;
            format!("call_{ids}")
        })
        .unwrap();
    (pieces, finished)
}

#[test]
fn tool_calls_in_generated_text_become_structured_calls_and_bad_ones_stay_text() {
    let tokenizer = Tokenizer::from_model_dir(&tf5_model()).unwrap();
    let im_end = tokenizer.token_to_id("<|im_end|>");
    let tools: Vec<Json> = serde_json::from_value(json!([
        {"type": "function", "function": {"name": "execute_bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}},
        {"type": "function", "function": {"name": "finish", "parameters": {"type": "object", "properties": {}}}},
    ]))
    .unwrap();
    let text = "Let me look.\n<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls -la\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"finish\", \"arguments\": {}}\n</tool_call>";
    let (pieces, finished) = build(&tokenizer, text, im_end, &[], Some(&tools));
    assert_eq!(finished.finish_reason, "tool_calls");
    assert_eq!(finished.content, "Let me look.\n");
    assert_eq!(finished.tool_calls.len(), 2);
    assert_eq!((finished.tool_calls[0].id.as_str(), finished.tool_calls[0].name.as_str()), ("call_1", "execute_bash"));
    assert_eq!(serde_json::from_str::<Json>(&finished.tool_calls[0].arguments).unwrap(), json!({"command": "ls -la"}));
    assert_eq!(finished.tool_calls[1].to_json(), json!({"id": "call_2", "type": "function", "function": {"name": "finish", "arguments": "{}"}}));
    // streamed: the text before the call, never a piece of the call's markup
    let streamed: String = pieces.iter().map(|p| p.text.as_str()).chain([finished.rest.text.as_str()]).collect();
    assert_eq!(streamed, finished.content);
    let streamed_tokens: Vec<u32> = pieces.iter().flat_map(|p| p.tokens.clone()).chain(finished.rest.tokens.clone()).collect();
    assert_eq!(streamed_tokens, finished.tokens);
    assert_eq!(*finished.tokens.last().unwrap(), im_end.unwrap());
    assert!(finished.tool_call_errors.is_empty());

    // calls drafted while thinking are not made; the reasoning stays content
    let thinking = "<think>maybe <tool_call>{\"name\": \"finish\"}</tool_call></think>\n<tool_call>{\"name\": \"finish\", \"arguments\": {}}</tool_call>";
    let (_, finished) = build(&tokenizer, thinking, im_end, &[], Some(&tools));
    assert_eq!(finished.tool_calls.len(), 1);
    assert_eq!(finished.content, "<think>maybe <tool_call>{\"name\": \"finish\"}</tool_call></think>\n");

    // a block that does not parse: the whole text is the content, and the reason is kept for the log
    for bad in ["I'll run it: <tool_call>{\"name\": \"execute_bash\", \"arguments\": {\"command\": 3}}</tool_call>", "<tool_call>not json</tool_call>", "<tool_call>{\"name\": \"rm\"}</tool_call><tool_call>{\"name\": \"finish\"}</tool_call>"] {
        let (pieces, finished) = build(&tokenizer, bad, im_end, &[], Some(&tools));
        assert_eq!(finished.content, bad);
        assert!(finished.tool_calls.is_empty() && finished.finish_reason == "stop", "{bad}");
        assert!(!finished.tool_call_errors.is_empty());
        let streamed: String = pieces.iter().map(|p| p.text.as_str()).chain([finished.rest.text.as_str()]).collect();
        assert_eq!(streamed, bad);
    }
    // without tools (or tool_choice none) the text is left alone
    let (_, finished) = build(&tokenizer, text, im_end, &[], None);
    assert_eq!((finished.content.as_str(), finished.finish_reason), (text, "stop"));

    // stop strings: cut before the first, held back while they may be forming, ended early
    let stop = vec!["</tool_call>".to_string(), "\n\n".to_string()];
    let (pieces, finished) = build(&tokenizer, "one two\n\nthree", None, &stop, None);
    assert_eq!((finished.content.as_str(), finished.finish_reason), ("one two", "stop"));
    assert!(pieces.iter().all(|p| !p.text.contains('\n')));
    assert!(finished.tokens.len() < tokenizer.encode("one two\n\nthree").unwrap().len(), "no token taken after the stop string");
    let (_, finished) = build(&tokenizer, "no stop here", None, &stop, None);
    assert_eq!((finished.content.as_str(), finished.finish_reason), ("no stop here", "length"));
    // multi-byte characters split over tokens come out whole
    let (pieces, finished) = build(&tokenizer, "héllo wörld ✓ 日本", None, &[], None);
    assert_eq!(finished.content, "héllo wörld ✓ 日本");
    assert!(pieces.iter().all(|p| !p.text.contains(char::REPLACEMENT_CHARACTER)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_shaped_errors_and_the_server_serves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = untied_with_template(tmp.path(), None);
    let server = Running::start(&dir, 2).await;
    let check = |(status, body): (u16, Json), want_status: u16, param: Option<&str>, code: Option<&str>, needle: &str| {
        assert_eq!(status, want_status, "{body}");
        let error = &body["error"];
        assert!(error["message"].as_str().unwrap().contains(needle), "{body}");
        assert_eq!(error["param"].as_str(), param, "{body}");
        assert_eq!(error["code"].as_str(), code, "{body}");
        assert_eq!(error["type"], if want_status >= 500 { "server_error" } else { "invalid_request_error" });
    };
    check(server.post_raw("/v1/chat/completions", "{\"messages\": [").await, 400, None, None, "not valid JSON");
    check(server.post_raw("/v1/completions", "[1, 2]").await, 400, None, None, "must be a JSON object");
    check(server.post("/v1/chat/completions", &json!({"model": "gpt-4o", "messages": user("hi")})).await, 404, Some("model"), Some("model_not_found"), "this server serves `tiny`");
    check(server.post("/v1/chat/completions", &json!({"messages": user("hi"), "temperature": "hot"})).await, 400, Some("temperature"), None, "invalid `temperature`");
    check(server.post("/v1/chat/completions", &json!({"messages": user("hi"), "temperature": -1})).await, 400, Some("temperature"), None, "must be a number ≥ 0");
    check(server.post("/v1/chat/completions", &json!({"messages": "hi"})).await, 400, Some("messages"), None, "invalid `messages`");
    check(server.post("/v1/chat/completions", &json!({"messages": []})).await, 400, Some("messages"), None, "is empty");
    check(server.post("/v1/chat/completions", &json!({"messages": user("hi"), "logprobs": true, "top_logprobs": 3})).await, 400, Some("top_logprobs"), Some("unsupported_parameter"), "sampled token only");
    check(server.post("/v1/completions", &json!({"prompt": "hi", "logprobs": 2})).await, 400, Some("logprobs"), Some("unsupported_parameter"), "logprobs: 0");
    check(server.post("/v1/chat/completions", &json!({"messages": user("hi"), "tool_choice": "required"})).await, 400, Some("tool_choice"), Some("unsupported_parameter"), "\"auto\" or \"none\"");
    check(server.post("/v1/chat/completions", &json!({"messages": user("hi"), "n": 3})).await, 400, Some("n"), None, "--max-concurrency 2");
    check(server.post("/v1/chat/completions", &json!({"messages": [{"role": "wizard", "content": "hi"}]})).await, 400, Some("messages"), None, "unknown role");
    check(server.post("/v1/completions", &json!({"prompt": [5, 9999]})).await, 400, Some("prompt"), None, "outside the vocabulary");
    check(server.post("/v1/completions", &json!({"prompt": ""})).await, 400, Some("prompt"), None, "empty");
    // the fixture's context is 128 positions
    let long = "word ".repeat(200);
    check(server.post("/v1/chat/completions", &json!({"messages": user(&long)})).await, 400, Some("messages"), Some("context_length_exceeded"), "maximum context length is 128 tokens");
    check(server.post("/v1/completions", &json!({"prompt": vec![7; 128]})).await, 400, Some("prompt"), Some("context_length_exceeded"), "resulted in 128 tokens");
    check(server.post("/v1/completions", &json!({"prompt": vec![7; 128], "stream": true})).await, 400, Some("prompt"), Some("context_length_exceeded"), "128");
    let missing = server.client.get(format!("{}/v1/embeddings", server.base)).send().await.unwrap();
    check((missing.status().as_u16(), missing.json().await.unwrap()), 404, None, Some("not_found"), "/v1/chat/completions");
    // a prompt that fits leaves the rest of the context to the completion
    let (status, response) = server.post("/v1/completions", &json!({"prompt": vec![7; 120], "max_tokens": 50, "temperature": 0, "ignore_eos": true})).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!((response["usage"]["completion_tokens"].as_u64(), response["choices"][0]["finish_reason"].as_str()), (Some(8), Some("length")));
    assert_eq!(server.metric("forge_serve_failed_requests_total").await, 17);

    let (status, models) = (200, server.client.get(format!("{}/v1/models", server.base)).send().await.unwrap().json::<Json>().await.unwrap());
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["max_model_len"], 128);
    let (status, response) = server.post("/v1/chat/completions", &json!({"model": "tiny", "messages": user("hi"), "max_tokens": 4})).await;
    assert_eq!(status, 200, "{response}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_ends_its_sequence_and_the_server_serves_on() {
    let dir = tf5_model();
    let server = Running::start(&dir, 2).await;
    for path in ["/v1/chat/completions", "/v1/completions"] {
        // the engine is held: the stream cannot end by itself while the client leaves
        let paused = server.engine.pause();
        let body = json!({"messages": user("Tell me everything."), "prompt": "Once", "max_tokens": 100, "ignore_eos": true, "stream": true, "return_token_ids": true});
        let mut response = server.client.post(format!("{}{path}", server.base)).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let first = response.chunk().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: {") && String::from_utf8_lossy(&first).contains("prompt_token_ids"), "{first:?}");
        assert_eq!(server.metric("forge_serve_running_sequences").await, 1);
        drop(response);
        // noticed while nothing is being sent: the sequence is dropped and its place freed
        let mut waited = 0;
        while server.metric("forge_serve_running_sequences").await != 0 {
            assert!(waited < 200, "{path}: the abandoned stream still holds its place");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        drop(paused);
        let (status, again) = server.post(path, &json!({"messages": user("hi"), "prompt": "hi", "max_tokens": 5, "ignore_eos": true})).await;
        assert_eq!(status, 200, "{again}");
    }
    assert_eq!(server.metric("forge_serve_stream_disconnects_total").await, 2);
    assert_eq!(server.metric("forge_serve_generated_tokens_total").await, 10, "only the two later requests' tokens");
    server.stop().await;
}
