#!/usr/bin/env python3
"""Chat-template fixtures from transformers' apply_chat_template, for the Rust renderer's parity tests.

Two sets, both rendered with the bundled tiny tokenizer (assets/tiny-tokenizer, which has Qwen's
special tokens):

fixtures/chat: the tiny tokenizer's own chat template (assets/tiny-tokenizer/chat_template.jinja).
  Reads conversations.json (a list of {"name", "messages", "tools"}) and writes expected.json: per
  conversation the rendered text (also with a generation prompt for the conversation minus its
  last assistant turn), the token ids, and transformers' assistant-token mask (from the template's
  {% generation %} blocks: return_assistant_tokens_mask).

fixtures/chat/qwen3: Qwen3's original chat template (qwen3.jinja of PyPI's trl==1.16.0, fetched by
  scripts/fetch-qwen3-template.sh; its text is not committed). Reads qwen3/conversations.json and
  writes qwen3/expected.json: per conversation and per set of template variables (none,
  enable_thinking=false, enable_thinking=true) the text, token ids and assistant mask of the whole
  conversation, and the generation prompt (text and ids) before every assistant turn.
  qwen3.jinja has no {% generation %} blocks, so the assistant mask is defined as
  return_assistant_tokens_mask of the same template with generation blocks inserted around each
  assistant turn's output (everything after "<|im_start|>assistant\\n" through "<|im_end|>": a
  think block, the content, the tool calls); the script asserts that the inserted blocks change
  no rendered text.

Both sets are rendered under two transformers versions: this interpreter's (.venv, the pinned
4.57.6) and .venv-tf5's (scripts/setup-python.sh --transformers-5); the script fails if they
disagree on anything it writes.

Usage: .venv/bin/python scripts/make_chat_fixtures.py [--qwen3-template-dir DIR]
  DIR defaults to $FORGE_QWEN3_TEMPLATE_DIR, else what scripts/fetch-qwen3-template.sh prints.
  --print-only prints the fixtures this interpreter makes as JSON on stdout, writing nothing (the
  cross-version check runs the other venv's python with it).
"""
import argparse
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = REPO / "fixtures" / "chat"
QWEN3_FIXTURE = FIXTURE / "qwen3"
TOKENIZER = REPO / "assets" / "tiny-tokenizer"
OTHER_VENV_PYTHON = REPO / ".venv-tf5" / "bin" / "python"
# The template variables every Qwen3 conversation is rendered with: none (apply_chat_template's
# default), the non-thinking mode of the published recipe, and thinking asked for explicitly.
QWEN3_KWARGS = [{}, {"enable_thinking": False}, {"enable_thinking": True}]
TRL_VERSION = "1.16.0"
QWEN3_TEMPLATE_SHA256 = "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8"


def tiny_fixtures(tok):
    conversations = json.loads((FIXTURE / "conversations.json").read_text())
    expected = []
    for conv in conversations:
        messages, tools = conv["messages"], conv.get("tools")
        text = tok.apply_chat_template(messages, tools=tools, tokenize=False)
        enc = tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        last_assistant = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = tok.apply_chat_template(messages[:last_assistant], tools=tools, tokenize=False,
                                         add_generation_prompt=True)
        expected.append({
            "name": conv["name"],
            "text": text,
            "input_ids": list(enc["input_ids"]),
            "assistant_mask": list(enc["assistant_masks"]),
            "generation_prompt_text": prompt,
        })
    return expected


def with_generation_blocks(template):
    """qwen3.jinja with {% generation %} around each assistant turn's output. The three branches
    that open an assistant turn each emit "<|im_start|>" + role + "\\n" glued to the turn's first
    text; the header moves in front of the branches and the block opens after it, so that the
    block nests with the if/else. The block closes after the turn's "<|im_end|>", before its
    newline (as in the tiny template and TRL's own training templates)."""
    header_with_think = "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content"
    header_plain = "{{- '<|im_start|>' + message.role + '\\n' + content }}"
    branch_start = "        {%- if loop.index0 > ns.last_query_index %}"
    turn_end = "        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}"
    for needle, count in [(header_with_think, 1), (header_plain, 2), (branch_start, 1), (turn_end, 1)]:
        found = template.count(needle)
        assert found == count, f"qwen3.jinja changed: {needle!r} occurs {found} times, expected {count}"
    marked = template.replace(header_with_think, "{{- '<think>\\n' + reasoning_content")
    marked = marked.replace(header_plain, "{{- content }}")
    marked = marked.replace(branch_start, "        {{- '<|im_start|>' + message.role + '\\n' }}\n        {%- generation %}\n" + branch_start)
    marked = marked.replace(turn_end, "        {{- '<|im_end|>' }}\n        {%- endgeneration %}\n        {{- '\\n' }}\n    {%- elif message.role == \"tool\" %}")
    assert re.search(r"\{%-?\s*generation\s*-?%\}", marked)
    return marked


def qwen3_fixtures(tok, template):
    marked = with_generation_blocks(template)
    conversations = json.loads((QWEN3_FIXTURE / "conversations.json").read_text())
    expected = []
    for conv in conversations:
        messages, tools = conv["messages"], conv.get("tools")
        variants = []
        for kwargs in QWEN3_KWARGS:
            def render(msgs, generation_prompt, chat_template=template):
                return tok.apply_chat_template(msgs, tools=tools, chat_template=chat_template, tokenize=False,
                                               add_generation_prompt=generation_prompt, **kwargs)

            def encode(msgs, generation_prompt, chat_template=template, mask=False):
                enc = tok.apply_chat_template(msgs, tools=tools, chat_template=chat_template, tokenize=True,
                                              return_dict=True, add_generation_prompt=generation_prompt,
                                              return_assistant_tokens_mask=mask, **kwargs)
                return enc

            text = render(messages, False)
            assert render(messages, False, marked) == text, f"{conv['name']} {kwargs}: generation blocks changed the text"
            plain = encode(messages, False)
            enc = encode(messages, False, marked, mask=True)
            assert list(enc["input_ids"]) == list(plain["input_ids"]), f"{conv['name']} {kwargs}: ids differ with generation blocks"
            prompts = []
            for i, message in enumerate(messages):
                if message["role"] != "assistant":
                    continue
                prompt_text = render(messages[:i], True)
                assert render(messages[:i], True, marked) == prompt_text
                prompts.append({
                    "messages_before": i,
                    "text": prompt_text,
                    "input_ids": list(encode(messages[:i], True)["input_ids"]),
                })
            variants.append({
                "chat_template_kwargs": kwargs,
                "text": text,
                "input_ids": list(plain["input_ids"]),
                "assistant_mask": list(enc["assistant_masks"]),
                "generation_prompts": prompts,
            })
        expected.append({"name": conv["name"], "variants": variants})
    return expected


def qwen3_template_dir(arg):
    if arg:
        return pathlib.Path(arg)
    if os.environ.get("FORGE_QWEN3_TEMPLATE_DIR"):
        return pathlib.Path(os.environ["FORGE_QWEN3_TEMPLATE_DIR"])
    out = subprocess.run([str(REPO / "scripts" / "fetch-qwen3-template.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return pathlib.Path(out.stdout.strip())


def make_all(template_dir):
    import transformers
    from transformers import AutoTokenizer

    template_bytes = (template_dir / "qwen3.jinja").read_bytes()
    digest = hashlib.sha256(template_bytes).hexdigest()
    assert digest == QWEN3_TEMPLATE_SHA256, f"{template_dir}/qwen3.jinja has sha256 {digest}, expected {QWEN3_TEMPLATE_SHA256} (rerun scripts/fetch-qwen3-template.sh)"
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    return {
        "transformers": transformers.__version__,
        "tiny": tiny_fixtures(tok),
        "qwen3": qwen3_fixtures(tok, template_bytes.decode()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qwen3-template-dir")
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args()
    template_dir = qwen3_template_dir(args.qwen3_template_dir)
    made = make_all(template_dir)
    if args.print_only:
        json.dump(made, sys.stdout, ensure_ascii=False)
        return

    if not OTHER_VENV_PYTHON.exists():
        sys.exit(f"{OTHER_VENV_PYTHON} is missing: create it with scripts/setup-python.sh --transformers-5 (the fixtures are checked against both transformers versions)")
    out = subprocess.run([str(OTHER_VENV_PYTHON), __file__, "--print-only", "--qwen3-template-dir", str(template_dir)],
                         check=True, stdout=subprocess.PIPE, text=True)
    other = json.loads(out.stdout)
    versions = [made["transformers"], other["transformers"]]
    for key in ["tiny", "qwen3"]:
        if made[key] != other[key]:
            sys.exit(f"transformers {versions[0]} and {versions[1]} render the {key} fixtures differently; "
                     "record both before writing them")
    print(f"transformers {versions[0]} and {versions[1]} agree on every fixture", file=sys.stderr)

    (FIXTURE / "expected.json").write_text(json.dumps(made["tiny"], indent=1, ensure_ascii=False) + "\n")
    for conv in made["tiny"]:
        print(f"tiny {conv['name']}: {len(conv['input_ids'])} tokens, {sum(conv['assistant_mask'])} assistant", file=sys.stderr)
    qwen3 = {
        "made_with": {
            "transformers": versions,
            "template": f"trl=={TRL_VERSION} trl/chat_templates/qwen3.jinja",
            "template_sha256": QWEN3_TEMPLATE_SHA256,
            "tokenizer": "assets/tiny-tokenizer",
            "script": "scripts/make_chat_fixtures.py",
        },
        "conversations": made["qwen3"],
    }
    # token-id and mask lists on one line each: readable diffs at a tenth of the size
    text = json.dumps(qwen3, indent=1, ensure_ascii=False)
    text = re.sub(r"\[(?:\s*\d+,)*\s*\d+\s*\]", lambda m: json.dumps(json.loads(m.group(0)), separators=(",", ":")), text)
    (QWEN3_FIXTURE / "expected.json").write_text(text + "\n")
    for conv in made["qwen3"]:
        for v in conv["variants"]:
            print(f"qwen3 {conv['name']} {v['chat_template_kwargs']}: {len(v['input_ids'])} tokens, "
                  f"{sum(v['assistant_mask'])} assistant", file=sys.stderr)


if __name__ == "__main__":
    main()
