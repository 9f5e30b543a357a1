//! `forge plan`: the per-GPU memory table of a config, planned without the model's weights; exit
//! status 1 naming the setting to change when the run cannot fit.

mod common;

use std::process::Output;

use common::{forge, repo, stderr};

fn plan(args: &[&str]) -> Output {
    let config = repo().join(args[0]);
    let mut all = vec!["plan", "--config", config.to_str().unwrap()];
    all.extend_from_slice(&args[1..]);
    forge(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_8b_sft_recipe_fits_eight_80gib_gpus_and_zero_stage_0_is_refused_naming_the_stage() {
    let out = plan(&["configs/qwen3-8b/sft.toml", "--nproc-per-node", "8", "--gpu-memory", "80GiB"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("(forge train sft)\nQwen3 8.19B, bf16, full fine-tuning; 8 × GPU, 80.0 GiB each; train.zero_stage = 2"), "{table}");
    for row in [
        "| weights | 15.3 GiB | 8,190,735,360 params × 2 B |",
        "| gradients | 19.1 GiB | 8,190,735,360 params × (2 B backward + 4 B f32 buffer / 8 workers) |",
        "| optimizer | 11.4 GiB | 8,190,735,360 params × 12 B (AdamW moments + f32 master) / 8 workers |",
        "| activations | 24.0 GiB | 32768 tokens in rows of 32768, recompute on, flash attention |",
        "| workspace | 1.0 GiB |",
        "| **total** | **70.8 GiB** | fits 80.0 GiB (9.2 GiB spare) |",
        "largest train.micro_batch_tokens that fits: 32768",
    ] {
        assert!(table.contains(row), "{row} missing from\n{table}");
    }

    let refused = plan(&["configs/qwen3-8b/sft.toml", "--nproc-per-node", "8", "--gpu-memory", "80GiB", "--set", "train.zero_stage=0"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).contains("| **total** | **177.6 GiB** | does not fit 80.0 GiB |"), "{}", stdout(&refused));
    let err = stderr(&refused);
    assert!(err.contains("does not fit: each worker needs about 177.6 GiB of 80.0 GiB; to fit: set train.zero_stage = 2"), "{err}");
}

#[test]
fn an_rl_config_is_told_by_its_sections_and_its_kv_pool_is_sized() {
    let out = plan(&["configs/qwen3-8b/grpo.toml", "--nproc-per-node", "8", "--gpu-memory", "80GiB", "--set", "model.path=Qwen/Qwen3-8B"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("(forge train rl)"), "{table}");
    assert!(table.contains("| KV pool | 30.8 GiB | 0.9 × memory − the rest: 14002 blocks of 16 tokens; holds 6 × 32768 tokens"), "{table}");
    assert!(table.contains("| **total** | **72.0 GiB** | fits 80.0 GiB"), "{table}");
    // --kind overrides the sections' verdict: read as SFT, the RL config's sections are unknown
    let as_sft = plan(&["configs/qwen3-8b/grpo.toml", "--kind", "sft", "--gpu-memory", "80GiB"]);
    assert!(!as_sft.status.success() && stderr(&as_sft).contains("unknown field `agent`"), "{}", stderr(&as_sft));
    // the SFT run it starts from does not exist yet: the error says how to plan anyway
    let missing = plan(&["configs/qwen3-8b/grpo.toml", "--nproc-per-node", "8", "--gpu-memory", "80GiB"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("model.path `runs/qwen3-8b-sft/model` does not exist (yet"), "{}", stderr(&missing));
    // a GPU config without --gpu-memory on a machine that cannot open the GPU says what to give
    if !candle_core::utils::cuda_is_available() {
        let out = plan(&["configs/qwen3-8b/sft.toml", "--nproc-per-node", "8"]);
        assert!(stderr(&out).contains("give its memory with --gpu-memory (e.g. 80GiB)"), "{}", stderr(&out));
    }
}
