//! Chat-template rendering and assistant-only loss masks against transformers'
//! `apply_chat_template` (fixtures/chat, made by scripts/fixtures/make_chat_fixtures.py).

use std::path::PathBuf;

use forge_model::chat_template::{encode_conversation, ChatTemplate};
use forge_model::tokenizer::Tokenizer;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(path)).unwrap()).unwrap()
}

fn setup() -> (ChatTemplate, Tokenizer) {
    let dir = repo().join("assets/tiny-tokenizer");
    (ChatTemplate::from_model_dir(&dir).unwrap(), Tokenizer::from_model_dir(&dir).unwrap())
}

#[test]
fn rendering_token_ids_and_assistant_mask_match_transformers() {
    let (template, tokenizer) = setup();
    let conversations = load("fixtures/chat/conversations.json");
    let expected = load("fixtures/chat/expected.json");
    for (conv, exp) in conversations.as_array().unwrap().iter().zip(expected.as_array().unwrap()) {
        let name = conv["name"].as_str().unwrap();
        let messages = conv["messages"].as_array().unwrap();
        let tools = conv["tools"].as_array().map(Vec::as_slice);
        let encoded = encode_conversation(&template, &tokenizer, messages, tools).unwrap();
        assert_eq!(encoded.text, exp["text"].as_str().unwrap(), "{name}: rendered text differs");
        let ids: Vec<u32> = exp["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(encoded.input_ids, ids, "{name}: token ids differ");
        let mask: Vec<u8> = exp["assistant_mask"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
        assert_eq!(encoded.loss_mask, mask, "{name}: assistant mask differs from transformers' generation blocks");
        assert!(encoded.non_prefix_turns.is_empty(), "{name}: {:?}", encoded.non_prefix_turns);

        let last_assistant = messages.iter().rposition(|m| m["role"] == "assistant").unwrap();
        let prompt = template.render(&messages[..last_assistant], tools, true, &Value::Null).unwrap();
        assert_eq!(prompt, exp["generation_prompt_text"].as_str().unwrap(), "{name}: generation prompt differs");
    }
}

/// Golden values checked by hand: the masked tokens decode to exactly the assistant turns, each
/// ending with the end-of-turn token, and nothing of the prompts or tool results.
#[test]
fn assistant_mask_covers_exactly_the_assistant_turns() {
    let (template, tokenizer) = setup();
    let conversations = load("fixtures/chat/conversations.json");
    let conv = &conversations[0];
    let encoded = encode_conversation(&template, &tokenizer, conv["messages"].as_array().unwrap(), conv["tools"].as_array().map(Vec::as_slice)).unwrap();
    let mut turns = Vec::new();
    let mut current = Vec::new();
    for (&id, &m) in encoded.input_ids.iter().zip(&encoded.loss_mask) {
        if m == 1 {
            current.push(id);
        } else if !current.is_empty() {
            turns.push(tokenizer.decode(&current).unwrap());
            current.clear();
        }
    }
    assert!(current.is_empty(), "the conversation ends with a newline outside the mask");
    assert_eq!(
        turns,
        [
            "Let me look at the repository first.\n<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"ls -la && cat calc.py\", \"timeout\": 30}}\n</tool_call><|im_end|>",
            "<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"sed -i 's/a - b/a + b/' calc.py\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"execute_bash\", \"arguments\": {\"command\": \"python -m pytest -q\"}}\n</tool_call><|im_end|>",
            "Fixed: add() subtracted.\n<tool_call>\n{\"name\": \"finish\", \"arguments\": {\"message\": \"add() now adds\"}}\n</tool_call><|im_end|>",
        ]
    );
}

#[test]
fn template_errors_are_reported() {
    let (template, _) = setup();
    let bad_role = [serde_json::json!({"role": "robot", "content": "beep"})];
    let err = template.render(&bad_role, None, false, &Value::Null).unwrap_err().to_string();
    assert!(err.contains("unknown role: robot"), "{err}");
    let err = ChatTemplate::from_source("{% if %}", String::new(), String::new()).err().unwrap().to_string();
    assert!(err.contains("chat template does not parse"), "{err}");
}

#[test]
fn history_rewriting_templates_are_flagged() {
    // Like Qwen3 with reasoning: earlier assistant turns are rendered without their <think> block.
    let source = "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n{% if loop.last %}{{ m.reasoning }}{% endif %}{{ m.content }}<|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let template = ChatTemplate::from_source(source, String::new(), String::new()).unwrap();
    let (_, tokenizer) = setup();
    let messages = [
        serde_json::json!({"role": "user", "content": "a"}),
        serde_json::json!({"role": "assistant", "content": "b", "reasoning": "r1 "}),
        serde_json::json!({"role": "user", "content": "c"}),
        serde_json::json!({"role": "assistant", "content": "d", "reasoning": "r2 "}),
    ];
    let encoded = encode_conversation(&template, &tokenizer, &messages, None).unwrap();
    assert_eq!(encoded.non_prefix_turns, vec![1]);
    assert!(encoded.loss_mask.contains(&1));
}
