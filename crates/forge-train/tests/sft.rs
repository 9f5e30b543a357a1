//! The SFT recipe end to end on CPU: the loss falls, a resumed run reproduces the uninterrupted
//! loss curve exactly, bad data is reported with file:line, every bundled config parses.

use forge_train::config::load_config;
use forge_train::run_log::read_series;
use forge_train::memory::DeviceKind;
use forge_train::sft::{self, SftConfig, SftOptions};

mod common;
use common::{repo, small_sft_config};

#[test]
fn loss_falls_and_the_model_is_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let config = small_sft_config(&run_dir, 12, &[]);
    let summary = sft::run(&config, "# test\n", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap();
    assert_eq!(summary.steps, 18, "12 examples, 2 per micro-batch, 3 epochs");
    let losses = read_series(&run_dir.join("metrics.jsonl"), "loss").unwrap();
    let first: f64 = losses[..3].iter().map(|p| p.1).sum::<f64>() / 3.0;
    let last: f64 = losses[losses.len() - 3..].iter().map(|p| p.1).sum::<f64>() / 3.0;
    assert!(last < 0.75 * first, "loss did not fall enough: first steps {first:.3}, last steps {last:.3}");
    for file in ["config.toml", "metrics.jsonl", "loss.svg", "model/config.json", "model/model.safetensors", "model/tokenizer.json", "model/chat_template.jinja"] {
        assert!(run_dir.join(file).is_file(), "{file} missing from the run directory");
    }
    assert!(std::fs::read_dir(&run_dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("events.out.tfevents")));
    let checkpoints: Vec<String> = std::fs::read_dir(run_dir.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(checkpoints.len(), 2, "keep_last = 2: {checkpoints:?}");
    let model = forge_model::load_model(&summary.model_dir, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.config().num_hidden_layers, 2);
}

/// With a budget that holds all 12 examples in one micro-batch either way, a packed run (one row,
/// examples back to back) takes the same steps over the same examples as a padded run: the losses
/// agree step for step, up to float summation order.
#[test]
fn packed_micro_batches_train_like_the_same_examples_padded() {
    let losses = |packing: bool| {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("run");
        let overrides = ["train.micro_batch_tokens=16384", "train.epochs=6", "optim.warmup_steps=1", &format!("train.packing={packing}")];
        let config = small_sft_config(&run_dir, 12, &overrides);
        let summary = sft::run(&config, "# test\n", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap();
        assert_eq!(summary.steps, 6, "one micro-batch per epoch");
        let padding = read_series(&run_dir.join("metrics.jsonl"), "padding_fraction").unwrap();
        assert!(padding.iter().all(|p| (p.1 == 0.0) == packing), "packing {packing}: padding fractions {padding:?}");
        read_series(&run_dir.join("metrics.jsonl"), "loss").unwrap().into_iter().map(|p| p.1).collect::<Vec<f64>>()
    };
    let (padded, packed) = (losses(false), losses(true));
    eprintln!("padded losses {padded:?}\npacked losses {packed:?}");
    for (step, (a, b)) in padded.iter().zip(&packed).enumerate() {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "step {step}: padded loss {a}, packed {b}");
    }
    assert!(padded[5] < padded[0], "the runs train: {padded:?}");
}

#[test]
fn resumed_run_reproduces_the_uninterrupted_loss_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let config = small_sft_config(&straight, 8, &["train.max_steps=8"]);
    sft::run(&config, "", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap();

    let interrupted = tmp.path().join("interrupted");
    let config = small_sft_config(&interrupted, 8, &["train.max_steps=8"]);
    // stops after step 5: the last checkpoint is step 4, step 5's metrics must be discarded
    sft::run(&config, "", &SftOptions { resume: false, stop_after: Some(5), ..Default::default() }).unwrap();
    let err = sft::run(&config, "", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    sft::run(&config, "", &SftOptions { resume: true, stop_after: None, ..Default::default() }).unwrap();

    for metric in ["loss", "lr", "grad_norm", "tokens_seen"] {
        let a = read_series(&straight.join("metrics.jsonl"), metric).unwrap();
        let b = read_series(&interrupted.join("metrics.jsonl"), metric).unwrap();
        assert_eq!(a.len(), 8);
        assert_eq!(a, b, "{metric} differs between the uninterrupted and the resumed run");
    }
}

#[test]
fn bad_examples_are_reported_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let mut config = small_sft_config(&run_dir, 4, &["train.max_steps=1", "optim.warmup_steps=0"]);
    let good = std::fs::read_to_string(&config.data.train).unwrap();
    let bad = [
        "{not json",
        r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
        r#"{"tools": [], "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "rm_rf", "arguments": {}}}]}]}"#,
        r#"{"messages": [{"role": "user", "content": "only a question"}]}"#,
    ];
    let data = tmp.path().join("mixed.jsonl");
    std::fs::write(&data, format!("{good}{}\n", bad.join("\n"))).unwrap();
    config.data.train = data.clone();
    let summary = sft::run(&config, "", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap();
    assert_eq!(summary.data.skipped_bad, 4);
    assert_eq!(summary.data.examples, 4);

    config.data.bad_examples = sft::BadExamples::Error;
    config.run.dir = tmp.path().join("run2");
    let err = sft::run(&config, "", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("mixed.jsonl:5: not valid JSON"), "{err}");
    for (line, text) in [(6, "unknown role \"wizard\""), (7, "\"rm_rf\", which is not among the example's tools"), (8, "no assistant message")] {
        let path = tmp.path().join(format!("one-{line}.jsonl"));
        std::fs::write(&path, format!("{}\n", bad[line - 5])).unwrap();
        config.data.train = path;
        let err = sft::run(&config, "", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains(":1: ") && err.contains(text), "{err}");
    }
}

#[test]
fn a_model_too_large_for_this_machine_is_refused_before_anything_is_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let config = small_sft_config(&run_dir, 4, &[]);
    // ~4 trillion parameters: more than any host has, whatever runs this test
    let path = config.model.init_config.clone().unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    model["hidden_size"] = 8192.into();
    model["intermediate_size"] = 28672.into();
    model["num_hidden_layers"] = 4096.into();
    std::fs::write(&path, model.to_string()).unwrap();
    let started = std::time::Instant::now();
    let err = sft::run(&config, "", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("this run does not fit: each worker needs about") && err.contains("| weights |"), "{err}");
    assert!(err.contains("to fit: train LoRA adapters ([lora]), or set train.check_memory = false to start anyway"), "{err}");
    assert!(started.elapsed().as_secs() < 5, "refused before allocating anything");
    assert!(!run_dir.exists(), "nothing was written for a run that cannot start");
    // the estimate itself, from the config alone
    let model = config.model.architecture().unwrap();
    let estimate = forge_train::memory::estimate(&sft::run_shape(&config, &model, DeviceKind::Cpu, 1, None));
    assert!(estimate.weights > 10 << 40, "{estimate:?}");
}

/// `model.device` (or `--set model.device=cuda:1`) picks the GPU; a build without CUDA refuses it
/// before anything is written, saying how to build one.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_run_in_a_build_without_cuda_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let config = small_sft_config(&run_dir, 4, &["model.device=cuda:1"]);
    assert_eq!(config.model.device, forge_model::device::DeviceSpec::Cuda(1));
    let err = sft::run(&config, "", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("device `cuda:1`: this forge was built without CUDA; build it with scripts/gpu/build-cuda.sh"), "{err}");
    assert!(!run_dir.exists());
    let repo = repo();
    let err = load_config::<SftConfig>(&repo.join("configs/tiny/sft.toml"), &["model.device=gpu".into()]).unwrap_err().to_string();
    assert!(err.contains("unknown device `gpu`: use cpu, cuda or cuda:N"), "{err}");
}

#[test]
fn the_estimate_counts_the_planned_micro_batch_with_the_largest_activations() {
    use forge_model::memory::{activation_bytes, StepShape};
    let tmp = tempfile::tempdir().unwrap();
    let config = small_sft_config(&tmp.path().join("run"), 4, &[]);
    let model = config.model.architecture().unwrap();
    let shape = |rows: usize, width: usize| StepShape { tokens: rows * width, seq_len: width, recompute: false, fused_attention: false, dtype: candle_core::DType::F32 };
    // the same 400 tokens: one row of 400 holds 4× the attention scores of four rows of 100
    let planned = forge_train::memory::estimate(&sft::run_shape(&config, &model, DeviceKind::Cpu, 1, Some(&[(4, 100), (1, 400)])));
    assert_eq!(planned.activations, activation_bytes(&model, &shape(1, 400)));
    assert!(activation_bytes(&model, &shape(1, 400)) > activation_bytes(&model, &shape(4, 100)));
    // without a plan: rows of data.max_seq_len filling train.micro_batch_tokens
    let worst = forge_train::memory::estimate(&sft::run_shape(&config, &model, DeviceKind::Cpu, 1, None));
    let rows = (config.train.micro_batch_tokens / config.data.max_seq_len).max(1);
    assert_eq!(worst.activations, activation_bytes(&model, &shape(rows, config.data.max_seq_len)));
}

#[test]
fn every_bundled_sft_config_parses_validates_and_is_planned() {
    let dir = repo().join("configs");
    let mut checked = 0;
    for group in std::fs::read_dir(&dir).unwrap() {
        for entry in std::fs::read_dir(group.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("sft")) && path.extension().is_some_and(|e| e == "toml") {
                let (config, resolved) = load_config::<SftConfig>(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                config.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // the resolved config is the typed one written out: every default present, and
                // loading it again gives it back unchanged
                for key in ["init_std", "dtype", "device", "min_lr_ratio", "pure_bf16", "packing", "check_memory", "keep_last"] {
                    assert!(resolved.contains(&format!("\n{key} = ")), "{}: {key} missing from\n{resolved}", path.display());
                }
                let again = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(again.path(), &resolved).unwrap();
                assert_eq!(load_config::<SftConfig>(again.path(), &[]).unwrap().1, resolved, "{}", path.display());
                // planned without any weights: a CPU config on one 16 GiB worker, a GPU one on 8 × 80 GiB
                let mut config = config;
                config.model.init_config = config.model.init_config.map(|json| repo().join(json));
                let model = config.model.architecture().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let (device, workers, memory) = match config.model.device {
                    forge_model::device::DeviceSpec::Cpu => (DeviceKind::Cpu, 1, 16u64 << 30),
                    forge_model::device::DeviceSpec::Cuda(_) => (DeviceKind::Cuda, 8, 80 << 30),
                };
                let planned = forge_train::plan::plan(&sft::run_shape(&config, &model, device, workers, None), Some(memory));
                assert!(planned.fits(), "{}:\n{planned}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "expected the tiny, demo and Qwen3-8B SFT configs under {}", dir.display());
}

#[test]
fn lora_sft_trains_adapters_resumes_exactly_and_exports_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let lora_run = |name: &str, stop_after: Option<u64>, resume: bool| {
        let run_dir = tmp.path().join(name);
        let mut config = small_sft_config(&run_dir, 6, &["train.max_steps=6", "optim.lr=1e-2", "optim.warmup_steps=1"]);
        config.model.init_config = None;
        config.model.path = Some(repo().join("fixtures/gqa2-untied-f32/model").display().to_string());
        config.lora = Some(forge_model::LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.1,
            target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
            seed: 1,
        });
        sft::run(&config, "", &SftOptions { resume, stop_after, ..Default::default() }).unwrap();
        run_dir
    };
    let straight = lora_run("straight", None, false);
    lora_run("interrupted", Some(3), false);
    let resumed = lora_run("interrupted", None, true);
    for metric in ["loss", "grad_norm"] {
        let a = read_series(&straight.join("metrics.jsonl"), metric).unwrap();
        assert_eq!(a.len(), 6);
        assert_eq!(a, read_series(&resumed.join("metrics.jsonl"), metric).unwrap(), "{metric}");
    }
    let losses = read_series(&straight.join("metrics.jsonl"), "loss").unwrap();
    assert!(losses[5].1 < losses[0].1, "LoRA loss did not fall: {losses:?}");
    let step_dir = straight.join("checkpoints/step-6");
    assert!(step_dir.join("adapter/adapter_model.safetensors").is_file() && !step_dir.join("model").exists());

    // the exported model is the base with the adapters merged: it differs from the base
    let base = forge_model::load_model(&repo().join("fixtures/gqa2-untied-f32/model"), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let tuned = forge_model::load_model(&straight.join("model"), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let q = "model.layers.0.self_attn.q_proj.weight";
    let k = "model.layers.0.self_attn.k_proj.weight";
    let diff = |name: &str| {
        (base.params().tensor(name).unwrap() - tuned.params().tensor(name).unwrap()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
    };
    assert!(diff(q) > 0.0, "q_proj carries an adapter and must change");
    assert_eq!(diff(k), 0.0, "k_proj has no adapter and must stay the base weight");
}

/// `model.rope_scaling` (YaRN here) replaces the pretrained model's: the plan's architecture and
/// the trained model have it, and the saved model's config.json records it.
#[test]
fn model_rope_scaling_reaches_the_trained_model_and_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let yarn = "model.rope_scaling={ rope_type = \"yarn\", factor = 4.0, original_max_position_embeddings = 128 }";
    let mut config = small_sft_config(&run_dir, 2, &["train.max_steps=1", "optim.warmup_steps=0", yarn]);
    config.model.init_config = None;
    config.model.path = Some(repo().join("fixtures/gqa2-untied-f32/model").display().to_string());
    assert_eq!(config.model.architecture().unwrap().max_context(), 512, "factor 4 over 128 positions");
    let summary = sft::run(&config, "", &SftOptions::default()).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(summary.model_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["rope_scaling"]["rope_type"], "yarn", "{saved}");
    assert_eq!((saved["rope_scaling"]["factor"].as_f64(), saved["rope_scaling"]["original_max_position_embeddings"].as_u64()), (Some(4.0), Some(128)));
    let bad = small_sft_config(&tmp.path().join("bad"), 2, &["model.rope_scaling={ rope_type = \"dynamic\", factor = 2.0 }"]);
    let err = bad.model.architecture().unwrap_err().to_string();
    assert!(err.contains("model.rope_scaling:") && err.contains("\"dynamic\" is not supported"), "{err}");
}
