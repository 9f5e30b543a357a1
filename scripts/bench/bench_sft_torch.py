#!/usr/bin/env python3
"""PyTorch + transformers reference for an SFT training step with AdamW (forward, backward,
clip_grad_norm_, optimizer step), on CPU, for the shapes of crates/forge-train/benches/sft_step.rs.

Prints one JSON line like the Rust bench: impl, model, params, tokens_per_step, step_s_median,
tokens_per_s, peak_rss_mib, rss_before_model_mib.

With --workers N: DistributedDataParallel over N processes (gloo, the CPU backend), each with its
own batch; rank 0 prints the line (tokens_per_step counts every worker's batch).

Usage: .venv/bin/python scripts/bench/bench_sft_torch.py --model tiny|50m [--batch 2 --seq 512 --steps 10 --workers 1]
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
    args = parse_args()
    if args.workers == 1:
        train(0, args, None)
        return
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(train, args=(args, port), nprocs=args.workers, join=True)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    # sharding as forge's train.zero_stage: 1 = ZeroRedundancyOptimizer over DDP; 2 and 3 = FSDP2
    # (fully_shard per decoder layer, reshard_after_forward False / True)
    ap.add_argument("--zero", type=int, choices=[0, 1, 2, 3], default=0)
    ap.add_argument("--recompute", action="store_true", help="activation checkpointing per decoder layer")
    return ap.parse_args()


def train(rank, args, port):
    import torch
    import torch.distributed as dist
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    rss_before = rss_mib()
    cfg = Qwen3Config(**SHAPES[args.model], rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=4096,
                      use_sliding_window=False, attention_bias=False, use_cache=False)
    model = Qwen3ForCausalLM._from_config(cfg, dtype=torch.float32).train()
    if args.recompute:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    step_model = model
    if port is not None:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.workers)
        if args.zero >= 2:
            from torch.distributed.fsdp import fully_shard
            for layer in model.model.layers:
                fully_shard(layer, reshard_after_forward=args.zero == 3)
            fully_shard(model, reshard_after_forward=args.zero == 3)
        else:
            step_model = torch.nn.parallel.DistributedDataParallel(model)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    if args.zero == 1 and port is not None:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        opt = ZeroRedundancyOptimizer(decay, optimizer_class=torch.optim.AdamW, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
        opt.add_param_group({"params": no_decay, "weight_decay": 0.0})
    else:
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(1 + rank))
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step_model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    tokens = args.batch * args.seq * args.workers
    if port is not None:
        dist.destroy_process_group()
    if rank != 0:
        return
    print(json.dumps({
        "impl": "pytorch", "model": args.model, "zero_stage": args.zero, "recompute": args.recompute, "torch": torch.__version__, "threads": torch.get_num_threads(), "workers": args.workers,
        "params": sum(p.numel() for p in model.parameters()), "tokens_per_step": tokens,
        "step_s_median": median, "tokens_per_s": tokens / median,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "rss_before_model_mib": rss_before,
    }))


if __name__ == "__main__":
    main()
