"""Rendering rows as a Markdown table."""

from .align import column_alignments
from .width import display_width, pad

_RULES = {"left": ("-", "-"), "right": ("-", ":"), "center": (":", ":")}


def _cell(value, floatfmt):
    if value is None:
        return ""
    if isinstance(value, float) and floatfmt:
        value = format(value, floatfmt)
    # a pipe would end the cell, a newline the row
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(rows, headers, align=None, floatfmt=None):
    """A GFM table; ``align`` is one of 'left', 'right', 'center' per column (guessed if None)."""
    columns = len(headers)
    header_cells = [_cell(h, None) for h in headers]
    body = []
    for row in rows:
        if len(row) > columns:
            raise ValueError("row %r has more cells than there are headers" % (row,))
        cells = [_cell(v, floatfmt) for v in row]
        body.append(cells + [""] * (columns - len(cells)))
    if align is None:
        align = column_alignments(body, columns)
    widths = [max([3, display_width(header_cells[i])] + [display_width(r[i]) for r in body])
              for i in range(columns)]

    def line(cells, aligns):
        return "| " + " | ".join(pad(c, w, a) for c, w, a in zip(cells, widths, aligns)) + " |"

    rule = []
    for w, a in zip(widths, align):
        first, last = _RULES[a]
        rule.append(first + "-" * (w - 2) + last)
    lines = [line(header_cells, ["left"] * columns), "| " + " | ".join(rule) + " |"]
    lines.extend(line(cells, align) for cells in body)
    return "\n".join(lines)
