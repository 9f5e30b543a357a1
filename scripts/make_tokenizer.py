#!/usr/bin/env python3
"""Builds the tiny Qwen3-style tokenizer used by tests and fixtures.

Writes assets/tiny-tokenizer/{tokenizer.json,tokenizer_config.json,special_tokens_map.json}.

A byte-level BPE shaped like Qwen2/Qwen3's (NFC normalizer, Qwen's split regex + ByteLevel
pre-tokenizer, ByteLevel decoder) trained with the `tokenizers` library on the checked-in corpus
assets/tiny-tokenizer-corpus.txt. Total vocabulary is exactly 512: 486 BPE tokens (256 byte symbols
+ 230 merges) followed by Qwen's 26 added tokens in Qwen's order.

Deterministic: same corpus + same tokenizers version -> byte-identical files.

The corpus is a concatenation of a fixed list of CPython 3.11 stdlib modules (PSF licence);
`--rebuild-corpus` regenerates it from the running interpreter's stdlib (only needed to change it).

Usage: .venv/bin/python scripts/make_tokenizer.py [--out DIR] [--rebuild-corpus]
"""
import argparse
import json
import os
import re
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "assets", "tiny-tokenizer-corpus.txt")
OUT = os.path.join(REPO, "assets", "tiny-tokenizer")

VOCAB_SIZE = 512
CORPUS_FILES = [
    "textwrap.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py", "glob.py", "shlex.py",
    "string.py", "queue.py", "copy.py", "keyword.py", "graphlib.py", "sched.py", "cmd.py",
]

QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (content, special) in Qwen2/Qwen3 order. The first 14 are special; the rest are plain added
# tokens (special=false), exactly as in Qwen3's tokenizer.json.
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
BPE_VOCAB_SIZE = VOCAB_SIZE - len(ADDED_TOKENS)


def rebuild_corpus():
    stdlib = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in CORPUS_FILES:
        with open(os.path.join(stdlib, name), encoding="utf-8") as f:
            parts.append(f.read())
    os.makedirs(os.path.dirname(CORPUS), exist_ok=True)
    with open(CORPUS, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(parts))
    print(f"wrote {CORPUS} ({os.path.getsize(CORPUS)} bytes) from {stdlib}")


def corpus_docs():
    with open(CORPUS, encoding="utf-8", newline="") as f:
        text = f.read()
    # Train per paragraph-ish chunk (split after blank lines, which stay in the text).
    return [chunk for chunk in re.split(r"(?<=\n\n)", text) if chunk]


def build():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                              use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)

    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus_docs(), trainer=trainer)
    assert tok.get_vocab_size(with_added_tokens=True) == BPE_VOCAB_SIZE, tok.get_vocab_size()

    for content, special in ADDED_TOKENS:
        at = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                        special=special)
        if special:
            tok.add_special_tokens([at])
        else:
            tok.add_tokens([at])
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB_SIZE, tok.get_vocab_size()
    for i, (content, _) in enumerate(ADDED_TOKENS):
        assert tok.token_to_id(content) == BPE_VOCAB_SIZE + i
    return tok


def write(out_dir):
    tok = build()
    os.makedirs(out_dir, exist_ok=True)
    # tokenizer.json, pretty-printed with sorted-by-id vocab (as tokenizers writes it).
    tok_path = os.path.join(out_dir, "tokenizer.json")
    tok.save(tok_path, pretty=True)
    # Match Qwen3's serialized fields exactly (the Python decoder constructor ignores these
    # arguments; they have no effect on decoding either way).
    with open(tok_path, encoding="utf-8") as f:
        tj = json.load(f)
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                     "use_regex": False}
    tj["model"]["continuing_subword_prefix"] = ""
    tj["model"]["end_of_word_suffix"] = ""
    with open(tok_path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(tj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    from tokenizers import Tokenizer
    reloaded = Tokenizer.from_file(tok_path)
    probe = "def add(a, b):\n    return a + b\n<|im_start|>user\nhé<think>x</think>"
    assert reloaded.encode(probe).ids == tok.encode(probe).ids
    assert reloaded.decode(reloaded.encode(probe).ids, skip_special_tokens=False) == probe

    def token_entry(content, special):
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": special}

    added_tokens_decoder = {
        str(BPE_VOCAB_SIZE + i): token_entry(c, s) for i, (c, s) in enumerate(ADDED_TOKENS)
    }
    additional = [c for c, s in ADDED_TOKENS[1:] if s]  # Qwen lists the 13 after <|endoftext|>
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": additional,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    special_map = {
        "additional_special_tokens": additional,
        "eos_token": token_entry("<|im_end|>", True),
        "pad_token": token_entry("<|endoftext|>", True),
    }
    for d in (special_map["eos_token"], special_map["pad_token"]):
        del d["special"]
    for name, obj in (("tokenizer_config.json", config),
                      ("special_tokens_map.json", special_map)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8", newline="\n") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
    print(f"wrote {out_dir}: vocab {tok.get_vocab_size()} (BPE {BPE_VOCAB_SIZE} + "
          f"{len(ADDED_TOKENS)} added), pad <|endoftext|>={BPE_VOCAB_SIZE}, "
          f"eos <|im_end|>={BPE_VOCAB_SIZE + 2}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--rebuild-corpus", action="store_true",
                    help="regenerate the checked-in corpus from this interpreter's stdlib")
    args = ap.parse_args()
    if args.rebuild_corpus or not os.path.exists(CORPUS):
        rebuild_corpus()
    write(args.out)


if __name__ == "__main__":
    sys.exit(main())
