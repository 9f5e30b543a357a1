#!/usr/bin/env python3
"""Load client and model maker for scripts/bench/bench-serve.sh (`forge serve` beside transformers'
`generate` on the CPU).

  --make-model DIR   a random ~13M Qwen3 (vocab 512, hidden 512, intermediate 1536, 4 layers,
                     8 heads / 4 KV heads, head_dim 64, untied, f32, seed 0) with the bundled tiny
                     tokenizer and its chat template, as an HF model directory
  --url URL          POSTs /v1/completions from --clients threads, each sending --requests
                     requests one after another: a prompt of --prompt-len token ids (request r
                     gets the prompt transformers' batch row r gets in bench_decode_torch.py, so
                     no two share a prefix), exactly --new-tokens new tokens (ignore_eos), greedy

Prints one JSON line: {"impl": "forge serve", "clients", "requests", "wall_s", "requests_per_s",
"tokens_per_s", "latency_s_median", "first_sequence_tokens"} (the tokens of request 0).
"""
import argparse
import json
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path


def make_model(path):
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=512, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, head_dim=64, tie_word_embeddings=False,
        max_position_embeddings=4096, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        use_sliding_window=False, attention_bias=False, bos_token_id=None, eos_token_id=None,
    )
    model = Qwen3ForCausalLM(cfg).float()
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0, do_sample=False)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer = Path(__file__).resolve().parents[2] / "assets" / "tiny-tokenizer"
    for f in tokenizer.iterdir():
        shutil.copy(f, Path(path) / f.name)


def prompt(row, length, vocab=512):
    # bench_decode_torch.py's formula for batch row `row`
    return [(i * 2654435761 + row * 40503) % vocab for i in range(length)]


def load(args):
    url = args.url.rstrip("/") + "/completions"
    latencies, first, errors = [], [None], []
    lock = threading.Lock()

    def request(row):
        body = {"model": args.model, "prompt": prompt(row, args.prompt_len), "max_tokens": args.new_tokens,
                "temperature": 0, "ignore_eos": True, "return_token_ids": True}
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=600) as r:
            response = json.load(r)
        return time.perf_counter() - t0, response

    request(10_000)  # warm-up (a prompt no measured request shares)

    def client(c):
        for k in range(args.requests):
            row = c * args.requests + k
            try:
                dt, response = request(row)
            except Exception as e:  # noqa: BLE001 - reported, and the run fails below
                with lock:
                    errors.append(f"request {row}: {e}")
                return
            tokens = response["choices"][0]["token_ids"]
            with lock:
                latencies.append(dt)
                if len(tokens) != args.new_tokens:
                    errors.append(f"request {row}: {len(tokens)} tokens")
                if row == 0:
                    first[0] = tokens

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        sys.exit("; ".join(errors[:5]))
    n = args.clients * args.requests
    print(json.dumps({
        "impl": "forge serve", "clients": args.clients, "requests": n, "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens, "wall_s": round(wall, 3), "requests_per_s": round(n / wall, 2),
        "tokens_per_s": round(n * args.new_tokens / wall, 1), "latency_s_median": round(statistics.median(latencies), 3),
        "first_sequence_tokens": first[0],
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-model")
    ap.add_argument("--url")
    ap.add_argument("--model", default="bench")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4, help="per client")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    if args.make_model:
        make_model(args.make_model)
    elif args.url:
        load(args)
    else:
        ap.error("give --make-model DIR or --url URL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
