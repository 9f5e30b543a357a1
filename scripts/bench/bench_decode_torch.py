#!/usr/bin/env python3
"""transformers' greedy `generate` on CPU, the reference for the forge-engine decode benchmark.

  --make-model DIR   write a random ~20M Qwen3 (vocab 8192, hidden 512, intermediate 1536,
                     4 layers, 8 heads, 4 KV heads, head_dim 64, untied, f32, seed 0) as an HF
                     model directory; both sides then load the same safetensors weights
  --model DIR        time `generate` of --batch prompts of --prompt-len tokens (the formula of
                     crates/forge-engine/benches/decode.rs), exactly --new-tokens new tokens each
                     (no eos), greedy, f32, default attention (SDPA) and cache (DynamicCache)
  --arch 0.6b|1.7b|8b  on CUDA, the loop of crates/forge-model/benches/gpu_decode.rs: a Qwen3
                     release architecture with random bf16 weights, --batch prompts of --context
                     tokens prefilled in chunks of --chunk rows, then --new-tokens greedy
                     single-token steps over a DynamicCache (SDPA attention)

Prints one JSON line: {"impl": "transformers", "torch", "transformers", "threads", "batch",
"prompt_len", "new_tokens", "generate_s_median", "tokens_per_s", "first_sequence_tokens"}; with
--arch the fields of the forge GPU bench (prefill_s, decode_s, ..., device memory) instead.
"""
import argparse
import json
import statistics
import sys
import time


def make_model(path):
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64, tie_word_embeddings=False,
        max_position_embeddings=4096, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        use_sliding_window=False, attention_bias=False, bos_token_id=None, eos_token_id=None,
    )
    model = Qwen3ForCausalLM(cfg).float()
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0, do_sample=False)
    model.save_pretrained(path, safe_serialization=True)


def bench(args):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    vocab = model.config.vocab_size
    prompts = [[(i * 2654435761 + b * 40503) % vocab for i in range(args.prompt_len)] for b in range(args.batch)]
    input_ids = torch.tensor(prompts, dtype=torch.int64)
    mask = torch.ones_like(input_ids)
    times, first = [], None
    for run in range(args.warmup + args.runs):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                 min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
        dt = time.perf_counter() - t0
        assert out.shape == (args.batch, args.prompt_len + args.new_tokens), out.shape
        first = out[0, args.prompt_len:].tolist()
        if run >= args.warmup:
            times.append(dt)
    med = statistics.median(times)
    print(json.dumps({
        "impl": "transformers", "torch": torch.__version__, "transformers": transformers.__version__,
        "threads": torch.get_num_threads(), "batch": args.batch, "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens, "generate_s_median": round(med, 4),
        "tokens_per_s": round(args.batch * args.new_tokens / med, 1), "first_sequence_tokens": first,
    }))


def bench_gpu(args):
    import torch
    import transformers
    from transformers import DynamicCache, Qwen3Config, Qwen3ForCausalLM
    from bench_torch import MODELS

    hidden, inter, layers, heads, kv_heads, head_dim, vocab, tied = MODELS[args.arch]
    cfg = Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        tie_word_embeddings=tied, max_position_embeddings=max(40960, args.context + args.new_tokens),
        rope_theta=1_000_000.0, rms_norm_eps=1e-6, use_sliding_window=False, attention_bias=False,
    )
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    used = (lambda: (lambda free, total: (total - free) / 2**20)(*torch.cuda.mem_get_info())) if cuda else (lambda: float("nan"))
    used_before = used()
    with torch.device(args.device):  # initialise where it runs (an 8B host-side init takes minutes)
        model = Qwen3ForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=torch.bfloat16)
    model.eval()
    prompts = torch.tensor([[(i * 2654435761 + b * 40503) % vocab for i in range(args.context)] for b in range(args.batch)],
                           device=args.device)

    def step(ids, cache):
        return model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].argmax(-1)

    with torch.no_grad():
        step(prompts[:1, :8], DynamicCache())  # warm-up
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        cache = DynamicCache()
        t0 = time.perf_counter()
        for start in range(0, args.context, args.chunk):
            nxt = step(prompts[:, start:start + args.chunk], cache)
        sync()
        prefill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.new_tokens):
            nxt = step(nxt[:, None], cache)
        sync()
        decode_s = time.perf_counter() - t0
    print(json.dumps({
        "impl": "transformers", "torch": torch.__version__, "transformers": transformers.__version__,
        "model": args.arch, "dtype": "bf16", "params": sum(p.numel() for p in model.parameters()),
        "batch": args.batch, "context": args.context, "new_tokens": args.new_tokens,
        "prefill_s": round(prefill_s, 4), "prefill_tokens_per_s": round(args.batch * args.context / prefill_s, 1),
        "decode_s": round(decode_s, 4), "decode_tokens_per_s": round(args.batch * args.new_tokens / decode_s, 1),
        "device_mem_used_after_decode_mib": round(used(), 1), "device_mem_used_before_model_mib": round(used_before, 1),
        "cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-model")
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--arch", choices=["0.6b", "1.7b", "8b"])
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="with --arch (cpu: a smoke test)")
    args = ap.parse_args()
    if args.make_model:
        make_model(args.make_model)
    elif args.model:
        bench(args)
    elif args.arch:
        bench_gpu(args)
    else:
        ap.error("give --make-model DIR, --model DIR or --arch 0.6b|1.7b|8b")
    return 0


if __name__ == "__main__":
    sys.exit(main())
