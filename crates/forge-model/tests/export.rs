//! Export in the Hugging Face layout and load → export → load round trips.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use common::{max_abs_diff, model_dir};
use forge_model::export::{export, parse_size, DEFAULT_SHARD_SIZE};
use forge_model::weights::{load_params, resolve_in_hub_cache};
use forge_model::Config;

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_same_params(a: &Path, b: &Path, dtype: DType) {
    let config = Config::from_file(&a.join("config.json")).unwrap();
    let pa = load_params(a, &config, dtype, &Device::Cpu).unwrap();
    let pb = load_params(b, &config, dtype, &Device::Cpu).unwrap();
    assert_eq!(pa.len(), pb.len());
    for ((na, va), (nb, vb)) in pa.iter().zip(pb.iter()) {
        assert_eq!(na, nb);
        assert_eq!(va.dtype(), vb.dtype());
        assert_eq!(max_abs_diff(va.as_tensor(), vb.as_tensor()), 0.0, "{na} changed in the round trip");
    }
}

#[test]
fn sharded_export_round_trips_bit_exactly_with_hf_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    let summary = export(&model_dir("gqa2-untied-f32"), &out, 60_000, None, false).unwrap();
    assert_eq!(summary.dtype, DType::F32);
    assert!(summary.shards > 2, "expected several shards, got {}", summary.shards);
    assert_same_params(&model_dir("gqa2-untied-f32"), &out, DType::F32);

    let index = read_json(&out.join("model.safetensors.index.json"));
    let weight_map = index["weight_map"].as_object().unwrap();
    let config = Config::from_file(&out.join("config.json")).unwrap();
    assert_eq!(weight_map.len(), config.parameter_shapes().len());
    let expected_bytes: usize = config.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>() * 4).sum();
    assert_eq!(index["metadata"]["total_size"].as_u64().unwrap() as usize, expected_bytes);
    let mut shard_files: Vec<&str> = weight_map.values().map(|v| v.as_str().unwrap()).collect();
    shard_files.dedup();
    for file in shard_files {
        let bytes = std::fs::read(out.join(file)).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let format = meta.metadata().as_ref().and_then(|m| m.get("format")).cloned();
        assert_eq!(format.as_deref(), Some("pt"), "{file} lacks {{\"format\": \"pt\"}}");
    }
    for companion in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
        assert!(out.join(companion).is_file(), "{companion} not copied");
    }
    assert_eq!(read_json(&out.join("config.json"))["torch_dtype"], "float32");
}

/// A directory saved by transformers 5 (`rope_parameters` with YaRN, `dtype`, its tokenizer files)
/// exports in the layout transformers 4.57 reads too (scripts/fixtures/verify-export.sh loads it in both).
#[test]
fn transformers_5_directories_export_in_the_layout_both_versions_load() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    export(&model_dir("tf5-yarn-f32"), &out, DEFAULT_SHARD_SIZE, None, false).unwrap();
    assert_same_params(&model_dir("tf5-yarn-f32"), &out, DType::F32);
    let source = read_json(&model_dir("tf5-yarn-f32").join("config.json"));
    assert_eq!(source["rope_parameters"]["rope_type"], "yarn", "the fixture is in the transformers 5 layout");
    let config = read_json(&out.join("config.json"));
    assert!(config.get("rope_parameters").is_none(), "{config}");
    assert_eq!(config["rope_theta"], source["rope_parameters"]["rope_theta"]);
    for key in ["rope_type", "factor", "original_max_position_embeddings"] {
        assert_eq!(config["rope_scaling"][key], source["rope_parameters"][key], "rope_scaling.{key}");
    }
    assert_eq!((&config["torch_dtype"], &config["dtype"]), (&"float32".into(), &"float32".into()));
    assert_eq!(Config::from_file(&out.join("config.json")).unwrap(), Config::from_file(&model_dir("tf5-yarn-f32").join("config.json")).unwrap());

    let tokenizer_source = read_json(&model_dir("tf5-yarn-f32").join("tokenizer_config.json"));
    assert!(tokenizer_source["extra_special_tokens"].is_array(), "transformers 5 lists extra special tokens");
    let tokenizer = read_json(&out.join("tokenizer_config.json"));
    assert!(tokenizer.get("extra_special_tokens").is_none());
    assert_eq!(tokenizer["additional_special_tokens"], tokenizer_source["extra_special_tokens"]);
    assert!(out.join("chat_template.jinja").is_file());
}

#[test]
fn tied_export_has_no_lm_head_and_one_file_when_it_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tied");
    let summary = export(&model_dir("gqa4-tied-f32"), &out, DEFAULT_SHARD_SIZE, None, false).unwrap();
    assert_eq!(summary.shards, 1);
    assert!(!out.join("model.safetensors.index.json").exists(), "a single shard needs no index (as HF)");
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.names().iter().all(|n| *n != "lm_head.weight"), "tied export must not write lm_head.weight");
    assert_same_params(&model_dir("gqa4-tied-f32"), &out, DType::F32);
}

#[test]
fn bf16_export_stores_bf16_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bf16");
    export(&model_dir("gqa2-untied-f32"), &out, DEFAULT_SHARD_SIZE, Some(DType::BF16), false).unwrap();
    assert_eq!(forge_model::weights::stored_dtype(&out).unwrap(), DType::BF16);
    assert_eq!(read_json(&out.join("config.json"))["torch_dtype"], "bfloat16");
    // exporting the bf16 export again (keeping its dtype) is lossless
    let again = tmp.path().join("bf16-again");
    export(&out, &again, DEFAULT_SHARD_SIZE, None, false).unwrap();
    assert_same_params(&out, &again, DType::BF16);
}

#[test]
fn export_refuses_a_non_empty_output_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("busy");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "keep me").unwrap();
    let err = export(&model_dir("gqa2-untied-f32"), &out, DEFAULT_SHARD_SIZE, None, false).unwrap_err().to_string();
    assert!(err.contains("is not empty") && err.contains("--force"), "{err}");
    assert!(out.join("notes.txt").exists(), "a refused export must not touch the directory");

    export(&model_dir("gqa2-untied-f32"), &out, DEFAULT_SHARD_SIZE, None, true).unwrap();
    assert!(!out.join("notes.txt").exists());
    assert_same_params(&model_dir("gqa2-untied-f32"), &out, DType::F32);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "staging directories left behind: {leftovers:?}");
}

#[test]
fn shard_sizes_parse_like_transformers() {
    assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
    assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
    assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_size("1234").unwrap(), 1234);
    assert!(parse_size("5 parsecs").unwrap_err().to_string().contains("unknown unit"));
    assert!(parse_size("0").is_err());
}

#[test]
fn hub_ids_resolve_through_a_local_cache() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--tiny-org--tiny-qwen3");
    let snapshot = repo.join("snapshots").join("0123456789abcdef");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    for entry in std::fs::read_dir(model_dir("gqa4-tied-f32")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
    let hub_cache = hf_hub::Cache::new(cache.path().to_path_buf());
    let dir = resolve_in_hub_cache("tiny-org/tiny-qwen3", &hub_cache).unwrap();
    assert_eq!(dir, snapshot);
    assert_same_params(&model_dir("gqa4-tied-f32"), &dir, DType::F32);

    let err = resolve_in_hub_cache("tiny-org/absent", &hub_cache).unwrap_err().to_string();
    assert!(err.contains("not in the Hugging Face cache") && err.contains("tiny-org/absent"), "{err}");
}

#[test]
fn f16_on_disk_loads_into_f32_and_bf16() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f16");
    export(&model_dir("gqa2-untied-f32"), &out, DEFAULT_SHARD_SIZE, Some(DType::F16), false).unwrap();
    assert_eq!(forge_model::weights::stored_dtype(&out).unwrap(), DType::F16);
    assert_eq!(read_json(&out.join("config.json"))["torch_dtype"], "float16");
    let config = Config::from_file(&out.join("config.json")).unwrap();
    let original = load_params(&model_dir("gqa2-untied-f32"), &config, DType::F32, &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let loaded = load_params(&out, &config, dtype, &Device::Cpu).unwrap();
        for ((name, a), (_, b)) in original.iter().zip(loaded.iter()) {
            assert_eq!(b.dtype(), dtype);
            let e = common::rel_err(b.as_tensor(), a.as_tensor());
            assert!(e < 1e-2, "{name} as {dtype:?} from f16: relative error {e}");
        }
    }
}
