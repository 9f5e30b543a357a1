#!/usr/bin/env python3
"""PyTorch reference for forge's fused flash attention (crates/forge-kernels/benches/gpu_flash.rs):
torch.nn.functional.scaled_dot_product_attention restricted to the flash backend, causal, at
Qwen3-8B's attention shape (32 query heads, 8 K/V heads, head_dim 128, bf16, batch 1), forward and
backward, at 4k/8k/32k tokens; and torch's bf16 matmul rate, measured in the same run.

K/V heads are repeated to the query heads inside the timed region (repeat_interleave: its backward
sums the gradients per K/V head, as forge's kernel does in place), because not every torch version's
flash backend takes enable_gqa; that copy is O(s·h·d), small beside the O(s²·h·d) attention.
FLOPs as the flash-attention papers count them: causal forward 2·s²·h·d, backward 2.5× that.
The backward time is (forward + backward) − forward, medians; the backward starts from out.sum()
(forge's bench does the same).

Prints one JSON line per measurement (the fields of gpu_flash's lines).
Usage: python3 scripts/gpu/bench_flash_torch.py [--seqs 4096,8192,32768] [--warmup 2] [--steps 10] [--device cuda|cpu]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_seconds(fn, warmup, steps, sync):
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seqs", default="4096,8192,32768")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke test of this script at small sizes")
    args = p.parse_args()
    dev = args.device
    cuda = dev == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    n = 8192 if cuda else 256
    a, b = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
    s = median_seconds(lambda: a @ b, 3, 10, sync)
    print(json.dumps({"bench": "matmul_bf16", "impl": "torch", "shape": f"{n}x{n}x{n}", "median_ms": s * 1e3, "tflops": 2 * n**3 / s / 1e12}), flush=True)
    del a, b

    h, h_kv, d = args.heads, args.kv_heads, args.head_dim
    group = h // h_kv
    for seq in (int(x) for x in args.seqs.split(",")):
        warmup, steps = (1, min(3, args.steps)) if seq > 16384 else (args.warmup, args.steps)
        label = f"[1, {seq}, {h} ({h_kv} kv), {d}] bf16 causal"
        base = {"bench": "flash_attention", "impl": "torch sdpa (flash backend)", "seq": seq, "shape": label}
        fwd_flops = 2.0 * seq * seq * h * d
        q = torch.randn(1, h, seq, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(1, h_kv, seq, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(1, h_kv, seq, d, device=dev, dtype=torch.bfloat16, requires_grad=True)

        def forward():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(
                    q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1), is_causal=True
                )

        def fwd_bwd():
            q.grad = k.grad = v.grad = None
            forward().sum().backward()

        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t_fwd = median_seconds(forward, warmup, steps, sync)
            t_both = median_seconds(fwd_bwd, warmup, steps, sync)
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
            t_bwd = max(t_both - t_fwd, 1e-9)
            print(json.dumps({**base, "pass": "forward", "median_ms": t_fwd * 1e3, "tflops": fwd_flops / t_fwd / 1e12, "torch_peak_alloc_mib": peak}), flush=True)
            print(json.dumps({**base, "pass": "backward", "median_ms": t_bwd * 1e3, "tflops": 2.5 * fwd_flops / t_bwd / 1e12, "torch_peak_alloc_mib": peak}), flush=True)
        except RuntimeError as e:  # no flash kernel for this GPU/shape, or out of memory
            print(json.dumps({**base, "pass": "forward", "error": str(e).splitlines()[0][:200]}), flush=True)
        del q, k, v
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
