"""Which patched lines ran (`forge tasks label --coverage on`).

argv: LINES.json (relative path -> new-file line numbers of the gold patch's changed lines),
TRACE_DIR (the tracer's *.lines files), ROOT (the repository, /testbed). Prints JSON:
{path: {"executable": [...], "executed": [...]}}. A changed line is executable when it lies in a
statement (`ast`): a simple statement's lines, a compound statement's header (decorators up to
the line before its body), an `except` clause; docstrings, blank lines, comments and lines such as
`else:` are not. An executable line ran when any line of its statement (or header) ran: Python
reports a multi-line statement on only some of its lines.
"""
import ast
import json
import os
import sys


def statement_spans(source):
    tree = ast.parse(source)
    owner = {}
    kinds = (ast.stmt, ast.excepthandler)
    const = getattr(ast, "Constant", None)
    for node in ast.walk(tree):
        if not isinstance(node, kinds):
            continue
        if isinstance(node, ast.Expr) and const is not None and isinstance(node.value, const) and isinstance(node.value.value, str):
            continue
        start = node.lineno
        for dec in getattr(node, "decorator_list", []) or []:
            start = min(start, dec.lineno)
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and hasattr(body[0], "lineno"):
            end = max(node.lineno, body[0].lineno - 1)
        else:
            end = max(node.lineno, getattr(node, "end_lineno", node.lineno) or node.lineno)
        for line in range(start, end + 1):
            owner[line] = (start, end)
    return owner


def main():
    with open(sys.argv[1]) as fh:
        wanted = json.load(fh)
    trace_dir, root = sys.argv[2], os.path.realpath(sys.argv[3])
    hits = {}
    if os.path.isdir(trace_dir):
        for name in os.listdir(trace_dir):
            if not name.endswith(".lines"):
                continue
            with open(os.path.join(trace_dir, name)) as fh:
                for row in fh:
                    path, _, line = row.rstrip("\n").rpartition("\t")
                    if path and line.isdigit():
                        rel = os.path.relpath(path, root)
                        hits.setdefault(rel, set()).add(int(line))
    out = {}
    for rel, lines in wanted.items():
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                owner = statement_spans(fh.read())
        except (OSError, SyntaxError, ValueError):
            out[rel] = {"executable": [], "executed": [], "unparsed": True}
            continue
        ran = hits.get(rel, set())
        executable, executed = [], []
        for line in sorted(set(lines)):
            span = owner.get(line)
            if span is None:
                continue
            executable.append(line)
            if any(n in ran for n in range(span[0], span[1] + 1)):
                executed.append(line)
        out[rel] = {"executable": executable, "executed": executed}
    json.dump(out, sys.stdout)


main()
