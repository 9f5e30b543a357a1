#!/usr/bin/env python3
"""PyTorch + transformers CPU reference for one Qwen3 training step (forward + backward, no
optimizer step) of a ~20M-parameter model, to compare the Rust trainer against.

Model: vocab 8192, hidden 512, intermediate 1536, 4 layers, 8 heads, 4 KV heads, head_dim 64,
untied, f32. Batch 2 x 256 random tokens, labels = input_ids.

Prints one JSON line:
  {"impl": "pytorch", "torch", "transformers", "threads", "attn", "gradient_checkpointing",
   "params", "tokens_per_step", "step_s_median", "step_s_mean", "tokens_per_s" (median-based),
   "peak_rss_mib" (ru_maxrss), "rss_before_model_mib" (VmRSS after imports)}

Usage: .venv/bin/python scripts/bench_torch.py [--attn sdpa|eager] [--gradient-checkpointing]
                                              [--warmup 2] [--steps 10] [--threads N]
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
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rss_before = rss_mib()

    cfg = Qwen3Config(
        vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64, tie_word_embeddings=False,
        max_position_embeddings=4096, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        use_sliding_window=False, attention_bias=False, use_cache=False,
    )
    model = Qwen3ForCausalLM._from_config(cfg, attn_implementation=args.attn,
                                          dtype=torch.float32)
    model.float().train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    n_params = sum(p.numel() for p in model.parameters())

    g = torch.Generator().manual_seed(args.seed + 1)
    input_ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=g)

    times = []
    loss = None
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        out = model(input_ids, labels=input_ids)
        out.loss.backward()
        dt = time.perf_counter() - t0
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
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
