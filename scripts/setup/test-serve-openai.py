#!/usr/bin/env python3
"""The official `openai` Python client against a running `forge serve` (what a user of OpenAI's
API or of vLLM's server would write). Run by crates/forge-cli/tests/serve.rs with the python of
scripts/setup/setup-openai-client.sh; by hand:

  forge serve --model DIR --served-model-name tiny --port 8000 &
  $(scripts/setup/setup-openai-client.sh) scripts/setup/test-serve-openai.py --base-url http://127.0.0.1:8000/v1 --model tiny

Checks: models.list; greedy chat completion (deterministic, token ids and log-probs consistent);
streaming (the deltas concatenate to the whole answer, usage chunk); a conversation with tools,
an assistant tool call and its result; 16 concurrent requests from a thread pool (each equal to
the same request sent alone); text completions with log-probs; errors as the client's exceptions
(unknown model, malformed JSON body, over-long prompt, unsupported parameter); a client that
leaves mid-stream, after which the server still answers.

--record FILE writes the greedy chat completion (messages, prompt and completion token ids,
log-probs, text) as JSON, for the caller to compare with `forge generate` and `forge score`.
--tool-call-base-url/--tool-call-model name a server whose model was trained to answer
TOOL_CALL_MESSAGES with a call of execute_bash {"command": "ls"}: the call must come back in
`tool_calls` (whole and streamed), and as plain text with tool_choice "none".
Exits 1 on the first failed check.
"""
import argparse
import json
import sys
import urllib.error
import urllib.request
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
    ap.add_argument("--record", help="write the greedy chat completion here (JSON)")
    ap.add_argument("--tool-call-base-url")
    ap.add_argument("--tool-call-model")
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
    if args.record:
        with open(args.record, "w") as f:
            json.dump({
                "messages": messages, "max_tokens": greedy["max_tokens"], "content": choice.message.content,
                "finish_reason": choice.finish_reason, "prompt_token_ids": first.model_extra["prompt_token_ids"],
                "token_ids": token_ids, "logprobs": logprobs,
            }, f)

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

    # a malformed body, as a client with a bug would send it (the SDK itself always sends JSON)
    request = urllib.request.Request(args.base_url.rstrip("/") + "/chat/completions", data=b'{"messages": [', headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=30)
        check(False, "a malformed JSON body was accepted")
    except urllib.error.HTTPError as e:
        error = json.loads(e.read())["error"]
        check(e.code == 400 and error["type"] == "invalid_request_error" and "not valid JSON" in error["message"], f"malformed JSON: {e.code} {error}")
    served_models = client.models.list().data
    max_len = served_models[0].model_extra.get("max_model_len")
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * (2 * max_len)}], max_tokens=4)
        check(False, "an over-long prompt was accepted")
    except openai.BadRequestError as e:
        check(e.code == "context_length_exceeded" and str(max_len) in str(e), f"over-long prompt: {e.body}")
    # a client that reads two chunks of a long stream and hangs up; the server must serve on
    leaving = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=200, stream=True, extra_body={"ignore_eos": True})
    for i, _ in enumerate(leaving):
        if i == 1:
            break
    leaving.close()
    after = client.chat.completions.create(**greedy)
    check(after.choices[0].message.content == choice.message.content, "the answer after a client left mid-stream")
    metrics = urllib.request.urlopen(args.base_url.rstrip("/").removesuffix("/v1") + "/metrics", timeout=30).read().decode()
    check("forge_serve_stream_disconnects_total 1" in metrics, f"the server saw the client leave: {metrics}")
    print(f"ok bad input: 400 for malformed JSON, context_length_exceeded over {max_len} tokens, served on after a client left mid-stream")

    if args.tool_call_base_url:
        check_tool_calls(args.tool_call_base_url, args.tool_call_model)
    print("all openai client checks passed")
    return 0


# The conversation the tool-call model was trained on (crates/forge-cli/tests/serve.rs).
TOOL_CALL_MESSAGES = [{"role": "user", "content": "List the files in the repository."}]
TOOL_CALL_TOOLS = [{
    "type": "function",
    "function": {
        "name": "execute_bash",
        "description": "Run a shell command.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
}]


def check_tool_calls(base_url, model):
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    ask = dict(model=model, messages=TOOL_CALL_MESSAGES, tools=TOOL_CALL_TOOLS, temperature=0, max_tokens=64)
    whole = client.chat.completions.create(**ask)
    choice = whole.choices[0]
    calls = choice.message.tool_calls
    check(calls is not None and len(calls) == 1, f"no tool call came back: {choice.message}")
    call = calls[0]
    check(call.type == "function" and call.function.name == "execute_bash" and json.loads(call.function.arguments) == {"command": "ls"}, f"tool call {call}")
    check(call.id.startswith("call_") and choice.finish_reason == "tool_calls", f"{call.id} {choice.finish_reason}")
    check(not choice.message.content, f"content beside the call: {choice.message.content!r}")

    streamed_calls, finish = {}, None
    for chunk in client.chat.completions.create(**ask, stream=True):
        for c in chunk.choices:
            check(not c.delta.content, f"the call leaked as text in a chunk: {c.delta.content!r}")
            for d in c.delta.tool_calls or []:
                entry = streamed_calls.setdefault(d.index, {"name": "", "arguments": ""})
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
            finish = c.finish_reason or finish
    check(list(streamed_calls.values()) == [{"name": "execute_bash", "arguments": call.function.arguments}] and finish == "tool_calls", f"streamed tool calls {streamed_calls} {finish}")

    # tool_choice "none": the same generation, handed back as the text the model wrote
    text = client.chat.completions.create(**ask, tool_choice="none").choices[0]
    check(not text.message.tool_calls and "<tool_call>" in text.message.content and '"execute_bash"' in text.message.content, f"tool_choice none: {text.message}")
    print(f"ok tool call: {call.function.name}({call.function.arguments}) in tool_calls, whole and streamed; text with tool_choice none")


if __name__ == "__main__":
    sys.exit(main())
