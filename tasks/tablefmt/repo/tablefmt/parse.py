"""Parsing a Markdown table back into headers and rows."""

import re

_RULE_CELL = re.compile(r"^\s*(:?)-{1,}(:?)\s*$")


class TableSyntaxError(ValueError):
    """The text is not a Markdown table."""


def split_row(line):
    """The cells of one table line; ``\\|`` is a pipe inside a cell."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells = []
    current = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            current.append("|")
            i += 2
            continue
        if ch == "|":
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    cells.append("".join(current).strip())
    return cells


def _alignment(cell):
    match = _RULE_CELL.match(cell)
    if not match:
        raise TableSyntaxError("%r is not a delimiter cell" % cell)
    left, right = match.groups()
    if left and right:
        return "center"
    return "right" if right else "left"


def parse(text):
    """``(headers, rows, alignments)`` of a GFM table; short rows are padded with ''."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise TableSyntaxError("a table needs a header line and a delimiter line")
    headers = split_row(lines[0])
    alignments = [_alignment(c) for c in split_row(lines[1])]
    if len(alignments) != len(headers):
        raise TableSyntaxError("the delimiter line has %d cells, the header %d"
                               % (len(alignments), len(headers)))
    rows = []
    for line in lines[2:]:
        cells = split_row(line)[:len(headers)]
        rows.append(cells + [""] * (len(headers) - len(cells)))
    return headers, rows, alignments
