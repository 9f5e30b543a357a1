#!/usr/bin/env python3
"""HF-reference fixtures for the Rust Qwen3 implementation.

  generate (default)   write fixtures/<name>/{model/,reference.safetensors,score_input.jsonl,
                       score_expected.jsonl} for every fixture below (deterministic).
  verify --fixture fixtures/<name> --model-dir DIR [--tolerance 1e-5] [--dump FILE]
                       load DIR with transformers (f32, eager), run the fixture's inputs and compare
                       logits with the fixture's; exit 1 if ||out-ref||/||ref|| > tolerance.

Run with the project venvs: each fixture names the transformers major version that writes it (the
model directory is saved by that version: 4.x writes top-level rope_theta/rope_scaling and
torch_dtype, 5.x writes rope_parameters and dtype). `generate` makes the fixtures of the running
version and refuses the others:
  scripts/setup-python.sh && .venv/bin/python scripts/make_fixtures.py generate          (4.57.6)
  scripts/setup-python.sh --transformers-5 && .venv-tf5/bin/python scripts/make_fixtures.py generate
                                                                                          (5.25.0)
fixtures/<name>/provenance.json records the versions that made it.

reference.safetensors (all produced in float32, eager attention, from the weights exactly as saved
in model/ upcast to f32):
  input_ids, attention_mask, labels   int64 [2, T]  (T = 12, or the fixture's seq_lens; row 1
                                      right-padded with the pad id;
                                      labels = input_ids with -100 on padding; HF shifts them)
  logits                              f32 [2, T, 512] (every position, padded ones included)
  loss                                f32 [] (scalar: mean CE over the 17 non-ignored shifted labels)
  grad.<param name>                   f32, one per model.named_parameters() entry (tied models have
                                      no lm_head.weight entry; grad of the tied embedding holds both
                                      uses)
  logprobs.0, logprobs.1              f32 [len-1]: each sequence run alone, unpadded:
                                      log p(tok_t | tok_<t) for t >= 1 (natural log)
  logits_bf16 (mha-bf16 only)         f32 [2, T, 512]: the bf16 model run in bf16 on the same inputs
"""
import argparse
import json
import math
import os
import shutil
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "fixtures")
TOKENIZER_DIR = os.path.join(REPO, "assets", "tiny-tokenizer")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

VOCAB = 512
PAD_ID = 486  # <|endoftext|>
BOS_ID = 486  # Qwen3 configs name <|endoftext|> as bos (never prepended)
EOS_ID = 488  # <|im_end|>
N_REGULAR = 486  # ids below this are BPE tokens; random inputs are drawn from [0, N_REGULAR)
SEQ_LENS = (12, 7)
SCORE_TEXT = "def add(a, b):\n    return a + b\n"
INPUT_SEED = 1234

COMMON = dict(
    vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
    rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=128, hidden_act="silu",
    attention_bias=False, attention_dropout=0.0, use_sliding_window=False, sliding_window=None,
    max_window_layers=2, rope_scaling=None, initializer_range=0.2, use_cache=True,
    bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=None,
)
# YaRN as Qwen3 documents it (factor 4 over the original context), scaled down: the fixture's
# sequences (100 tokens) run past original_max_position_embeddings (64), where YaRN matters.
YARN = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64)
FIXTURE_SPECS = {
    "gqa2-untied-f32": dict(seed=1, heads=4, kv=2, head_dim=16, tied=False, dtype="float32"),
    "gqa4-tied-f32": dict(seed=2, heads=4, kv=1, head_dim=32, tied=True, dtype="float32"),
    "mha-bf16": dict(seed=3, heads=4, kv=4, head_dim=16, tied=False, dtype="bfloat16"),
    "gqa2-sharded-f32": dict(seed=4, heads=4, kv=2, head_dim=16, tied=False, dtype="float32",
                             max_shard_size="150KB"),
    # saved by transformers 5 (rope_parameters, dtype)
    "tf5-gqa2-f32": dict(seed=5, heads=4, kv=2, head_dim=16, tied=False, dtype="float32",
                         transformers=5),
    "tf5-yarn-f32": dict(seed=6, heads=4, kv=2, head_dim=32, tied=False, dtype="float32",
                         transformers=5, rope=YARN, max_position_embeddings=256,
                         seq_lens=(100, 71)),
    "yarn-f32": dict(seed=7, heads=4, kv=1, head_dim=32, tied=True, dtype="float32",
                     rope=dict(YARN, beta_fast=16.0, beta_slow=2.0), max_position_embeddings=256,
                     seq_lens=(100, 71)),
}


def setup_torch():
    import torch
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


def transformers_major():
    import transformers
    return int(transformers.__version__.split(".")[0])


def make_inputs(torch, seq_lens=SEQ_LENS):
    g = torch.Generator().manual_seed(INPUT_SEED)
    T = max(seq_lens)
    seqs = [torch.randint(0, N_REGULAR, (n,), generator=g, dtype=torch.int64) for n in seq_lens]
    input_ids = torch.full((len(seqs), T), PAD_ID, dtype=torch.int64)
    attention_mask = torch.zeros((len(seqs), T), dtype=torch.int64)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = s
        attention_mask[i, : len(s)] = 1
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return seqs, input_ids, attention_mask, labels


def build_model(torch, spec):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    common = dict(COMMON, max_position_embeddings=spec.get("max_position_embeddings", 128))
    rope = spec.get("rope")
    if transformers_major() >= 5:
        # the 5.x layout: every RoPE key inside rope_parameters
        theta = common.pop("rope_theta")
        common.pop("rope_scaling")
        common["rope_parameters"] = dict(rope or {"rope_type": "default"}, rope_theta=theta)
    else:
        common["rope_scaling"] = rope
    cfg = Qwen3Config(num_attention_heads=spec["heads"], num_key_value_heads=spec["kv"],
                      head_dim=spec["head_dim"], tie_word_embeddings=spec["tied"], **common)
    torch.manual_seed(spec["seed"])
    model = Qwen3ForCausalLM(cfg).float()
    # Explicit re-init (independent of HF's init code): weights ~ N(0, 0.2^2), every RMSNorm
    # weight ~ 1 + 0.1 N(0, 1). Parameters are visited in named_parameters() order.
    g = torch.Generator().manual_seed(1000 + spec["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise)
    if spec["tied"]:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


def generation_config():
    from transformers import GenerationConfig
    # Mirrors Qwen3's generation_config.json (ids mapped to the tiny vocabulary).
    return GenerationConfig(bos_token_id=BOS_ID, eos_token_id=[EOS_ID, PAD_ID],
                            pad_token_id=PAD_ID, do_sample=True, temperature=0.6, top_k=20,
                            top_p=0.95)


def seq_logprobs(torch, model, tokens):
    with torch.no_grad():
        logits = model(tokens.unsqueeze(0)).logits[0].float()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    return lp.gather(1, tokens[1:].unsqueeze(1)).squeeze(1).contiguous()


def score_line(lp):
    vals = [float(x) for x in lp.tolist()]
    s = math.fsum(vals)
    return {"logprobs": vals, "sum": s, "mean_nll": -s / len(vals)}


def generate(names):
    torch = setup_torch()
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import transformers
    for f in TOKENIZER_FILES:
        if not os.path.exists(os.path.join(TOKENIZER_DIR, f)):
            sys.exit(f"missing {TOKENIZER_DIR}/{f}: run scripts/make_tokenizer.py first")
    major = transformers_major()
    wrong = [n for n in names if FIXTURE_SPECS[n].get("transformers", 4) != major]
    if wrong:
        sys.exit(f"{', '.join(wrong)}: written by another transformers major version than the running "
                 f"{transformers.__version__} (see the module docs for the venv of each)")

    for name in names:
        spec = FIXTURE_SPECS[name]
        seqs, input_ids, attention_mask, labels = make_inputs(torch, spec.get("seq_lens", SEQ_LENS))
        out = os.path.join(FIXTURES, name)
        model_dir = os.path.join(out, "model")
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(model_dir)

        model = build_model(torch, spec)
        model.generation_config = generation_config()
        save_dtype = getattr(torch, spec["dtype"])
        model = model.to(save_dtype)
        kw = {}
        if "max_shard_size" in spec:
            kw["max_shard_size"] = spec["max_shard_size"]
        model.save_pretrained(model_dir, **kw)
        if spec.get("transformers", 4) >= 5:
            # as a user's directory holds it: the tokenizer (and its chat template) saved by 5.x
            AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(model_dir)
        else:
            for f in TOKENIZER_FILES:
                shutil.copyfile(os.path.join(TOKENIZER_DIR, f), os.path.join(model_dir, f))

        tensors = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if spec["dtype"] == "bfloat16":
            m16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                       attn_implementation="eager")
            m16.eval()
            with torch.no_grad():
                out_bf16 = m16(input_ids, attention_mask=attention_mask)
            tensors["logits_bf16"] = out_bf16.logits.float().contiguous()

        # f32 reference from the weights exactly as saved (bf16-rounded for mha-bf16).
        ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                   attn_implementation="eager")
        ref.train()  # no dropout in Qwen3 (attention_dropout = 0); grads enabled
        with torch.no_grad():
            for (n1, p1), (n2, p2) in zip(model.named_parameters(), ref.named_parameters()):
                assert n1 == n2 and torch.equal(p1.float(), p2), n1
        ref.zero_grad(set_to_none=True)
        outputs = ref(input_ids, attention_mask=attention_mask, labels=labels)
        outputs.loss.backward()
        tensors["logits"] = outputs.logits.detach().float().contiguous()
        tensors["loss"] = outputs.loss.detach().float().reshape(())
        n_grads = 0
        for pname, p in ref.named_parameters():
            assert p.grad is not None, f"no grad for {pname}"
            tensors[f"grad.{pname}"] = p.grad.detach().float().contiguous()
            n_grads += 1
        ref.eval()
        lps = [seq_logprobs(torch, ref, s) for s in seqs]
        for i, lp in enumerate(lps):
            tensors[f"logprobs.{i}"] = lp
        save_file(tensors, os.path.join(out, "reference.safetensors"), metadata={"format": "pt"})

        tok = AutoTokenizer.from_pretrained(model_dir)
        text_ids = tok(SCORE_TEXT, add_special_tokens=False)["input_ids"]
        text_lp = seq_logprobs(torch, ref, torch.tensor(text_ids, dtype=torch.int64))
        inputs = [{"tokens": s.tolist()} for s in seqs] + [{"text": SCORE_TEXT}]
        expected = [score_line(lp) for lp in lps]
        expected.append(dict(score_line(text_lp), tokens=text_ids))
        for fname, rows in (("score_input.jsonl", inputs), ("score_expected.jsonl", expected)):
            with open(os.path.join(out, fname), "w", encoding="utf-8", newline="\n") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

        provenance = {"script": "scripts/make_fixtures.py", "transformers": transformers.__version__,
                      "torch": torch.__version__}
        with open(os.path.join(out, "provenance.json"), "w", encoding="utf-8", newline="\n") as f:
            f.write(json.dumps(provenance, indent=1) + "\n")

        shards = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
        size = sum(os.path.getsize(os.path.join(dp, f))
                   for dp, _, fs in os.walk(out) for f in fs)
        extra = ""
        if "logits_bf16" in tensors:
            d = tensors["logits_bf16"] - tensors["logits"]
            extra = (f" |logits_bf16-logits| max {d.abs().max().item():.3e} "
                     f"rel {(d.norm() / tensors['logits'].norm()).item():.3e}")
        print(f"{name}: loss {tensors['loss'].item():.6f} grads {n_grads} shards {len(shards)} "
              f"text tokens {len(text_ids)} size {size / 1024:.0f} KiB{extra}")
    print(f"pad id {PAD_ID}, eos id {EOS_ID}")


def verify(fixture, model_dir, tolerance, dump=None):
    torch = setup_torch()
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = load_file(os.path.join(fixture, "reference.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        out = model(ref["input_ids"], attention_mask=ref["attention_mask"],
                    labels=ref["labels"])
    logits = out.logits.float()
    if dump:
        from safetensors.torch import save_file
        save_file({"logits": logits.contiguous()}, dump)
    ok = True
    if logits.shape != ref["logits"].shape:
        print(f"FAIL logits shape {list(logits.shape)} != {list(ref['logits'].shape)}")
        return 1
    diff = logits - ref["logits"]
    max_abs = diff.abs().max().item()
    rel = (diff.norm() / ref["logits"].norm()).item()
    loss_diff = abs(out.loss.item() - ref["loss"].item())
    print(f"logits max_abs_err {max_abs:.3e} rel_err {rel:.3e} (tolerance {tolerance:g}); "
          f"loss {out.loss.item():.6f} vs {ref['loss'].item():.6f} (diff {loss_diff:.3e})")
    if not rel <= tolerance:
        ok = False
        print("FAIL relative error above tolerance")

    names = set()
    for f in os.listdir(model_dir):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(model_dir, f), framework="pt") as sf:
                names.update(sf.keys())
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    has_lm_head = "lm_head.weight" in names
    print(f"tie_word_embeddings {tied}; lm_head.weight in checkpoint: {has_lm_head}"
          + (" (expected absent)" if tied else ""))
    if tied and has_lm_head:
        print("WARN tied model checkpoint contains lm_head.weight")

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
        ids = tok(SCORE_TEXT, add_special_tokens=False)["input_ids"]
        msg = f"tokenizer loads ({type(tok).__name__}, {len(tok)} tokens)"
        exp_path = os.path.join(fixture, "score_expected.jsonl")
        if os.path.exists(exp_path):
            with open(exp_path, encoding="utf-8") as f:
                rows = [json.loads(l) for l in f if l.strip()]
            want = rows[-1].get("tokens")
            if want is not None:
                msg += "; score text tokens " + ("match" if ids == want else "DIFFER")
                ok = ok and ids == want
        print(msg)
    except Exception as e:  # noqa: BLE001
        print(f"FAIL tokenizer does not load: {e!r}")
        ok = False
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description="HF reference fixtures for Qwen3")
    sub = ap.add_subparsers(dest="cmd")
    g = sub.add_parser("generate")
    g.add_argument("--only", nargs="*", choices=sorted(FIXTURE_SPECS), default=None)
    v = sub.add_parser("verify")
    v.add_argument("--fixture", required=True)
    v.add_argument("--model-dir", required=True)
    v.add_argument("--tolerance", type=float, default=1e-5)
    v.add_argument("--dump", help="also write the logits to this safetensors file")
    args = ap.parse_args()
    if args.cmd == "verify":
        return verify(args.fixture, args.model_dir, args.tolerance, args.dump)
    mine = [n for n, spec in FIXTURE_SPECS.items() if spec.get("transformers", 4) == transformers_major()]
    generate(getattr(args, "only", None) or mine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
