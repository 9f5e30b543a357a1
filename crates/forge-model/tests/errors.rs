//! Bad input gives a specific error naming the problem, never a panic.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::model_dir;
use forge_model::{load_model, Config};

fn copy_fixture(name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match load_model(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_weights_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gqa2-untied-f32", tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("neither model.safetensors nor model.safetensors.index.json"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gqa2-sharded-f32", tmp.path());
    std::fs::remove_file(tmp.path().join("model-00002-of-00004.safetensors")).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("shard model-00002-of-00004.safetensors named in model.safetensors.index.json is missing"), "{err}");

    let err = load_err(Path::new("/nonexistent/model"));
    assert!(err.contains("config.json is missing"), "{err}");
}

#[test]
fn corrupt_safetensors_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gqa2-untied-f32", tmp.path());
    let weights = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("model.safetensors is not a readable safetensors file"), "{err}");

    std::fs::write(&weights, b"this is not safetensors").unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("is not a readable safetensors file"), "{err}");
}

#[test]
fn weights_that_do_not_fit_the_config_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gqa4-tied-f32", tmp.path());
    let config_path = tmp.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["tie_word_embeddings"] = false.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("lack tensor `lm_head.weight`") && err.contains("tie_word_embeddings"), "{err}");

    config["tie_word_embeddings"] = true.into();
    config["intermediate_size"] = 96.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("gate_proj.weight` has shape [128, 64] on disk but config.json implies [96, 64]"), "{err}");
}

#[test]
fn unsupported_config_options_are_rejected() {
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir("gqa2-untied-f32").join("config.json")).unwrap()).unwrap();
    let cases = [
        ("use_sliding_window", serde_json::json!(true), "use_sliding_window = true is not supported"),
        ("rope_scaling", serde_json::json!({"rope_type": "dynamic", "factor": 4.0}), "rope_scaling.rope_type \"dynamic\" is not supported; supported: \"default\""),
        ("rope_parameters", serde_json::json!({"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}), "rope_parameters.rope_type \"llama3\" is not supported"),
        ("layer_types", serde_json::json!(["full_attention", "sliding_attention"]), "layer_types contains \"sliding_attention\""),
        ("num_experts", serde_json::json!(64), "`num_experts` marks a Mixture-of-Experts model"),
        ("model_type", serde_json::json!("qwen3_moe"), "only \"qwen3\""),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        ("attention_bias", serde_json::json!(true), "attention_bias"),
        ("num_key_value_heads", serde_json::json!(3), "multiple of num_key_value_heads"),
    ];
    for (key, value, expected) in cases {
        let mut config = base.clone();
        config[key] = value;
        let err = Config::from_json(&config.to_string()).unwrap_err().to_string();
        assert!(err.contains(expected), "{key}: {err}");
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("vocab_size");
    let err = Config::from_json(&missing.to_string()).unwrap_err().to_string();
    assert!(err.contains("vocab_size"), "{err}");
    // the defaults HF writes are accepted
    let mut defaults = base.clone();
    defaults["rope_scaling"] = serde_json::Value::Null;
    defaults["use_sliding_window"] = false.into();
    defaults["layer_types"] = serde_json::json!(["full_attention", "full_attention"]);
    Config::from_json(&defaults.to_string()).unwrap();
    // and YaRN, Qwen3's long context
    defaults["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32});
    assert_eq!(Config::from_json(&defaults.to_string()).unwrap().max_context(), 128);
}

#[test]
fn token_ids_outside_the_vocabulary_are_rejected() {
    let model = load_model(&model_dir("gqa2-untied-f32"), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[1u32, 2, 512]], &Device::Cpu).unwrap();
    let err = model.forward(&ids, None).expect_err("id 512 is out of range").to_string();
    assert!(err.contains("token id 512 is outside the vocabulary (vocab_size 512)"), "{err}");
}
