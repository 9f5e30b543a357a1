#!/usr/bin/env python3
"""Builds the Qwen3-style tokenizers of the repository: the tiny one used by tests and fixtures
(default) and the demo curriculum's (--conversations).

Writes OUT/{tokenizer.json,tokenizer_config.json,special_tokens_map.json}.

A byte-level BPE shaped like Qwen2/Qwen3's (NFC normalizer, Qwen's split regex + ByteLevel
pre-tokenizer, ByteLevel decoder) trained with the `tokenizers` library on the checked-in corpus
assets/tiny-tokenizer-corpus.txt. Total vocabulary is exactly 512: 486 BPE tokens (256 byte symbols
+ 230 merges) followed by Qwen's 26 added tokens in Qwen's order.

Deterministic: same corpus + same tokenizers version -> byte-identical files.

--conversations FILE.jsonl --vocab-size N trains on chat conversations instead
(`{"messages": [...], "tools": [...]}` per line, the `forge train sft` format), each rendered with
the tiny tokenizer's chat template (the text the model will read and write; the added tokens'
strings left out, as they never reach the BPE), and copies that chat_template.jinja into OUT.
The demo tokenizer: --conversations assets/sft/demo-trajectories.jsonl --vocab-size 2048
--out assets/demo-tokenizer.

The corpus is a concatenation of a fixed list of CPython 3.11 stdlib modules (PSF licence);
`--rebuild-corpus` regenerates it from the running interpreter's stdlib (only needed to change it).

Usage: .venv/bin/python scripts/make_tokenizer.py [--out DIR] [--rebuild-corpus]
       .venv/bin/python scripts/make_tokenizer.py --conversations FILE.jsonl --vocab-size N --out DIR
"""
import argparse
import json
import os
import re
import shutil
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "assets", "tiny-tokenizer-corpus.txt")
OUT = os.path.join(REPO, "assets", "tiny-tokenizer")
TINY = OUT

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


def conversation_docs(path):
    """Each conversation of `path` rendered with the tiny tokenizer's chat template, without the
    added tokens' strings."""
    from transformers import AutoTokenizer
    template = AutoTokenizer.from_pretrained(TINY)
    with open(os.path.join(TINY, "chat_template.jinja"), encoding="utf-8") as f:
        template.chat_template = f.read()
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            text = template.apply_chat_template(record["messages"], tools=record.get("tools"),
                                                tokenize=False)
            for content, _ in ADDED_TOKENS:
                text = text.replace(content, "\n")
            docs.append(text)
    return docs


def build(docs, vocab_size):
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

    bpe_vocab_size = vocab_size - len(ADDED_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(docs, trainer=trainer)
    assert tok.get_vocab_size(with_added_tokens=True) == bpe_vocab_size, (
        f"the corpus yields {tok.get_vocab_size()} BPE tokens, fewer than {bpe_vocab_size}: "
        "ask for a smaller --vocab-size")

    for content, special in ADDED_TOKENS:
        at = AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                        special=special)
        if special:
            tok.add_special_tokens([at])
        else:
            tok.add_tokens([at])
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size, tok.get_vocab_size()
    for i, (content, _) in enumerate(ADDED_TOKENS):
        assert tok.token_to_id(content) == bpe_vocab_size + i
    return tok


def write(out_dir, docs, vocab_size):
    tok = build(docs, vocab_size)
    bpe_vocab_size = vocab_size - len(ADDED_TOKENS)
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
        str(bpe_vocab_size + i): token_entry(c, s) for i, (c, s) in enumerate(ADDED_TOKENS)
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
    print(f"wrote {out_dir}: vocab {tok.get_vocab_size()} (BPE {bpe_vocab_size} + "
          f"{len(ADDED_TOKENS)} added), pad <|endoftext|>={bpe_vocab_size}, "
          f"eos <|im_end|>={bpe_vocab_size + 2}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--rebuild-corpus", action="store_true",
                    help="regenerate the checked-in corpus from this interpreter's stdlib")
    ap.add_argument("--conversations", help="train on these chat conversations (JSONL) instead")
    ap.add_argument("--vocab-size", type=int, default=VOCAB_SIZE,
                    help="total vocabulary, Qwen's 26 added tokens included")
    args = ap.parse_args()
    if args.conversations:
        write(args.out, conversation_docs(args.conversations), args.vocab_size)
        shutil.copyfile(os.path.join(TINY, "chat_template.jinja"),
                        os.path.join(args.out, "chat_template.jinja"))
        return
    if args.rebuild_corpus or not os.path.exists(CORPUS):
        rebuild_corpus()
    write(args.out, corpus_docs(), args.vocab_size)


if __name__ == "__main__":
    sys.exit(main())
