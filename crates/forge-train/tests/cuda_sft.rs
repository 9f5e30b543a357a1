//! The SFT recipe on a GPU (`model.device = "cuda"`) against the same run on the CPU: same data,
//! same initialisation, same seeds, so the loss curves must agree up to float reordering; in bf16
//! the loss must fall, the checkpoint must resume and the exported weights must load. Needs a GPU:
//! run by scripts/gpu/gpu-check.sh (CI=true there; CI on GPU-less machines only compiles this file).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device};
use common::small_sft_config;
use forge_kernels::testing::{relative_error, require_cuda};
use forge_train::run_log::read_series;
use forge_train::sft::{self, SftOptions};

fn losses(run_dir: &std::path::Path) -> Vec<f64> {
    read_series(&run_dir.join("metrics.jsonl"), "loss").unwrap().into_iter().map(|(_, loss)| loss).collect()
}

fn flat_weights(model_dir: &std::path::Path) -> Vec<f32> {
    let model = forge_model::load_model(model_dir, DType::F32, &Device::Cpu).unwrap();
    let mut named: Vec<_> = model.params().iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

#[test]
fn f32_sft_on_the_gpu_follows_the_cpu_loss_curve() {
    let Some(_gpu) = require_cuda("f32_sft_on_the_gpu_follows_the_cpu_loss_curve") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = |device: &str| {
        let run_dir = tmp.path().join(device.replace(':', "-"));
        let config = small_sft_config(&run_dir, 8, &[&format!("model.device=\"{device}\""), "train.epochs=2"]);
        let summary = sft::run(&config, "# test\n", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap();
        (losses(&run_dir), summary)
    };
    let (cpu, _) = run("cpu");
    let (gpu, summary) = run("cuda:0");
    assert_eq!(cpu.len(), gpu.len());
    eprintln!("loss per step, cpu vs cuda:0:\n{:?}\n{:?}", cpu, gpu);
    // the first step sees identical weights: only the summation order differs
    assert!((cpu[0] - gpu[0]).abs() <= 1e-4 * cpu[0].abs(), "first-step loss: cpu {} vs cuda {}", cpu[0], gpu[0]);
    for (step, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        assert!((c - g).abs() <= 1e-2 * c.abs(), "step {}: cpu loss {c} vs cuda {g}", step + 1);
    }
    let (cpu_weights, gpu_weights) = (flat_weights(&tmp.path().join("cpu/model")), flat_weights(&summary.model_dir));
    let err = relative_error(&gpu_weights, &cpu_weights);
    assert!(err < 1e-2, "exported weights differ: relative error {err:.2e}");
}

#[test]
fn bf16_sft_on_the_gpu_learns_and_resumes() {
    let Some(_gpu) = require_cuda("bf16_sft_on_the_gpu_learns_and_resumes") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let overrides = ["model.device=\"cuda\"", "model.dtype=\"bf16\""];
    let whole_dir = tmp.path().join("whole");
    let whole = small_sft_config(&whole_dir, 12, &overrides);
    let summary = sft::run(&whole, "# test\n", &SftOptions { resume: false, stop_after: None, ..Default::default() }).unwrap();
    let curve = losses(&whole_dir);
    let mean = |l: &[f64]| l.iter().sum::<f64>() / l.len() as f64;
    assert!(mean(&curve[curve.len() - 3..]) < 0.75 * mean(&curve[..3]), "loss did not fall: {curve:?}");
    assert!(forge_model::load_model(&summary.model_dir, DType::F32, &Device::Cpu).is_ok(), "the exported model loads");

    // interrupted after 4 steps (checkpoints every 2), then resumed from the checkpoint
    let split_dir = tmp.path().join("split");
    let split = small_sft_config(&split_dir, 12, &overrides);
    sft::run(&split, "# test\n", &SftOptions { resume: false, stop_after: Some(4), ..Default::default() }).unwrap();
    sft::run(&split, "# test\n", &SftOptions { resume: true, stop_after: None, ..Default::default() }).unwrap();
    let resumed = losses(&split_dir);
    assert_eq!(resumed.len(), curve.len());
    for (step, (a, b)) in curve.iter().zip(&resumed).enumerate() {
        assert!((a - b).abs() <= 1e-3 * a.abs(), "step {}: uninterrupted {a} vs resumed {b}", step + 1);
    }
}

/// A one-GPU machine cannot hold two NCCL ranks (NCCL refuses a GPU twice in a communicator), so
/// this is the GPU check of the data-parallel path that one GPU allows: a run as the only worker of
/// a process group goes through the TCP rendezvous, the NCCL communicator and its all-reduce of
/// every gradient, and must train exactly as the same run without a group.
#[test]
fn a_one_worker_nccl_group_trains_exactly_as_no_group() {
    let Some(_gpu) = require_cuda("a_one_worker_nccl_group_trains_exactly_as_no_group") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, distributed: Option<forge_train::Topology>| {
        let run_dir = tmp.path().join(name);
        let config = small_sft_config(&run_dir, 8, &["model.device=\"cuda\"", "train.max_steps=4"]);
        sft::run(&config, "# test\n", &SftOptions { distributed, ..Default::default() }).unwrap();
        run_dir
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let alone = run("alone", None);
    let grouped = run("grouped", Some(forge_train::Topology { rank: 0, world_size: 1, local_rank: 0, local_world_size: 1, master: format!("127.0.0.1:{port}") }));
    assert_eq!(losses(&alone), losses(&grouped));
    assert_eq!(flat_weights(&alone.join("model")), flat_weights(&grouped.join("model")));
}

/// `train.packing` on a GPU: in bf16 with head dim 128, packed rows attend through the flash
/// kernel's variable-length path and padded rows through its padded path. The same sequences give
/// the same loss and gradients both ways, and those of the f32 CPU model (the reference attention).
#[test]
fn packed_rows_train_through_the_flash_kernel_like_padded_rows() {
    use candle_core::Tensor;
    use forge_model::{Batch, Config, ParamStore, Qwen3ForCausalLM};
    let Some(gpu) = require_cuda("packed_rows_train_through_the_flash_kernel_like_padded_rows") else { return };
    let config = Config::from_json(
        r#"{"vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
            "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128, "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 1024, "tie_word_embeddings": false}"#,
    )
    .unwrap();
    // lengths across the kernels' 64-row tiles; the first token of each sequence unlabelled
    let lengths = [130usize, 65, 7];
    let seqs: Vec<Vec<u32>> = lengths.iter().enumerate().map(|(s, &n)| (0..n).map(|i| ((i * 131 + s * 977 + 7) % 512) as u32).collect()).collect();
    let label = |ids: &[u32]| -> Vec<i64> { ids.iter().enumerate().map(|(i, &t)| if i == 0 { -100 } else { i64::from(t) }).collect() };
    let batches = |device: &Device| -> (Batch, Batch) {
        let s = *lengths.iter().max().unwrap();
        let (mut ids, mut mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for seq in &seqs {
            let pad = s - seq.len();
            ids.extend(seq.iter().copied().chain(std::iter::repeat_n(0, pad)));
            mask.extend(std::iter::repeat_n(1u32, seq.len()).chain(std::iter::repeat_n(0, pad)));
            labels.extend(label(seq).into_iter().chain(std::iter::repeat_n(-100, pad)));
        }
        let b = seqs.len();
        let padded = Batch {
            input_ids: Tensor::from_vec(ids, (b, s), device).unwrap(),
            attention_mask: Some(Tensor::from_vec(mask, (b, s), device).unwrap()),
            labels: Some(Tensor::from_vec(labels, (b, s), device).unwrap()),
            position_ids: None,
        };
        let total: usize = lengths.iter().sum();
        let packed = Batch {
            input_ids: Tensor::from_vec(seqs.concat(), (1, total), device).unwrap(),
            attention_mask: None,
            labels: Some(Tensor::from_vec(seqs.iter().flat_map(|s| label(s)).collect::<Vec<_>>(), (1, total), device).unwrap()),
            position_ids: Some(Tensor::from_vec(lengths.iter().flat_map(|&n| 0..n as u32).collect::<Vec<_>>(), (1, total), device).unwrap()),
        };
        (padded, packed)
    };
    let model = |dtype: DType, device: &Device| Qwen3ForCausalLM::new(config.clone(), ParamStore::random(&config, 0.05, 5, dtype, device).unwrap()).unwrap();
    let (cpu_model, gpu_model) = (model(DType::F32, &Device::Cpu), model(DType::BF16, &gpu));
    let (cpu_padded, _) = batches(&Device::Cpu);
    let (want_loss, want) = cpu_model.loss_and_gradients(&cpu_padded, false).unwrap();
    let (gpu_padded, gpu_packed) = batches(&gpu);
    for (what, batch) in [("padded", gpu_padded), ("packed", gpu_packed)] {
        let (loss, grads) = gpu_model.loss_and_gradients(&batch, false).unwrap();
        eprintln!("{what}: loss {loss} vs f32 CPU {want_loss}");
        assert!((loss - want_loss).abs() <= 2e-2 * want_loss.abs(), "{what}: loss {loss} vs f32 CPU {want_loss}");
        for (name, g) in &want {
            let got = grads[name].to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let err = relative_error(&got, &g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            assert!(err <= 5e-2, "{what}: gradient of {name} differs from the f32 CPU one by {err:.2e}");
        }
    }
}
