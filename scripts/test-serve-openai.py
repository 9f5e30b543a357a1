#!/usr/bin/env python3
"""The official `openai` Python client against a running `forge serve` (what a user of OpenAI's
API or of vLLM's server would write). Run by crates/forge-cli/tests/serve.rs with the python of
scripts/setup-openai-client.sh; by hand:

  forge serve --model DIR --served-model-name tiny --port 8000 &
  $(scripts/setup-openai-client.sh) scripts/test-serve-openai.py --base-url http://127.0.0.1:8000/v1 --model tiny

Checks: models.list; greedy chat completion (deterministic, token ids and log-probs consistent);
streaming (the deltas concatenate to the whole answer, usage chunk); a conversation with tools,
an assistant tool call and its result; 16 concurrent requests from a thread pool (each equal to
the same request sent alone); text completions with log-probs; errors as the client's exceptions.
Exits 1 on the first failed check.
"""
import argparse
import sys
from concurrent.futures import ThreadPoolExecutor

import openai


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=120)
    model = args.model

    served = [m.id for m in client.models.list().data]
    check(served == [model], f"models.list: {served}")
    print(f"ok models.list: {served}")

    messages = [{"role": "user", "content": "Fix the failing test in add.py."}]
    greedy = dict(model=model, messages=messages, temperature=0, max_tokens=24)
    first = client.chat.completions.create(**greedy, logprobs=True, extra_body={"return_token_ids": True})
    choice = first.choices[0]
    check(choice.message.role == "assistant" and isinstance(choice.message.content, str), f"message: {choice.message}")
    check(choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason}")
    token_ids = choice.model_extra["token_ids"]
    check(len(token_ids) == first.usage.completion_tokens > 0, f"token_ids {token_ids} vs usage {first.usage}")
    check(len(first.model_extra["prompt_token_ids"]) == first.usage.prompt_tokens, "prompt_token_ids vs usage")
    logprobs = [entry.logprob for entry in choice.logprobs.content]
    check(len(logprobs) == len(token_ids) and all(lp <= 0 for lp in logprobs), f"logprobs {logprobs}")
    again = client.chat.completions.create(**greedy)
    check(again.choices[0].message.content == choice.message.content, "greedy is deterministic")
    print(f"ok chat completion: {len(token_ids)} tokens, finish_reason {choice.finish_reason}")

    stream = client.chat.completions.create(**greedy, stream=True, logprobs=True, stream_options={"include_usage": True})
    pieces, streamed_logprobs, finish, usage, chunks = [], [], None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            if c.logprobs is not None and c.logprobs.content:
                streamed_logprobs += [entry.logprob for entry in c.logprobs.content]
            finish = c.finish_reason or finish
    check("".join(pieces) == choice.message.content, f"streamed {''.join(pieces)!r} vs {choice.message.content!r}")
    check(finish == choice.finish_reason, f"streamed finish_reason {finish}")
    check(usage is not None and usage.completion_tokens == first.usage.completion_tokens, f"usage chunk {usage}")
    check(max(abs(a - b) for a, b in zip(streamed_logprobs, logprobs)) <= 1e-5 and len(streamed_logprobs) == len(logprobs), "streamed logprobs")
    print(f"ok streaming: {chunks} chunks concatenate to the whole answer")

    tools = [{
        "type": "function",
        "function": {
            "name": "execute_bash",
            "description": "Run a shell command.",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        },
    }]
    conversation = [
        {"role": "user", "content": "What files are there?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "execute_bash", "arguments": "{\"command\": \"ls\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "add.py\ntest_add.py"},
    ]
    with_tools = client.chat.completions.create(model=model, messages=conversation, tools=tools, tool_choice="auto", temperature=0, max_tokens=16)
    message = with_tools.choices[0].message
    if message.tool_calls:
        check(with_tools.choices[0].finish_reason == "tool_calls" and all(c.function.name == "execute_bash" for c in message.tool_calls), f"tool calls {message.tool_calls}")
    else:
        check(isinstance(message.content, str), f"message {message}")
    print(f"ok tools: {'tool calls' if message.tool_calls else 'text'} ({with_tools.usage.prompt_tokens} prompt tokens)")

    prompts = [f"Task {i}: make test {i} pass." for i in range(16)]
    ask = lambda text: client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=12).choices[0].message.content
    alone = [ask(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(ask, prompts))
    check(together == alone, f"concurrent answers differ from those alone: {together} vs {alone}")
    print("ok 16 concurrent requests, each equal to the same request alone")

    completion = client.completions.create(model=model, prompt="def add(a, b):\n", temperature=0, max_tokens=10, logprobs=0)
    c = completion.choices[0]
    check(len(c.logprobs.token_logprobs) == completion.usage.completion_tokens == len(c.logprobs.tokens), f"completion logprobs {c.logprobs}")
    check(isinstance(c.text, str) and c.finish_reason in ("stop", "length"), f"completion {c}")
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(model=model, prompt="def add(a, b):\n", temperature=0, max_tokens=10, stream=True) if ch.choices)
    check(streamed == c.text, f"streamed completion {streamed!r} vs {c.text!r}")
    print(f"ok completions: {completion.usage.completion_tokens} tokens with log-probs, streamed alike")

    try:
        client.chat.completions.create(model="gpt-4o", messages=messages)
        check(False, "an unknown model was accepted")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and model in str(e), f"unknown model: {e}")
    try:
        client.chat.completions.create(**greedy, logprobs=True, top_logprobs=2)
        check(False, "top_logprobs was accepted")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "top_logprobs", f"top_logprobs: {e.body}")
    print("ok errors: NotFoundError for an unknown model, BadRequestError naming top_logprobs")
    print("all openai client checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
