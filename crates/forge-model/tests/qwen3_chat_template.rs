//! Qwen3's original chat template (qwen3.jinja of trl==1.16.0, fetched by
//! scripts/setup/fetch-qwen3-template.sh into `FORGE_QWEN3_TEMPLATE_DIR`) against transformers'
//! `apply_chat_template` (fixtures/chat/qwen3, made by scripts/fixtures/make_chat_fixtures.py): rendered
//! text, token ids, the assistant mask and the generation prompts, with and without
//! `enable_thinking`. The template rewrites history (earlier turns lose their think blocks), so
//! these conversations exercise the masking of turns whose rendering changed.

use std::path::PathBuf;

use forge_model::chat_template::testing::{qwen3_template, require_qwen3_template_dir};
use forge_model::chat_template::{encode_conversation, encode_conversation_with_kwargs, ChatTemplate};
use forge_model::tokenizer::Tokenizer;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(path: &str) -> Value {
    let path = repo().join(path);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn setup(test: &str) -> Option<(ChatTemplate, Tokenizer)> {
    let dir = require_qwen3_template_dir(test)?;
    Some((qwen3_template(&dir), Tokenizer::from_model_dir(&repo().join("assets/tiny-tokenizer")).unwrap()))
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn conversation(name: &str) -> Value {
    let conversations = load("fixtures/chat/qwen3/conversations.json");
    conversations.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no conversation {name}")).clone()
}

/// The masked tokens, decoded one run of consecutive masked tokens at a time.
fn masked_runs(tokenizer: &Tokenizer, input_ids: &[u32], mask: &[u8]) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for (&id, &m) in input_ids.iter().zip(mask) {
        if m == 1 {
            current.push(id);
        } else if !current.is_empty() {
            runs.push(tokenizer.decode(&current).unwrap());
            current.clear();
        }
    }
    if !current.is_empty() {
        runs.push(tokenizer.decode(&current).unwrap());
    }
    runs
}

#[test]
fn qwen3_rendering_ids_mask_and_generation_prompts_match_transformers() {
    let Some((template, tokenizer)) = setup("qwen3_rendering_ids_mask_and_generation_prompts_match_transformers") else { return };
    let conversations = load("fixtures/chat/qwen3/conversations.json");
    let expected = load("fixtures/chat/qwen3/expected.json");
    let expected = expected["conversations"].as_array().unwrap();
    assert_eq!(conversations.as_array().unwrap().len(), expected.len(), "rerun scripts/fixtures/make_chat_fixtures.py");
    let mut checked_variants = 0;
    for (conv, exp) in conversations.as_array().unwrap().iter().zip(expected) {
        let name = conv["name"].as_str().unwrap();
        assert_eq!(exp["name"], name, "rerun scripts/fixtures/make_chat_fixtures.py");
        let messages = conv["messages"].as_array().unwrap();
        let tools = conv["tools"].as_array().map(Vec::as_slice);
        for variant in exp["variants"].as_array().unwrap() {
            let kwargs = &variant["chat_template_kwargs"];
            let what = format!("{name} with {kwargs}");
            let encoded = encode_conversation_with_kwargs(&template, &tokenizer, messages, tools, kwargs).unwrap();
            assert_eq!(encoded.text, variant["text"].as_str().unwrap(), "{what}: rendered text differs");
            assert_eq!(encoded.input_ids, ids(&variant["input_ids"]), "{what}: token ids differ");
            let mask: Vec<u8> = ids(&variant["assistant_mask"]).into_iter().map(|m| m as u8).collect();
            if encoded.loss_mask != mask {
                panic!(
                    "{what}: assistant mask differs from transformers' generation blocks\nforge:        {:?}\ntransformers: {:?}",
                    masked_runs(&tokenizer, &encoded.input_ids, &encoded.loss_mask),
                    masked_runs(&tokenizer, &encoded.input_ids, &mask)
                );
            }
            for prompt in variant["generation_prompts"].as_array().unwrap() {
                let before = prompt["messages_before"].as_u64().unwrap() as usize;
                let text = template.render(&messages[..before], tools, true, kwargs).unwrap();
                assert_eq!(text, prompt["text"].as_str().unwrap(), "{what}: generation prompt before message {before} differs");
                assert_eq!(tokenizer.encode(&text).unwrap(), ids(&prompt["input_ids"]), "{what}: generation prompt ids before message {before}");
            }
            checked_variants += 1;
        }
    }
    assert_eq!(checked_variants, 3 * expected.len(), "each conversation without kwargs, enable_thinking=false and =true");
}

/// Golden values checked by hand against qwen3.jinja: in the full rendering, the first three
/// turns (before the last one) have no think block; the last turn has an empty one, which belongs
/// to the turn (with `enable_thinking=false` the generation prompt prefilled it, but the full
/// rendering shows it inside the turn, as TRL's qwen3_training.jinja marks it).
#[test]
fn qwen3_assistant_mask_covers_each_turn_as_the_full_text_renders_it() {
    let Some((template, tokenizer)) = setup("qwen3_assistant_mask_covers_each_turn_as_the_full_text_renders_it") else { return };
    let conv = conversation("agent-run-tool-calls-object-and-string-arguments");
    let messages = conv["messages"].as_array().unwrap();
    let tools = conv["tools"].as_array().map(Vec::as_slice);
    for kwargs in [Value::Null, json!({"enable_thinking": false})] {
        let encoded = encode_conversation_with_kwargs(&template, &tokenizer, messages, tools, &kwargs).unwrap();
        assert_eq!(
            masked_runs(&tokenizer, &encoded.input_ids, &encoded.loss_mask),
            [
                "Let me look at the repository first.\n<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls -la && cat calc.py\", \"timeout\": 30}}\n</tool_call><|im_end|>",
                "<tool_call>\n{\"name\": \"str_replace_editor\", \"arguments\": {\"command\": \"str_replace\", \"path\": \"/testbed/calc.py\", \"old_str\": \"a - b\", \"new_str\": \"a + b\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"python -m pytest -q\"}}\n</tool_call><|im_end|>",
                "<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"git diff\"}}\n</tool_call><|im_end|>",
                "<think>\n\n</think>\n\nFixed: add() subtracted (café → «ok» <&>).\n<tool_call>\n{\"name\": \"finish\", \"arguments\": {\"message\": \"add() now adds\"}}\n</tool_call><|im_end|>",
            ],
            "with {kwargs}"
        );
        // rendered alone (as when generated), each earlier turn had an empty think block
        assert_eq!(encoded.non_prefix_turns, [2, 4, 7], "with {kwargs}");
    }
}

/// Which turns Qwen3 rewrites: reasoning is kept after the last user query when it is not empty,
/// dropped before it; `<think>` inside content is split off like reasoning_content.
#[test]
fn qwen3_rewritten_turns_follow_the_last_query() {
    let Some((template, tokenizer)) = setup("qwen3_rewritten_turns_follow_the_last_query") else { return };
    let cases = [
        // every turn after the query has reasoning except message 6 (empty reasoning_content)
        ("agent-run-reasoning-content", vec![6]),
        // message 4 has no <think> in its content
        ("agent-run-think-in-content", vec![4]),
        // messages 2 and 4 come before the second query and lose their reasoning
        ("second-query-after-tool-turns", vec![2, 4]),
        // a <tool_response> user message is no query: message 1's reasoning stays
        ("tool-response-shaped-user-message", vec![]),
        ("system-without-tools-reasoning-chat", vec![2, 4]),
        ("tools-without-system", vec![1]),
    ];
    for (name, rewritten) in cases {
        let conv = conversation(name);
        let encoded = encode_conversation(&template, &tokenizer, conv["messages"].as_array().unwrap(), conv["tools"].as_array().map(Vec::as_slice)).unwrap();
        assert_eq!(encoded.non_prefix_turns, rewritten, "{name}");
    }
}

#[test]
fn chat_template_kwargs_must_be_an_object() {
    let tokenizer = Tokenizer::from_model_dir(&repo().join("assets/tiny-tokenizer")).unwrap();
    let template = ChatTemplate::from_model_dir(&repo().join("assets/tiny-tokenizer")).unwrap();
    let messages = [json!({"role": "user", "content": "a"}), json!({"role": "assistant", "content": "b"})];
    let err = encode_conversation_with_kwargs(&template, &tokenizer, &messages, None, &json!(["enable_thinking"])).unwrap_err().to_string();
    assert!(err.contains("chat_template_kwargs must be a JSON object"), "{err}");
}
