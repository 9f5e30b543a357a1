#!/usr/bin/env python3
"""transformers' greedy `generate` on CPU, the reference for the forge-engine decode benchmark.

  --make-model DIR   write a random ~20M Qwen3 (vocab 8192, hidden 512, intermediate 1536,
                     4 layers, 8 heads, 4 KV heads, head_dim 64, untied, f32, seed 0) as an HF
                     model directory; both sides then load the same safetensors weights
  --model DIR        time `generate` of --batch prompts of --prompt-len tokens (the formula of
                     crates/forge-engine/benches/decode.rs), exactly --new-tokens new tokens each
                     (no eos), greedy, f32, default attention (SDPA) and cache (DynamicCache)

Prints one JSON line: {"impl": "transformers", "torch", "transformers", "threads", "batch",
"prompt_len", "new_tokens", "generate_s_median", "tokens_per_s", "first_sequence_tokens"}.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-model")
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.make_model:
        make_model(args.make_model)
    elif args.model:
        bench(args)
    else:
        ap.error("give --make-model DIR or --model DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
