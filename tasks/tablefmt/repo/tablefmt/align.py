"""Choosing column alignment."""


def is_number(text):
    """Whether a cell holds a number (``-3``, ``2.50``, ``1e-3``, ``1,234``)."""
    text = text.strip().replace(",", "")
    if not text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return text.lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def column_alignments(rows, columns):
    """'right' for columns whose non-empty cells are all numbers, else 'left'."""
    alignments = []
    for i in range(columns):
        cells = [row[i] for row in rows if i < len(row) and row[i].strip()]
        alignments.append("right" if cells and all(is_number(c) for c in cells) else "left")
    return alignments
