#!/usr/bin/env python3
"""PyTorch + transformers reference for one Qwen3 training step (forward + backward, no
optimizer step), to compare the Rust trainer against.

Default model (CPU, scripts/bench/bench-cpu.sh): vocab 8192, hidden 512, intermediate 1536, 4 layers,
8 heads, 4 KV heads, head_dim 64, untied, f32. Batch 2 x 256 random tokens, labels = input_ids.
With --model 0.6b|1.7b|8b (GPU, scripts/gpu/gpu-check.sh): the Qwen3 release architectures with random
weights, initialised on --device; on CUDA the report adds torch's peak allocated/reserved memory
and the driver's used memory after a step (what the forge GPU bench reports).

Prints one JSON line:
  {"impl": "pytorch", "torch", "transformers", "threads", "attn", "gradient_checkpointing",
   "params", "tokens_per_step", "step_s_median", "step_s_mean", "tokens_per_s" (median-based),
   "peak_rss_mib" (ru_maxrss), "rss_before_model_mib" (VmRSS after imports)}

Usage: .venv/bin/python scripts/bench/bench_torch.py [--attn sdpa|eager] [--gradient-checkpointing]
                                              [--warmup 2] [--steps 10] [--threads N]
                                              [--model bench20m|0.6b|1.7b|8b] [--device cpu|cuda]
                                              [--dtype f32|bf16] [--batch B] [--seq S] [--profile-step]
"""
import argparse
import json
import resource
import statistics
import sys
import time


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# hidden, intermediate, layers, heads, kv heads, head_dim, vocab, tied: the released architectures.
MODELS = {
    "bench20m": (512, 1536, 4, 8, 4, 64, 8192, False),
    "0.6b": (1024, 3072, 28, 16, 8, 128, 151936, True),
    "1.7b": (2048, 6144, 28, 16, 8, 128, 151936, True),
    "8b": (4096, 12288, 36, 32, 8, 128, 151936, False),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="0 = torch default (all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="bench20m", choices=sorted(MODELS))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--profile-step", action="store_true",
                    help="after the report, one more step between cudaProfilerStart/Stop (ncu --profile-from-start off)")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rss_before = rss_mib()

    hidden, inter, layers, heads, kv_heads, head_dim, vocab, tied = MODELS[args.model]
    cfg = Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        tie_word_embeddings=tied, max_position_embeddings=max(4096, args.seq),
        rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        use_sliding_window=False, attention_bias=False, use_cache=False,
    )
    dtype = torch.float32 if args.dtype == "f32" else torch.bfloat16
    device = torch.device(args.device)
    with device:  # initialise where it runs (an 8B host-side init takes minutes)
        model = Qwen3ForCausalLM._from_config(cfg, attn_implementation=args.attn, dtype=dtype)
    model.to(dtype).train()
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    n_params = sum(p.numel() for p in model.parameters())

    g = torch.Generator().manual_seed(args.seed + 1)
    input_ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g).to(device)

    times = []
    loss = None
    used_after_step = 0.0
    for i in range(args.warmup + args.steps):
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        out = model(input_ids, labels=input_ids)
        out.loss.backward()
        sync()
        dt = time.perf_counter() - t0
        if cuda:
            free, total = torch.cuda.mem_get_info()
            used_after_step = max(used_after_step, (total - free) / 2**20)
        loss = out.loss.item()
        if i >= args.warmup:
            times.append(dt)

    tokens = args.batch * args.seq
    med = statistics.median(times)
    result = {
        "impl": "pytorch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "attn": model.config._attn_implementation,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "params": n_params,
        "tokens_per_step": tokens,
        "step_s_median": round(med, 4),
        "step_s_mean": round(statistics.mean(times), 4),
        "tokens_per_s": round(tokens / med, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "rss_before_model_mib": round(rss_before, 1),
        "loss": round(loss, 4),
    }
    if cuda:
        result.update({
            "model": args.model,
            "dtype": args.dtype,
            "device": torch.cuda.get_device_name(),
            "seq": args.seq,
            "batch": args.batch,
            "cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "cuda_max_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1),
            "device_mem_used_after_step_mib": round(used_after_step, 1),
        })
    print(json.dumps(result), flush=True)
    if args.profile_step and cuda:
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        model(input_ids, labels=input_ids).loss.backward()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
