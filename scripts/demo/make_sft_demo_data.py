#!/usr/bin/env python3
"""Bundled SFT demo data: templated repository-repair trajectories in the OpenAI/TRL chat format.

Each example is a short agent episode on a one-file Python project with one wrong operator: the
agent views the file, fixes it with str_replace_editor, runs the tests and finishes. The patterns
are simple enough that a tiny model trained from scratch on CPU learns them in minutes.
Deterministic (fixed seed, standard library only).

Usage: python3 scripts/demo/make_sft_demo_data.py [--count 240] [--out assets/sft/tiny-trajectories.jsonl]
"""
import argparse
import json
import pathlib
import random

TOOLS = [
    {"type": "function", "function": {"name": "execute_bash", "description": "Run a bash command.",
     "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}},
    {"type": "function", "function": {"name": "str_replace_editor", "description": "View or edit a file.",
     "parameters": {"type": "object", "properties": {"command": {"type": "string"}, "path": {"type": "string"},
                                                     "old_str": {"type": "string"}, "new_str": {"type": "string"}},
                    "required": ["command", "path"]}}},
    {"type": "function", "function": {"name": "finish", "description": "Finish the task.",
     "parameters": {"type": "object", "properties": {}, "required": []}}},
]

OPS = {"add": ("+", "-"), "sub": ("-", "+"), "mul": ("*", "+"), "div": ("/", "*"), "mod": ("%", "/")}
NAMES = ["calc", "mathx", "ops", "arith", "numbers", "util", "core", "lib"]
ARGS = [("a", "b"), ("x", "y"), ("m", "n"), ("p", "q")]


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def example(rng):
    module = rng.choice(NAMES)
    fn, (good, bad) = rng.choice(sorted(OPS.items()))
    a, b = rng.choice(ARGS)
    path = f"/repo/{module}.py"
    wrong = f"    return {a} {bad} {b}"
    right = f"    return {a} {good} {b}"
    source = f"def {fn}({a}, {b}):\n{wrong}\n"
    test = f"test_{module}.py::test_{fn}"
    return {
        "tools": TOOLS,
        "messages": [
            {"role": "system", "content": "You fix bugs in Python repositories."},
            {"role": "user", "content": f"{test} fails: {fn}() gives the wrong result. Fix {path}."},
            {"role": "assistant", "content": "", "tool_calls": [call("str_replace_editor", {"command": "view", "path": path})]},
            {"role": "tool", "content": f"     1\tdef {fn}({a}, {b}):\n     2\t{wrong}"},
            {"role": "assistant", "content": "", "tool_calls": [call("str_replace_editor", {"command": "str_replace", "path": path, "old_str": wrong, "new_str": right})]},
            {"role": "tool", "content": f"The file {path} has been edited."},
            {"role": "assistant", "content": "", "tool_calls": [call("execute_bash", {"command": f"python -m pytest -q {test}"})]},
            {"role": "tool", "content": "1 passed"},
            {"role": "assistant", "content": "", "tool_calls": [call("finish", {})]},
        ],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[2] / "assets/sft/tiny-trajectories.jsonl"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with open(args.out, "w") as f:
        for _ in range(args.count):
            f.write(json.dumps(example(rng), ensure_ascii=False) + "\n")
    print(f"wrote {args.count} trajectories to {args.out}")


if __name__ == "__main__":
    main()
