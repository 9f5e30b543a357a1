#!/usr/bin/env python3
"""Chat-template fixtures from transformers' apply_chat_template, for the Rust renderer's parity tests.

Reads fixtures/chat/conversations.json (a list of {"name", "messages", "tools"}), renders each with
the bundled tiny tokenizer's chat template (assets/tiny-tokenizer/chat_template.jinja) and writes
fixtures/chat/expected.json: per conversation the rendered text (also with a generation prompt for
the conversation minus its last assistant turn), the token ids, and transformers' assistant-token
mask (from the template's {% generation %} blocks: return_assistant_tokens_mask).

Usage: .venv/bin/python scripts/make_chat_fixtures.py
"""
import json
import pathlib

from transformers import AutoTokenizer

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = REPO / "fixtures" / "chat"


def main():
    tok = AutoTokenizer.from_pretrained(REPO / "assets" / "tiny-tokenizer")
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
        print(f"{conv['name']}: {len(enc['input_ids'])} tokens, {sum(enc['assistant_masks'])} assistant")
    (FIXTURE / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
