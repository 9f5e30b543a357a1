#!/usr/bin/env python3
"""The demo curriculum: `tasks-demo/`, thirty small bundled projects of one-line bugs, small
enough for a tiny model trained on CPU: 27 projects of SFT demonstrations, ten of RL tasks, three
held out.

Every project is a copy of the same package `opsdemo` with one tiny function per module
(`opsdemo/<name>.py`, `def <name>(a, b): return <expr>`, the same six names everywhere) and one test
file per function, but each project has its own bugs: per function a templated one-line bug — a
wrong arithmetic operator, a flipped comparison, or a constant off by one. Its issue, written as a
user would (two wordings, stating the two expressions in opposite orders), names the function and states both the current and the expected
expression, so the fix follows from the issue alone. The task's fix.patch is the one-line fix plus a
new test in the function's test file (the file's existing smoke test is the PASS_TO_PASS side).

The splits are whole repositories, in the pipeline's order: `sft` (ops01–ops27: the tasks whose gold
trajectories are the SFT warm start's demonstrations), `rl` (ops31–ops40: tasks the RL run trains on
by reward alone, never demonstrated) and `heldout` (ops28–ops30: never trained on, neither by SFT
nor by RL). RL has its own tasks because on the SFT tasks the warm start reproduces memorised
answers; on new repositories it meets new combinations, as it will on the held-out ones. (An earlier
version held out unseen function names; a ~1M-parameter model trained for minutes learns the
format but not to copy names it has never produced, so nothing could be learned from it.)

Steps (deterministic: fixed seed, standard library only, fixed git identity):
  1. write tasks-demo/<project>/{repo/, NNN-<name>/{task.json,fix.patch}} (previous contents removed);
  2. `forge-swe-tasks generate tasks-demo` (builds the images, runs the tests in containers, writes
     tasks-demo/bundled.jsonl; needs Docker and forge/base:py3) unless --sources-only;
  3. tasks-demo/{sft,rl,heldout}.jsonl: the three splits of bundled.jsonl.

Usage: python3 scripts/demo/make_demo_tasks.py [--out tasks-demo] [--sources-only]
       (FORGE_SWE_TASKS_BIN: a built forge-swe-tasks; default `cargo run --release`)
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "opsdemo"
SEED = 7
# ops31–ops40 were added after ops01–ops30 existed: the single random stream draws projects in
# this order, so appending projects leaves the earlier ones' tasks unchanged.
PROJECTS = [f"ops{i:02d}" for i in range(1, 41)]
HELDOUT_PROJECTS = {"ops28", "ops29", "ops30"}
RL_PROJECTS = {f"ops{i}" for i in range(31, 41)}
FUNCTIONS = ["scale_total", "merge_price", "shift_width", "blend_speed", "clamp_level", "count_index"]

# Bug kinds: half wrong operators, a quarter flipped comparisons, a quarter off-by-one constants.
OPERATORS = ["+", "-", "*"]
FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}

# Two wordings that state the expressions in opposite orders: the model must find them by content.
TITLES = [
    "{name} returns the wrong value",
    "Bug in {name}",
]
BODIES = [
    "`{name}(a, b)` returns `{bad}` but it should return `{good}`. For example `{call}` gives "
    "{bad_value} instead of {good_value}.",
    "{name} should return {good}, not {bad}. Right now {call} == {bad_value}; it should be "
    "{good_value}.",
]


def expression(kind, rng):
    """(good, bad) expressions of a bug of `kind`."""
    if kind == "operator":
        good, bad = rng.sample(OPERATORS, 2)
        return f"a {good} b", f"a {bad} b"
    if kind == "comparison":
        good = rng.choice(sorted(FLIPPED))
        return f"a {good} b", f"a {FLIPPED[good]} b"
    constant = rng.randint(1, 8)
    wrong = constant + rng.choice([-1, 1]) if constant > 1 else constant + 1
    return f"a + b + {constant}", f"a + b + {wrong}"


def evaluate(expr, a, b):
    return eval(expr, {}, {"a": a, "b": b})  # noqa: S307 - our own templated expressions


def example_args(good, bad, rng):
    """Two argument pairs on which `good` and `bad` differ (the test and the issue's example)."""
    pairs = []
    while len(pairs) < 2:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if evaluate(good, a, b) != evaluate(bad, a, b) and (a, b) not in pairs:
            pairs.append((a, b))
    return pairs


def make_tasks(project, rng):
    """One task per function of `project`, in a shuffled history order."""
    order = sorted(FUNCTIONS, key=lambda _: rng.random())
    kinds = [rng.choice(["operator", "operator", "comparison", "constant"]) for _ in order]
    split = "heldout" if project in HELDOUT_PROJECTS else "rl" if project in RL_PROJECTS else "sft"
    tasks = []
    for k, (name, kind) in enumerate(zip(order, kinds), start=1):
        good, bad = expression(kind, rng)
        pairs = example_args(good, bad, rng)
        call = f"{name}({pairs[0][0]}, {pairs[0][1]})"
        fields = dict(name=name, good=good, bad=bad, call=call,
                      good_value=evaluate(good, *pairs[0]), bad_value=evaluate(bad, *pairs[0]))
        statement = rng.choice(TITLES).format(**fields) + "\n\n" + rng.choice(BODIES).format(**fields)
        tasks.append(dict(number=k, name=name, kind=kind, good=good, bad=bad, pairs=pairs,
                          statement=statement, split=split,
                          instance_id=f"forge__{project}-{k}"))
    return tasks


def source(name, expr):
    return f"def {name}(a, b):\n    return {expr}\n"


def smoke_test(name):
    return (f"from opsdemo.{name} import {name}\n\n\n"
            f"def test_{name}_accepts_numbers():\n    {name}(2, 5)\n")


def value_test(task):
    checks = "".join(f"    assert {task['name']}({a}, {b}) == {evaluate(task['good'], a, b)!r}\n"
                     for a, b in task["pairs"])
    return f"\n\ndef test_{task['name']}_value():\n{checks}"


def git(cwd, *args):
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
               GIT_AUTHOR_NAME="forge", GIT_AUTHOR_EMAIL="forge@localhost",
               GIT_COMMITTER_NAME="forge", GIT_COMMITTER_EMAIL="forge@localhost",
               GIT_AUTHOR_DATE="1700000000 +0000", GIT_COMMITTER_DATE="1700000000 +0000")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def fix_patch(task):
    """The task's commit as `git diff` (fix + new test), from a scratch repository."""
    name = task["name"]
    src, test = f"opsdemo/{name}.py", f"tests/test_{name}.py"
    with tempfile.TemporaryDirectory() as scratch:
        write(os.path.join(scratch, src), source(name, task["bad"]))
        write(os.path.join(scratch, test), smoke_test(name))
        git(scratch, "init", "-q", "-b", "main")
        git(scratch, "add", "-A")
        git(scratch, "commit", "-q", "--no-gpg-sign", "-m", "before")
        write(os.path.join(scratch, src), source(name, task["good"]))
        write(os.path.join(scratch, test), smoke_test(name) + value_test(task))
        return git(scratch, "diff", "--no-color", "--no-ext-diff")


def write_sources(out, name_of_project, tasks):
    project = os.path.join(out, name_of_project)
    shutil.rmtree(project, ignore_errors=True)
    repo = os.path.join(project, "repo")
    write(os.path.join(repo, "pyproject.toml"),
          f'[project]\nname = "{PACKAGE}"\nversion = "0.1.0"\nrequires-python = ">=3.8"\n')
    write(os.path.join(repo, "README.md"),
          f"# {PACKAGE}\n\nSmall arithmetic helpers, one function per module.\n")
    write(os.path.join(repo, PACKAGE, "__init__.py"), '"""Small arithmetic helpers."""\n')
    write(os.path.join(repo, "tests", "__init__.py"), "")
    for t in tasks:
        name = t["name"]
        write(os.path.join(repo, PACKAGE, f"{name}.py"), source(name, t["good"]))
        write(os.path.join(repo, "tests", f"test_{name}.py"), smoke_test(name) + value_test(t))
        task_dir = os.path.join(project, f"{t['number']:03d}-{name.replace('_', '-')}")
        meta = {
            "instance_id": t["instance_id"],
            "created_at": f"2024-07-{1 + t['number'] // 3:02d}T{t['number'] % 24:02d}:00:00Z",
            "difficulty": "<15 min fix",
            "problem_statement": t["statement"],
        }
        write(os.path.join(task_dir, "task.json"), json.dumps(meta, indent=2) + "\n")
        write(os.path.join(task_dir, "fix.patch"), fix_patch(t))


def generate_dataset(out):
    binary = os.environ.get("FORGE_SWE_TASKS_BIN")
    cmd = [binary] if binary else ["cargo", "run", "--release", "--quiet", "-p", "forge-swe",
                                   "--bin", "forge-swe-tasks", "--"]
    subprocess.run(cmd + ["generate", out], cwd=REPO_ROOT, check=True)


def write_splits(out, tasks):
    split_of = {t["instance_id"]: t["split"] for t in tasks}
    with open(os.path.join(out, "bundled.jsonl"), encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    for split in ("sft", "rl", "heldout"):
        chosen = [line for line in lines if split_of[json.loads(line)["instance_id"]] == split]
        with open(os.path.join(out, f"{split}.jsonl"), "w", encoding="utf-8", newline="\n") as f:
            f.writelines(chosen)
        print(f"{split}: {len(chosen)} tasks")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "tasks-demo"))
    ap.add_argument("--sources-only", action="store_true",
                    help="write the task sources only (no Docker): no bundled.jsonl, no splits")
    args = ap.parse_args()
    rng = random.Random(SEED)
    for stale in os.listdir(args.out) if os.path.isdir(args.out) else []:
        if os.path.isdir(os.path.join(args.out, stale, "repo")):
            shutil.rmtree(os.path.join(args.out, stale))
    tasks = []
    for project in PROJECTS:
        project_tasks = make_tasks(project, rng)
        write_sources(args.out, project, project_tasks)
        tasks += project_tasks
    print(f"wrote {len(tasks)} tasks in {len(PROJECTS)} projects under {args.out}")
    if args.sources_only:
        return
    generate_dataset(args.out)
    write_splits(args.out, tasks)


if __name__ == "__main__":
    sys.exit(main())
