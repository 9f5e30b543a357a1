#!/usr/bin/env python3
"""Cross-checks a model directory written by forge (a training run's `model/`, an export) in
transformers: it must load with AutoModelForCausalLM and AutoTokenizer, and its per-token
log-probs must equal `forge score`'s on the same input.

Usage: .venv/bin/python scripts/hf_check_model.py --model-dir DIR --input IN.jsonl --forge-scores OUT.jsonl [--tolerance 1e-4]
(IN.jsonl lines: {"tokens": [...]} or {"text": "..."}; OUT.jsonl: the output of `forge score`.)
Exits non-zero when a log-prob differs by more than the tolerance.
"""
import argparse
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--forge-scores", required=True)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    inputs = [json.loads(l) for l in open(args.input) if l.strip()]
    ours = [json.loads(l) for l in open(args.forge_scores) if l.strip()]
    assert len(inputs) == len(ours), f"{len(inputs)} inputs but {len(ours)} forge scores"
    worst = 0.0
    for item, score in zip(inputs, ours):
        ids = item["tokens"] if "tokens" in item else tok(item["text"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        ref = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        got = torch.tensor(score["logprobs"])
        worst = max(worst, (ref - got).abs().max().item() if len(ids) > 1 else 0.0)
    print(f"{args.model_dir}: loads in transformers ({type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"tokenizer {type(tok).__name__}); max |log p(transformers) - log p(forge)| = {worst:.2e} over {len(inputs)} sequences")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
