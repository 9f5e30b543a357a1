#!/usr/bin/env python3
"""PyTorch + transformers reference for an SFT training step with AdamW (forward, backward,
clip_grad_norm_, optimizer step), on CPU, for the shapes of crates/forge-train/benches/sft_step.rs.

Prints one JSON line like the Rust bench: impl, model, params, tokens_per_step, step_s_median,
tokens_per_s, peak_rss_mib, rss_before_model_mib.

Usage: .venv/bin/python scripts/bench_sft_torch.py --model tiny|50m [--batch 2 --seq 512 --steps 10]
"""
import argparse
import json
import resource
import statistics
import time

SHAPES = {
    # configs/tiny/qwen3-tiny.json
    "tiny": dict(vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
    "50m": dict(vocab_size=8192, hidden_size=768, intermediate_size=2048, num_hidden_layers=6,
                num_attention_heads=12, num_key_value_heads=4, head_dim=64, tie_word_embeddings=False),
}


def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    rss_before = rss_mib()
    cfg = Qwen3Config(**SHAPES[args.model], rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
                      use_sliding_window=False, attention_bias=False, use_cache=False)
    model = Qwen3ForCausalLM._from_config(cfg, dtype=torch.float32).train()
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    tokens = args.batch * args.seq
    print(json.dumps({
        "impl": "pytorch", "model": args.model, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()), "tokens_per_step": tokens,
        "step_s_median": median, "tokens_per_s": tokens / median,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "rss_before_model_mib": rss_before,
    }))


if __name__ == "__main__":
    main()
