//! LoRA: merged == unmerged, adapters off == base, adapter gradients equal the chain rule through
//! the merged weight, dropout is reproducible, adapters round-trip through PEFT files.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{max_abs_diff, model_dir, rel_err, Reference};
use forge_model::lora::{init_adapters, load_adapters, merge, save_adapters, LORA_TARGETS};
use forge_model::{load_model, Config, LoraConfig, ParamStore, Qwen3ForCausalLM};

fn lora_config(dropout: f64) -> LoraConfig {
    LoraConfig { rank: 4, alpha: 8.0, dropout, target_modules: LORA_TARGETS.iter().map(|s| s.to_string()).collect(), seed: 3 }
}

/// Base fixture model + adapters whose B is random (fresh adapters are a no-op).
fn setup(dropout: f64) -> (Config, ParamStore, LoraConfig, ParamStore) {
    let base_model = load_model(&model_dir("gqa2-untied-f32"), DType::F32, &Device::Cpu).unwrap();
    let config = base_model.config().clone();
    let lora = lora_config(dropout);
    let adapters = init_adapters(&config, &lora, DType::F32, &Device::Cpu).unwrap();
    for (name, var) in adapters.iter() {
        if name.ends_with("lora_B.weight") {
            var.set(&Tensor::randn(0f32, 0.1, var.dims(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    (config, base_model.params().clone(), lora, adapters)
}

#[test]
fn merged_forward_equals_adapted_forward_and_adapters_off_equals_base() {
    let (config, base, lora, adapters) = setup(0.0);
    let reference = Reference::load("gqa2-untied-f32");
    let batch = reference.batch();
    let adapted = Qwen3ForCausalLM::with_lora(config.clone(), base.clone(), lora.clone(), adapters.clone()).unwrap();
    let merged = Qwen3ForCausalLM::new(config.clone(), merge(&base, &adapters, &lora).unwrap()).unwrap();
    let a = adapted.forward(&batch.input_ids, batch.attention_mask.as_ref()).unwrap();
    let m = merged.forward(&batch.input_ids, batch.attention_mask.as_ref()).unwrap();
    let e = rel_err(&a, &m);
    assert!(e <= 1e-5, "merged vs unmerged logits relative error {e:e}");
    assert!(rel_err(&a, reference.get("logits")) > 1e-3, "the adapters changed nothing");

    let off = adapted.forward_with(&batch.input_ids, batch.attention_mask.as_ref(), forge_model::Weights::Base).unwrap();
    assert!(rel_err(&off, reference.get("logits")) <= 1e-5, "adapters off must be the base model");
}

#[test]
fn adapter_gradients_follow_the_chain_rule_through_the_merged_weight() {
    let (config, base, lora, adapters) = setup(0.0);
    let batch = Reference::load("gqa2-untied-f32").batch();
    let adapted = Qwen3ForCausalLM::with_lora(config.clone(), base.clone(), lora.clone(), adapters.clone()).unwrap();
    let (_, grads) = adapted.loss_and_gradients(&batch, false).unwrap();
    let names: Vec<&String> = grads.keys().collect();
    assert!(names.iter().all(|n| n.contains(".lora_")), "base parameters received gradients: {names:?}");
    assert_eq!(grads.len(), adapters.len());

    let merged = Qwen3ForCausalLM::new(config, merge(&base, &adapters, &lora).unwrap()).unwrap();
    let (_, full) = merged.loss_and_gradients(&batch, false).unwrap();
    let s = lora.scale();
    for (name, var) in adapters.iter() {
        let module = name.rsplit_once(".lora_").unwrap().0;
        let g_w = &full[&format!("{module}.weight")];
        let (a, b) = (adapters.tensor(&format!("{module}.lora_A.weight")).unwrap(), adapters.tensor(&format!("{module}.lora_B.weight")).unwrap());
        // W_eff = W + s·B·A  ⇒  dL/dA = s·Bᵀ·G,  dL/dB = s·G·Aᵀ
        let expected = if name.ends_with("lora_A.weight") { (b.t().unwrap().matmul(g_w).unwrap() * s).unwrap() } else { (g_w.matmul(&a.t().unwrap()).unwrap() * s).unwrap() };
        let e = rel_err(&grads[name], &expected);
        assert!(e <= 1e-4, "{name}: relative error {e:e}");
        assert_eq!(grads[name].dims(), var.dims());
    }
}

#[test]
fn dropout_masks_are_reproducible_and_recomputation_reuses_them() {
    let (config, base, lora, adapters) = setup(0.3);
    let batch = Reference::load("gqa2-untied-f32").batch();
    let model = Qwen3ForCausalLM::with_lora(config, base, lora, adapters).unwrap();
    let no_dropout = model.forward(&batch.input_ids, batch.attention_mask.as_ref()).unwrap();
    model.set_dropout_seed(Some(11));
    let first = model.forward(&batch.input_ids, batch.attention_mask.as_ref()).unwrap();
    let again = model.forward(&batch.input_ids, batch.attention_mask.as_ref()).unwrap();
    assert_eq!(max_abs_diff(&first, &again), 0.0);
    assert!(max_abs_diff(&first, &no_dropout) > 0.0, "dropout had no effect");
    // a recomputed block that drew a different mask would be off by far more than the sliced
    // head's summation order (see hf_parity.rs)
    let (plain_loss, plain) = model.loss_and_gradients(&batch, false).unwrap();
    let (recomputed_loss, recomputed) = model.loss_and_gradients(&batch, true).unwrap();
    assert!((plain_loss - recomputed_loss).abs() <= 1e-6 * plain_loss.abs(), "loss {plain_loss} vs {recomputed_loss}");
    for (name, g) in &plain {
        let e = rel_err(&recomputed[name], g);
        assert!(e <= 1e-6, "{name}: relative error {e:e} between plain and recomputed backward");
    }
}

#[test]
fn adapters_round_trip_through_peft_files() {
    let (config, _, lora, adapters) = setup(0.1);
    let tmp = tempfile::tempdir().unwrap();
    save_adapters(tmp.path(), &adapters, &lora, "fixtures/gqa2-untied-f32/model").unwrap();
    let (lora2, base, loaded) = load_adapters(tmp.path(), &config, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(lora2, lora);
    assert_eq!(base, "fixtures/gqa2-untied-f32/model");
    for ((n1, v1), (n2, v2)) in adapters.iter().zip(loaded.iter()) {
        assert_eq!(n1, n2);
        assert_eq!(max_abs_diff(v1.as_tensor(), v2.as_tensor()), 0.0);
    }
    let bad = LoraConfig { target_modules: vec!["qkv".into()], ..lora };
    assert!(bad.validate().unwrap_err().to_string().contains("unknown target module \"qkv\""));
}

#[test]
fn export_of_an_adapter_directory_writes_the_merged_model() {
    let (config, base, lora, adapters) = setup(0.0);
    let tmp = tempfile::tempdir().unwrap();
    let adapter_dir = tmp.path().join("adapter");
    save_adapters(&adapter_dir, &adapters, &lora, model_dir("gqa2-untied-f32").to_str().unwrap()).unwrap();
    let out = tmp.path().join("merged");
    forge_model::export::export(&adapter_dir, &out, forge_model::export::DEFAULT_SHARD_SIZE, None, false).unwrap();
    let exported = load_model(&out, DType::F32, &Device::Cpu).unwrap();
    let adapted = Qwen3ForCausalLM::with_lora(config, base, lora, adapters).unwrap();
    let batch = Reference::load("gqa2-untied-f32").batch();
    let e = rel_err(
        &exported.forward(&batch.input_ids, batch.attention_mask.as_ref()).unwrap(),
        &adapted.forward(&batch.input_ids, batch.attention_mask.as_ref()).unwrap(),
    );
    assert!(e <= 1e-5, "exported merged model vs adapted model: {e:e}");
    assert!(out.join("tokenizer.json").is_file());
}
