#!/usr/bin/env python3
"""HF-reference greedy generations for the Rust rollout engine (forge-engine).

For each f32 fixture model (made by scripts/make_fixtures.py), writes
fixtures/<name>/generate/expected.jsonl, one JSON object per line:

  {"mode": "alone" | "batch", "prompt": [ids], "max_new_tokens": N, "stop_tokens": [ids],
   "tokens": [new ids], "logprobs": [log p(token | prefix), natural log, raw logits]}

  alone   transformers' greedy `generate` of the prompt by itself
  text    the same for the tokenised text "prompt_text" (what `forge generate --prompt` is given)
  batch   the same prompts in ONE `generate` call, left-padded with the pad id (attention mask
          and positions as transformers derives them); generation of a row stops at its first
          eos, which is kept; what transformers pads after it is dropped

Stop tokens are the generation_config eos_token_id list (<|im_end|> and <|endoftext|>), which
random weights rarely produce; one more "alone" line per model stops on a token that the greedy
continuation produces mid-way, to pin down stopping (the stop token is the last new token).
Deterministic: prompts from a fixed seed, f32, eager attention, one thread.

Run with the project venvs, each for the models its transformers major version wrote (see
make_fixtures.py): .venv/bin/python scripts/make_generate_fixtures.py, then
.venv-tf5/bin/python scripts/make_generate_fixtures.py (the tf5-* models). YaRN models get
prompts that run past original_max_position_embeddings (64).
"""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "fixtures")
PROMPT_LENS = (1, 4, 11, 23, 40)
YARN_PROMPT_LENS = (1, 4, 11, 70, 90)
# name -> (transformers major version that wrote it, prompt lengths)
MODELS = {
    "gqa2-untied-f32": (4, PROMPT_LENS),
    "gqa4-tied-f32": (4, PROMPT_LENS),
    "gqa2-sharded-f32": (4, PROMPT_LENS),
    "tf5-gqa2-f32": (5, PROMPT_LENS),
    "tf5-yarn-f32": (5, YARN_PROMPT_LENS),
}
MAX_NEW_TOKENS = 24
N_REGULAR = 486  # ids below this are BPE tokens (see make_fixtures.py)
PROMPT_SEED = 4321
PROMPT_TEXT = "def add(a, b):\n    return a + b\n"


def main():
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    major = int(transformers.__version__.split(".")[0])
    names = sys.argv[1:] or [n for n, (m, _) in MODELS.items() if m == major]

    for name in names:
        g = torch.Generator().manual_seed(PROMPT_SEED)
        prompts = [torch.randint(0, N_REGULAR, (n,), generator=g).tolist() for n in MODELS[name][1]]
        model_dir = os.path.join(FIXTURES, name, "model")
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        pad = model.generation_config.pad_token_id

        def run(batch, stop):
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.int64)
            mask = torch.zeros((len(batch), width), dtype=torch.int64)
            for i, p in enumerate(batch):
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
            with torch.no_grad():
                out = model.generate(ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                     temperature=None, top_p=None, top_k=None, output_logits=True,
                                     return_dict_in_generate=True, eos_token_id=sorted(stop))
            rows = []
            for i in range(len(batch)):
                new = out.sequences[i, width:].tolist()
                tokens, logprobs = [], []
                for t, tok in enumerate(new):
                    lp = torch.log_softmax(out.logits[t][i].float(), dim=-1)[tok].item()
                    tokens.append(tok)
                    logprobs.append(lp)
                    if tok in stop:
                        break
                rows.append((tokens, logprobs))
            return rows

        def line(mode, prompt, stop, result):
            tokens, logprobs = result
            return {"mode": mode, "prompt": prompt, "max_new_tokens": MAX_NEW_TOKENS, "stop_tokens": sorted(stop),
                    "tokens": tokens, "logprobs": logprobs}

        lines = [line("alone", p, eos, run([p], eos)[0]) for p in prompts]
        lines += [line("batch", p, eos, r) for p, r in zip(prompts, run(prompts, eos))]
        mid_way = {lines[2]["tokens"][9]}
        lines.append(line("alone", prompts[2], mid_way, run([prompts[2]], mid_way)[0]))
        text_ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT_TEXT, add_special_tokens=False)["input_ids"]
        lines.append(dict(line("text", text_ids, eos, run([text_ids], eos)[0]), prompt_text=PROMPT_TEXT))

        out_dir = os.path.join(FIXTURES, name, "generate")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "expected.jsonl"), "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
        lens = [len(l["tokens"]) for l in lines]
        stopped = sum(1 for l in lines if l["tokens"] and l["tokens"][-1] in l["stop_tokens"])
        agree = sum(1 for a, b in zip(lines[:len(prompts)], lines[len(prompts):]) if a["tokens"] == b["tokens"])
        print(f"{name}: {len(lines)} generations, new tokens {lens}, {stopped} stopped at a stop token, "
              f"batch == alone for {agree}/{len(prompts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
