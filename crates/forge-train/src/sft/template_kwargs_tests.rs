//! `data.chat_template_kwargs` from the config to every rendering of SFT data and `forge data
//! inspect`, and both against transformers on Qwen3's original template (fixtures/chat/qwen3).

use std::path::{Path, PathBuf};

use forge_model::chat_template::testing::require_qwen3_template_dir;
use forge_model::chat_template::ChatTemplate;
use forge_model::tokenizer::Tokenizer;
use serde_json::{json, Value};

use super::{inspect, load_examples, load_examples_with_kwargs, BadExamples, OverLength, SftConfig};
use crate::config::load_config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// A model directory with the tiny tokenizer and `template` as its chat_template.jinja.
fn tiny_tokenizer_with_template(dir: &Path, template: &str) {
    for file in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(repo().join("assets/tiny-tokenizer").join(file), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("chat_template.jinja"), template).unwrap();
}

fn write_jsonl(path: &Path, conversations: &[Value]) {
    let lines: Vec<String> = conversations.iter().map(|c| json!({"messages": c["messages"], "tools": c["tools"]}).to_string()).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn u32s(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

#[test]
fn data_chat_template_kwargs_come_from_a_toml_table_and_default_to_none() {
    let config_path = repo().join("configs/tiny/sft.toml");
    let (plain, resolved) = load_config::<SftConfig>(&config_path, &[]).unwrap();
    assert!(plain.data.chat_template_kwargs.is_empty());
    assert!(!resolved.contains("chat_template_kwargs"), "{resolved}");
    let (config, resolved) = load_config::<SftConfig>(&config_path, &["data.chat_template_kwargs.enable_thinking=false".into()]).unwrap();
    assert_eq!(config.data.chat_template_kwargs(), json!({"enable_thinking": false}));
    assert!(resolved.contains("[data.chat_template_kwargs]"), "{resolved}");
    let err = load_config::<SftConfig>(&config_path, &["data.chat_template_kwargs=false".into()]).unwrap_err().to_string();
    assert!(err.contains("chat_template_kwargs"), "{err}");
}

/// A template whose assistant turns show the variable `mark`: the kwargs reach the rendering that
/// SFT trains on and inspect shows (the trained text carries the mark), and none means none.
#[test]
fn chat_template_kwargs_reach_every_rendering_of_sft_data_and_inspect() {
    let source = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and mark %}[{{ mark }}] {% endif %}{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let dir = tempfile::tempdir().unwrap();
    tiny_tokenizer_with_template(dir.path(), source);
    let data = dir.path().join("data.jsonl");
    let conversation = json!({"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
    ]});
    std::fs::write(&data, format!("{conversation}\n")).unwrap();
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    let tokenizer = Tokenizer::from_model_dir(dir.path()).unwrap();
    let trained_text = |labels: &[i64]| {
        let ids: Vec<u32> = labels.iter().filter(|&&l| l != -100).map(|&l| l as u32).collect();
        tokenizer.decode(&ids).unwrap()
    };

    let kwargs = json!({"mark": "x"});
    let (examples, _) = load_examples_with_kwargs(&data, &template, &tokenizer, &kwargs, 1 << 16, OverLength::Drop, BadExamples::Error).unwrap();
    assert_eq!(trained_text(&examples[0].labels), "[x] b<|im_end|>[x] d<|im_end|>");
    let (without, _) = load_examples(&data, &template, &tokenizer, 1 << 16, OverLength::Drop, BadExamples::Error).unwrap();
    assert_eq!(trained_text(&without[0].labels), "b<|im_end|>d<|im_end|>");

    let shown: Value = serde_json::from_str(inspect(dir.path(), &data, 1, true, &kwargs).unwrap().trim()).unwrap();
    assert_eq!(u32s(&shown["input_ids"]), examples[0].input_ids);
    let labels: Vec<i64> = examples[0].labels.iter().map(|&l| i64::from(l != -100)).collect();
    let mask: Vec<i64> = shown["loss_mask"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(mask, labels);
    assert!(inspect(dir.path(), &data, 1, false, &kwargs).unwrap().contains("⟦[x] b<|im_end|>⟧"));
}

/// SFT examples and `forge data inspect` on Qwen3's original template equal transformers'
/// apply_chat_template (text, ids, assistant mask) for every fixture conversation, without
/// kwargs and with enable_thinking false and true.
#[test]
fn qwen3_sft_examples_and_inspect_match_transformers() {
    let Some(template_dir) = require_qwen3_template_dir("qwen3_sft_examples_and_inspect_match_transformers") else { return };
    let model_dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string(template_dir.join("qwen3.jinja")).unwrap();
    tiny_tokenizer_with_template(model_dir.path(), &source);
    let template = ChatTemplate::from_model_dir(model_dir.path()).unwrap();
    let tokenizer = Tokenizer::from_model_dir(model_dir.path()).unwrap();
    let conversations = load_json(&repo().join("fixtures/chat/qwen3/conversations.json"));
    let conversations = conversations.as_array().unwrap();
    let expected = load_json(&repo().join("fixtures/chat/qwen3/expected.json"));
    let expected = expected["conversations"].as_array().unwrap();
    let data = model_dir.path().join("qwen3.jsonl");
    write_jsonl(&data, conversations);

    let variants = expected[0]["variants"].as_array().unwrap().len();
    for variant in 0..variants {
        let kwargs = &expected[0]["variants"][variant]["chat_template_kwargs"];
        let (examples, stats) = load_examples_with_kwargs(&data, &template, &tokenizer, kwargs, 1 << 16, OverLength::Drop, BadExamples::Error).unwrap();
        assert_eq!(examples.len(), conversations.len(), "{kwargs}: {stats:?}");
        assert!(stats.non_prefix_templates > 0, "Qwen3 rewrites earlier turns: {stats:?}");
        let shown = inspect(model_dir.path(), &data, usize::MAX, true, kwargs).unwrap();
        for ((example, exp), shown) in examples.iter().zip(expected).zip(shown.lines()) {
            let exp = &exp["variants"][variant];
            assert_eq!(exp["chat_template_kwargs"], *kwargs);
            let what = format!("{} with {kwargs}", exp["name"]);
            let ids = u32s(&exp["input_ids"]);
            let mask = u32s(&exp["assistant_mask"]);
            let labels: Vec<i64> = ids.iter().zip(&mask).map(|(&id, &m)| if m == 1 { i64::from(id) } else { -100 }).collect();
            assert_eq!(example.input_ids, ids, "{what}: SFT token ids");
            assert_eq!(example.labels, labels, "{what}: SFT labels are not transformers' assistant mask");
            let shown: Value = serde_json::from_str(shown).unwrap();
            assert_eq!(shown["text"], exp["text"], "{what}: inspect text");
            assert_eq!(u32s(&shown["input_ids"]), ids, "{what}: inspect ids");
            assert_eq!(u32s(&shown["loss_mask"]), mask, "{what}: inspect mask");
        }
    }
}
